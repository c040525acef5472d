"""The typed status snapshot: what edged reports and every reader reads.

edged builds it (``Daemon.snapshot``, the ``status`` control method); ``edgectl status`` and
``diag`` add the machine's figures (:class:`StatusReport`); diagnostics and the metrics
textfile read it; the tests check it. All of them name the fields through these types, so a
field renamed on one side is a type error on the other instead of a finding that silently
never fires. It travels as JSON over the control socket: TypedDicts, not classes, so the
wire form is exactly the dict. Nothing here imports the rest of the firmware.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

__all__ = [
    "AlertsStatus",
    "AnalyticsStatus",
    "CameraStatus",
    "CaptureStatus",
    "CertificateStatus",
    "DaemonStatus",
    "DoorStatus",
    "Dot1xStatus",
    "FleetReport",
    "FrameMemoryStatus",
    "MemoryStatus",
    "OutputStatus",
    "OutputsStatus",
    "PendingRequestStatus",
    "ReloadOutcome",
    "SignedConfigStatus",
    "StatusReport",
    "StorageStatus",
    "SystemStatus",
    "TamperStatus",
    "TimeStatus",
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


class CertificateStatus(TypedDict, total=False):
    """One of the unit's certificates (:mod:`edge.identity.enrolment`): a missing or unreadable
    file has ``present`` and ``warning`` only; the chain and key checks are there when made."""

    present: bool
    warning: str | None
    subject: str
    issuer: str
    serial: str
    not_after: str
    days_left: float
    expired: bool
    expiring_soon: bool
    chains_to_ca: bool | None
    matches_signing_key: bool


class Dot1xStatus(TypedDict):
    """The 802.1X port (:meth:`edge.uplink.dot1x.supervisor.Dot1xSupervisor.snapshot`)."""

    enabled: bool
    interface: str
    identity: str
    state: str
    reason: str
    since: str
    previous_state: str | None
    transitions: int
    confirmed_age_s: float | None
    supplicant: dict[str, str]
    """wpa_supplicant's STATUS fields that matter (wpa_state, suppPortStatus, EAP state…)."""
    client_certificate: CertificateStatus


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
    mode: NotRequired[str]
    """"detector" (a model is configured) or "motion-only" (motion blobs labelled `object`:
    lines count, the zone rules never fire); absent from daemons older than the field."""
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


class OutputStatus(TypedDict):
    """One cabinet output (:class:`edge.outputs.engine.OutputEngine`)."""

    kind: str
    meaning: str
    state: str
    """"safe", a state the city named, or "unknown" (a write failed; see ``error``)."""
    since_ns: int
    until_s: float | None
    """Seconds until the current action ends (None when safe)."""
    playbook: str | None
    agent: str | None
    error: str | None
    changes: int
    errors: int


class PendingRequestStatus(TypedDict):
    """A playbook waiting for an agent's confirmation."""

    playbook: str
    event: str
    camera: str
    expires_in_s: float


class OutputsStatus(TypedDict):
    outputs: dict[str, OutputStatus]
    pending: list[PendingRequestStatus]
    guard_pid: int | None
    """The guard process that makes every output safe when edged dies (None: not running)."""


class FleetReport(TypedDict):
    """What a unit tells the CSU about itself on every request (``X-Edge-Fleet``), for the
    fleet view (``edge-csu units``)."""

    version: str
    slot: str | None
    """The root slot running ("A" or "B"), None where the kernel names none."""
    last_update: dict[str, Any] | None
    """The last update's outcome (``edgectl update``), None before any."""
    config_digest: str
    """SHA-256 of the configuration in effect."""
    config_documents: dict[str, int]
    """Signed configuration documents in effect: scope -> version."""
    groups: list[str]
    """The unit's groups (``unit.groups``): the CSU offers it those groups' documents."""
    config_refused: str | None
    """Why the latest signed document offered was refused (None: applied, or none offered)."""


class SignedDocumentStatus(TypedDict):
    """One signed configuration document in effect."""

    scope: str
    version: int
    signer: str
    issued_at: str


class SignedConfigStatus(TypedDict):
    """Signed configuration: the documents in effect, the digest of the configuration they
    make, and the outcome of the latest document offered (None before any)."""

    documents: list[SignedDocumentStatus]
    digest: str
    last: ReloadOutcome | None


class FrameMemoryStatus(TypedDict):
    """The frame pool (:mod:`edge.framepool`): every raw frame within ``frame_budget_mib``."""

    budget_bytes: int
    reserved_bytes: int
    """Analytics shared memory, counted against the budget."""
    allocated_bytes: int
    in_use_bytes: int
    peak_bytes: int
    refused: int
    """Frames dropped because the budget had no buffer for them (also in ``frames_dropped``)."""


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
    dot1x: Dot1xStatus | None
    analytics: AnalyticsStatus | None
    certificates: dict[str, CertificateStatus]
    """``tls`` (TLS and 802.1X client) and ``evidence`` (evidence signing)."""
    alerts: AlertsStatus | None
    tamper: TamperStatus | None
    door: DoorStatus | None
    last_reload: ReloadOutcome | None
    frame_memory: FrameMemoryStatus
    outputs: NotRequired[OutputsStatus | None]
    """Cabinet outputs and playbooks (absent or None when none is configured)."""
    provisioned: NotRequired[bool]
    """False on a unit without an identity yet: it records nothing until ``edgectl provision``
    (absent from an edged that predates provisioning: it always had an identity)."""
    signed_config: NotRequired[SignedConfigStatus | None]
    city_crl: NotRequired[dict[str, Any] | None]
    """The city's CRL the unit checks operators and the configuration signer against
    (``edge.identity.revocation.CrlStatus``); None when it holds none."""
    last_update: NotRequired[dict[str, Any] | None]
    """The last update's outcome (``edgectl update``; ``edge.slots.last_update``)."""


class TimeStatus(TypedDict):
    """Clock synchronisation (:class:`edge.health.system.TimeSync`)."""

    synchronised: bool
    source: str
    offset_s: float | None
    stratum: int | None
    detail: str


class MemoryStatus(TypedDict):
    total_bytes: int
    available_bytes: int


class StorageStatus(TypedDict):
    """The file system holding the data directory."""

    path: str
    total_bytes: int
    free_bytes: int
    free_percent: float
    fs_errors: int | None
    """ext4's error count; None where the file system keeps none."""


class SystemStatus(TypedDict):
    """The machine's figures (:func:`edge.health.system.snapshot`)."""

    time: TimeStatus
    thermal: list[dict[str, Any]]
    soc_celsius: float | None
    throttling: list[str] | None
    load: list[float]
    cpus: int | None
    memory: MemoryStatus
    storage: StorageStatus


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
