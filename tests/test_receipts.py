"""CSU receipts: the real receiver signs a receipt for every segment it accepts, the unit's
uplink checks it and keeps it in the vault, exports carry it, and the verifier refuses a forged
receipt, a receipt for another unit, and a past rewritten after the CSU receipted it."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.cli.main import main as edgectl
from edge.config import EdgeConfig, PrivacyMaskConfig, UnitConfig, UplinkConfig
from edge.csu import bundlefile
from edge.csu.main import main as edge_csu
from edge.csu.receiver.archive import SegmentStore
from edge.csu.receiver.evidence import BundleRequest, UnitTrust, build
from edge.errors import IntegrityError
from edge.identity.unitkeys import (
    keys_dir_of,
    load_public_pem,
    load_signing_key,
    load_signing_public_key,
    public_pem,
)
from edge.privacy.commitment import MASK_SET_ACTION, Committed, MaskCommitment, MaskSet
from edge.uplink.client import UplinkClient
from edge.vault import format as fmt
from edge.vault import layout, maskhistory
from edge.vault import receipt as rcpt
from edge.vault.bundle import export_bundle, verify_bundle
from edge.vault.store import Vault
from edge.vault.verify import FindingKind, verify_vault

from . import vault_support
from .uplink_util import CSU_NAME, Csu, free_port, make_csu, unit_files, wait_until
from .video_support import WALL0

UNIT = "unit-1"  # vault_support's device id


class Gate:
    def is_open(self) -> bool:
        return True

    def reason(self) -> str:
        return "port authorised"


@dataclass
class Rig:
    csu: Csu
    port: int
    data: Path
    recipient: vault_support.Csu

    @property
    def receipt_pub(self) -> Path:
        return self.csu.directory / "keys" / "receipt-key.pub.pem"

    def vault(self) -> Vault:
        return vault_support.open_vault(self.data, self.recipient)

    def deliver(self, vault: Vault, receipt_key: Path) -> None:
        cfg = EdgeConfig(
            unit=UnitConfig(id=UNIT, data_dir=self.data),
            uplink=UplinkConfig(
                enabled=True,
                csu_url=f"https://127.0.0.1:{self.port}",
                server_name=CSU_NAME,
                backoff_initial_s=0.2,
                backoff_max_s=1.0,
                csu_receipt_key=receipt_key,
            ),
        )
        client = UplinkClient(cfg, vault, Gate())
        client.start()
        try:
            wait_until(lambda: vault.backlog().segments == 0, 30, "the outbox to drain")
        finally:
            client.stop()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    with running_rig(tmp_path) as made:
        yield made


@contextlib.contextmanager
def running_rig(tmp_path: Path) -> Iterator[Rig]:
    """A receiver that signs receipts, and a unit enrolled there with its vault's keys."""
    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    # A top-level setting: before the first table of the file.
    csu.config.write_text('receipt_key_file = "keys/receipt-key.pem"\n' + csu.config.read_text())
    data = tmp_path / "unit"
    keys = csu.directory / "keys"
    recipient = vault_support.Csu(keys / "authority.pub.json", keys / "authority.key.json")
    vault_support.open_vault(data, recipient).close()  # makes the unit's signing key
    csu.enroll(UNIT, load_signing_key(keys_dir_of(data)))
    unit_files(csu, UNIT, data)
    csu.start()
    try:
        yield Rig(csu, port, data, recipient)
    finally:
        csu.stop()


