"""``edge-csu verify``: seal, certificate at the recording date, chain and losses, mask
commitments, receipts, and the per-second map; exit 0 / 3 / 1 as the bundle deserves.

A unit enrolled with the city's CA before it recorded four 2 s segments (the masks changed in
the third, the CSU receipted the first three) exports a bundle; the verifier is run as a person
would, and its JSON map is checked second by second.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.config import PrivacyMaskConfig
from edge.csu.ca import VideoCA, cert_pem
from edge.csu.main import main as edge_csu
from edge.identity import enrolment
from edge.identity.unitkeys import (
    keys_dir_of,
    load_signing_key,
    load_signing_public_key,
    public_pem,
)
from edge.privacy.commitment import MASK_SET_ACTION, Committed, MaskCommitment, MaskSet
from edge.vault import format as fmt
from edge.vault import layout
from edge.vault import receipt as rcpt
from edge.vault.bundle import export_bundle

from .vault_support import SEG_NS, fake_segment, make_csu, open_vault
from .video_support import WALL0

UNIT = "unit-1"
RECORDED = dt.datetime.fromtimestamp(WALL0 / 1e9, dt.UTC)
T0 = WALL0 // 10**9
WINDOW = PrivacyMaskConfig(name="window", points=[(0.1, 0.1), (0.4, 0.1), (0.4, 0.4)])
DOOR = PrivacyMaskConfig(name="door", points=[(0.6, 0.5), (0.9, 0.5), (0.9, 0.95)])
VERSION = b"v" * 32
CHANGE_NS = WALL0 + 2 * SEG_NS + 1_200_000_000  # in the third segment, at second 5


@pytest.fixture
def unit(tmp_path: Path) -> tuple[Path, Path, Path, MaskSet, MaskSet]:
    """(data dir, CA root file, CSU receipt public key file, mask sets before and after)."""
    ca = VideoCA.init(tmp_path / "ca", now=RECORDED - dt.timedelta(days=30))
    data = tmp_path / "data"
    vault = open_vault(data, make_csu(tmp_path / "csu"), device_id=UNIT)
    before = MaskSet.of("cam1", [WINDOW], 160, 120)
    after = MaskSet.of("cam1", [WINDOW, DOOR], 160, 120)
    vault.audit.append(MASK_SET_ACTION, before.record(VERSION))
    vault.audit.append(MASK_SET_ACTION, after.record(VERSION))
    for n in range(4):
        seg = fake_segment("cam1", n)
        entries = [MaskCommitment(seg.start_wall_ns, Committed(before.digest, VERSION))]
        if n == 2:
            entries.append(MaskCommitment(CHANGE_NS, Committed(after.digest, VERSION)))
        if n == 3:
            entries = [MaskCommitment(seg.start_wall_ns, Committed(after.digest, VERSION))]
        vault.write(dataclasses.replace(seg, masks=tuple(entries)))
    csu = ed25519.Ed25519PrivateKey.generate()
    for path in _segment_files(data)[:3]:
        h = fmt.parse_segment(path.read_bytes()).header
        vault.receipts.append(
            "cam1",
            h.start_wall_ns,
            rcpt.sign_receipt(
                csu,
                device_id=UNIT,
                camera_id="cam1",
                sequence=h.sequence,
                chain_hash=fmt.sha256(path.read_bytes()),
                # The CSU held each a few seconds after it ended; #2 "ended" 30 s after the
                # CSU held it: the unit's clock ran ahead.
                csu_time_ns=h.end_wall_ns + (3 if h.sequence != 2 else -30) * 10**9,
            ),
        )
    vault.close()
    keys = keys_dir_of(data)
    enrolment.enrol(keys, UNIT, UNIT)
    cert = ca.certify(
        UNIT, load_signing_public_key(keys), not_before=RECORDED - dt.timedelta(days=1), days=365
    )
    enrolment.install_certificates(
        keys, cert_pem(cert), UNIT, ca_data=ca.chain_pem, now=cert.not_valid_before_utc
    )
    root = tmp_path / "root.pem"
    root.write_bytes(cert_pem(ca.root_cert))
    receipt_pub = tmp_path / "receipt.pub.pem"
    receipt_pub.write_bytes(public_pem(csu.public_key()))
    return data, root, receipt_pub, before, after


def _segment_files(data: Path) -> list[Path]:
    return sorted(layout.vault_dir(data).glob("segments/cam1/*/*/*.seg"))


def _export(data: Path, out: Path) -> Path:
    export_bundle(
        data,
        start_ns=WALL0,
        end_ns=WALL0 + 8 * 10**9,
        case="PV-12",
        out_dir=out,
        device_id=UNIT,
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    return out


def _verify(
    capsys: pytest.CaptureFixture[str], bundle: Path, root: Path, *extra: str
) -> tuple[int, dict[str, object]]:
    code = edge_csu(["verify", str(bundle), "--ca", str(root), *extra, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _states(report: dict[str, object]) -> list[str]:
    seconds = report["seconds"]
    assert isinstance(seconds, list)
    assert [s["t"] - T0 for s in seconds] == list(range(len(seconds)))
    return [s["state"] for s in seconds]


def test_an_intact_bundle_is_authentic_second_by_second(
    unit: tuple[Path, Path, Path, MaskSet, MaskSet],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, root, receipt_pub, before, after = unit
    bundle = _export(data, tmp_path / "bundle")
    code, report = _verify(capsys, bundle, root, "--receipt-key", str(receipt_pub))
    assert code == 0 and report["verdict"] == "authentic", report["reasons"]
    assert _states(report) == ["authentic"] * 8
    seconds = report["seconds"]
    assert isinstance(seconds, list)
    # The masks of each second; the change at 5.2 s shows in second 5 only.
    old, new = before.digest.hex(), after.digest.hex()
    assert [s["masks"] for s in seconds] == [[old]] * 5 + [[old, new]] + [[new]] * 2
    mask_sets = report["mask_sets"]
    assert isinstance(mask_sets, dict)
    assert [m["name"] for m in mask_sets[new]["masks"]] == ["window", "door"]
    # Receipts anchor the first three segments (six seconds), not the last.
    assert [s["receipt_ns"] is not None for s in seconds] == [True] * 6 + [False] * 2
    assert "fleet CA (evidence certificate" in str(report["trust"])
    facts = report["facts"]
    assert isinstance(facts, list)
    warnings = [f for f in facts if str(f).startswith("WARNING")]
    assert warnings == ["WARNING cam1: #2 ends 30.0 s after the CSU receipted it: the unit's "
                        "clock ran ahead of the CSU's (recording times are that much too late, "
                        "at least)"]  # fmt: skip
    # What a person reads.
    assert edge_csu(["verify", str(bundle), "--ca", str(root)]) == 0
    text = capsys.readouterr().out
    assert f"{bundle}: AUTHENTIC" in text
    assert "cam1 2026-07-25T17:20:00+00:00 → 2026-07-25T17:20:08+00:00 (8 s): authentic" in text
    assert "receipts: 3 carried, not checked (no --receipt-key)" in text


def test_a_segment_left_out_makes_the_bundle_partial(
    unit: tuple[Path, Path, Path, MaskSet, MaskSet],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, root, _pub, _before, _after = unit
    _segment_files(data)[1].unlink()  # deleted on the unit: the export declares it
    bundle = _export(data, tmp_path / "bundle")
    code, report = _verify(capsys, bundle, root)
    assert code == 3 and report["verdict"] == "partial"
    assert _states(report) == ["authentic"] * 2 + ["missing"] * 2 + ["authentic"] * 4
    assert "cam1 #1" in str(report["reasons"])


def test_an_altered_segment_is_not_authentic_at_its_seconds(
    unit: tuple[Path, Path, Path, MaskSet, MaskSet],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, root, _pub, _before, _after = unit
    bundle = _export(data, tmp_path / "bundle")
    seg = bundle / "segments" / "cam1" / f"{2:010d}.seg"
    raw = bytearray(seg.read_bytes())
    raw[len(raw) // 2] ^= 1
    seg.write_bytes(bytes(raw))
    code, report = _verify(capsys, bundle, root)
    assert code == 1 and report["verdict"] == "not-authentic"
    assert "digest differs" in str(report["reasons"])
    assert _states(report) == ["authentic"] * 4 + ["not-authentic"] * 2 + ["authentic"] * 2


@pytest.mark.parametrize("case", ["forged receipt", "another CA", "manifest altered"])
def test_whatever_fails_makes_the_verdict_not_authentic(
    case: str,
    unit: tuple[Path, Path, Path, MaskSet, MaskSet],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data, root, receipt_pub, _before, _after = unit
    bundle = _export(data, tmp_path / "bundle")
    extra = ["--receipt-key", str(receipt_pub)]
    if case == "forged receipt":
        receipt_pub.write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate().public_key()))
    elif case == "another CA":
        other = VideoCA.init(tmp_path / "other", now=RECORDED - dt.timedelta(days=30))
        root.write_bytes(cert_pem(other.root_cert))
    else:
        manifest = bundle / "manifest.json"
        manifest.write_text(manifest.read_text().replace('"PV-12"', '"PV-13"'))
    code, report = _verify(capsys, bundle, root, *extra)
    assert code == 1 and report["verdict"] == "not-authentic", report
    # Nothing can be trusted when the seal or the certificate fails: no second is authentic.
    if case != "forged receipt":
        assert set(_states(report)) == {"not-authentic"}


def test_verify_needs_a_trust_anchor(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "b").mkdir()
    assert edge_csu(["verify", str(tmp_path / "b")]) == 2
    assert "--ca ROOT" in capsys.readouterr().err
