"""The typed status snapshot: what edged reports and every reader reads.

edged builds it (``Daemon.snapshot``, the ``status`` control method); ``edgectl status`` and
``diag`` add the machine's figures (:class:`StatusReport`); diagnostics and the metrics
textfile read it; the tests check it. All of them name the fields through these types, so a
field renamed on one side is a type error on the other instead of a finding that silently
never fires. It travels as JSON over the control socket: TypedDicts, not classes, so the
wire form is exactly the dict. Nothing here imports the rest of the firmware.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "AlertsStatus",
    "AnalyticsStatus",
    "CameraStatus",
    "CaptureStatus",
    "DaemonStatus",
    "DoorStatus",
    "ReloadOutcome",
    "StatusReport",
    "SystemStatus",
    "TamperStatus",
    "UplinkBacklog",
    "UplinkStatus",
    "VaultStatus",
]


class CaptureStatus(TypedDict):
    """One capture loop (``CaptureStats`` as a dict)."""

    state: str
    reason: str
    frames_in: int
    source_gaps: int
    frames_lost: int
    reconnects: int
    last_frame_age_s: float | None
    fps: float | None


class CameraStatus(TypedDict):
    """One camera pipeline: capture, masking, recording."""

    id: str
    source: str
    width: int
    height: int
    fps_configured: float
    capture: CaptureStatus
    frames_in: int
    frames_dropped: int
    frames_encoded: int
    time_gaps: int
    time_gap_s: float
    fps_in: float
    last_frame_age_s: float | None
    masks: int
    mask_coverage_percent: float
    segments_written: int
    bytes_written: int
    sink_errors: int
    last_segment_sequence: int | None
    last_write_age_s: float | None
    recorder_alive: bool
    recorder_error: str | None


class VaultStatus(TypedDict):
    """The evidence vault: space, retention, and the last integrity check of this run."""

    bytes_used: int
    retention_days: int
    chain_ok: bool | None
    """None until a vault self-check ran in this edged (``edgectl selftest``)."""
    chain_error: str | None


class UplinkBacklog(TypedDict):
    items: int
    bytes: int
    seconds: float
    oldest_age_s: float | None


class UplinkStatus(TypedDict):
    state: str
    reason: str
    since_ns: int
    csu: str
    signing_certificate: str
    counters: dict[str, int]
    backlog_s: float
    last_ack_age_s: float | None
    backlog: UplinkBacklog
    live_latency_s: dict[str, float | None]


class AnalyticsStatus(TypedDict):
    """Every camera's analytics process, summed."""

    alive: bool
    fps: float
    inference_ms: float
    drops: int
    recent_alerts: list[dict[str, Any]]
    cameras: list[dict[str, Any]]


class AlertsStatus(TypedDict):
    active: list[str]
    recent: list[dict[str, Any]]


class TamperStatus(TypedDict):
    active: list[str]


class DoorStatus(TypedDict):
    open: bool | None
    """None until the switch was first read."""
    changed_at_mono: float | None
    openings: int
    switch: str
    error: str | None


class ReloadOutcome(TypedDict):
    ok: bool
    at: float
    origin: str
    error: str | None


class DaemonStatus(TypedDict):
    """What edged says about itself (``edgectl status --json`` → ``daemon``)."""

    unit_id: str
    version: str
    uptime_s: float
    config_origin: str
    data_dir: str
    cameras: list[CameraStatus]
    vault: VaultStatus | None
    uplink: UplinkStatus | None
    dot1x: dict[str, Any] | None
    """:meth:`Dot1xSupervisor.snapshot` (port state, supplicant, client certificate)."""
    analytics: AnalyticsStatus | None
    certificates: dict[str, dict[str, Any]]
    """``tls`` and ``evidence``: the certificate status dicts of :mod:`edge.identity.enrolment`."""
    alerts: AlertsStatus | None
    tamper: TamperStatus | None
    door: DoorStatus | None
    last_reload: ReloadOutcome | None


class SystemStatus(TypedDict):
    """The machine's figures (:func:`edge.health.system.snapshot`)."""

    time: dict[str, Any]
    thermal: list[dict[str, Any]]
    soc_celsius: float | None
    throttling: list[str] | None
    load: list[float]
    cpus: int | None
    memory: dict[str, int]
    storage: dict[str, Any]


class StatusReport(TypedDict, total=False):
    """The full status ``edgectl status --json`` prints; diagnostics evaluates it."""

    edgectl_version: str
    time_utc: str
    daemon: DaemonStatus | None
    daemon_error: str | None
    denied: bool
    system: SystemStatus
    findings: list[dict[str, Any]]
    overall: str