def _export(data: Path, out: Path) -> Path:
    export_bundle(
        data,
        start_ns=WALL0,
        end_ns=WALL0 + 60 * 10**9,
        case="PV-9",
        out_dir=out,
        device_id=UNIT,
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    return out


def _day() -> set[str]:
    return {rcpt.day_of(WALL0)}


def test_receipts_travel_from_the_csu_to_the_vault_and_the_bundle(
    rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vault = rig.vault()
    for segment in vault_support.encoded_segments(seconds=4.0):
        vault.write(segment)
    rig.deliver(vault, rig.receipt_pub)
    csu_key = load_public_pem(rig.receipt_pub.read_bytes(), origin="csu")
    kept = vault.receipts.read("cam1", _day())
    vault.close()
    stored = rig.csu.stored(UNIT, "cam1")
    got = [rcpt.verify_receipt(raw, csu_key, device_id=UNIT) for raw in kept]
    assert [r.sequence for r in got] == [0, 1, 2, 3]
    assert [r.chain_hash for r in got] == [fmt.sha256(stored[n]) for n in range(4)]

    out = _export(rig.data, tmp_path / "bundle")
    unit_key = load_signing_public_key(keys_dir_of(rig.data))
    verified = verify_bundle(out, unit_public_key=unit_key, receipt_key=csu_key)
    assert verified.receipts_checked and len(verified.receipts) == 4
    assert all(c.direct for c in verified.receipt_coverage())
    # Without the CSU's key, receipts are carried but nothing is claimed about them.
    unchecked = verify_bundle(out, unit_public_key=unit_key)
    assert not unchecked.receipts_checked
    assert all(c.receipt is None for c in unchecked.receipt_coverage())

    clip = tmp_path / "clip.mp4"
    authority = str(rig.recipient.key)
    pin = ["--unit-key", str(keys_dir_of(rig.data) / "unit-signing.pub.pem")]
    args = ["open", str(out), "--key", authority, "--out", str(clip), *pin]
    assert edge_csu([*args, "--receipt-key", str(rig.receipt_pub)]) == 0
    printed = capsys.readouterr().out
    assert "receipts cam1: 4 of 4 segment(s) held by the CSU (4 receipted, 0 through" in printed
    assert edge_csu(args) == 0
    assert "receipts: 4 carried, NOT checked" in capsys.readouterr().out
    # A receipt key other than the CSU's: refused, not opened.
    wrong = tmp_path / "wrong.pub.pem"
    wrong.write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate().public_key()))
    assert edge_csu([*args, "--receipt-key", str(wrong)]) == 1
    assert "REFUSED" in capsys.readouterr().out


