"""Tampering: one flipped bit anywhere, a deleted, reordered or duplicated segment.

``edgectl verify`` (on the unit) and ``edge-csu open`` (on a bundle) must both notice and say
what happened.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli.main import main as edgectl
from edge.csu.main import main as edge_csu
from edge.errors import IntegrityError
from edge.identity.unitkeys import (
    keys_dir_of,
    load_public_pem,
    load_signing_key,
    load_signing_public_key,
)
from edge.vault import layout
from edge.vault.bundle import export_bundle, open_bundle, verify_bundle
from edge.vault.verify import FindingKind, verify_vault

from .vault_support import Csu, encoded_segments, fake_segment, make_csu, open_vault

N = 8


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Csu]:
    base = tmp_path_factory.mktemp("tamper")
    data = base / "data"
    csu = make_csu(base / "csu")
    vault = open_vault(data, csu, device_id="demo-unit", epoch_seconds=0.0)
    for n in range(N):
        vault.write(fake_segment("cam1", n))
    vault.close()
    return data, csu


def _copy(recorded: tuple[Path, Csu], tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(recorded[0], data)
    return data


def _segfiles(data: Path) -> list[Path]:
    return sorted(layout.vault_dir(data).glob("segments/cam1/*/*/*.seg"))


def _kinds(data: Path) -> set[FindingKind]:
    report = verify_vault(
        layout.vault_dir(data), load_signing_public_key(keys_dir_of(data)), device_id="demo-unit"
    )
    return {f.kind for f in report.findings}


def _flip(path: Path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset % len(raw)] ^= 0x10
    path.write_bytes(bytes(raw))


def test_intact_vault_verifies(recorded: tuple[Path, Csu], tmp_path: Path) -> None:
    data = _copy(recorded, tmp_path)
    assert _kinds(data) == set()
    assert edgectl(["verify", "--demo", "--data-dir", str(data)]) == 0


@pytest.mark.parametrize("where", [0, 5, 20, 60, 90, 120, 200, 700, 1500, -40, -1])
def test_bit_flip_in_segment_is_altered(
    where: int, recorded: tuple[Path, Csu], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _copy(recorded, tmp_path)
    _flip(_segfiles(data)[3], where)
    assert FindingKind.ALTERED in _kinds(data)
    capsys.readouterr()
    assert edgectl(["verify", "--demo", "--data-dir", str(data)]) == 1
    out = capsys.readouterr().out
    assert "altered: cam1#3" in out and "FAILED" in out


@pytest.mark.parametrize("where", [0, 10, 40, 100, -1])
def test_bit_flip_in_envelope(where: int, recorded: tuple[Path, Csu], tmp_path: Path) -> None:
    data = _copy(recorded, tmp_path)
    env = sorted(layout.vault_dir(data).rglob("*.env"))[2]
    _flip(env, where)
    assert FindingKind.ENVELOPE in _kinds(data)


def test_deleted_segment_is_missing_not_purged(
    recorded: tuple[Path, Csu], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _copy(recorded, tmp_path)
    _segfiles(data)[4].unlink()
    assert _kinds(data) == {FindingKind.MISSING}
    assert edgectl(["verify", "--demo", "--data-dir", str(data)]) == 1
    assert "sequences 4..4 missing (not purged by retention)" in capsys.readouterr().out


def test_deleted_last_segment_is_missing(recorded: tuple[Path, Csu], tmp_path: Path) -> None:
    data = _copy(recorded, tmp_path)
    _segfiles(data)[-1].unlink()
    assert _kinds(data) == {FindingKind.MISSING}


def test_reordered_segments(recorded: tuple[Path, Csu], tmp_path: Path) -> None:
    data = _copy(recorded, tmp_path)
    a, b = _segfiles(data)[2:4]
    ra, rb = a.read_bytes(), b.read_bytes()
    a.write_bytes(rb)
    b.write_bytes(ra)
    kinds = _kinds(data)
    assert kinds & {FindingKind.DUPLICATE, FindingKind.ALTERED}
    assert FindingKind.MISSING in kinds


def test_duplicated_segment(
    recorded: tuple[Path, Csu], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _copy(recorded, tmp_path)
    seg = _segfiles(data)[3]
    shutil.copy(seg, seg.with_name(seg.name.replace("0000000003", "0000000009")))
    assert _kinds(data) == {FindingKind.DUPLICATE}
    assert edgectl(["verify", "--demo", "--data-dir", str(data), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["findings"][0]["kind"] == "duplicate"


def test_replaced_by_foreign_signed_segment(recorded: tuple[Path, Csu], tmp_path: Path) -> None:
    """A segment from another unit (valid signature of another key) is not accepted."""
    other = tmp_path / "other"
    vault = open_vault(other, recorded[1], device_id="demo-unit")
    for n in range(4):
        vault.write(fake_segment("cam1", n))
    vault.close()
    data = _copy(recorded, tmp_path)
    shutil.copy(_segfiles(other)[3], _segfiles(data)[3])
    assert FindingKind.ALTERED in _kinds(data)


# --- bundles -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Csu, int]:
    base = tmp_path_factory.mktemp("bundle")
    data = base / "data"
    csu = make_csu(base / "csu")
    segments = encoded_segments(seconds=5.0)
    vault = open_vault(data, csu, device_id="demo-unit", epoch_seconds=0.0)
    for seg in segments:
        vault.write(seg)
    vault.close()
    out = base / "bundle"
    export_bundle(
        data,
        start_ns=segments[0].start_wall_ns,
        end_ns=segments[-1].end_wall_ns,
        case="PV-1",
        out_dir=out,
        device_id="demo-unit",
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    return out, csu, len(segments)


def _unit_key(bundle_dir: Path) -> Path:
    """The exporting unit's public key, pinned when opening (the trust anchor)."""
    return bundle_dir.parent / "data" / "keys" / "unit-signing.pub.pem"


