"""Sealed-segment, envelope, checkpoint, manifest, audit and index-row parsers.

Property-based: malformed input of any shape must give a clear IntegrityError, never another
exception.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import RecipientKem
from edge.errors import IntegrityError
from edge.vault import format as fmt
from edge.vault.audit import parse_record
from edge.vault.bundle import parse_manifest
from edge.vault.index import IndexRow
from edge.vault.recipient_keys import (
    EpochKey,
    decrypt_segment,
    load_private,
    open_envelope,
    write_keypair,
)

KEY = ed25519.Ed25519PrivateKey.generate()
PUB = KEY.public_key()


def _segment(payload: bytes = b"init" + b"media" * 50, prev: bytes = fmt.ZERO_HASH) -> bytes:
    ekey = EpochKey()
    nonce = ekey.next_nonce()
    header = fmt.SegmentHeader(
        device_id="unit-1",
        camera_id="cam1",
        sequence=7,
        start_wall_ns=10,
        end_wall_ns=20,
        frame_count=3,
        first_frame_index=100,
        epoch_id=ekey.epoch_id,
        nonce=nonce,
        prev_hash=prev,
        init_len=4,
        ciphertext_len=len(payload) + fmt.TAG_LEN,
    )
    return fmt.sign_segment(header, ekey.encrypt(nonce, payload, header.pack()), KEY)


SEGMENT = _segment()


def _envelope() -> bytes:
    env = fmt.EpochEnvelope(
        "unit-1", "cam1", bytes(16), 5, (fmt.RecipientSeal(0x20, bytes(16), b"x" * 80),)
    )
    return fmt.sign_envelope(env, KEY)


ENVELOPE = _envelope()
CHECKPOINT = fmt.sign_checkpoint(
    fmt.Checkpoint("unit-1", "cam1", 1, 41, b"h" * 32, 42, fmt.ZERO_HASH), KEY
)


def test_segment_round_trip_and_fields() -> None:
    seg = fmt.verify_segment(SEGMENT, PUB, prev_hash=fmt.ZERO_HASH, device_id="unit-1")
    assert (seg.header.camera_id, seg.header.sequence, seg.header.init_len) == ("cam1", 7, 4)
    assert seg.chain_hash == fmt.sha256(SEGMENT)
    with pytest.raises(IntegrityError, match="chain broken"):
        fmt.verify_segment(SEGMENT, PUB, prev_hash=b"\1" * 32)
    with pytest.raises(IntegrityError, match="device id"):
        fmt.verify_segment(SEGMENT, PUB, device_id="other")
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    with pytest.raises(IntegrityError, match="bad signature"):
        fmt.verify_segment(SEGMENT, other)


def test_envelope_opens_only_for_its_recipient(tmp_path: Path) -> None:
    for kem in RecipientKem:
        _pub, key = write_keypair(tmp_path / kem.value, kem)
        private = load_private(key)
        ekey = EpochKey()
        info = fmt.hpke_info("unit-1", "cam1", ekey.epoch_id)
        env = fmt.EpochEnvelope(
            "unit-1", "cam1", ekey.epoch_id, 1, tuple(ekey.seal_to([private.public], info))
        )
        raw = fmt.sign_envelope(env, KEY)
        parsed = fmt.verify_envelope(raw, PUB)
        data_key = open_envelope(parsed, private)
        nonce = ekey.next_nonce()
        header = fmt.SegmentHeader(
            "unit-1", "cam1", 0, 0, 1, 1, 0, ekey.epoch_id, nonce, fmt.ZERO_HASH, 2, 5 + 16
        )
        sealed = fmt.sign_segment(header, ekey.encrypt(nonce, b"ab123", header.pack()), KEY)
        assert decrypt_segment(fmt.parse_segment(sealed), data_key) == (b"ab", b"123")
        # The same envelope under another device/camera binding does not open.
        moved = fmt.EpochEnvelope("unit-2", "cam1", ekey.epoch_id, 1, parsed.recipients)
        with pytest.raises(IntegrityError, match="does not open"):
            open_envelope(moved, private)
        _pub2, key2 = write_keypair(tmp_path / f"{kem.value}-other", kem)
        with pytest.raises(IntegrityError, match="not sealed to this key"):
            open_envelope(parsed, load_private(key2))
        ekey.wipe()
        assert ekey.wiped


def test_checkpoint_round_trip() -> None:
    ckp = fmt.verify_checkpoint(CHECKPOINT, PUB)
    assert (ckp.purged_through, ckp.purged_count, ckp.last_hash) == (41, 42, b"h" * 32)


_fuzz = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _mutations(base: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, bit flips, insertions, and arbitrary bytes."""
    n = len(base)
    return st.one_of(
        st.binary(max_size=400),
        st.integers(0, n - 1).map(lambda i: base[:i]),
        st.tuples(st.integers(0, n - 1), st.integers(0, 7)).map(
            lambda t: base[: t[0]] + bytes([base[t[0]] ^ (1 << t[1])]) + base[t[0] + 1 :]
        ),
        st.tuples(st.integers(0, n), st.binary(min_size=1, max_size=8)).map(
            lambda t: base[: t[0]] + t[1] + base[t[0] :]
        ),
    )


