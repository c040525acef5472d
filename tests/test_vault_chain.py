"""The one hash-chain walk (edge/vault/chain.py) shared by verify, export, opening and recovery:
pure, checked on real signed gap records."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.vault import chain
from edge.vault import format as fmt

KEY = ed25519.Ed25519PrivateKey.generate()


def _gap(first: int, last: int, prev_hash: bytes) -> fmt.GapRecord:
    gap = fmt.GapRecord("u1", "cam1", 1, first, last, 0, prev_hash, "power cut")
    return fmt.verify_gap(fmt.sign_gap(gap, KEY), KEY.public_key())


def test_walk_crosses_consecutive_gap_records_that_continue_the_chain() -> None:
    h4 = b"\x04" * 32
    one = _gap(5, 7, h4)
    two = _gap(8, 9, one.chain_hash)
    walk = chain.through_gaps({5: one, 8: two}, 5, h4)
    assert walk.crossed == [one, two]
    assert (walk.sequence, walk.prev_hash) == (10, two.chain_hash)
    assert walk.continued_by(10, two.chain_hash)
    assert not walk.continued_by(10, h4) and not walk.continued_by(11, two.chain_hash)


def test_a_gap_record_that_does_not_continue_the_chain_is_not_crossed() -> None:
    gap = _gap(5, 7, b"\x01" * 32)
    walk = chain.through_gaps({5: gap}, 5, b"\x04" * 32)
    assert walk.crossed == [] and walk.sequence == 5 and walk.prev_hash == b"\x04" * 32


def test_a_record_already_reported_stops_the_walk() -> None:
    h4 = b"\x04" * 32
    gap = _gap(5, 7, h4)
    assert chain.through_gaps({5: gap}, 5, h4, stop={5}).crossed == []