def _bundle_copy(bundle: tuple[Path, Csu, int], tmp_path: Path) -> Path:
    dest = tmp_path / "b"
    shutil.copytree(bundle[0], dest)
    return dest


def _seg(b: Path, n: int) -> Path:
    return b / "segments" / "cam1" / f"{n:010d}.seg"


def _remove_manifest_entry(b: Path) -> None:
    manifest = json.loads((b / "manifest.json").read_text())
    manifest["segments"] = [s for s in manifest["segments"] if s["sequence"] != 2]
    (b / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    _seg(b, 2).unlink()


def _swap(b: Path) -> None:
    x, y = _seg(b, 1), _seg(b, 2)
    rx, ry = x.read_bytes(), y.read_bytes()
    x.write_bytes(ry)
    y.write_bytes(rx)


CASES: dict[str, tuple[Callable[[Path], object], str]] = {
    "segment header bit": (lambda b: _flip(_seg(b, 2), 30), r"0000000002\.seg: digest differs"),
    "segment payload bit": (lambda b: _flip(_seg(b, 2), 5000), "digest differs"),
    "segment signature bit": (lambda b: _flip(_seg(b, 2), -3), "digest differs"),
    "envelope bit": (
        lambda b: _flip(next((b / "epochs" / "cam1").iterdir()), 50),
        r"\.env: digest differs",
    ),
    "manifest bit": (lambda b: _flip(b / "manifest.json", 300), "manifest"),
    "manifest first byte": (lambda b: _flip(b / "manifest.json", 0), "manifest.json: not JSON"),
    "signature bit": (lambda b: _flip(b / "manifest.sig", 7), r"manifest\.sig: bad signature"),
    "deleted segment": (lambda b: _seg(b, 2).unlink(), "listed in the manifest but missing"),
    "deleted segment and entry": (_remove_manifest_entry, "bad signature"),
    "reordered segments": (_swap, "digest differs from the manifest"),
    "duplicated segment": (
        lambda b: shutil.copy(_seg(b, 2), _seg(b, 9)),
        "not listed in the manifest",
    ),
    "deleted manifest": (lambda b: (b / "manifest.json").unlink(), "manifest.json missing"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bundle_tamper_refused(
    case: str,
    bundle: tuple[Path, Csu, int],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    b = _bundle_copy(bundle, tmp_path)
    mutate, message = CASES[case]
    pinned = load_public_pem(_unit_key(bundle[0]).read_bytes(), origin="unit")
    mutate(b)
    out = tmp_path / "clip.mp4"
    with pytest.raises(IntegrityError, match=message):
        open_bundle(b, bundle[1].private(), out, unit_public_key=pinned)
    assert not out.exists()
    capsys.readouterr()
    pin = ["--unit-key", str(_unit_key(bundle[0]))]
    code = edge_csu(["open", str(b), "--key", str(bundle[1].key), "--out", str(out), *pin])
    assert code == 1
    assert "REFUSED" in capsys.readouterr().out
    assert not out.exists()


def test_intact_bundle_opens(bundle: tuple[Path, Csu, int], tmp_path: Path) -> None:
    b = _bundle_copy(bundle, tmp_path)
    out = tmp_path / "clip.mp4"
    pin = ["--unit-key", str(_unit_key(bundle[0]))]
    assert edge_csu(["open", str(b), "--key", str(bundle[1].key), "--out", str(out), *pin]) == 0
    assert out.stat().st_size > 0


def test_bundle_from_another_unit_refused_when_pinned(
    bundle: tuple[Path, Csu, int], tmp_path: Path
) -> None:
    other = tmp_path / "other-unit"
    from edge.identity.unitkeys import load_or_create_signing_key

    load_or_create_signing_key(other)
    code = edge_csu(
        [
            "open",
            str(bundle[0]),
            "--key",
            str(bundle[1].key),
            "--out",
            str(tmp_path / "x.mp4"),
            "--unit-key",
            str(other / "unit-signing.pub.pem"),
        ]
    )
    assert code == 1


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("small-bundle")
    data = base / "data"
    vault = open_vault(data, make_csu(base / "csu"), device_id="demo-unit", epoch_seconds=0.0)
    for n in range(4):
        vault.write(fake_segment("cam1", n, size=300))
    vault.close()
    out = base / "bundle"
    export_bundle(
        data,
        start_ns=0,
        end_ns=2**62,
        case="PV-2",
        out_dir=out,
        device_id="demo-unit",
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    return out


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(which=st.integers(0, 10_000), bit=st.integers(0, 10**9))
def test_any_bit_flip_anywhere_in_a_bundle_is_refused(
    small_bundle: Path, which: int, bit: int
) -> None:
    files = sorted(p for p in small_bundle.rglob("*") if p.is_file())
    path = files[which % len(files)]
    original = path.read_bytes()
    flipped = bytearray(original)
    flipped[(bit // 8) % len(flipped)] ^= 1 << (bit % 8)
    path.write_bytes(bytes(flipped))
    pinned = load_public_pem(_unit_key(small_bundle).read_bytes(), origin="unit")
    try:
        with pytest.raises(IntegrityError):
            verify_bundle(small_bundle, unit_public_key=pinned)
    finally:
        path.write_bytes(original)
    verify_bundle(small_bundle, unit_public_key=pinned)  # restored: accepted again
