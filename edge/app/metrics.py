"""Metrics for the city's monitoring, as an OpenMetrics text file for node_exporter's textfile
collector: no listening port (ANSSI R51). The figures are those of ``edgectl status``.

:func:`registry_from_status` is pure (status dict in, registry out); :func:`write_textfile`
writes atomically (temp file, rename), as node_exporter requires.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.openmetrics.exposition import generate_latest

from edge.app.diagnostics import Level, evaluate, worst
from edge.fsutil import write_atomic
from edge.snapshot import (
    DaemonStatus,
    OutputsStatus,
    StatusReport,
    StorageStatus,
    SystemStatus,
    TimeStatus,
)


def registry_from_status(status: StatusReport) -> CollectorRegistry:
    reg = CollectorRegistry()
    daemon = status.get("daemon")
    system = status.get("system") or cast(SystemStatus, {})
    unit = str(daemon.get("unit_id", "unknown")) if daemon else "unknown"

    up = Gauge("edge_up", "1 when edged answers", ["unit"], registry=reg)
    up.labels(unit).set(1 if daemon else 0)
    health = Gauge(
        "edge_health_level",
        "Worst finding: 0 healthy, 1 degraded, 2 failing",
        ["unit"],
        registry=reg,
    )
    health.labels(unit).set(int(worst(evaluate(status))))
    problems = Gauge("edge_problems", "Findings at each level", ["unit", "level"], registry=reg)
    findings = evaluate(status)
    for level in (Level.DEGRADED, Level.FAILING):
        problems.labels(unit, level.label).set(sum(1 for f in findings if f.level is level))
    if daemon:
        Gauge("edge_uptime_seconds", "Seconds since edged started", ["unit"], registry=reg).labels(
            unit
        ).set(daemon.get("uptime_s", 0))

    cam_gauges = {
        "frames_in": ("edge_camera_frames_total", "Frames captured since start"),
        "frames_dropped": ("edge_camera_frames_dropped_total", "Frames the recording path dropped"),
        "fps_in": ("edge_camera_fps", "Measured capture frame rate"),
        "last_frame_age_s": ("edge_camera_last_frame_age_seconds", "Age of the newest frame"),
        "mask_coverage_percent": (
            "edge_camera_mask_coverage_percent",
            "Share of the picture masked",
        ),
        "segments_written": ("edge_recording_segments_total", "Segments recorded since start"),
        "bytes_written": ("edge_recording_bytes_total", "Bytes recorded since start"),
        "sink_errors": ("edge_recording_errors_total", "Segments that could not be recorded"),
        "last_write_age_s": ("edge_recording_last_write_age_seconds", "Age of the newest segment"),
    }
    gauges = {
        key: Gauge(name, doc, ["unit", "camera"], registry=reg)
        for key, (name, doc) in cam_gauges.items()
    }
    if daemon:
        _daemon_gauges(reg, unit, daemon, gauges)

    soc = system.get("soc_celsius")
    if isinstance(soc, int | float):
        Gauge("edge_soc_celsius", "SoC temperature", ["unit"], registry=reg).labels(unit).set(soc)
    storage = system.get("storage", cast(StorageStatus, {}))
    if storage:
        Gauge(
            "edge_storage_free_bytes", "Free bytes on the data file system", ["unit"], registry=reg
        ).labels(unit).set(storage.get("free_bytes", 0))
    t = system.get("time", cast(TimeStatus, {}))
    if t:
        Gauge(
            "edge_time_synchronised", "1 when the clock is synchronised", ["unit"], registry=reg
        ).labels(unit).set(1 if t.get("synchronised") else 0)
    return reg


def _daemon_gauges(
    reg: CollectorRegistry, unit: str, daemon: DaemonStatus, gauges: dict[str, Gauge]
) -> None:
    for cam in daemon.get("cameras", []):
        for key, gauge in gauges.items():
            value = cam.get(key)
            if isinstance(value, int | float):
                gauge.labels(unit, cam.get("id", "?")).set(value)

    # Each read names its section's typed field: a renamed field is a type error here.
    figures: list[tuple[float | None, str, str]] = []
    uplink = daemon.get("uplink")
    analytics = daemon.get("analytics")
    vault = daemon.get("vault")
    if uplink:
        figures.append(
            (uplink.get("backlog_s"), "edge_uplink_backlog_seconds", "Recording not yet at the CSU")
        )
    if analytics:
        figures += [
            (analytics.get("fps"), "edge_analytics_fps", "Frames analysed per second"),
            (analytics.get("inference_ms"), "edge_analytics_inference_ms", "Inference time"),
            (analytics.get("drops"), "edge_analytics_dropped_total", "Frames analytics skipped"),
        ]
    if vault:
        figures.append((vault.get("bytes_used"), "edge_vault_bytes", "Bytes held by the vault"))
    for value, name, doc in figures:
        if isinstance(value, int | float):
            Gauge(name, doc, ["unit"], registry=reg).labels(unit).set(value)

    outputs = daemon.get("outputs")
    if outputs:
        _output_gauges(reg, unit, outputs)

    if uplink and isinstance(uplink.get("backlog"), dict):
        Gauge(
            "edge_uplink_backlog_bytes", "Bytes not yet at the CSU", ["unit"], registry=reg
        ).labels(unit).set(uplink["backlog"].get("bytes", 0))


def _output_gauges(reg: CollectorRegistry, unit: str, outputs: OutputsStatus) -> None:
    labels = ["unit", "output"]
    away = Gauge("edge_output_active", "1 while the output is away from its safe state, "
                 "-1 when its state is unknown (a write failed)", labels, registry=reg)  # fmt: skip
    changes = Gauge("edge_output_changes_total", "State changes since start", labels, registry=reg)
    errors = Gauge(
        "edge_output_errors_total", "Writes that failed since start", labels, registry=reg
    )
    for name, st in outputs["outputs"].items():
        away.labels(unit, name).set(
            0 if st["state"] == "safe" else -1 if st["state"] == "unknown" else 1
        )
        changes.labels(unit, name).set(st["changes"])
        errors.labels(unit, name).set(st["errors"])
    Gauge(
        "edge_output_requests_pending", "Playbooks waiting for an agent", ["unit"], registry=reg
    ).labels(unit).set(len(outputs["pending"]))
    Gauge(
        "edge_output_guard_up", "1 while the output guard process runs", ["unit"], registry=reg
    ).labels(unit).set(0 if outputs["guard_pid"] is None else 1)


def render(status: StatusReport) -> bytes:
    data: bytes = generate_latest(registry_from_status(status))  # type: ignore[no-untyped-call]
    return data


def write_textfile(path: Path, status: StatusReport) -> None:
    """Replace ``path`` atomically so the collector never reads half a file; mode 0644 whatever
    edged's umask (0077), so node_exporter can read it.

    Not ``prometheus_client.write_to_textfile``: it writes the Prometheus text format rather
    than OpenMetrics, leaves the mode to the umask (0600 here: unreadable by the collector)
    and never fsyncs; the firmware's one atomic writer does all three right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render(status), mode=0o644)
