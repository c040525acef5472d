"""A real ``edged`` (synthetic camera, vault) sending to a real ``edge-csu serve`` over TLS 1.3:
the CSU holds exactly the vault's bytes, the outbox survives a restart of the unit, and an
operator reads the camera's live HLS playlist with ffmpeg."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edge.events import EventSigner
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.uplink.spool import EventSpool
from edge.vault import format as fmt
from edge.vault.layout import vault_dir

from .conftest import REPO, tool
from .uplink_util import CSU_NAME, Csu, free_port, make_csu, unit_files, wait_until


def vault_segments(data_dir: Path) -> dict[int, bytes]:
    out = {}
    for path in (vault_dir(data_dir) / "segments" / "cam1").rglob("*.seg"):
        raw = path.read_bytes()
        out[fmt.parse_segment(raw).header.sequence] = raw
    return out


def run_edged(config: Path, seconds: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "edge.app.daemon",
            "--config",
            str(config),
            "--run-for",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        cwd=REPO,
    )


def unit_config(
    path: Path,
    data_dir: Path,
    csu: Csu,
    port: int,
    *,
    bitrate: str = "",
    uplink: str = "",
    extra: str = "",
) -> Path:
    """The unit's configuration: one small synthetic camera, recording for ``csu``'s key and
    sending to it on ``port``; ``uplink`` and ``extra`` add lines to that section / the file."""
    path.write_text(
        f"""
[unit]
id = "test-unit"
data_dir = "{data_dir}"

[[cameras]]
id = "cam1"
width = 320
height = 240
fps = 10
encoder = {{ segment_seconds = 1.0, preset = "ultrafast"{bitrate} }}

[vault]
kem = "x25519"
csu_public_key = "{csu.directory / "keys" / "authority.pub.json"}"

