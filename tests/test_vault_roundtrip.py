"""Record → export → open: the decoded frames equal those of the segments before sealing.

Also: both KEMs, an escrow recipient, and the stolen-unit case (the data dir with every key of
the unit opens nothing of a closed epoch).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import x25519

from edge.config import RecipientKem
from edge.errors import IntegrityError, VaultError
from edge.identity.unitkeys import keys_dir_of, load_signing_key, load_signing_public_key
from edge.vault import format as fmt
from edge.vault import layout
from edge.vault.bundle import export_bundle, open_bundle
from edge.vault.recipient_keys import RecipientPrivate, decrypt_segment, load_private, open_envelope

from .vault_support import decode_frames, encoded_segments, fake_segment, make_csu, open_vault
from .video_support import WALL0, probe_stream


@pytest.mark.parametrize("kem", list(RecipientKem))
def test_round_trip_frames_equal(kem: RecipientKem, tmp_path: Path, data_dir: Path) -> None:
    segments = encoded_segments(seconds=4.0)
    assert len(segments) >= 3
    before = [f for s in segments for f in decode_frames(s.init + s.media)]
    csu = make_csu(tmp_path / "csu", kem)
    escrow = make_csu(tmp_path / "escrow", kem, "escrow")
    vault = open_vault(data_dir, csu, extra=[escrow])
    for seg in segments:
        vault.write(seg)
    vault.close()
    start, end = segments[0].start_wall_ns, segments[-1].end_wall_ns
    result = export_bundle(
        data_dir,
        start_ns=start,
        end_ns=end,
        case="PV-2026-0042",
        out_dir=tmp_path / "bundle",
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data_dir)),
    )
    assert result.segments == len(segments)
    for who in (csu, escrow):
        clip = tmp_path / f"clip-{who.key.stem}.mp4"
        _verified, packets = open_bundle(
            result.path,
            who.private(),
            clip,
            unit_public_key=load_signing_public_key(keys_dir_of(data_dir)),
        )
        after = decode_frames(clip.read_bytes())
        assert packets == len(before) == len(after) == sum(s.frame_count for s in segments)
        assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
        info = probe_stream(clip)
        assert info["codec_name"] == "h264"
        assert int(info["nb_read_frames"]) == len(before)


def test_range_selects_only_overlapping_segments(tmp_path: Path, data_dir: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu)
    for n in range(10):
        vault.write(fake_segment("cam1", n))
    rows = vault.find(WALL0 + 3 * 2_000_000_000 + 1, WALL0 + 5 * 2_000_000_000)
    assert [r.sequence for r in rows] == [3, 4]
    vault.close()


def test_stolen_unit_cannot_decrypt_closed_epochs(tmp_path: Path, data_dir: Path) -> None:
    """Everything the unit holds (data dir, its own keys) opens no closed-epoch segment."""
    csu = make_csu(tmp_path / "csu-offsite")
    vault = open_vault(data_dir, csu, epoch_seconds=0.0)  # a new epoch for every segment
    for n in range(4):
        vault.write(fake_segment("cam1", n))
        if n == 1:
            old = vault.lane("cam1").epoch
    vault.write(fake_segment("cam1", 4))
    assert old is not None and old.wiped, "the closed epoch's key is still in memory"
    vault.close()
    root = layout.vault_dir(data_dir)
    segs = [fmt.parse_segment(p.read_bytes()) for p in sorted(root.rglob("*.seg"))]
    envs = [fmt.parse_envelope(p.read_bytes()) for p in sorted(root.rglob("*.env"))]
    assert len(segs) == 5 and len(envs) == 5
    # The legitimate key: the CSU's. Keep the real epoch keys to search the disk for them.
    real_keys = [open_envelope(e, csu.private()) for e in envs]
    files = [p for p in data_dir.rglob("*") if p.is_file()]
    blobs = {p: p.read_bytes() for p in files}
    for key in real_keys:
        assert not any(key in blob for blob in blobs.values()), "an epoch key was written to disk"
    # Attack 1: every file of the unit as a recipient key file.
    for path in files:
        try:
            private = load_private(path)
        except VaultError:
            continue
        for env in envs:
            with pytest.raises(IntegrityError):
                open_envelope(env, private)
    # Attack 2: every 32-byte window of the unit's key files as an X25519 private key or as
    # the AES data key itself.
    candidates: set[bytes] = set()
    for path in (keys_dir_of(data_dir)).iterdir():
        raw = path.read_bytes()
        try:
            der = serialization.load_pem_private_key(raw, None).private_bytes(
                serialization.Encoding.DER,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            raw += der
        except (ValueError, TypeError):
            pass
        candidates.update(raw[i : i + 32] for i in range(max(0, len(raw) - 31)))
    assert candidates
    target = csu.private().public  # the attacker knows which recipient the envelope is for
    for cand in candidates:
        guess = RecipientPrivate(
            RecipientKem.X25519, x25519.X25519PrivateKey.from_private_bytes(cand), target
        )
        with pytest.raises(IntegrityError):
            open_envelope(envs[0], guess)
        for seg in segs[:2]:
            with pytest.raises(IntegrityError):
                decrypt_segment(seg, cand)
    # Sanity: the test would notice a readable segment (the CSU can).
    by_epoch = {e.epoch_id: k for e, k in zip(envs, real_keys, strict=True)}
    assert decrypt_segment(segs[0], by_epoch[segs[0].header.epoch_id])[0].startswith(b"ftyp")


def test_missing_recipient_is_a_config_error(tmp_path: Path) -> None:
    from edge import config
    from edge.errors import ConfigError
    from edge.vault.recipient_keys import resolve_recipients

    cfg = config.parse(f'[unit]\ndata_dir = "{tmp_path}"\n', path="edge.toml")
    with pytest.raises(ConfigError, match=r"vault\.csu_public_key: required"):
        resolve_recipients(cfg)
    csu = make_csu(tmp_path / "csu", RecipientKem.X25519)
    cfg = config.parse(
        f'[unit]\ndata_dir = "{tmp_path}"\n[vault]\ncsu_public_key = "{csu.pub}"\n', path="e.toml"
    )
    with pytest.raises(ConfigError, match=r"vault\.kem"):
        resolve_recipients(cfg)  # an X25519 key where the hybrid is required


def test_retention_above_legal_limit_is_refused() -> None:
    from edge import config
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match=r"e\.toml:2: vault\.retention_days: .*one month"):
        config.parse("[vault]\nretention_days = 31\n", path="e.toml")


def test_idle_camera_does_not_keep_its_epoch_key(tmp_path: Path, data_dir: Path) -> None:
    vault = open_vault(data_dir, make_csu(tmp_path / "csu"), epoch_seconds=0.0)
    vault.write(fake_segment("cam1", 0))
    key = vault.lane("cam1").epoch
    assert key is not None
    assert vault.expire_idle_epochs() == 1
    assert vault.lane("cam1").epoch is None
    assert key.wiped
    vault.write(fake_segment("cam1", 1))  # a new epoch, the chain goes on
    assert vault.lane("cam1").next_seq == 2
    vault.close()


def test_open_refuses_when_frames_differ_from_the_signed_count(
    tmp_path: Path, data_dir: Path
) -> None:
    import dataclasses

    segments = encoded_segments(seconds=2.0)
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu)
    for seg in segments:
        vault.write(dataclasses.replace(seg, frame_count=seg.frame_count + 1))
    vault.close()
    bundle = export_bundle(
        data_dir,
        start_ns=0,
        end_ns=2**62,
        case="X",
        out_dir=tmp_path / "b",
        device_id="unit-1",
        signing_key=load_signing_key(keys_dir_of(data_dir)),
    )
    with pytest.raises(IntegrityError, match="signed headers declare"):
        open_bundle(bundle.path, csu.private(), tmp_path / "clip.mp4", trust_bundle_key=True)
    assert not (tmp_path / "clip.mp4").exists()
