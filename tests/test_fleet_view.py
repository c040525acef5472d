"""The fleet view's pure parts: which slot runs, and what the CSU keeps of a unit's report
(a hostile unit's header is bounded, typed, or dropped). The end-to-end view, a real unit
reporting to a real receiver: tests/test_signed_config.py (fetch over mutual TLS)."""

from __future__ import annotations

import json

import pytest

from edge.csu.receiver.server import _fleet_report
from edge.csu.serve_cmd import fleet_line
from edge.slots import running_slot


@pytest.mark.parametrize(
    ("cmdline", "slot"),
    [
        ("root=LABEL=edge-root-a rootfstype=ext4 ro quiet", "A"),
        ("root=LABEL=edge-root-b ro", "B"),
        ("console=ttyAMA0 root=PARTUUID=1a2b3c4d-02 rootwait", "A"),
        ("root=PARTUUID=1a2b3c4d-03 rootwait", "B"),
        ("rauc.slot=B root=/dev/mmcblk0p3", "B"),
        ("rauc.slot=rootfs.0 root=/dev/sda2", "A"),
        ("root=/dev/sda1 ro", None),
        ("root=LABEL=edge-root-ab", None),
    ],
)
def test_the_running_slot_comes_from_the_kernel_command_line(cmdline: str, slot: str) -> None:
    assert running_slot(cmdline) == slot


def test_the_csu_keeps_a_units_report_typed_and_bounded() -> None:
    good = {
        "version": "0.2.0",
        "slot": "B",
        "last_update": {"result": "installed", "version": "0.2.0", "at": 1.5},
        "config_digest": "ab" * 32,
        "config_documents": {"unit:u-1": 3, "group:nord": 7},
        "groups": ["nord", "rpi-cams"],
    }
    assert _fleet_report(json.dumps(good)) == good
    hostile = dict(
        good,
        slot="C; rm -rf /",
        config_documents={"unit:u-1": "3", "x" * 500: 1, "ok": True},
        last_update={"result": "x" * 1000, "nested": {"a": 1}},
        groups=["nord", "../etc", 7, "Sud"] + [f"g{i}" for i in range(40)],
    )
    kept = _fleet_report(json.dumps(hostile))
    assert kept is not None
    assert kept["slot"] is None
    assert kept["config_documents"] == {"x" * 80: 1}
    assert kept["last_update"] == {"result": "x" * 300}
    assert kept["groups"] == ["nord"] + [f"g{i}" for i in range(12)]
    assert _fleet_report("not json") is None
    assert _fleet_report(json.dumps(["list"])) is None
    assert _fleet_report(json.dumps({"version": 3})) is None
    assert _fleet_report("{" + " " * 5000 + "}") is None
    line = fleet_line(good)
    assert line == (
        f"v0.2.0 slot B, last update installed 0.2.0, config {'ab' * 6}… "
        "(group:nord v7, unit:u-1 v3)"
    )