[uplink]
enabled = true
csu_url = "https://127.0.0.1:{port}"
server_name = "{CSU_NAME}"
{uplink}
{extra}"""
    )
    return path


def test_edged_delivers_the_vaults_exact_bytes_to_the_csu(tmp_path: Path) -> None:
    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    data_dir = tmp_path / "unit"
    unit_files(csu, "test-unit", data_dir)
    signing = load_or_create_signing_key(keys_dir_of(data_dir))
    csu.enroll("test-unit", signing)
    # an alarm raised while the CSU was unreachable waits in the unit's spool
    alarm = EventSigner(signing, "test-unit").sign(
        camera="unit", category="alert", kind="cabinet-door-open", rule="unit",
        wall_ns=time.time_ns(), frame_index=-1, details={"message": "door opened"},
    )  # fmt: skip
    EventSpool(data_dir / "uplink" / "events").put(alarm.wire())
    config = unit_config(
        tmp_path / "edge.toml", data_dir, csu, port,
        uplink=f'ca_file = "{data_dir / "keys" / "ca.pem"}"\n'
        "backoff_initial_s = 0.2\nbackoff_max_s = 1.0",
    )  # fmt: skip
    csu.start()
    try:
        first = run_edged(config, 6.0)
        assert first.returncode == 0, first.stderr[-3000:]
        assert "syncing -> streaming" in first.stderr
        event_file = csu.directory / "storage" / "test-unit" / "events" / f"{alarm.body['id']}.json"
        assert event_file.read_bytes() == alarm.wire()
        recorded = vault_segments(data_dir)
        stored = csu.stored("test-unit", "cam1")
        assert len(recorded) >= 4 and len(stored) >= 2
        assert all(stored[seq] == recorded[seq] for seq in stored), "bytes differ"
        # what the first run could not deliver is still in the outbox and goes on the next run
        undelivered = set(recorded) - set(stored)
        second = run_edged(config, 4.0)
        assert second.returncode == 0, second.stderr[-3000:]
        stored = csu.stored("test-unit", "cam1")
        assert undelivered <= set(stored)
        recorded = vault_segments(data_dir)
        assert all(stored[seq] == recorded[seq] for seq in stored)
        index = csu.directory / "storage" / "test-unit" / "cam1" / "index.jsonl"
        seqs = [json.loads(line)["sequence"] for line in index.read_text().splitlines()]
        assert len(seqs) == len(set(seqs))
        # an operator watches the camera: the live playlist decodes
        url = f"https://127.0.0.1:{csu.ports['operators']}/v1/view/test-unit/cam1/live.m3u8"
        decoded = subprocess.run(
            [tool("ffmpeg"), "-v", "info", "-nostats", "-tls_verify", "0",
             "-headers", f"Authorization: Bearer {csu.operator_token}\r\n",
             "-i", url, "-frames:v", "10", "-f", "null", "-"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert decoded.returncode == 0, decoded.stderr[-2000:]
        assert "Video: h264" in decoded.stderr and "320x240" in decoded.stderr
        wait_until(lambda: (csu.directory / "audit.jsonl").exists(), 5, "the audit log")
    finally:
        csu.stop()


def edged_outage(tmp_path: Path, outage_s: float) -> None:
    """A real edged records through a receiver outage of ``outage_s``; see the assertions."""
    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    data_dir = tmp_path / "unit"
    unit_files(csu, "test-unit", data_dir)
    csu.enroll("test-unit", load_or_create_signing_key(keys_dir_of(data_dir)))
    # ~300 kbit/s of video; the backlog may use 40 % of 700 kbit/s: it drains at about the
    # recording rate, so live segments must overtake it to keep flowing.
    config = unit_config(
        tmp_path / "edge.toml", data_dir, csu, port, bitrate=", bitrate_kbps = 300",
        uplink="bandwidth_kbps = 700\nbackfill_share = 0.4\nlive_window_s = 3\n"
        "backoff_initial_s = 0.5\nbackoff_max_s = 2.0",
    )  # fmt: skip
    csu.start()
    run_for = 6 + outage_s + 1.5 * outage_s + 15
    edged = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge.app.daemon",
            "--config",
            str(config),
            "--run-for",
            str(run_for),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        wait_until(lambda: len(csu.stored("test-unit", "cam1")) >= 3, 30, "live flow")
        csu.stop()
        outage_start = time.time_ns()
        time.sleep(outage_s)
        restart = time.time_ns()
        csu.start()
        _, stderr = edged.communicate(timeout=run_for + 60)
        assert edged.returncode == 0, stderr[-3000:]
    finally:
        if edged.poll() is None:
            edged.kill()
            edged.wait()
        csu.stop()
    recorded = vault_segments(data_dir)
    stored = csu.stored("test-unit", "cam1")
    index = csu.directory / "storage" / "test-unit" / "cam1" / "index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    seqs = [r["sequence"] for r in rows]
    assert len(seqs) == len(set(seqs)), "a segment was stored twice"
    assert all(stored[s] == recorded[s] for s in stored)
    during = [
        s
        for s, raw in recorded.items()
        if outage_start <= fmt.parse_segment(raw).header.end_wall_ns <= restart
    ]
    assert len(during) >= outage_s * 0.8
    assert set(during) <= set(stored), f"missing: {sorted(set(during) - set(stored))}"
    last_backfill = max(r["received_ns"] for r in rows if r["sequence"] in during)
    live_meanwhile = [
        r for r in rows if r["end_wall_ns"] > restart + 2 * SEC and r["received_ns"] < last_backfill
    ]
    assert live_meanwhile, "live segments waited for the whole backlog"


SEC = 1_000_000_000


@pytest.mark.slow
def test_edged_sixty_second_receiver_outage(tmp_path: Path) -> None:
    edged_outage(tmp_path, 60.0)


def test_edged_receiver_outage_backlog_arrives_once_while_live_flows(tmp_path: Path) -> None:
    edged_outage(tmp_path, 5.0)


def test_selftest_reaches_the_csu_only_while_it_answers(tmp_path: Path) -> None:
    """``edgectl selftest`` makes a real mutual-TLS request to the CSU through edged."""
    from .daemon_util import running_edged

    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    data_dir = tmp_path / "unit"
    unit_files(csu, "test-unit", data_dir)
    csu.enroll("test-unit", load_or_create_signing_key(keys_dir_of(data_dir)))
    config = unit_config(
        tmp_path / "edge.toml", data_dir, csu, port,
        uplink=f'ca_file = "{data_dir / "keys" / "ca.pem"}"',
        extra=f'[control]\nsocket = "{tmp_path / "control.sock"}"',
    )  # fmt: skip

    def selftest() -> dict[str, dict[str, str]]:
        result = subprocess.run(
            [sys.executable, "-m", "edge.cli.main", "selftest", "--json", "--config", str(config)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert result.stdout, result.stderr
        return {c["name"]: c for c in json.loads(result.stdout)}

    csu.start()
    try:
        with running_edged(config, tmp_path) as (_proc, notify):
            notify.wait_for("READY=1", timeout=30)
            checks = selftest()
            assert checks["csu"]["outcome"] == "passed", checks["csu"]
            assert "TLSv1.3" in checks["csu"]["detail"]
            assert checks["vault"]["outcome"] == "passed", checks["vault"]
            assert checks["camera cam1"]["outcome"] == "passed"
            csu.stop()
            checks = selftest()
            assert checks["csu"]["outcome"] == "failed"

            # The CSU is gone: status shows the backlog growing while recording goes on.
            def uplink_status() -> tuple[int, dict[str, Any]] | None:
                result = subprocess.run(
                    [sys.executable, "-m", "edge.cli.main", "status", "--json",
                     "--config", str(config)],
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                status = json.loads(result.stdout)
                uplink = status["daemon"]["uplink"]
                if uplink["state"] != "streaming" and uplink["backlog"]["items"] >= 2:
                    return result.returncode, status
                return None

            deadline = time.monotonic() + 30
            while (seen := uplink_status()) is None:
                assert time.monotonic() < deadline, "no backlog in status within 30 s"
                time.sleep(0.5)
            code, status = seen
            assert code >= 1
            assert status["daemon"]["uplink"]["backlog"]["bytes"] > 0
            uplink_finding = next(f for f in status["findings"] if f["section"] == "uplink")
            assert uplink_finding["level"] == "WARN"
            assert "recording continues locally" in uplink_finding["cause"]
            assert status["daemon"]["cameras"][0]["segments_written"] > 0
    finally:
        csu.stop()