@_fuzz
@given(_mutations(SEGMENT))
def test_fuzz_segment(data: bytes) -> None:
    try:
        fmt.verify_segment(data, PUB)
    except IntegrityError as exc:
        assert str(exc)
    else:
        assert data == SEGMENT


@_fuzz
@given(_mutations(ENVELOPE))
def test_fuzz_envelope(data: bytes) -> None:
    try:
        fmt.verify_envelope(data, PUB)
    except IntegrityError as exc:
        assert str(exc)
    else:
        assert data == ENVELOPE


@_fuzz
@given(_mutations(CHECKPOINT))
def test_fuzz_checkpoint(data: bytes) -> None:
    try:
        fmt.verify_checkpoint(data, PUB)
    except IntegrityError as exc:
        assert str(exc)
    else:
        assert data == CHECKPOINT


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
_MANIFEST = {
    "format": "edge-evidence-bundle",
    "version": 1,
    "case": "X",
    "device": "u",
    "unit_public_key": "k",
    "segments": [],
    "envelopes": [],
    "cameras": {},
}


@_fuzz
@given(
    st.one_of(
        st.binary(max_size=200),
        _json.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(st.sampled_from(sorted(_MANIFEST)), _json).map(
            lambda d: json.dumps({**_MANIFEST, **d}).encode()
        ),
    )
)
def test_fuzz_manifest(data: bytes) -> None:
    try:
        manifest = parse_manifest(data)
    except IntegrityError as exc:
        assert str(exc)
    else:
        assert manifest["format"] == "edge-evidence-bundle"


@_fuzz
@given(
    st.one_of(
        st.binary(max_size=200),
        _json.map(lambda v: json.dumps(v).encode()),
        st.dictionaries(
            st.sampled_from(["sig", "seq", "time_ns", "device", "actor", "action", "details"]),
            _json,
        ).map(lambda v: json.dumps(v).encode()),
    )
)
def test_fuzz_audit_record(data: bytes) -> None:
    with pytest.raises(IntegrityError):
        parse_record(data, PUB)


_cell = st.one_of(
    st.none(),
    st.integers(-(2**63), 2**63 - 1),
    st.booleans(),
    st.text(max_size=8),
    st.binary(max_size=40),
    st.floats(),
)


@_fuzz
@given(st.lists(_cell, max_size=11).map(tuple))
def test_fuzz_index_row(row: tuple[object, ...]) -> None:
    try:
        parsed = IndexRow.from_sql(row)
    except IntegrityError as exc:
        assert str(exc)
    else:
        assert parsed.size > 0 and len(parsed.chain_hash) == 32


def test_index_row_accepts_a_good_row() -> None:
    row = ("cam1", 3, 10, 20, 5, 100, bytes(16), bytes(32), 0)
    assert IndexRow.from_sql(row).sequence == 3
