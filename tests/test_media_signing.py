"""ONVIF Media Signing: the SEIs the recording path adds, judged GOP by GOP.

A real libx264 stream of six one-second GOPs (``IPPPPPPPPP`` each) is signed by the encoder as
edged records it, written to MP4 by FFmpeg and read back by PyAV; then it is altered the way
the Axis/ONVIF test suites describe cases, and the validator must say, per GOP, what was done:
``A`` authentic, ``M`` missing, ``U`` unsigned, ``N`` not authentic, ``P`` pending (the
dangling end: the last GOP, whose signature is after the end of the file). The reference
implementation's own sample files (tests/data/onvif-media-signing, MIT) must verify too.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import EncoderConfig
from edge.csu.main import main as edge_csu
from edge.errors import IntegrityError
from edge.identity.unitkeys import public_pem
from edge.video import mediasigning as ms
from edge.video import msvalidate as mv
from edge.video.encoder import SegmentEncoder

from .conftest import tool
from .video_support import WALL0, moving_frames

DATA = Path(__file__).parent / "data" / "onvif-media-signing"
FPS = 10.0
GOP = 10  # frames per one-second segment
KEY = ed25519.Ed25519PrivateKey.generate()
LETTER = {
    mv.GopState.AUTHENTIC: "A",
    mv.GopState.MISSING: "M",
    mv.GopState.UNSIGNED: "U",
    mv.GopState.NOT_AUTHENTIC: "N",
    mv.GopState.PENDING: "P",
}


def _sample_sei() -> bytes:
    """A signed SEI of the reference's sample file (with its certificate chain)."""
    for au in mv.read_access_units(DATA / "test_signed_h264.mp4"):
        for unit in au.units:
            if ms.parse_sei(unit) is not None:
                return unit
    raise AssertionError("the sample file holds no SEI")


_SAMPLE_SEI = _sample_sei()


def _identity(key: ed25519.Ed25519PrivateKey = KEY) -> ms.SigningIdentity:
    return ms.SigningIdentity(key.sign, ms.ED25519_OID, None, "test", "unit-1", "edge")


def _record(path: Path, frames: int = 6 * GOP) -> ms.MediaSigner:
    signer = ms.MediaSigner(_identity())
    enc = SegmentEncoder(
        "cam1", 160, 120, FPS, EncoderConfig(segment_seconds=1.0, preset="ultrafast"), signer=signer
    )
    segments = []
    for frame in moving_frames(160, 120, frames, FPS):
        segments += enc.encode(frame)
    segments += enc.flush()
    path.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    return signer


@pytest.fixture(scope="module")
def signed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ms") / "signed.mp4"
    _record(path)
    return path


def _verdicts(aus: list[mv.AccessUnit], key: ed25519.Ed25519PublicKey | None = None) -> str:
    report = mv.validate(aus, pinned=key or KEY.public_key())
    return "".join(LETTER[g.state] for g in report.gops)


def _without_seis(au: mv.AccessUnit) -> mv.AccessUnit:
    return mv.AccessUnit(tuple(u for u in au.units if ms.parse_sei(u) is None), au.pts_s)


