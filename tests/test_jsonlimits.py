"""JSON from untrusted peers: size, nesting and constants refused with one error type."""

from __future__ import annotations

import pytest

from edge import jsonlimits
from edge.errors import ProtocolError


def test_within_limits_is_parsed() -> None:
    assert jsonlimits.loads(b'{"a": [[1, 2]], "b": "x"}', max_bytes=100, max_depth=3) == {
        "a": [[1, 2]],
        "b": "x",
    }


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested deeper"),  # RecursionError in json.loads
        (b'{"a": [[[1]]]}', "nested deeper"),
        (b"x" * 200_001, "exceeds the limit"),
        (b'{"a": NaN}', "NaN is not JSON"),
        (b'{"a": Infinity}', "Infinity is not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"a": ', "not JSON"),
    ],
)
def test_hostile_input_is_one_protocol_error(data: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        jsonlimits.loads(data, max_bytes=200_000, max_depth=3)