def test_the_uplink_hands_the_csu_the_mask_sets_its_segments_commit_to(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The real uplink sends the signed record of each committed mask set before the first
    segment that needs it; the CSU's bundle then carries the polygons, and declares the one
    set the unit had no record of."""
    window = PrivacyMaskConfig(name="window", points=[(0.1, 0.1), (0.4, 0.1), (0.4, 0.4)])
    door = PrivacyMaskConfig(name="door", points=[(0.6, 0.5), (0.9, 0.5), (0.9, 0.95)])
    before = MaskSet.of("cam1", [window], 160, 120)
    after = MaskSet.of("cam1", [window, door], 160, 120)
    unlogged = MaskSet.of("cam1", [door], 160, 120)  # committed to, never announced
    version = b"v" * 32
    vault = rig.vault()
    vault.audit.append(MASK_SET_ACTION, before.record(version))
    vault.audit.append(MASK_SET_ACTION, after.record(version))
    change = WALL0 + 2 * vault_support.SEG_NS + 500_000_000
    plan = {0: [before], 1: [before], 2: [before, after], 3: [unlogged]}
    for n, sets in plan.items():
        seg = vault_support.fake_segment("cam1", n)
        starts = [seg.start_wall_ns, change][: len(sets)]
        entries = tuple(
            MaskCommitment(at, Committed(m.digest, version))
            for at, m in zip(starts, sets, strict=True)
        )
        vault.write(dataclasses.replace(seg, masks=entries))
    records = maskhistory.records_for(
        vault.audit.path, vault.public_key, {("cam1", before.digest), ("cam1", after.digest)}
    )
    with caplog.at_level(logging.WARNING, logger="edge.uplink.client"):
        rig.deliver(vault, rig.receipt_pub)
    vault.close()
    held = rig.csu.directory / "storage" / UNIT / "cam1" / "masks"
    assert {p.name: p.read_bytes() for p in held.iterdir()} == {
        f"{m.digest.hex()}.json": records[("cam1", m.digest)] for m in (before, after)
    }
    assert f"no signed record of mask set {unlogged.digest.hex()[:16]} of cam1" in caplog.text
    # the CSU's bundle of the range: the polygons it holds, the set it lacks declared
    unit_key = load_signing_public_key(keys_dir_of(rig.data))
    request = BundleRequest(UNIT, "cam1", WALL0, WALL0 + 60 * 10**9, "PV-9", "i.enquete")
    csu_key = ed25519.Ed25519PrivateKey.generate()
    with (tmp_path / "b.tar").open("w+b") as fh:
        built = build(
            SegmentStore(rig.csu.directory / "storage"), request,
            UnitTrust(unit_key, "pinned", None), csu_key, fh,
        )  # fmt: skip
    assert (built.segments, built.mask_sets) == (4, 2)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    bundlefile.unpack(tmp_path / "b.tar", unpacked)
    found = bundlefile.verify_csu_bundle(
        unpacked, unit_public_key=unit_key, csu_key=csu_key.public_key()
    )
    assert set(found.verified.mask_sets) == {("cam1", before.digest), ("cam1", after.digest)}
    # the receipts the receiver signed and kept travel too: none declared not held
    assert [i.get("digest") for i in found.not_held] == [unlogged.digest.hex()]
    assert len(found.verified.receipts) == 4


def test_a_chain_rewritten_after_a_receipt_is_refused(rig: Rig, tmp_path: Path) -> None:
    """A thief with the unit (and its signing key) records another past under the same
    sequences and keeps the CSU's receipts: each rewritten segment contradicts its receipt."""
    vault = rig.vault()
    for n in range(3):
        vault.write(vault_support.fake_segment("cam1", n))
    rig.deliver(vault, rig.receipt_pub)
    vault.close()
    forged = tmp_path / "forged"
    shutil.copytree(keys_dir_of(rig.data), keys_dir_of(forged))
    other = vault_support.open_vault(forged, rig.recipient)
    for n in range(3):
        other.write(vault_support.fake_segment("cam1", n))  # other bytes, signed by the unit
    other.close()
    shutil.copytree(layout.vault_dir(rig.data) / "receipts", layout.vault_dir(forged) / "receipts")
    out = _export(forged, tmp_path / "bundle")
    csu_key = load_public_pem(rig.receipt_pub.read_bytes(), origin="csu")
    unit_key = load_signing_public_key(keys_dir_of(forged))
    verify_bundle(out, unit_public_key=unit_key)  # the unit's own signatures all hold
    with pytest.raises(IntegrityError, match="rewritten after the receipt"):
        verify_bundle(out, unit_public_key=unit_key, receipt_key=csu_key)
    # On the unit itself (edgectl verify): the chain holds, the receipts it kept do not.
    forged_root = layout.vault_dir(forged)
    assert verify_vault(forged_root, unit_key, device_id=UNIT).ok
    report = verify_vault(forged_root, unit_key, device_id=UNIT, receipt_key=csu_key)
    assert [(f.kind, f.sequence) for f in report.findings] == [
        (FindingKind.RECEIPT, n) for n in range(3)
    ]
    assert "rewritten after the receipt" in report.findings[0].detail
    # and the real past, with the same receipts, matches them all
    honest = verify_vault(layout.vault_dir(rig.data), unit_key, device_id=UNIT, receipt_key=csu_key)
    assert honest.ok and honest.cameras["cam1"].receipts_ok == 3
    assert honest.cameras["cam1"].receipted_through == 2


def test_edgectl_verify_checks_the_receipts_with_the_uplink_key(
    rig: Rig, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vault = rig.vault()
    for n in range(2):
        vault.write(vault_support.fake_segment("cam1", n))
    rig.deliver(vault, rig.receipt_pub)
    vault.close()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[unit]\nid = "{UNIT}"\ndata_dir = "{rig.data}"\n\n[vault]\n'
        f'csu_public_key = "{rig.recipient.pub}"\n\n[uplink]\n'
        f'csu_receipt_key = "{rig.receipt_pub}"\n'
    )
    assert edgectl(["verify", "--config", str(cfg)]) == 0
    assert "2 CSU receipt(s) match, through #1" in capsys.readouterr().out
    other = tmp_path / "other.pub.pem"  # the uplink trusts another key: every receipt fails
    other.write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate().public_key()))
    cfg.write_text(cfg.read_text().replace(str(rig.receipt_pub), str(other)))
    assert edgectl(["verify", "--config", str(cfg)]) == 1
    assert capsys.readouterr().out.count("receipt: cam1: receipt cam1#") == 2