def _flip_p_frame(aus: list[mv.AccessUnit]) -> list[mv.AccessUnit]:
    out = list(aus)
    target = out[2 * GOP + 4]  # a P picture of GOP 2
    units = list(target.units)
    unit = bytearray(units[-1])
    unit[len(unit) // 2] ^= 0x10
    units[-1] = bytes(unit)
    out[2 * GOP + 4] = mv.AccessUnit(tuple(units), target.pts_s)
    return out


def _drop_gop(aus: list[mv.AccessUnit]) -> list[mv.AccessUnit]:
    # The pictures of GOP 2 cut out; the signing SEIs of its first access unit stay (they
    # prove GOP 1), as an editor removing frames would leave them.
    kept_seis = _only_seis(aus[2 * GOP])
    return [*aus[: 2 * GOP], kept_seis, *aus[3 * GOP :]]


def _only_seis(au: mv.AccessUnit) -> mv.AccessUnit:
    return mv.AccessUnit(tuple(u for u in au.units if ms.parse_sei(u) is not None), au.pts_s)


def _swap_gops(aus: list[mv.AccessUnit]) -> list[mv.AccessUnit]:
    g2, g3 = aus[2 * GOP : 3 * GOP], aus[3 * GOP : 4 * GOP]
    return [*aus[: 2 * GOP], *g3, *g2, *aus[4 * GOP :]]


CASES: list[tuple[str, Callable[[list[mv.AccessUnit]], list[mv.AccessUnit]], str]] = [
    # name, what is done to "IPPPPPPPPP" x 6, verdict per GOP (the last one is the dangling
    # end, pending: its SEI would open the next GOP, which was never recorded)
    ("intact", lambda a: a, "AAAAAP"),
    ("flip a byte in a P frame of GOP 2", _flip_p_frame, "AANAAP"),
    ("drop GOP 2", _drop_gop, "AAAAP"),
    ("swap GOPs 2 and 3", _swap_gops, "AANNAP"),
    ("cut mid-GOP: start at frame 5 of GOP 0", lambda a: a[5:], "MAAAAP"),
    ("cut mid-GOP: end at frame 5 of GOP 4", lambda a: a[: 4 * GOP + 5], "AAAAP"),
    ("strip every SEI", lambda a: [_without_seis(au) for au in a], "UUUUUU"),
    (
        "strip the SEIs of GOPs 3-5",
        lambda a: [*a[: 3 * GOP], *map(_without_seis, a[3 * GOP :])],
        "AAUUUP",
    ),
    ("keep only GOPs 1-3 (a clip cut on GOP boundaries)", lambda a: a[GOP : 4 * GOP], "AAP"),
    (
        "GOPs 1-3 and the first access unit of GOP 4 (its SEI signs GOP 3)",
        lambda a: a[GOP : 4 * GOP + 1],
        "AAAP",
    ),
]


@pytest.mark.parametrize(("name", "alter", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_alteration_shows_in_the_verdict_of_its_gop(
    signed: Path,
    name: str,
    alter: Callable[[list[mv.AccessUnit]], list[mv.AccessUnit]],
    expected: str,
) -> None:
    aus = mv.read_access_units(signed)
    assert len(aus) == 6 * GOP
    assert _verdicts(alter(aus)) == expected, name


def test_a_dropped_gop_is_reported_missing_at_its_signed_time(signed: Path) -> None:
    report = mv.validate(_drop_gop(mv.read_access_units(signed)), pinned=KEY.public_key())
    assert report.missing == [(WALL0 + 2 * 10**9, WALL0 + 3 * 10**9, 1)]


def test_another_key_makes_every_signed_gop_not_authentic(signed: Path) -> None:
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    assert _verdicts(mv.read_access_units(signed), other) == "NNNNNP"


def test_the_sei_bytes(signed: Path) -> None:
    """FORMATS.md: user data unregistered, the ONVIF UUID, reserved byte, the TLVs in the
    reference's order, a signature over the SHA-256 of the document."""
    aus = mv.read_access_units(signed)
    first, gop0 = aus[0], aus[GOP]
    ours = [s for s in (ms.parse_sei(u) for u in first.units) if s is not None]
    assert len(ours) == 1  # beside libx264's own SEI, which is not ours
    cert = ours[0]
    assert cert.certificate_sei
    assert cert.raw[:2] == b"\x06\x05" and ms.UUID in cert.raw[:24]
    assert sorted(cert.tlvs) == [ms.TAG_SIGNATURE, ms.TAG_CRYPTO, ms.TAG_VENDOR]
    assert cert.hash_oid() == ms.SHA256_OID and cert.signing_oid() == ms.ED25519_OID
    sei = ms.parse_sei(gop0.units[0])
    assert sei is not None and not sei.certificate_sei and sei.signed
    info = sei.general()
    assert info.version == 2 and info.counter == 0 and info.linked_hash == bytes(32)
    assert ms.unix_ns(info.start_filetime) == WALL0
    assert ms.unix_ns(info.end_filetime or 0) == WALL0 + 10**9
    listed = sei.hash_list()
    slices = sum(ms.nal_type(u) in (ms.NAL_IDR, ms.NAL_SLICE) for au in aus[:GOP] for u in au.units)
    assert listed is not None and info.nal_count == len(listed) == slices >= GOP
    KEY.public_key().verify(sei.signature(), sei.document_hash)
    # The SEIs sit right before the picture of the next GOP's IDR, in its access unit.
    types = [ms.nal_type(u) for u in gop0.units]
    assert types[:2] == [ms.NAL_SEI, ms.NAL_SEI] and set(types[2:]) == {ms.NAL_IDR}


def test_reference_sample_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The reference implementation's signed file is authentic under its CA (checked at a date
    its certificate was valid: the file's times are not UTC); one flipped byte breaks it; its
    unsigned twin is unsigned."""
    ca = x509.load_pem_x509_certificates((DATA / "ca.pem").read_bytes())
    when = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    aus = mv.read_access_units(DATA / "test_signed_h264.mp4")
    report = mv.validate(aus, anchors=ca, recorded_at=when)
    assert "CN=Test camera" in report.signer and not report.problems
    assert [g.state for g in report.gops] == [mv.GopState.AUTHENTIC] * 5
    flipped = list(aus)
    k = max(range(70, 120), key=lambda n: len(aus[n].units[-1]))  # a P picture of GOP 1
    units = list(flipped[k].units)
    units[-1] = units[-1][:100] + bytes([units[-1][100] ^ 1]) + units[-1][101:]
    flipped[k] = mv.AccessUnit(tuple(units), flipped[k].pts_s)
    states = [g.state for g in mv.validate(flipped, anchors=ca, recorded_at=when).gops]
    assert (
        states == [mv.GopState.AUTHENTIC, mv.GopState.NOT_AUTHENTIC] + [mv.GopState.AUTHENTIC] * 3
    )
    # Through the command, as a person runs it; a byte flipped in the file itself.
    ca_file = str(DATA / "ca.pem")
    args = ["verify", str(DATA / "test_signed_h264.mp4"), "--ca", ca_file]
    assert edge_csu([*args, "--recorded-at", "2025-01-01", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["verdict"] == "authentic"
    assert edge_csu([*args]) == 1  # today the camera's certificate has expired
    assert "was not valid at" in capsys.readouterr().out
    unsigned = ["verify", str(DATA / "test_h264.mp4"), "--ca", ca_file, "--json"]
    assert edge_csu(unsigned) == 1
    assert json.loads(capsys.readouterr().out)["verdict"] == "unsigned"


def test_a_flipped_byte_in_the_file_is_not_authentic_at_its_seconds(
    signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pub = tmp_path / "unit.pub.pem"
    pub.write_bytes(public_pem(KEY.public_key()))
    assert edge_csu(["verify", str(signed), "--unit-key", str(pub), "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "partial"  # the dangling last second
    states = [s["state"] for s in report["seconds"]]
    assert states == ["authentic"] * 5 + ["pending"]
    assert "dangling end" in str(report["reasons"])
    assert report["seconds"][0]["t"] == WALL0 // 10**9
    # A byte of GOP 3's data changed in the file (the middle of its IDR's slice data).
    aus = mv.read_access_units(signed)
    idr = next(u for u in aus[3 * GOP].units if ms.nal_type(u) == ms.NAL_IDR)
    raw = bytearray(signed.read_bytes())
    at = raw.index(idr) + len(idr) // 2
    raw[at] ^= 0x01
    altered = tmp_path / "altered.mp4"
    altered.write_bytes(bytes(raw))
    assert edge_csu(["verify", str(altered), "--unit-key", str(pub), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    states = [s["state"] for s in report["seconds"]]
    assert states == ["authentic"] * 3 + ["not-authentic"] + ["authentic"] + ["pending"]
    # FFmpeg still plays it: a signature does not change what a player sees.
    probe = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(signed)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert int(probe.stdout) == 6 * GOP


def test_edged_signs_what_it_records_and_the_opened_clip_verifies(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """End to end: a real edged records (1 s segments), the bundle is exported and opened with
    the CSU key, and the MP4 verifies GOP by GOP outside the bundle; all but the last GOP,
    whose SEI would open a segment never recorded, are authentic, and that one is pending."""
    from .daemon_util import export_and_open, running_edged, write_config

    data = tmp_path / "data"
    config = write_config(tmp_path / "edge.toml", data)
    with running_edged(config, tmp_path, "--run-for", "4") as (proc, _notify):
        assert proc.wait(timeout=60) == 0
    clip = export_and_open(data, config, tmp_path)
    pub = str(data / "keys" / "unit-signing.pub.pem")
    assert edge_csu(["verify", str(clip), "--unit-key", pub, "--json"]) == 3
    report = json.loads(capsys.readouterr().out)
    states = [s["state"] for s in report["seconds"]]
    assert states.count("authentic") >= 2 and states[-1] == "pending", states
    assert set(states) == {"authentic", "pending"}, states
    # The signed seconds are the recording's wall-clock seconds, not the clip's own timeline.
    assert abs(report["seconds"][0]["t"] - (clip.stat().st_mtime - len(states))) < 120


@pytest.mark.parametrize("media_key", ["unit", "foreign"])
def test_verify_with_the_key_checks_the_video_inside_a_bundle(
    media_key: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``edge-csu verify BUNDLE --key``: after decryption (in memory) each second's Media
    Signing verdict joins the map; video signed by another key than the bundle's is refused."""
    from edge.identity.unitkeys import keys_dir_of, load_signing_key
    from edge.vault.bundle import export_bundle

    from .vault_support import make_csu, open_vault

    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    unit_key = load_signing_key(keys_dir_of(data))
    key = unit_key if media_key == "unit" else ed25519.Ed25519PrivateKey.generate()
    enc = SegmentEncoder(
        "cam1",
        160,
        120,
        FPS,
        EncoderConfig(segment_seconds=1.0, preset="ultrafast"),
        signer=ms.MediaSigner(_identity(key)),
    )
    for frame in moving_frames(160, 120, 4 * GOP, FPS):
        for seg in enc.encode(frame):
            vault.write(seg)
    for seg in enc.flush():
        vault.write(seg)
    vault.close()
    bundle = tmp_path / "bundle"
    export_bundle(
        data,
        start_ns=WALL0,
        end_ns=WALL0 + 60 * 10**9,
        case="PV-5",
        out_dir=bundle,
        device_id="unit-1",
        signing_key=unit_key,
    )
    pin = str(keys_dir_of(data) / "unit-signing.pub.pem")
    args = ["verify", str(bundle), "--unit-key", pin, "--key", str(csu.key), "--json"]
    code = edge_csu(args)
    report = json.loads(capsys.readouterr().out)
    media = [s["media_signing"] for s in report["seconds"]]
    if media_key == "unit":
        assert code == 0 and report["verdict"] == "authentic", report["reasons"]
        assert media == ["authentic"] * 3 + ["pending"]  # the last GOP's SEI never came
    else:
        assert code == 1 and report["verdict"] == "not-authentic"
        assert media == ["not-authentic"] * 3 + ["pending"]
        assert "video's own signatures" in str(report["reasons"])


@pytest.fixture(scope="module")
def six_segments(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A vault holding six one-second segments (one GOP each) signed by the unit's key: the
    data directory, the CSU's private key, the unit's public key (PEM) to pin."""
    from edge.identity.unitkeys import keys_dir_of, load_signing_key

    from .vault_support import make_csu, open_vault

    where = tmp_path_factory.mktemp("six")
    csu = make_csu(where / "csu")
    data = where / "data"
    vault = open_vault(data, csu)
    enc = SegmentEncoder(
        "cam1",
        160,
        120,
        FPS,
        EncoderConfig(segment_seconds=1.0, preset="ultrafast"),
        signer=ms.MediaSigner(_identity(load_signing_key(keys_dir_of(data)))),
    )
    for frame in moving_frames(160, 120, 6 * GOP, FPS):
        for seg in enc.encode(frame):
            vault.write(seg)
    for seg in enc.flush():
        vault.write(seg)
    vault.close()
    return data, csu.key, str(keys_dir_of(data) / "unit-signing.pub.pem")


def _export_open(
    vault: tuple[Path, Path, str], out: Path, first_s: float, last_s: float
) -> tuple[Path, dict[str, Any], str]:
    """``edgectl export`` of [first_s, last_s) seconds into the recording, then ``edge-csu
    open``: the clip, the bundle's manifest, what open printed."""
    from edge.identity.unitkeys import keys_dir_of, load_signing_key
    from edge.vault.bundle import export_bundle

    data, csu_key, pin = vault
    bundle = out / "bundle"
    export_bundle(
        data,
        start_ns=WALL0 + int(first_s * 10**9),
        end_ns=WALL0 + int(last_s * 10**9),
        case="PV-17",
        out_dir=bundle,
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    clip = out / "clip.mp4"
    opened = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "open", str(bundle), "--key", str(csu_key),
         "--unit-key", pin, "--out", str(clip)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return clip, json.loads((bundle / "manifest.json").read_bytes()), opened.stdout


def _frames_decoded(clip: Path) -> int:
    """Frames FFmpeg decodes from ``clip``; any decoder complaint fails the test."""
    probe = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-count_frames", "-show_entries",
         "stream=nb_read_frames", "-of", "csv=p=0", str(clip)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert probe.stderr == "", probe.stderr
    decoded = subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", str(clip), "-f", "null", "-"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert decoded.stderr == "", decoded.stderr
    counts = {int(n) for n in probe.stdout.split()}  # MPEG-TS lists the stream per program too
    assert len(counts) == 1, probe.stdout
    return counts.pop()


def _verify_json(clip: Path, pin: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, Any]:
    code = edge_csu(["verify", str(clip), "--unit-key", pin, "--json"])
    return code, json.loads(capsys.readouterr().out)


def test_a_clip_opened_from_the_middle_of_a_recording_verifies_authentic(
    six_segments: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seconds 1.5-3.5 of six: the bundle carries segments 1-3 and, as its tail, segment 4,
    whose first access unit holds the SEI signing GOP 3; open moves that SEI into the clip's
    last frame. Every second verifies, exit 0; FFmpeg decodes exactly the 30 recorded frames.
    A copy cut with ``ffmpeg -c copy`` on a GOP boundary keeps what it holds verifiable: its
    last GOP, whose SEI was cut off, is pending."""
    clip, manifest, printed = _export_open(six_segments, tmp_path, 1.5, 3.5)
    assert [e["sequence"] for e in manifest["segments"]] == [1, 2, 3]
    assert [(e["camera"], e["sequence"]) for e in manifest["tail"]] == [("cam1", 4)]
    assert "taken from the next segment (#4)" in printed
    assert _frames_decoded(clip) == 3 * GOP  # the SEI is moved in, no picture is added
    pin = six_segments[2]
    code, report = _verify_json(clip, pin, capsys)
    assert code == 0 and report["verdict"] == "authentic", report["reasons"]
    assert [s["state"] for s in report["seconds"]] == ["authentic"] * 3
    assert report["seconds"][0]["t"] == WALL0 // 10**9 + 1
    # H.264 order: the moved SEI precedes the picture in the last access unit, so the stream
    # stays valid out of MP4 too (an SEI after the picture would begin an access unit without
    # one, which FFmpeg rejects once the clip is remuxed to MPEG-TS).
    last = mv.read_access_units(clip)[-1]
    kinds = [ms.nal_type(u) for u in last.units]
    assert kinds.index(ms.NAL_SEI) < kinds.index(ms.NAL_SLICE), kinds
    as_ts = tmp_path / "clip.ts"
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", str(clip), "-c", "copy", str(as_ts)], check=True
    )
    assert _frames_decoded(as_ts) == 3 * GOP
    # Cut on GOP boundaries with FFmpeg (no re-encoding): the first two GOPs, then the last two.
    head, tail = tmp_path / "head.mp4", tmp_path / "tail.mp4"
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-i", str(clip), "-t", "2", "-c", "copy", str(head)],
        check=True,
    )  # fmt: skip
    subprocess.run(
        [tool("ffmpeg"), "-v", "error", "-ss", "1", "-i", str(clip), "-c", "copy", str(tail)],
        check=True,
    )  # fmt: skip
    code, report = _verify_json(head, pin, capsys)
    assert code == 3 and report["verdict"] == "partial"
    assert [s["state"] for s in report["seconds"]] == ["authentic", "pending"]
    assert "dangling end" in str(report["reasons"])
    code, report = _verify_json(tail, pin, capsys)
    assert code == 0 and [s["state"] for s in report["seconds"]] == ["authentic"] * 2
    assert report["seconds"][0]["t"] == WALL0 // 10**9 + 2


def test_a_clip_ending_at_the_newest_segment_shows_its_dangling_end(
    six_segments: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Seconds 3.5 to the end: nothing was recorded after segment 5, so no tail; the last GOP
    is pending (distinct from unsigned and not authentic), the verdict partial, exit 3."""
    clip, manifest, printed = _export_open(six_segments, tmp_path, 3.5, 60)
    assert [e["sequence"] for e in manifest["segments"]] == [3, 4, 5]
    assert manifest["tail"] == []
    assert "stays pending" in printed
    assert _frames_decoded(clip) == 3 * GOP
    code, report = _verify_json(clip, six_segments[2], capsys)
    assert code == 3 and report["verdict"] == "partial"
    assert [s["state"] for s in report["seconds"]] == ["authentic", "authentic", "pending"]
    assert [r for r in report["reasons"] if r.startswith("dangling end")], report["reasons"]


def test_a_tail_that_does_not_continue_the_range_is_refused(
    six_segments: tuple[Path, Path, str], tmp_path: Path
) -> None:
    """The tail must be the very next segment, chained to the range's last one: a bundle
    whose tail is replaced by another of the unit's segments (manifest re-signed by the unit
    key, as a stolen unit could) is refused."""
    import hashlib
    import shutil

    from edge.identity.unitkeys import keys_dir_of, load_signing_key
    from edge.vault.bundle import _DOMAIN, verify_bundle

    _clip, manifest, _ = _export_open(six_segments, tmp_path, 1.5, 2.5)
    bundle = tmp_path / "bundle"
    assert [e["sequence"] for e in manifest["tail"]] == [3]
    # Segment 4 of the same recording, in the place of segment 3.
    other = tmp_path / "other"
    other.mkdir()
    _export_open(six_segments, other, 4.5, 5.0)
    src = other / "bundle" / "segments" / "cam1" / f"{4:010d}.seg"
    entry = manifest["tail"][0]
    shutil.copy(src, bundle / entry["file"])
    raw = src.read_bytes()
    entry.update(sequence=4, sha256=hashlib.sha256(raw).hexdigest(), size=len(raw))
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    (bundle / "manifest.json").write_bytes(body)
    key = load_signing_key(keys_dir_of(six_segments[0]))
    (bundle / "manifest.sig").write_bytes(key.sign(_DOMAIN + hashlib.sha256(body).digest()))
    with pytest.raises(IntegrityError, match="does not continue cam1#2"):
        verify_bundle(bundle, unit_public_key=key.public_key())


def test_an_ecdsa_signer_with_its_chain_verifies_against_its_ca(tmp_path: Path) -> None:
    """The signer takes any key: ECDSA P-256 (what the reference validator verifies; it has
    no Ed25519 support) with a certificate chain in the certificate SEI, checked against the
    root as a court tool would."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, utils
    from cryptography.x509.oid import NameOID

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    root_key, leaf_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    root = (
        x509.CertificateBuilder().subject_name(name("root")).issuer_name(name("root"))
        .public_key(root_key.public_key()).serial_number(1)
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip
    leaf = (
        x509.CertificateBuilder().subject_name(name("unit-1")).issuer_name(name("root"))
        .public_key(leaf_key.public_key()).serial_number(2)
        .not_valid_before(start).not_valid_after(start + dt.timedelta(days=3650))
        .sign(root_key, hashes.SHA256())
    )  # fmt: skip

    def sign(digest: bytes) -> bytes:
        return leaf_key.sign(digest, ec.ECDSA(utils.Prehashed(hashes.SHA256())))

    chain = leaf.public_bytes(serialization.Encoding.PEM)
    identity = ms.SigningIdentity(sign, b"", chain, "test", "unit-1", "edge")
    enc = SegmentEncoder(
        "cam1",
        160,
        120,
        FPS,
        EncoderConfig(segment_seconds=1.0, preset="ultrafast"),
        signer=ms.MediaSigner(identity),
    )
    segments = []
    for frame in moving_frames(160, 120, 3 * GOP, FPS):
        segments += enc.encode(frame)
    segments += enc.flush()
    clip = tmp_path / "ec.mp4"
    clip.write_bytes(segments[0].init + b"".join(s.media for s in segments))
    report = mv.validate(mv.read_access_units(clip), anchors=[root])
    assert "CN=unit-1" in report.signer and not report.problems
    assert [g.state for g in report.gops] == [mv.GopState.AUTHENTIC] * 2 + [mv.GopState.PENDING]
    # Under another CA (the reference's test root) nothing is trusted.
    other = x509.load_pem_x509_certificates((DATA / "ca.pem").read_bytes())
    refused = mv.validate(mv.read_access_units(clip), anchors=other)
    assert refused.problems
    assert {g.state for g in refused.gops} == {mv.GopState.NOT_AUTHENTIC, mv.GopState.PENDING}


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cut=st.integers(min_value=1, max_value=4000), flips=st.lists(st.integers(0, 4000), max_size=4)
)
def test_any_damaged_sei_is_refused_cleanly(cut: int, flips: list[int]) -> None:
    """Whatever happens to a SEI's bytes, parsing says IntegrityError or reads it: nothing else
    escapes (a hostile file must not crash the verifier)."""
    unit = bytearray(_SAMPLE_SEI[:cut])
    for at in flips:
        if unit:
            unit[at % len(unit)] ^= 0x5A
    with contextlib.suppress(IntegrityError):
        sei = ms.parse_sei(bytes(unit)) if unit else None
        for read in (sei.general, sei.signature, sei.hash_list, sei.chain_pem) if sei else ():
            with contextlib.suppress(IntegrityError):
                read()


def test_a_malformed_sei_or_a_damaged_file_is_not_authentic(
    signed: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    aus = mv.read_access_units(signed)
    units = list(aus[GOP].units)
    units[0] = units[0][:40]  # the SEI signing GOP 0, cut short
    aus[GOP] = mv.AccessUnit(tuple(units), aus[GOP].pts_s)
    report = mv.validate(aus, pinned=KEY.public_key())
    assert report.problems and report.gops[0].state is mv.GopState.UNSIGNED
    pub = tmp_path / "unit.pub.pem"
    pub.write_bytes(public_pem(KEY.public_key()))
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(signed.read_bytes()[: signed.stat().st_size * 2 // 3])
    code = edge_csu(["verify", str(truncated), "--unit-key", str(pub), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code in (1, 3) and out["verdict"] in ("not-authentic", "partial"), out
