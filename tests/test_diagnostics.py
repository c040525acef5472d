"""Verdicts, causes and next steps of the diagnostics policy, and the metrics built from them."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, cast

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from edge.app import metrics
from edge.app.daemon import _analytics_summary
from edge.app.diagnostics import Level, evaluate, worst
from edge.cli.status import render
from edge.snapshot import StatusReport


def report(status: dict[str, Any]) -> StatusReport:
    """A status built by hand, partial on purpose: diagnostics reads every field with a default,
    as a status may come from an older edged (test_status checks edged's real one field by
    field against the model)."""
    return cast(StatusReport, status)


def healthy() -> dict[str, Any]:
    return {
        "daemon": {
            "unit_id": "cab-0042",
            "version": "0.1.0",
            "uptime_s": 3725.0,
            "cameras": [
                {
                    "id": "cam1",
                    "width": 1280,
                    "height": 720,
                    "fps_configured": 25,
                    "fps_in": 25.0,
                    "capture": {"state": "running", "reason": "frames flowing"},
                    "frames_in": 1000,
                    "frames_dropped": 0,
                    "last_frame_age_s": 0.04,
                    "masks": 2,
                    "mask_coverage_percent": 12.5,
                    "segments_written": 20,
                    "bytes_written": 5_000_000,
                    "sink_errors": 0,
                    "last_write_age_s": 1.0,
                    "recorder_alive": True,
                    "recorder_error": None,
                }
            ],
        },
        "system": {
            "time": {
                "synchronised": True,
                "source": "chrony ntp1",
                "offset_s": 0.0002,
                "detail": "",
            },
            "soc_celsius": 54.0,
            "throttling": [],
            "load": [0.5, 0.4, 0.3],
            "memory": {"total_bytes": 4 << 30, "available_bytes": 3 << 30},
            "storage": {"free_bytes": 50e9, "free_percent": 60.0, "fs_errors": 0},
        },
    }


def problems(status: dict[str, Any]) -> list[tuple[str, Level, str, str]]:
    return [
        (f.section, f.level, f.cause, f.action)
        for f in evaluate(report(status))
        if f.level in (Level.DEGRADED, Level.FAILING)
    ]


def test_healthy_unit_has_no_problem() -> None:
    status = healthy()
    assert problems(status) == []
    assert worst(evaluate(report(status))) is Level.OK


def test_daemon_down_is_failing_with_next_step() -> None:
    status = healthy()
    status["daemon"] = None
    status["daemon_error"] = "edged is not running (no control socket at /run/edge/control.sock)"
    [(section, level, cause, action)] = problems(status)
    assert (section, level) == ("edged", Level.FAILING)
    assert "no control socket" in cause
    assert "systemctl" in action


def test_camera_lost_is_failing() -> None:
    status = healthy()
    cam = status["daemon"]["cameras"][0]
    cam["capture"] = {"state": "backoff", "reason": "cannot open file:/srv/cam.mp4: No such file"}
    cam["last_frame_age_s"] = 42.0
    [first, *_] = problems(status)
    assert first[:2] == ("camera", Level.FAILING)
    assert "No such file" in first[2]
    assert "resumes by itself" in first[3]


def test_dropped_frames_degrade() -> None:
    status = healthy()
    status["daemon"]["cameras"][0]["frames_dropped"] = 7
    [(section, level, cause, _)] = problems(status)
    assert (section, level) == ("camera", Level.DEGRADED)
    assert "7 frame(s) dropped" in cause


def test_a_full_frame_memory_budget_says_so_with_its_figures() -> None:
    status = healthy()
    status["daemon"]["cameras"][0]["frames_dropped"] = 9
    status["daemon"]["frame_memory"] = {
        "budget_bytes": 384 << 20,
        "reserved_bytes": 0,
        "allocated_bytes": 380 << 20,
        "in_use_bytes": 380 << 20,
        "peak_bytes": 383 << 20,
        "refused": 9,
    }
    found = {section: (level, cause, action) for section, level, cause, action in problems(status)}
    level, cause, action = found["record"]
    assert level is Level.DEGRADED
    assert "9 frame(s) dropped: the frame memory budget was full" in cause
    assert "frame_budget_mib" in action
    status["daemon"]["frame_memory"]["refused"] = 0  # drops from a full queue only: no such line
    assert "record" not in {section for section, *_ in problems(status)}


def test_expired_certificate_names_renewal() -> None:
    status = healthy()
    status["daemon"]["dot1x"] = {
        "state": "held",
        "reason": "EAP failure",
        "interface": "eth0",
        "identity": "cab-0042",
        "client_certificate": {
            "present": True,
            "expired": True,
            "not_after": "2026-10-01T00:00:00+00:00",
            "days_left": -58.0,
        },
    }
    [(section, level, cause, action)] = problems(status)
    assert (section, level) == ("8021x", Level.FAILING)
    assert cause == "uplink blocked: 802.1X HELD — client certificate expired 2026-10-01"
    assert "edgectl enroll --renew" in action


def test_uplink_down_degrades_but_recording_goes_on() -> None:
    status = healthy()
    status["daemon"]["uplink"] = {
        "state": "backoff",
        "reason": "connection refused",
        "backlog_s": 60,
    }
    [(section, level, cause, _)] = problems(status)
    assert (section, level) == ("uplink", Level.DEGRADED)
    assert "recording continues locally" in cause


def test_clock_and_heat_and_storage() -> None:
    status = healthy()
    status["system"]["time"] = {"synchronised": False, "source": "timedatectl", "detail": "NTP=no"}
    status["system"]["soc_celsius"] = 85.0
    status["system"]["storage"]["fs_errors"] = 3
    found = {(s, lvl) for s, lvl, _, _ in problems(status)}
    assert found == {
        ("time", Level.DEGRADED),
        ("health", Level.DEGRADED),
        ("storage", Level.FAILING),
    }
    assert worst(evaluate(report(status))) is Level.FAILING


def test_missing_subsystems_say_so_and_never_fake() -> None:
    findings = evaluate(report(healthy()))
    na = {f.section: f.summary for f in findings if f.level is Level.NA}
    assert "uplink" in na and "not enabled" in na["uplink"]
    assert "cabinet" in na


def test_status_screen_fits_80x24() -> None:
    status = healthy()
    status["daemon"]["cameras"].append(
        copy.deepcopy(status["daemon"]["cameras"][0]) | {"id": "cam2"}
    )
    screen = render(report(status), evaluate(report(status)), colour=False)
    lines = screen.splitlines()
    assert len(lines) <= 24
    assert all(len(line) <= 80 for line in lines)
    assert "HEALTHY" in lines[0] and "cab-0042" in lines[0]


def test_metrics_parse_as_openmetrics(tmp_path: Path) -> None:
    status = healthy()
    status["daemon"]["cameras"][0]["frames_dropped"] = 3
    path = tmp_path / "edge.prom"
    metrics.write_textfile(path, report(status))
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}  # type: ignore[no-untyped-call]
    dropped = families["edge_camera_frames_dropped_total"].samples[0]
    assert dropped.value == 3 and dropped.labels == {"unit": "cab-0042", "camera": "cam1"}
    assert families["edge_health_level"].samples[0].value == 1
    assert families["edge_time_synchronised"].samples[0].value == 1


def test_certificate_expiring_soon_warns() -> None:
    status = healthy()
    status["daemon"]["dot1x"] = {
        "state": "authenticated",
        "client_certificate": {
            "present": True,
            "expired": False,
            "expiring_soon": True,
            "days_left": 12.4,
            "warning": "unit certificate expires on 2026-12-10 (12 days): renew",
        },
    }
    [(section, level, cause, action)] = problems(status)
    assert (section, level) == ("8021x", Level.DEGRADED)
    assert "expires on 2026-12-10" in cause and "--renew" in action


def test_enrolment_certificates() -> None:
    status = healthy()
    status["daemon"]["certificates"] = {
        "tls": {"present": True, "not_after": "2027-11-28T00:00:00+00:00", "warning": None},
        "evidence": {"present": False, "warning": "no evidence-signing certificate at keys/…"},
    }
    [(section, level, cause, action)] = problems(status)
    assert (section, level) == ("enrolment", Level.DEGRADED)
    assert "no evidence-signing certificate" in cause and "edgectl enroll" in action
    status["daemon"]["certificates"]["tls"] = {
        "present": True,
        "expired": True,
        "not_after": "2026-10-01T00:00:00+00:00",
        "warning": "unit certificate expired on 2026-10-01: renew with edgectl enroll",
    }
    assert ("enrolment", Level.FAILING) in {(s, lvl) for s, lvl, _, _ in problems(status)}


def test_csu_refusing_the_evidence_certificate_is_failing() -> None:
    status = healthy()
    status["daemon"]["uplink"] = {
        "state": "streaming",
        "backlog_s": 0,
        "signing_certificate": "signing certificate refused: revoked for key compromise",
    }
    status["daemon"]["city_crl"] = FRESH_CRL
    [(section, level, cause, action)] = problems(status)
    assert (section, level) == ("uplink", Level.FAILING)
    assert "revoked for key compromise" in cause and "edgectl enroll --status" in action


FRESH_CRL = {
    "this_update": "2026-11-30T08:00:00+00:00",
    "next_update": "2026-12-07T08:00:00+00:00",
    "revoked": 2,
    "stale": False,
}


def test_the_city_crl_is_shown_and_missing_or_stale_is_said() -> None:
    """Without the city's CRL the unit cannot refuse a revoked operator's command: said once
    the uplink streams (before, the uplink's own finding says why nothing came)."""
    status = healthy()
    status["daemon"]["uplink"] = {"state": "backoff", "reason": "refused", "backlog_s": 5}
    assert [p[0] for p in problems(status)] == ["uplink"]
    status["daemon"]["uplink"] = {"state": "streaming", "backlog_s": 0}
    [(section, level, cause, action)] = problems(status)
    assert (section, level) == ("crl", Level.DEGRADED)
    assert "serves no CRL" in cause and "tls.crl_file" in action
    status["daemon"]["city_crl"] = FRESH_CRL
    assert problems(status) == []
    [shown] = [f for f in evaluate(report(status)) if f.section == "crl"]
    assert shown.summary == "city CRL: 2 revoked, until 2026-12-07T08:00"
    status["daemon"]["city_crl"] = {**FRESH_CRL, "stale": True}
    [(section, level, cause, _)] = problems(status)
    assert (section, level) == ("crl", Level.DEGRADED) and "still applies" in cause


def test_failed_reload_degrades_with_the_error_and_next_step() -> None:
    status = healthy()
    status["daemon"]["last_reload"] = {"ok": True, "at": 1.0, "origin": "/etc/edge/edge.toml"}
    assert problems(status) == []
    status["daemon"]["last_reload"] = {
        "ok": False,
        "at": 2.0,
        "origin": "/etc/edge/edge.toml",
        "error": "AnalyticsError: face model /opt/edge/models/face.tflite: No such file",
    }
    [(section, level, cause, action)] = problems(status)
    assert (section, level) == ("config", Level.DEGRADED)
    assert "No such file" in cause
    assert "edgectl config check" in action and "systemctl reload edged" in action


def test_time_gaps_show_on_the_camera_line() -> None:
    status = healthy()
    [camera] = [f for f in evaluate(report(status)) if f.section == "camera"]
    assert "gaps" not in camera.summary
    status["daemon"]["cameras"][0].update(time_gaps=2, time_gap_s=51.4)
    [camera] = [f for f in evaluate(report(status)) if f.section == "camera"]
    assert camera.summary.endswith("gaps 2 (51 s)") and camera.level is Level.OK


def _named(camera_id: str, screen: str) -> bool:
    return re.search(rf"\b{re.escape(camera_id)}\b", screen) is not None


def twelve_cameras() -> dict[str, Any]:
    status = healthy()
    first = status["daemon"]["cameras"][0]
    status["daemon"]["cameras"] = [copy.deepcopy(first) | {"id": f"cam{i}"} for i in range(1, 13)]
    # More sections than a one-camera unit shows: the cameras get fewer lines.
    status["daemon"]["door"] = {"open": True}
    status["daemon"]["tamper"] = {"active": ["cam7 covered"]}
    status["daemon"]["last_reload"] = {"ok": False, "origin": "/etc/edge/edge.toml"}
    return status


def _check_screen(screen: str) -> list[str]:
    lines = screen.splitlines()
    assert len(lines) <= 24, f"{len(lines)} lines:\n{screen}"
    assert all(len(line) <= 80 for line in lines), screen
    assert "FAILING" in lines[0] and "cab-0042" in lines[0], "the verdict is on the first line"
    assert "problem(s)" in lines[-1] and "edgectl diag" in lines[-1], "the verdict stays"
    return lines


def test_status_screen_with_twelve_cameras_fits_and_names_every_problem() -> None:
    status = twelve_cameras()
    cams = status["daemon"]["cameras"]
    cams[3]["capture"] = {"state": "backoff", "reason": "connection refused"}
    cams[3]["last_frame_age_s"] = None
    cams[10]["frames_dropped"] = 7
    cams[11]["last_frame_age_s"] = 42.0
    cams[5]["masks"] = 0
    screen = render(report(status), evaluate(report(status)), colour=False)
    lines = _check_screen(screen)
    for problem in ("cam4", "cam11", "cam12"):
        assert any(
            _named(problem, line) and ("FAIL" in line or "WARN" in line) for line in lines
        ), f"{problem} is not on the screen as a problem:\n{screen}"
    assert "edgectl status --camera" in screen, "says how to see the cameras left out"
    assert _named("cam6", screen.split("MASKS", 1)[1]), "a camera without masks is named"
    for section in ("CABINET", "CONFIG", "TIME", "STORAGE"):
        assert any(line.startswith(section) for line in lines), f"{section} cut off"


def test_status_screen_names_every_camera_when_all_twelve_fail() -> None:
    status = twelve_cameras()
    for cam in status["daemon"]["cameras"]:
        cam["last_frame_age_s"] = 300.0
    screen = render(report(status), evaluate(report(status)), colour=False)
    _check_screen(screen)
    assert screen.splitlines()[-1].startswith("15 problem(s)")
    for i in range(1, 13):
        assert _named(f"cam{i}", screen), f"cam{i} is not on the screen:\n{screen}"


def test_status_screen_with_few_cameras_keeps_one_line_each() -> None:
    status = healthy()
    first = status["daemon"]["cameras"][0]
    status["daemon"]["cameras"] = [copy.deepcopy(first) | {"id": f"cam{i}"} for i in (1, 2, 3)]
    lines = render(
        report(status), evaluate(report(status)), colour=False, note="every 2s"
    ).splitlines()
    masks = [m.group(1) for line in lines if (m := re.search(r"(cam\d+): 2 mask\(s\)", line))]
    assert masks == ["cam1", "cam2", "cam3"]
    assert lines[-1].startswith("all checks passed") and lines[-1].endswith("every 2s")


def test_analytics_unconfined_or_refused_degrades() -> None:
    """#11 item 21: an analytics process without Landlock, or one edged had to replace for
    protocol violations, is a problem the technician sees, with what to do."""
    status = healthy()
    camera = {"camera": "cam1", "sandbox": "landlock ABI 6", "rejected_messages": 0}
    status["daemon"]["analytics"] = {"alive": True, "fps": 5.0, "cameras": [camera]}
    assert problems(status) == []
    camera["sandbox"] = "not confined: Landlock unavailable (Function not implemented)"
    ((section, level, cause, action),) = problems(status)
    assert section == "analytics" and level is Level.DEGRADED
    assert "unconfined" in cause and "Landlock" in action
    camera.update(sandbox="landlock ABI 6", rejected_messages=3)
    ((_, level, cause, _),) = problems(status)
    assert level is Level.DEGRADED and "refused" in cause


def test_status_says_when_analytics_runs_motion_only() -> None:
    """Without a detector model the zone rules never fire: the status screen says so, from
    the summary edged builds out of each camera's analytics figures."""
    camera = {
        "camera": "cam1",
        "mode": "motion-only",
        "running": True,
        "fps": 5.0,
        "inference_ms": 0.0,
        "dropped_busy": 0,
        "dropped_late": 0,
        "recent_alerts": [],
        "sandbox": "landlock ABI 6",
        "rejected_messages": 0,
    }
    status = healthy()
    status["daemon"]["analytics"] = _analytics_summary([camera])
    assert status["daemon"]["analytics"]["mode"] == "motion-only"
    assert problems(status) == []
    screen = render(report(status), evaluate(report(status)), colour=False)
    (line,) = [x for x in screen.splitlines() if x.startswith("ANALYTICS")]
    assert "motion-only" in line and "zone rules off" in line and len(line) <= 80
    status["daemon"]["analytics"] = _analytics_summary([{**camera, "mode": "detector"}])
    screen = render(report(status), evaluate(report(status)), colour=False)
    assert "detector 5.0 fps" in screen and "motion-only" not in screen
