"""Mask commitments: every sealed segment commits, signed, to the mask set its frames were masked
under; the bundle carries the signed polygons; verification says which masks held each second.

A real pipeline (synthetic camera, PrivacyMasker, libx264) records into a real vault; the masks
change after a known frame, and the verifier must place the change at that frame's capture time.
"""

from __future__ import annotations

import struct
import time
from pathlib import Path

import pytest

from edge.app import pipeline as pipeline_mod
from edge.capture.synthetic import SyntheticSource
from edge.config import CameraConfig, EncoderConfig, PrivacyMaskConfig
from edge.csu.main import main as edge_csu
from edge.errors import IntegrityError
from edge.frames import Frame
from edge.identity.unitkeys import keys_dir_of, load_signing_key, load_signing_public_key
from edge.privacy.commitment import (
    MASK_SET_ACTION,
    Committed,
    MaskCommitment,
    MaskSet,
    MaskTracker,
)
from edge.vault import format as fmt
from edge.vault import layout, maskhistory
from edge.vault.bundle import export_bundle, verify_bundle

from .vault_support import Csu, fake_segment, make_csu, open_vault
from .video_support import WALL0

FPS = 25.0
FRAME_NS = 40_000_000
CHANGE_AFTER = 37  # frame 38 is the first masked with the new set
WINDOW = PrivacyMaskConfig(name="window 3rd floor", points=[(0.1, 0.1), (0.4, 0.1), (0.4, 0.4)])
DOOR = PrivacyMaskConfig(name="door no. 12", points=[(0.6, 0.5), (0.9, 0.5), (0.9, 0.95)])
VERSION_A = bytes([0xA1]) * 32
VERSION_B = bytes([0xB2]) * 32


class _Clocked(SyntheticSource):
    """The synthetic street with capture times on a fixed clock: frame n at WALL0 + n/25 s."""

    def read(self) -> Frame | None:
        frame = super().read()
        if frame is None or frame.index >= 100:
            return None
        frame.wall_ns = WALL0 + frame.index * FRAME_NS
        frame.mono_ns = 7_000_000_000 + frame.index * FRAME_NS
        return frame


def _record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Csu, MaskSet, MaskSet]:
    """4 s of a camera into a vault; the door mask is added after frame CHANGE_AFTER."""
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    cam = CameraConfig(
        id="cam1",
        source="synthetic",
        width=160,
        height=120,
        fps=FPS,
        encoder=EncoderConfig(segment_seconds=1.0, preset="ultrafast"),
        privacy_masks=[WINDOW],
    )
    monkeypatch.setattr(
        pipeline_mod, "open_source", lambda c: _Clocked(160, 120, FPS, realtime=False)
    )
    # A queue holding the whole recording: no frame is dropped, whatever the machine's load.
    pipe = pipeline_mod.CameraPipeline(cam, vault, queue_seconds=10.0, config_version=VERSION_A)
    before = pipe.mask_set()
    after = pipe.mask_set([WINDOW, DOOR])
    # What edged does at start and on SIGHUP: the set, polygons included, in the signed log.
    vault.audit.append(MASK_SET_ACTION, before.record(VERSION_A))
    vault.audit.append(MASK_SET_ACTION, after.record(VERSION_B))

    def change(frame: Frame) -> None:  # capture thread, right after masking the frame
        if frame.index == CHANGE_AFTER:
            pipe.set_masks([WINDOW, DOOR], VERSION_B)

    pipe.add_observer(change)
    pipe.start()
    deadline = time.monotonic() + 60
    while not pipe.finished() and time.monotonic() < deadline:
        time.sleep(0.05)
    pipe.stop()
    assert pipe.snapshot()["frames_dropped"] == 0
    vault.close()
    return data, csu, before, after