def test_the_unit_refuses_receipts_signed_by_another_key(
    rig: Rig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The unit trusts another receipt key than the one this receiver signs with (an impostor
    or a misconfigured CSU): delivery goes on, no receipt is kept, and it is said."""
    caplog.set_level(logging.ERROR, logger="edge.uplink.client")
    expected = tmp_path / "expected.pub.pem"
    expected.write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate().public_key()))
    vault = rig.vault()
    vault.write(vault_support.fake_segment("cam1", 0))
    rig.deliver(vault, expected)
    kept = vault.receipts.read("cam1", _day())
    vault.close()
    assert kept == []
    assert "CSU receipt for cam1#0 refused" in caplog.text
    assert "signed by another key" in caplog.text


def _receipt(key: ed25519.Ed25519PrivateKey, **fields: object) -> bytes:
    values: dict[str, object] = {
        "device_id": UNIT,
        "camera_id": "cam1",
        "sequence": 7,
        "chain_hash": b"h" * 32,
        "csu_time_ns": WALL0,
    }
    values.update(fields)
    return rcpt.sign_receipt(key, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("case", "match"),
    [
        ("forged: another key", "signed by another key"),
        ("forged: altered time", "bad signature"),
        ("for another unit", "issued to unit 'unit-2'"),
        ("for other bytes", "rewritten after the receipt"),
        ("for another sequence", "another sequence"),
    ],
)
def test_receipts_that_do_not_check_are_refused(case: str, match: str) -> None:
    csu = ed25519.Ed25519PrivateKey.generate()
    raw = _receipt(csu)
    expect: dict[str, object] = {"chain_hash": b"h" * 32, "sequence": 7}
    rcpt.verify_receipt(raw, csu.public_key(), device_id=UNIT, **expect)  # type: ignore[arg-type]
    if case == "forged: another key":
        raw = _receipt(ed25519.Ed25519PrivateKey.generate())
    elif case == "forged: altered time":
        raw = raw[:6] + bytes([raw[6] ^ 1]) + raw[7:]
    elif case == "for another unit":
        raw = _receipt(csu, device_id="unit-2")
    elif case == "for other bytes":
        expect["chain_hash"] = b"x" * 32
    else:
        expect["sequence"] = 8
    with pytest.raises(IntegrityError, match=match):
        rcpt.verify_receipt(raw, csu.public_key(), device_id=UNIT, **expect)  # type: ignore[arg-type]


def test_the_receipt_bytes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """FORMATS.md, CSU receipt: fixed part, ids, signature; and a torn log record is left out by
    readers, then quarantined (never just cut) by the next run's first append."""
    csu = ed25519.Ed25519PrivateKey.generate()
    raw = _receipt(csu)
    assert raw[:6] == b"ERCT\x01\x00"
    assert int.from_bytes(raw[6:14], "big") == WALL0
    assert int.from_bytes(raw[14:22], "big") == 7
    assert raw[22:54] == b"h" * 32 and raw[54:70] == rcpt.receipt_key_id(csu.public_key())
    assert raw[70:-64] == b"\x06unit-1\x04cam1" and len(raw) == 70 + 12 + 64
    log_ = rcpt.ReceiptLog(tmp_path)
    log_.append("cam1", WALL0, raw)
    path = log_.path("cam1", WALL0)
    torn = rcpt.frame_record(raw)[:40]
    path.write_bytes(path.read_bytes() + torn)  # torn by a power cut
    assert log_.read("cam1", _day()) == [raw]
    later = _receipt(csu, sequence=8)
    with caplog.at_level(logging.WARNING, logger="edge.vault.receipt"):
        rcpt.ReceiptLog(tmp_path).append("cam1", WALL0, later)  # a new run cuts the torn one off
    assert log_.read("cam1", _day()) == [raw, later]
    assert path.read_bytes() == rcpt.frame_record(raw) + rcpt.frame_record(later)
    [kept] = (tmp_path / "quarantine").glob("*-cam1-*.rcl.tail")
    assert kept.read_bytes() == torn
    assert "torn last record (40 bytes" in caplog.text and str(kept) in caplog.text


def test_a_later_receipt_anchors_the_segments_its_chain_goes_through(tmp_path: Path) -> None:
    csu = ed25519.Ed25519PrivateKey.generate()
    recipient = vault_support.make_csu(tmp_path / "csu")
    vault = vault_support.open_vault(tmp_path / "data", recipient)
    for n in range(4):
        vault.write(vault_support.fake_segment("cam1", n))
    vault.close()
    paths = sorted(layout.vault_dir(tmp_path / "data").glob("segments/cam1/*/*/*.seg"))
    segments = [fmt.parse_segment(p.read_bytes()) for p in paths]
    receipt = rcpt.parse_receipt(_receipt(csu, sequence=2, chain_hash=segments[2].chain_hash))
    covered = rcpt.coverage(segments, [receipt])
    assert [c.receipt is receipt for c in covered] == [True, True, True, False]
    assert [c.direct for c in covered] == [False, False, True, False]


def test_retention_removes_receipts_with_the_days_of_their_segments(tmp_path: Path) -> None:
    day_ns = 86_400 * 10**9
    csu = ed25519.Ed25519PrivateKey.generate()
    recipient = vault_support.make_csu(tmp_path / "csu")
    now = [WALL0]
    vault = vault_support.open_vault(
        tmp_path / "data", recipient, retention_days=1, clock=lambda: now[0]
    )
    vault.write(vault_support.fake_segment("cam1", 0))
    vault.write(vault_support.fake_segment("cam1", 1, t0=WALL0 + 2 * day_ns))
    for seq, start in ((0, WALL0), (1, WALL0 + 2 * day_ns + 2 * 10**9)):
        vault.receipts.append("cam1", start, _receipt(csu, sequence=seq))
    now[0] = WALL0 + 2 * day_ns + 3600 * 10**9  # segment 0 is past retention, 1 is not
    vault.purge()
    days = {rcpt.day_of(WALL0), rcpt.day_of(WALL0 + 2 * day_ns)}
    left = [rcpt.parse_receipt(r).sequence for r in vault.receipts.read("cam1", days)]
    vault.close()
    assert left == [1]


def test_edged_keeps_the_receipts_of_what_it_delivered(tmp_path: Path) -> None:
    """A real edged with ``uplink.csu_receipt_key``, a real receiver with its receipt key:
    every segment the CSU holds has its receipt in the unit's vault, and it checks."""
    import time as time_mod

    from edge.identity.unitkeys import load_or_create_signing_key

    from .test_uplink_e2e import run_edged, unit_config

    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    csu.config.write_text('receipt_key_file = "keys/receipt-key.pem"\n' + csu.config.read_text())
    data = tmp_path / "unit"
    unit_files(csu, "test-unit", data)
    csu.enroll("test-unit", load_or_create_signing_key(keys_dir_of(data)))
    receipt_pub = csu.directory / "keys" / "receipt-key.pub.pem"
    config = unit_config(
        tmp_path / "edge.toml", data, csu, port,
        uplink=f'ca_file = "{data / "keys" / "ca.pem"}"\n'
        f'csu_receipt_key = "{receipt_pub}"\nbackoff_initial_s = 0.2\nbackoff_max_s = 1.0',
    )  # fmt: skip
    csu.start()
    try:
        run = run_edged(config, 6.0)
        assert run.returncode == 0, run.stderr[-3000:]
    finally:
        csu.stop()
    stored = csu.stored("test-unit", "cam1")
    csu_key = load_public_pem(receipt_pub.read_bytes(), origin="csu")
    today = {rcpt.day_of(time_mod.time_ns()), rcpt.day_of(time_mod.time_ns() - 60 * 10**9)}
    kept = rcpt.ReceiptLog(layout.vault_dir(data)).read("cam1", today)
    receipts = [rcpt.verify_receipt(raw, csu_key, device_id="test-unit") for raw in kept]
    assert len(stored) >= 2 and {r.sequence for r in receipts} == set(stored)
    assert all(r.chain_hash == fmt.sha256(stored[r.sequence]) for r in receipts)


def test_a_segment_delivered_again_keeps_its_first_receipt_only(tmp_path: Path) -> None:
    """A delivery whose answer was lost is sent again and receipted again (a later CSU time):
    the log keeps the first, earlier receipt, in this run and the next."""
    csu = ed25519.Ed25519PrivateKey.generate()
    first, again = _receipt(csu), _receipt(csu, csu_time_ns=WALL0 + 5 * 10**9)
    other = _receipt(csu, sequence=8)
    rewritten = _receipt(csu, chain_hash=b"x" * 32)  # other bytes under #7: kept, and seen
    log_ = rcpt.ReceiptLog(tmp_path)
    for raw in (first, again, other, first):
        log_.append("cam1", WALL0, raw)
    rcpt.ReceiptLog(tmp_path).append("cam1", WALL0, again)  # next run: read back, not added
    rcpt.ReceiptLog(tmp_path).append("cam1", WALL0, rewritten)
    assert log_.read("cam1", _day()) == [first, other, rewritten]
