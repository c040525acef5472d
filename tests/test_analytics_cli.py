"""``edgectl analytics`` and ``edgectl bench analytics`` as an installer runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.analytics.litert import sha256_file
from edge.events import EventSigner
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key

from .conftest import REPO
from .test_analytics_e2e import face_model


def edgectl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli.main", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )


def write_config(path: Path, data_dir: Path, sha: str) -> Path:
    path.write_text(
        f'[unit]\ndata_dir = "{data_dir}"\n[analytics.detector]\nmodel_path = "{face_model()}"\n'
        f'model_sha256 = "{sha}"\nlayout = "mediapipe"\nlabels = ["face"]\n'
    )
    return path


def test_check_model_verifies_the_pinned_checksum(tmp_path: Path, data_dir: Path) -> None:
    good = write_config(tmp_path / "good.toml", data_dir, sha256_file(face_model()))
    out = edgectl("analytics", "check-model", "--config", str(good), "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["input"] == "192x192" and info["pinned"] is True
    bad = write_config(tmp_path / "bad.toml", data_dir, "ab" * 32)
    out = edgectl("analytics", "check-model", "--config", str(bad))
    assert out.returncode == 2 and "differs from the pinned" in out.stderr


def test_verify_event_accepts_the_units_events_and_flags_altered_ones(
    tmp_path: Path, data_dir: Path
) -> None:
    key = load_or_create_signing_key(keys_dir_of(data_dir))
    signer = EventSigner(key, "unit-7")
    lines = [
        signer.sign(
            camera="cam1",
            category="alert",
            kind="wrong_way",
            rule="lane",
            wall_ns=10**18,
            frame_index=n,
            details={"track": n},
        )
        .wire()
        .decode()
        for n in range(3)
    ]
    lines[1] = lines[1].replace('"track":1', '"track":5')
    stranger = EventSigner(ed25519.Ed25519PrivateKey.generate(), "unit-7")
    lines.append(
        stranger.sign(
            camera="cam1",
            category="alert",
            kind="wrong_way",
            rule="lane",
            wall_ns=10**18,
            frame_index=9,
            details={},
        )
        .wire()
        .decode()
    )
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(lines) + "\n")
    cfg = write_config(tmp_path / "c.toml", data_dir, sha256_file(face_model()))
    out = edgectl("analytics", "verify-event", "--config", str(cfg), str(events))
    assert out.returncode == 1
    assert "line 1: OK" in out.stdout and "line 3: OK" in out.stdout
    assert "line 2: FAILED" in out.stdout and "line 4: FAILED" in out.stdout
    assert "2/4 event(s) verified" in out.stdout


@pytest.mark.slow
def test_bench_analytics_prints_one_json_object() -> None:
    out = edgectl(
        "bench",
        "analytics",
        "--json",
        "--runs",
        "3",
        "--threads",
        "1,2",
        "--seconds",
        "3",
        "--latency-seconds",
        "8",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["inference_ms_threads_1"] > 0 and result["speedup_threads_2_vs_1"] > 0
    assert result["recording_frames_in_with_analytics"] > 0


def test_bench_analytics_inference_part() -> None:
    out = edgectl(
        "bench",
        "analytics",
        "--json",
        "--runs",
        "3",
        "--threads",
        "1,2",
        "--skip",
        "recording,latency",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["benchmark"] == "analytics" and result["detections_in_bench_frame"] == 1
    assert result["inference_ms_threads_1"] > 0 and result["speedup_threads_2_vs_1"] > 0


def test_bench_analytics_rules_part() -> None:
    out = edgectl("bench", "analytics", "--json", "--skip", "inference,recording,latency")
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["rules_cpu_ms_per_frame_baseline"] > 0
    # the decree's rules cost CPU and find the scene's fire, case and fall (and intrusions)
    assert result["rules_cpu_ratio_decree_vs_baseline"] > 1.0
    assert result["rules_alerts_decree"] >= 3 and result["rules_alerts_baseline"] == 0