def test_a_mask_change_shows_at_its_exact_instant_in_the_verified_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data, csu, before, after = _record(tmp_path, monkeypatch)
    out = tmp_path / "bundle"
    export_bundle(
        data,
        start_ns=WALL0,
        end_ns=WALL0 + 10 * 10**9,
        case="PV-1",
        out_dir=out,
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    verified = verify_bundle(out, unit_public_key=load_signing_public_key(keys_dir_of(data)))
    assert all(s.header.version == fmt.SEG_VERSION_MASKS for s in verified.segments)
    # The bundle carries both sets' signed polygons, checked against their digests.
    assert set(verified.mask_sets) == {("cam1", before.digest), ("cam1", after.digest)}
    assert verified.mask_sets[("cam1", after.digest)].names() == ["window 3rd floor", "door no. 12"]

    spans = verified.mask_timeline()
    changes = [s for s in spans if s.committed == Committed(after.digest, VERSION_B)]
    assert changes[0].from_ns == WALL0 + (CHANGE_AFTER + 1) * FRAME_NS  # to the frame
    assert all(s.committed == Committed(before.digest, VERSION_A) for s in spans[:2])
    by_second = {
        sec.second - WALL0 // 10**9: [span.mask_set for span in sec.spans]
        for sec in maskhistory.per_second(spans)
    }
    new = verified.mask_sets[("cam1", after.digest)]
    old = verified.mask_sets[("cam1", before.digest)]
    assert by_second == {0: [old], 1: [old, new], 2: [new], 3: [new]}

    # What the reviewing officer reads: the change at second 1, both sets named.
    pin = ["--unit-key", str(keys_dir_of(data) / "unit-signing.pub.pem")]
    clip = tmp_path / "c.mp4"
    code = edge_csu(["open", str(out), "--key", str(csu.key), "--out", str(clip), *pin])
    printed = capsys.readouterr().out
    assert code == 0, printed
    lines = [ln.strip() for ln in printed.splitlines() if ln.strip().startswith("masks cam1")]
    assert len(lines) == 3, printed
    assert "2026-07-25T17:20:00+00:00 → 2026-07-25T17:20:01+00:00: mask set" in lines[0]
    assert "(1: window 3rd floor) then mask set" in lines[1]
    assert lines[2].endswith("(2: window 3rd floor, door no. 12)")


def test_an_altered_commitment_fails_the_segment_signature(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _csu, before, _after = _record(tmp_path, monkeypatch)
    public = load_signing_public_key(keys_dir_of(data))
    path = sorted(layout.vault_dir(data).glob("segments/cam1/*/*/*.seg"))[0]
    raw = path.read_bytes()
    seg = fmt.verify_segment(raw, public)
    assert seg.header.masks[0].committed.mask_set == before.digest
    # Claim the first digest was another set's: one byte of the signed commitment changed.
    at = raw.index(before.digest)
    forged = raw[:at] + bytes([raw[at] ^ 1]) + raw[at + 1 :]
    with pytest.raises(IntegrityError, match="bad signature"):
        fmt.verify_segment(forged, public)


def test_segments_without_commitment_still_verify_and_say_so(tmp_path: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    for n in range(2):
        vault.write(fake_segment("cam1", n))  # no pipeline: no commitment (version 1)
    vault.close()
    out = tmp_path / "bundle"
    export_bundle(
        data,
        start_ns=WALL0,
        end_ns=WALL0 + 10 * 10**9,
        case="PV-2",
        out_dir=out,
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    verified = verify_bundle(out, unit_public_key=load_signing_public_key(keys_dir_of(data)))
    assert [s.raw[4] for s in verified.segments] == [1, 1]
    spans = verified.mask_timeline()
    assert [s.state for s in spans] == ["no commitment", "no commitment"]
    assert spans[0].describe() == "no mask commitment (recorded before commitments)"


def test_a_committed_set_without_its_record_is_reported_unknown(tmp_path: Path) -> None:
    """The record of a set may be missing (a crash between the mask change and its record):
    the bundle verifies, and the masks of those seconds are said to be unknown."""
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    seg = fake_segment("cam1", 0)
    entry = MaskCommitment(seg.start_wall_ns, Committed(bytes(32), VERSION_A))
    vault.write(type(seg)(**{**{f: getattr(seg, f) for f in seg.__slots__}, "masks": (entry,)}))
    vault.close()
    out = tmp_path / "bundle"
    export_bundle(
        data,
        start_ns=WALL0,
        end_ns=WALL0 + 10 * 10**9,
        case="PV-3",
        out_dir=out,
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    verified = verify_bundle(out, unit_public_key=load_signing_public_key(keys_dir_of(data)))
    assert [s.state for s in verified.mask_timeline()] == ["polygons unknown"]


def test_a_bundle_mask_record_swapped_or_altered_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, _csu, before, after = _record(tmp_path, monkeypatch)
    out = tmp_path / "bundle"
    export_bundle(
        data,
        start_ns=WALL0,
        end_ns=WALL0 + 10 * 10**9,
        case="PV-4",
        out_dir=out,
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    public = load_signing_public_key(keys_dir_of(data))
    record = out / maskhistory.mask_file("cam1", before.digest)
    other = out / maskhistory.mask_file("cam1", after.digest)
    kept = record.read_bytes()
    record.write_bytes(other.read_bytes())  # the polygons of another set under this name
    with pytest.raises(IntegrityError, match="digest differs from the manifest"):
        verify_bundle(out, unit_public_key=public)
    record.write_bytes(kept)
    verify_bundle(out, unit_public_key=public)


def test_records_whose_polygons_do_not_hash_to_their_digest_are_refused() -> None:
    good = MaskSet.of("cam1", [WINDOW], 160, 120)
    details = good.record(VERSION_A)
    assert MaskSet.from_record(details) == good
    details["mask_set"]["masks"][0]["points"][0] = [0.2, 0.1]  # a smaller window
    with pytest.raises(IntegrityError, match="do not hash to its digest"):
        MaskSet.from_record(details)


def test_tracker_gives_each_segment_the_sets_its_frames_were_masked_under() -> None:
    a, b = Committed(b"a" * 32, VERSION_A), Committed(b"b" * 32, VERSION_A)
    tracker = MaskTracker()
    for index in range(10):
        tracker.note(index, WALL0 + index, a if index < 7 else b)
    assert tracker.commitments(0, 5) == (MaskCommitment(WALL0, a),)
    # Frame 5 was dropped before the queue: segment 2 starts at 6.
    assert tracker.commitments(6, 4) == (MaskCommitment(WALL0 + 6, a), MaskCommitment(WALL0 + 7, b))


def test_the_commitment_is_bytes_in_the_signed_header() -> None:
    """FORMATS.md, sealed segment version 2: u16 count, then (i64 from, 32 mask set, 32 config)."""
    entry = MaskCommitment(WALL0, Committed(b"m" * 32, b"c" * 32))
    header = fmt.SegmentHeader(
        device_id="u",
        camera_id="c",
        sequence=0,
        start_wall_ns=WALL0,
        end_wall_ns=WALL0 + 10,
        frame_count=1,
        first_frame_index=0,
        epoch_id=bytes(16),
        nonce=bytes(12),
        prev_hash=bytes(32),
        init_len=0,
        ciphertext_len=16,
        masks=(entry,),
    )
    packed = header.pack()
    assert packed[4] == 2
    assert packed[116:120] == b"\x01u\x01c"
    assert packed[120:] == struct.pack(">Hq", 1, WALL0) + b"m" * 32 + b"c" * 32
    assert fmt.parse_segment_header(packed) == (header, len(packed))


def test_edged_records_each_mask_set_and_its_segments_commit_to_it(tmp_path: Path) -> None:
    """A real edged: the set it starts with and the set SIGHUP brings are in the signed log with
    their polygons, and the segments before and after commit to them."""
    import signal

    from edge.vault.audit import read_audit

    from .daemon_util import DaemonLog, running_edged, sealed_segments, write_config

    data = tmp_path / "data"
    config = write_config(tmp_path / "edge.toml", data)
    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", timeout=30)
        daemon_log = DaemonLog(proc)
        while len(sealed_segments(data)) < 2:
            time.sleep(0.2)
        config.write_text(config.read_text().replace("[0.55, 0.15]", "[0.05, 0.05]"))
        proc.send_signal(signal.SIGHUP)
        daemon_log.wait_for("configuration reloaded from", timeout=30)
        count = len(sealed_segments(data))
        while len(sealed_segments(data)) < count + 2:
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    public = load_signing_public_key(keys_dir_of(data))
    records, problems = read_audit(layout.vault_dir(data) / "audit.log", public)
    assert not problems
    sets = [r.details for r in records if r.action == MASK_SET_ACTION]
    assert len(sets) == 2
    first, second = (MaskSet.from_record(d) for d in sets)
    assert first.masks[0]["points"][0] == [0.55, 0.15]
    assert second.masks[0]["points"][0] == [0.05, 0.05]
    headers = [fmt.verify_segment(p.read_bytes(), public).header for p in sealed_segments(data)]
    committed = [m.committed for h in headers for m in h.masks]
    assert all(h.version == fmt.SEG_VERSION_MASKS for h in headers)
    assert committed[0] == Committed(first.digest, bytes.fromhex(sets[0]["config_version"]))
    assert committed[-1] == Committed(second.digest, bytes.fromhex(sets[1]["config_version"]))
    assert sets[0]["config_version"] != sets[1]["config_version"]


def test_open_overlays_the_masks_in_force_on_a_review_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``edge-csu open --overlay-masks``: the door's outline appears in the review copy only
    after the second it was added; the evidence clip itself is left as recorded."""
    import av
    import numpy as np

    data, csu, _before, _after = _record(tmp_path, monkeypatch)
    out = tmp_path / "bundle"
    export_bundle(
        data,
        start_ns=WALL0,
        end_ns=WALL0 + 10 * 10**9,
        case="PV-6",
        out_dir=out,
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    clip = tmp_path / "c.mp4"
    pin = ["--unit-key", str(keys_dir_of(data) / "unit-signing.pub.pem")]
    args = ["open", str(out), "--key", str(csu.key), "--out", str(clip), *pin]
    assert edge_csu([*args, "--overlay-masks"]) == 0
    assert "c.masks.mp4: 100 frame(s) with the privacy masks drawn" in capsys.readouterr().out

    def magenta_on_door_edge(path: Path, second: float) -> bool:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                if float(frame.time or 0) >= second:
                    rgb = frame.to_ndarray(format="rgb24").astype(int)
                    # The door's top edge runs along y = 60 from x = 96 to 144.
                    patch = rgb[58:63, 110:130]
                    score = patch[..., 0] + patch[..., 2] - 2 * patch[..., 1]
                    return bool(np.max(score) > 250)
        raise AssertionError("no frame that late")

    review = tmp_path / "c.masks.mp4"
    assert not magenta_on_door_edge(review, 0.5)  # the window alone before the change
    assert magenta_on_door_edge(review, 2.5)  # the door added at frame 38
    assert not magenta_on_door_edge(clip, 2.5)  # the evidence clip: no drawing in it
