"""Configuration: a TOML file validated against a typed schema.

Every field has a type, bounds, a default and a one-line description. Unknown keys are errors.
A validation error names the file, the dotted key path and, where it can be found, the line.
Asked for (``--demo``), :func:`load` returns :data:`DEMO_CONFIG`, the embedded demo default
(synthetic camera, its windows masked, data in ``./edge-data``); never without being asked.

Sections owned by later subsystems (vault, uplink, 802.1X, analytics) add their own models here.
"""

from __future__ import annotations

import errno
import os
import re
import tomllib
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge.identity.unitkeys import refuse_private_material

from .configschema import file_for_this_release, migrate, renamed_hint
from .errors import ConfigError, EdgeError
from .unitfile import BASELINE_ONLY, from_unit_file, merge, unit_file_of

DEFAULT_CONFIG_PATH = Path("/etc/edge/edge.toml")

Identifier = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9-]{0,62}$",
        description="lower-case letters, digits and dashes, at most 63 characters",
    ),
]


class _LocatedError(ValueError):
    """A cross-field problem that knows the key it is about (``playbooks[2].state``), so the
    error names that key and its line rather than the whole file."""

    def __init__(self, loc: tuple[int | str, ...], message: str) -> None:
        super().__init__(message)
        self.loc = loc


def _error_loc(err: Any) -> tuple[int | str, ...]:
    found = (err.get("ctx") or {}).get("error")
    return tuple(found.loc) if isinstance(found, _LocatedError) else tuple(err["loc"])


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class UnitConfig(_Section):
    id: Identifier = "demo-unit"
    """Unit identity: appears in segment headers, certificates and CSU paths. Unset, the unit
    is unprovisioned: edged records nothing until ``edgectl provision`` sets it."""
    site: str | None = Field(default=None, min_length=1, max_length=128)
    """Where the unit stands (street, cabinet number), as the city's installers name it."""
    groups: list[Identifier] = Field(default_factory=list, max_length=16)
    """Groups the unit belongs to (a district, a camera model): signed configuration documents
    for a group apply to its units."""
    data_dir: Path = Path("./edge-data")
    """Directory for recordings and state (``/var/lib/edge`` on a unit); it also holds the
    per-unit configuration file ``unit.toml`` laid over this one."""


class MaskFill(StrEnum):
    SOLID = "solid"
    PIXELATE = "pixelate"


Point = tuple[Annotated[float, Field(ge=-1.0, le=2.0)], Annotated[float, Field(ge=-1.0, le=2.0)]]


class PrivacyMaskConfig(_Section):
    name: str = Field(default="mask", min_length=1, max_length=64)
    """Human name of the masked area (e.g. "window 3rd floor")."""
    points: list[Point] = Field(min_length=3, max_length=256)
    """Polygon vertices [x, y], normalised to the frame (0..1; may overshoot the border)."""
    fill: MaskFill = MaskFill.SOLID
    """How the area is hidden: solid grey (default) or coarse pixelation."""
    pixel_size: int = Field(default=32, ge=8, le=256)
    """Block size in pixels when fill is "pixelate"."""


class EncoderCodec(StrEnum):
    LIBX264 = "libx264"
    V4L2M2M = "h264_v4l2m2m"


class EncoderConfig(_Section):
    codec: EncoderCodec = EncoderCodec.LIBX264
    """H.264 encoder: libx264 (software) or h264_v4l2m2m (Raspberry Pi 4 hardware)."""
    preset: str = Field(
        default="veryfast", pattern=r"^(ultrafast|superfast|veryfast|faster|fast|medium)$"
    )
    """libx264 speed preset."""
    bitrate_kbps: int = Field(default=2000, ge=100, le=50_000)
    """Target bit rate in kbit/s."""
    segment_seconds: float = Field(default=2.0, ge=0.5, le=10.0)
    """Duration of one media segment; every segment starts on an IDR frame."""


class SyntheticSceneConfig(_Section):
    seed: int = Field(default=1, ge=0)
    """Seed of the deterministic scene."""
    pedestrians: int = Field(default=4, ge=0, le=64)
    """Number of pedestrian-like objects walking across the scene."""
    vehicles: int = Field(default=2, ge=0, le=32)
    """Number of vehicle-like objects driving across the scene."""
    masked_intruder: bool = True
    """Move a bright object inside the first privacy mask (leak tests)."""


_SOURCE_RE = re.compile(r"^(synthetic|picamera2|file:.+|rtsps?://.+|v4l2:/dev/.+)\Z")


class CameraConfig(_Section):
    id: Identifier = "cam1"
    """Camera identity within the unit."""
    source: str = "synthetic"
    """Video source: "synthetic", "picamera2", "file:PATH", "rtsp://…", or "v4l2:/dev/videoN"."""
    width: int = Field(default=1280, ge=64, le=7680, multiple_of=2)
    """Frame width in pixels (even)."""
    height: int = Field(default=720, ge=64, le=4320, multiple_of=2)
    """Frame height in pixels (even)."""
    fps: float = Field(default=25.0, gt=0, le=120)
    """Frames per second requested from the source and written to the recording."""
    loop_file: bool = False
    """For file sources: start again at the end instead of reporting end of stream (``loop``
    before schema 2)."""
    privacy_masks: list[PrivacyMaskConfig] = Field(default_factory=list, max_length=64)
    """Areas hidden before any pixel is stored, sent or analysed."""
    encoder: EncoderConfig = EncoderConfig()
    """Encoding and segmenting settings."""
    synthetic: SyntheticSceneConfig = SyntheticSceneConfig()
    """Scene settings when source is "synthetic"."""
    tls_ca_file: Path | None = None
    """rtsps: CA chain, or the camera's own certificate, that its certificate must chain to
    (the host in the URL must be a name in the certificate)."""
    tls_fingerprint_sha256: str | None = Field(
        default=None, pattern=r"^[0-9A-Fa-f]{2}(:?[0-9A-Fa-f]{2}){31}$"
    )
    """rtsps: SHA-256 of the camera's self-signed certificate, pinned instead of a CA
    (``openssl x509 -noout -fingerprint -sha256 -in camera.crt``)."""

    @model_validator(mode="after")
    def _camera_certificate_checked(self) -> CameraConfig:
        # An unverified rtsps camera hands its password to whoever answers on its address.
        rtsps = self.source.startswith("rtsps://")
        given = [
            name
            for name in ("tls_ca_file", "tls_fingerprint_sha256")
            if getattr(self, name) is not None
        ]
        if rtsps and not given:
            raise ValueError(
                "an rtsps:// camera's certificate must be verified before its password is sent: "
                "set tls_ca_file (its CA, or the camera's own certificate) or "
                "tls_fingerprint_sha256 (openssl x509 -noout -fingerprint -sha256 -in cam.crt)"
            )
        if len(given) > 1:
            raise ValueError("set tls_ca_file or tls_fingerprint_sha256, not both")
        if given and not rtsps:
            raise ValueError(f"{given[0]} applies to rtsps:// cameras only")
        return self

    @field_validator("source")
    @classmethod
    def _source_form(cls, value: str) -> str:
        if not _SOURCE_RE.match(value):
            raise ValueError(
                'must be "synthetic", "picamera2", "file:PATH", "rtsp://HOST/…" '
                'or "v4l2:/dev/videoN"'
            )
        return value


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class LoggingConfig(_Section):
    level: LogLevel = LogLevel.INFO
    """Minimum level written to the journal (or stderr outside systemd)."""


class UplinkConfig(_Section):
    enabled: bool = False
    """Send sealed segments and events to the CSU (store-and-forward from the vault's outbox)."""
    csu_url: str = Field(
        default="https://csu.invalid:8443", pattern=r"^https://[A-Za-z0-9.\-\[\]:]+(:\d+)?/?$"
    )
    """Base URL of the CSU receiver; TLS 1.3 with client certificates, nothing else."""
    server_name: str | None = Field(default=None, min_length=1, max_length=253)
    """Name the CSU certificate must carry, when it differs from the URL's host."""
    ca_file: Path | None = None
    """CA chain pinned for the CSU's certificate (default ``<data_dir>/keys/ca.pem``)."""
    cert_file: Path | None = None
    """Unit client certificate (default ``<data_dir>/keys/unit-tls.crt``)."""
    key_file: Path | None = None
    """Unit client private key (default ``<data_dir>/keys/unit-tls.key``)."""
    bandwidth_kbps: int = Field(default=8000, ge=64, le=10_000_000)
    """Upload budget in kbit/s for segments and events together."""
    backfill_share: float = Field(default=0.5, gt=0.0, le=1.0)
    """Share of the budget the backlog may use while live segments keep priority."""
    live_window_s: float = Field(default=10.0, ge=1.0, le=600.0)
    """A segment closed less than this long ago is live; older pending ones are backfill."""
    connect_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Time allowed to connect and finish the TLS handshake."""
    request_timeout_s: float = Field(default=30.0, gt=0, le=600)
    """Time allowed for one request and its answer."""
    backoff_initial_s: float = Field(default=1.0, gt=0, le=60)
    """First reconnection delay; doubles after each failure (with jitter)."""
    backoff_max_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest reconnection delay."""
    csu_receipt_key: Path | None = None
    """The CSU's receipt public key (PEM, ``receipt-key.pub.pem`` from the receiver): receipts
    it signs for delivered segments are checked and kept in the vault; none: not kept."""
    config_poll_s: float = Field(default=300.0, ge=1.0, le=86_400.0)
    """How often the CSU is asked for signed configuration documents (also at each connection)."""


class RecipientKem(StrEnum):
    X25519 = "x25519"
    MLKEM768_X25519 = "mlkem768-x25519"


class VaultConfig(_Section):
    retention_days: int = Field(default=30, ge=1)
    """Days a recording is kept before automatic destruction (1-30, the legal maximum)."""
    max_bytes: int = Field(default=0, ge=0, le=2**50)
    """Upper bound of the vault's size in bytes; 0 means bounded only by min_free_percent."""
    min_free_percent: float = Field(default=10.0, ge=0.0, le=90.0)
    """Free space kept on the data file system; the oldest segments go first to keep it."""
    epoch_seconds: int = Field(default=600, ge=10, le=86_400)
    """Lifetime of an epoch data key; a new key is also drawn at every start."""
    kem: RecipientKem = RecipientKem.MLKEM768_X25519
    """HPKE KEM the recipient keys must use: post-quantum hybrid (default) or X25519."""
    csu_public_key: Path | None = None
    """Recipient public key of the CSU (from ``edge-csu keygen``); required on a real unit."""
    escrow_public_key: Path | None = None
    """Optional second recipient (judicial escrow) able to open every epoch on its own."""
    demo_recipient: bool = False
    """Demo only: create a CSU key pair inside the data dir, so the unit can read itself."""
    purge_interval_s: float = Field(default=60.0, ge=1.0, le=3600.0)
    """How often retention runs (it also runs at once when the disk is full)."""

    @field_validator("csu_public_key", "escrow_public_key")
    @classmethod
    def _public_only(cls, value: Path | None) -> Path | None:
        # Checked here too, not only when edged opens the vault, so that `edgectl config
        # check` says it before the unit records a single segment. A file not there yet (a
        # configuration checked away from the unit) is judged again at start.
        if value is not None:
            try:
                data = value.read_bytes()
            except OSError:
                return value
            refuse_private_material(data, str(value))
        return value

    @model_validator(mode="after")
    def _one_kind_of_recipient(self) -> VaultConfig:
        if self.demo_recipient and self.csu_public_key is not None:
            raise ValueError("demo_recipient cannot be combined with csu_public_key")
        return self

    @field_validator("retention_days")
    @classmethod
    def _legal_limit(cls, value: int) -> int:
        if value > 30:
            raise ValueError(
                f"{value} days exceeds the legal limit: recordings may be kept at most one "
                "month (Code de la sécurité intérieure L252-5, CNIL); use 1 to 30"
            )
        return value


class DetectorLayout(StrEnum):
    SSD = "ssd"
    YOLOV8 = "yolov8"
    MEDIAPIPE = "mediapipe"


class InputRange(StrEnum):
    AUTO = "auto"
    UNIT = "0..1"
    SIGNED = "-1..1"
    PIXELS = "0..255"


class DetectorConfig(_Section):
    model_path: Path | None = None
    """LiteRT (.tflite) model; none means motion blobs stand in for detections."""
    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Expected SHA-256 of the model file (hex); a mismatch refuses to start analytics."""
    labels: list[str] = Field(default_factory=lambda: ["person"], min_length=1, max_length=1000)
    """Class labels in the model's output order."""
    layout: DetectorLayout = DetectorLayout.SSD
    """Output layout: "ssd" (post-processed boxes/classes/scores/count), "yolov8", "mediapipe"."""
    threads: int = Field(default=2, ge=1, le=16)
    """XNNPACK CPU threads used by the interpreter."""
    input_range: InputRange = InputRange.AUTO
    """Pixel values a float model expects; auto: -1..1 for ssd and mediapipe, 0..1 for yolov8."""
    score_threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    """Minimum confidence of a detection."""
    nms_iou: float = Field(default=0.45, gt=0.0, lt=1.0)
    """IoU above which overlapping detections of a class are suppressed (yolov8, mediapipe)."""
    motion_gated: bool = True
    """Run the detector only when motion is seen (or a track is alive)."""


class LineRuleConfig(_Section):
    name: Identifier
    """Name of the counting line (appears in events)."""
    points: tuple[Point, Point]
    """Ends [x, y], normalised; "forward" = a quarter turn clockwise from the line on screen."""
    interval_seconds: float = Field(default=60.0, ge=1.0, le=86_400.0)
    """Counts are aggregated and published once per interval."""
    hysteresis: float = Field(default=0.01, ge=0.0, le=0.2)
    """Half-width of a band around the line, as a fraction of the frame (distance normalised
    like the points): a track counts only once it has gone from beyond the band on one side
    to beyond it on the other, so a person standing on the line and swaying is not counted at
    every sway. 0 counts any crossing of the line itself. The default spans the jitter of a
    motion blob's centre on a 480-pixel-wide analysed frame (8-pixel cells); on the synthetic
    street, 0.02 already lost crossings of tracks born or lost near the line."""


class GatheringRuleConfig(_Section):
    name: Identifier
    """Name of the zone (appears in events)."""
    zone: list[Point] = Field(min_length=3, max_length=64)
    """Polygon, normalised."""
    min_persons: int = Field(default=5, ge=2, le=500)
    """Alert when at least this many persons stand in the zone..."""
    min_seconds: float = Field(default=30.0, ge=0.0, le=3600.0)
    """...for at least this long."""
    cooldown_seconds: float = Field(default=300.0, ge=0.0, le=86_400.0)
    """No second alert from this rule before this delay."""


class CrowdMovementRuleConfig(_Section):
    name: Identifier
    """Name of the zone (appears in events)."""
    zone: list[Point] = Field(min_length=3, max_length=64)
    """Polygon, normalised."""
    min_persons: int = Field(default=3, ge=2, le=500)
    """The rule looks at a crowd of at least this many persons."""
    speed_factor: float = Field(default=3.0, gt=1.0, le=100.0)
    """Alert when the crowd's mean speed exceeds its recent baseline by this factor..."""
    min_speed: float = Field(default=0.08, gt=0.0, le=10.0)
    """...and is at least this fast (frame widths per second)."""
    dispersal_factor: float = Field(default=2.0, gt=1.0, le=100.0)
    """Alert when the crowd's spread grows by this factor within window_seconds."""
    window_seconds: float = Field(default=2.0, gt=0.0, le=60.0)
    """Time over which speed and spread are measured."""
    cooldown_seconds: float = Field(default=120.0, ge=0.0, le=86_400.0)
    """No second alert from this rule before this delay."""


class WrongWayRuleConfig(_Section):
    name: Identifier
    """Name of the lane (appears in events)."""
    zone: list[Point] = Field(min_length=3, max_length=64)
    """Lane polygon, normalised."""
    direction: Point
    """Allowed direction of travel as a vector [dx, dy] in frame coordinates."""
    max_angle_degrees: float = Field(default=120.0, ge=90.0, le=180.0)
    """A track moving at more than this angle from the allowed direction drives the wrong way."""
    min_distance: float = Field(default=0.05, gt=0.0, le=2.0)
    """Distance (normalised) a track must cover in the lane before it is judged."""
    cooldown_seconds: float = Field(default=60.0, ge=0.0, le=86_400.0)
    """No second alert for the same vehicle before this delay."""


class ParkingRuleConfig(_Section):
    name: Identifier
    """Name of the parking zone (appears in events)."""
    zone: list[Point] = Field(min_length=3, max_length=64)
    """Polygon, normalised."""
    max_seconds: float = Field(default=5400.0, ge=1.0, le=7 * 86_400.0)
    """Alert when a vehicle stays stationary in the zone longer than this (blue zone)."""
    stationary_tolerance: float = Field(default=0.02, gt=0.0, le=0.5)
    """Movement (normalised) below which a vehicle counts as stationary."""
    cooldown_seconds: float = Field(default=3600.0, ge=0.0, le=7 * 86_400.0)
    """No second alert for the same vehicle before this delay."""


Schedule = Annotated[str, Field(min_length=5, max_length=64)]
"""When a rule is armed: ``"Mon-Fri 22:00-06:00"``, ``"Sat,Sun 00:00-24:00"``, ``"daily
08:00-20:00"`` in the unit's ``analytics.timezone``; a window that ends past midnight belongs to
the day it starts."""


def _check_schedules(windows: list[str]) -> list[str]:
    from .analytics.schedule import parse_window

    for window in windows:
        parse_window(window)
    return windows


class _DecreeRule(_Section):
    """What every rule of the decree's event types has: a name, a zone, a schedule, a dwell
    time, a sensitivity and a cooldown."""

    name: Identifier
    """Name of the rule (appears in events)."""
    zone: list[Point] = Field(
        default=[(0.0, 0.0), (1.0, 0.0), (1.0, 1.0), (0.0, 1.0)], min_length=3, max_length=64
    )
    """Polygon, normalised (default: the whole frame)."""
    schedule: list[Schedule] = Field(default_factory=list, max_length=16)
    """Windows when the rule is armed (empty: always)."""
    sensitivity: float = Field(default=0.5, ge=0.0, le=1.0)
    """0 = only blatant cases, 1 = the slightest; scales the rule's thresholds."""
    cooldown_seconds: float = Field(default=300.0, ge=0.0, le=86_400.0)
    """No second alert for the same situation before this delay."""

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, value: list[str]) -> list[str]:
        return _check_schedules(value)


class IntrusionRuleConfig(_DecreeRule):
    classes: list[Literal["person", "vehicle", "cycle", "object"]] = Field(
        default=["person", "vehicle", "cycle"], min_length=1
    )
    """What may not enter; ``object`` = any motion blob (motion-only mode)."""
    min_seconds: float = Field(default=1.0, ge=0.0, le=3600.0)
    """Dwell: inside the zone at least this long."""
    cooldown_seconds: float = Field(default=60.0, ge=0.0, le=86_400.0)
    """No second alert for the same track before this delay."""


class AbandonedObjectRuleConfig(_DecreeRule):
    min_seconds: float = Field(default=60.0, ge=5.0, le=86_400.0)
    """Dwell: the object stays this long after whoever left it went away."""
    owner_distance: float = Field(default=0.08, gt=0.0, le=1.0)
    """A track within this distance (normalised) of the object keeps it attended."""
    max_size: float = Field(default=0.12, gt=0.0, le=1.0)
    """Larger objects (width or height, fraction of the frame) are vehicles, not left items."""
    cooldown_seconds: float = Field(default=600.0, ge=0.0, le=86_400.0)
    """No second alert for the same place before this delay."""


class FallenPersonRuleConfig(_DecreeRule):
    min_seconds: float = Field(default=10.0, ge=1.0, le=3600.0)
    """Dwell: lying this long before the alert."""
    classes: list[Literal["person", "object"]] = Field(default=["person"], min_length=1)
    """Tracks judged; ``object`` also judges motion blobs (motion-only mode)."""


class DensityRuleConfig(_DecreeRule):
    max_per_m2: float = Field(default=2.0, gt=0.0, le=10.0)
    """Alert when more persons per square metre of ground stand in the zone..."""
    min_seconds: float = Field(default=10.0, ge=0.0, le=3600.0)
    """...for at least this long."""
    min_persons: int = Field(default=4, ge=1, le=1000)
    """Never below this many persons (a couple in a tiny zone is no crowd)."""


class FireRuleConfig(_DecreeRule):
    min_seconds: float = Field(default=4.0, ge=1.0, le=600.0)
    """Dwell: fire-like (colour, irregular flicker, not moving as a whole) this long."""
    cooldown_seconds: float = Field(default=600.0, ge=0.0, le=86_400.0)
    """No second alert from this rule before this delay."""


class GroundCalibration(_Section):
    image: list[Point] = Field(min_length=4, max_length=4)
    """Four points on the ground, normalised image coordinates."""
    world: list[tuple[float, float]] = Field(min_length=4, max_length=4)
    """The same points in metres on the ground plane (any origin)."""

    @model_validator(mode="after")
    def _solvable(self) -> GroundCalibration:
        from .analytics.ground import homography

        homography(self.image, self.world)  # raises ValueError when degenerate
        return self


class TamperConfig(_Section):
    enabled: bool = True
    """Detect covered/sprayed lens, defocus, moved camera and lost signal (ANSSI R61)."""
    sensitivity: float = Field(default=0.5, ge=0.0, le=1.0)
    """0 = only blatant tampering, 1 = the slightest; scales every threshold."""
    hold_seconds: float = Field(default=5.0, ge=0.0, le=600.0)
    """A condition must last this long before it is raised (a passing bus is not tampering)."""
    clear_seconds: float = Field(default=3.0, ge=0.0, le=600.0)
    """A raised condition clears after the scene is normal for this long."""
    learn_seconds: float = Field(default=5.0, ge=0.5, le=3600.0)
    """Time spent learning the reference scene after start."""
    signal_lost_seconds: float = Field(default=5.0, ge=0.5, le=600.0)
    """No frame for this long raises "signal_lost"."""


class CameraAnalyticsConfig(_Section):
    camera: Identifier
    """Camera id these rules apply to."""
    lines: list[LineRuleConfig] = Field(default_factory=list, max_length=32)
    """Counting lines."""
    gatherings: list[GatheringRuleConfig] = Field(default_factory=list, max_length=32)
    """Gathering zones."""
    crowd_movements: list[CrowdMovementRuleConfig] = Field(default_factory=list, max_length=32)
    """Crowd movement zones."""
    wrong_ways: list[WrongWayRuleConfig] = Field(default_factory=list, max_length=32)
    """Lanes with an allowed direction."""
    parkings: list[ParkingRuleConfig] = Field(default_factory=list, max_length=32)
    """Parking zones with a time limit."""
    intrusions: list[IntrusionRuleConfig] = Field(default_factory=list, max_length=32)
    """Forbidden or sensitive zones (decree: crossing into or presence in a zone)."""
    abandoned_objects: list[AbandonedObjectRuleConfig] = Field(default_factory=list, max_length=8)
    """Zones watched for objects left behind (decree: abandoned objects)."""
    fallen_persons: list[FallenPersonRuleConfig] = Field(default_factory=list, max_length=8)
    """Zones watched for a person on the ground (decree: a person on the ground after a fall)."""
    densities: list[DensityRuleConfig] = Field(default_factory=list, max_length=8)
    """Zones with a density limit (decree: excessive density); need ``ground``."""
    fires: list[FireRuleConfig] = Field(default_factory=list, max_length=8)
    """Zones watched for fire starts (decree: fire starts)."""
    ground: GroundCalibration | None = None
    """Ground-plane calibration (edgectl analytics calibrate): density in persons per m²."""
    tamper: TamperConfig = TamperConfig()
    """Tamper detection of this camera."""
    face_blur: bool = False
    """Metering mode: pixelate detected faces before recording (detection, never recognition)."""


class MqttConfig(_Section):
    enabled: bool = False
    """Publish signed events to an MQTT broker."""
    host: str = Field(default="localhost", min_length=1, max_length=253)
    """Broker host name or address."""
    port: int = Field(default=8883, ge=1, le=65535)
    """Broker port (8883 = MQTT over TLS)."""
    tls: bool = True
    """Use TLS (server certificate checked against ca_file)."""
    ca_file: Path | None = None
    """CA chain of the broker (default ``<data_dir>/keys/ca.pem``)."""
    cert_file: Path | None = None
    """Client certificate for mutual TLS (none: no client certificate)."""
    key_file: Path | None = None
    """Client private key for mutual TLS."""
    topic_prefix: str = Field(default="edge", pattern=r"^[A-Za-z0-9_\-/]{1,64}$")
    """Events go to ``<prefix>/<unit>/<camera>/<event type>``."""
    qos: int = Field(default=1, ge=0, le=2)
    """MQTT quality of service."""

    @model_validator(mode="after")
    def _client_certificate_pair(self) -> MqttConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (mutual TLS needs both)")
        if not self.tls and (self.ca_file or self.cert_file):
            raise ValueError("ca_file, cert_file and key_file need tls = true")
        return self


class AnalyticsConfig(_Section):
    enabled: bool = False
    """Run the analytics process (separate from recording; it never slows recording)."""
    rate_fps: float = Field(default=5.0, gt=0.0, le=30.0)
    """Frames per second offered to analytics; it drops its own frames when late."""
    width: int = Field(default=480, ge=64, le=1920, multiple_of=2)
    """Analytics frames are downscaled to at most this width."""
    slots: int = Field(default=3, ge=2, le=16)
    """Shared-memory frame slots between the capture thread and the analytics process."""
    motion_threshold: float = Field(default=0.004, gt=0.0, le=1.0)
    """Share of pixels that must change for motion to be seen."""
    detector: DetectorConfig = DetectorConfig()
    """Object detector."""
    snapshots: bool = True
    """Attach a JPEG of the (masked) analysed frame to alerts."""
    face_model_path: Path | None = None
    """MediaPipe face detector (.tflite) for face blurring (cameras with face_blur)."""
    face_model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    """Expected SHA-256 of the face model."""
    mqtt: MqttConfig = MqttConfig()
    """MQTT publishing of events."""
    cameras: list[CameraAnalyticsConfig] = Field(default_factory=list, max_length=8)
    """Rules and tamper settings per camera."""
    timezone: str = Field(default="Europe/Paris", min_length=1, max_length=64)
    """Time zone of rule schedules (IANA name)."""

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name: Europe/Paris)") from None
        return value

    @model_validator(mode="after")
    def _face_model_for_face_blur(self) -> AnalyticsConfig:
        # Checked here, not when the pipeline starts: a SIGHUP with face_blur and no model
        # used to pass the schema and fail half-way through a reload.
        blurred = [c.camera for c in self.cameras if c.face_blur]
        if blurred and self.face_model_path is None:
            raise ValueError(
                f"face_blur on camera(s) {', '.join(blurred)} needs face_model_path "
                "(a face detector model)"
            )
        if self.face_model_sha256 is not None and self.face_model_path is None:
            raise ValueError("face_model_sha256 is set but face_model_path is not")
        if self.detector.model_sha256 is not None and self.detector.model_path is None:
            raise ValueError("detector.model_sha256 is set but detector.model_path is not")
        return self

    @model_validator(mode="after")
    def _unique_names(self) -> AnalyticsConfig:
        cameras = [c.camera for c in self.cameras]
        for cam in self.cameras:
            if cameras.count(cam.camera) > 1:
                raise ValueError(f"camera {cam.camera!r} has two analytics sections")
            names = [r.name for r in cam.lines] + [r.name for r in cam.gatherings]
            names += [r.name for r in cam.crowd_movements] + [r.name for r in cam.wrong_ways]
            names += [r.name for r in cam.parkings] + [r.name for r in cam.intrusions]
            names += [r.name for r in cam.abandoned_objects] + [r.name for r in cam.fallen_persons]
            names += [r.name for r in cam.densities] + [r.name for r in cam.fires]
            if cam.densities and cam.ground is None:
                raise ValueError(
                    f"camera {cam.camera!r}: density rules need a ground calibration "
                    "([analytics.cameras.ground], edgectl analytics calibrate)"
                )
            for name in names:
                if names.count(name) > 1:
                    raise ValueError(f"camera {cam.camera!r}: rule name {name!r} is used twice")
        return self

    def for_camera(self, camera_id: str) -> CameraAnalyticsConfig:
        """The analytics settings of a camera (defaults when it has none)."""
        for cam in self.cameras:
            if cam.camera == camera_id:
                return cam
        return CameraAnalyticsConfig(camera=camera_id)


_DOOR_PATTERN = r"^(gpio:/dev/gpiochip\d+:\d+(:active-low)?|input:/dev/input/.+:[A-Z0-9_]+)$"


class ControlConfig(_Section):
    socket: Path = Path("/run/edge/control.sock")
    """Unix socket edgectl talks to (no TCP port, ever)."""
    maint_group: str | int = "edge-maint"
    """Group (name or gid) of maintenance staff: diagnostics, never a picture."""
    install_group: str | int = "edge-install"
    """Group (name or gid) of installers: diagnostics and the masked preview."""
    metrics_file: Path | None = None
    """OpenMetrics text file for node_exporter's textfile collector (none when unset)."""
    metrics_interval_s: float = Field(default=15.0, ge=1.0, le=3600.0)
    """How often the metrics file is rewritten."""
    door: str | None = Field(default=None, pattern=_DOOR_PATTERN)
    """Cabinet door switch: "gpio:/dev/gpiochipN:LINE[:active-low]" or "input:DEVICE:SW_NAME"."""


class Dot1xConfig(_Section):
    enabled: bool = False
    """Authenticate the wired uplink port with 802.1X EAP-TLS; the CSU link waits for it."""
    interface: str = Field(default="eth0", pattern=r"^[A-Za-z0-9_.:-]{1,15}$")
    """Wired network interface facing the switch port."""
    identity: str | None = Field(default=None, min_length=1, max_length=253)
    """EAP identity sent to the RADIUS server; default: the unit id."""
    client_cert: Path | None = None
    """Unit certificate (PEM); default: <data_dir>/keys/unit-tls.crt."""
    client_key: Path | None = None
    """Unit TLS/EAP private key (PEM); default: <data_dir>/keys/unit-tls.key."""
    server_ca: Path | None = None
    """CA chain the RADIUS server's certificate must chain to; default: <data_dir>/keys/ca.pem."""
    server_domain_match: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9.-]{1,253}(;[A-Za-z0-9.-]{1,253})*$"
    )
    """Exact DNS name(s) of the RADIUS server certificate, ";"-separated (domain_match)."""
    server_domain_suffix_match: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9.-]{1,253}(;[A-Za-z0-9.-]{1,253})*$"
    )
    """DNS suffix the RADIUS server certificate must be under, ";"-separated."""
    ctrl_dir: Path = Path("/run/wpa_supplicant")
    """wpa_supplicant's control socket directory (the socket is <ctrl_dir>/<interface>)."""
    ctrl_group: str = Field(default="edge", pattern=r"^[a-z_][a-z0-9_-]{0,31}$")
    """Group allowed on the control socket: the group edged runs as."""
    supplicant_conf: Path | None = None
    """Rendered supplicant file; default: /etc/wpa_supplicant/wpa_supplicant-wired-<if>.conf."""
    status_interval_s: float = Field(default=2.0, ge=0.1, le=60.0)
    """Period of the STATUS poll that confirms the port state and detects a dead supplicant."""
    reply_timeout_s: float = Field(default=2.0, ge=0.1, le=30.0)
    """How long the supplicant may take to answer a control request before it counts as lost."""
    expiry_warning_days: int = Field(default=30, ge=1, le=365)
    """Diagnostics warn this many days before the unit certificate expires."""

    @model_validator(mode="after")
    def _server_name_constrained(self) -> Dot1xConfig:
        # Any certificate of the CA would otherwise be accepted as the RADIUS server, including
        # another unit's: an impostor port could then harvest the unit's EAP exchange.
        if self.enabled and not (self.server_domain_match or self.server_domain_suffix_match):
            raise ValueError(
                "802.1X needs server_domain_match or server_domain_suffix_match: "
                "the RADIUS server's name must be checked, never any server accepted"
            )
        return self


class OutputKind(StrEnum):
    """How the unit drives a cabinet output."""

    MODBUS = "modbus"
    GPIO = "gpio"
    AUDIO = "audio"


class ModbusTransport(StrEnum):
    """Modbus over Ethernet (TCP) or over a serial line, RS-485 usually (RTU)."""

    TCP = "tcp"
    RTU = "rtu"


class ModbusOutputConfig(_Section):
    transport: ModbusTransport = ModbusTransport.TCP
    """``tcp`` (host and port) or ``rtu`` (serial_port and its line settings)."""
    host: str | None = Field(
        default=None, min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\-]+$"
    )
    """The PLC or sign controller (on the cabinet's own network, never the uplink's)."""
    port: int = Field(default=502, ge=1, le=65535)
    """Modbus TCP port."""
    serial_port: str | None = Field(default=None, pattern=r"^/dev/[A-Za-z0-9_./-]+$")
    """Serial device of an RTU line (``/dev/ttyUSB0``, ``/dev/ttyAMA1``)."""
    baudrate: int = Field(default=19200, ge=1200, le=921_600)
    """RTU line speed."""
    parity: str = Field(default="E", pattern=r"^[NEO]$")
    """RTU parity: E (the Modbus default, 8E1), N or O."""
    stopbits: int = Field(default=1, ge=1, le=2)
    """RTU stop bits (2 is the Modbus rule without parity)."""
    device_id: int = Field(default=1, ge=0, le=247)
    """Modbus unit (slave) id of the controller."""
    state_register: int = Field(ge=0, le=65535)
    """Holding register that selects what the output shows (0-based address)."""
    heartbeat_register: int | None = Field(default=None, ge=0, le=65535)
    """Register edged increments every ``outputs_heartbeat_s``: a controller programmed to
    watch it returns to its safe state by itself when the unit dies or loses power."""
    timeout_s: float = Field(default=1.0, gt=0.0, le=10.0)
    """Time limit of one Modbus request."""

    @model_validator(mode="after")
    def _transport_settings(self) -> ModbusOutputConfig:
        if self.transport is ModbusTransport.TCP and self.host is None:
            raise ValueError("a Modbus TCP output needs host")
        if self.transport is ModbusTransport.RTU and self.serial_port is None:
            raise ValueError("a Modbus RTU output needs serial_port")
        return self


class GpioOutputConfig(_Section):
    chip: str = Field(pattern=r"^/dev/gpiochip\d+$")
    """GPIO character device of the relay line."""
    line: int = Field(ge=0, le=1023)
    """Line offset on that chip."""
    active_low: bool = False
    """The relay closes when the line is driven low."""


class AudioOutputConfig(_Section):
    device: str = Field(default="default", min_length=1, max_length=200)
    """ALSA PCM the messages play on (``aplay -D``)."""
    messages_dir: Path = Path("/etc/edge/messages")
    """Directory of the city's prerecorded messages (WAV); nothing else is ever played."""


class OutputConfig(_Section):
    name: Identifier
    """The output's name in playbooks, status, metrics and commands."""
    meaning: str = Field(min_length=1, max_length=200)
    """What it does in the street, in the city's words (shown to agents and maintenance)."""
    kind: OutputKind
    """modbus, gpio or audio; the table of the same name configures it."""
    modbus: ModbusOutputConfig | None = None
    """Modbus TCP controller (kind = "modbus")."""
    gpio: GpioOutputConfig | None = None
    """Relay on a GPIO line (kind = "gpio")."""
    audio: AudioOutputConfig | None = None
    """Audio channel (kind = "audio")."""
    states: dict[Identifier, int | str] = Field(min_length=1, max_length=32)
    """The states playbooks and commands may set, by name: a register value (modbus), 0 or 1
    (gpio, 1 = relay closed) or a message file in ``messages_dir`` (audio)."""
    safe_value: int = Field(default=0, ge=0, le=65535)
    """Register value (modbus) or line value (gpio) of the safe state; audio's is silence."""
    max_duration_s: float = Field(default=600.0, gt=0.0, le=86_400.0)
    """No action on this output lasts longer, whatever a playbook or command asks."""

    @model_validator(mode="after")
    def _driver_table(self) -> OutputConfig:
        tables = {"modbus": self.modbus, "gpio": self.gpio, "audio": self.audio}
        extra = [k for k, v in tables.items() if v is not None and k != self.kind.value]
        if tables[self.kind.value] is None:
            raise ValueError(
                f"output {self.name!r} of kind {self.kind.value} needs its "
                f"[outputs.{self.kind.value}] table"
            )
        if extra:
            raise ValueError(
                f"output {self.name!r} of kind {self.kind.value} has a table "
                f"for another kind: {', '.join(extra)}"
            )
        for state, value in self.states.items():
            if self.kind is OutputKind.AUDIO:
                if not isinstance(value, str) or not re.fullmatch(
                    r"[A-Za-z0-9_-]{1,64}\.wav", value
                ):
                    raise ValueError(
                        f"output {self.name!r}: state {state!r} must name a .wav "
                        "file of messages_dir (no path)"
                    )
            elif not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"output {self.name!r}: state {state!r} must be a number")
            elif not 0 <= value <= (1 if self.kind is OutputKind.GPIO else 65535):
                raise ValueError(f"output {self.name!r}: state {state!r} = {value} is out of range")
            elif value == self.safe_value:
                raise ValueError(f"output {self.name!r}: state {state!r} is the safe state")
        if self.kind is OutputKind.GPIO and self.safe_value > 1:
            raise ValueError(f"output {self.name!r}: a GPIO safe_value is 0 or 1")
        return self


class Confirmation(StrEnum):
    """Whether a playbook waits for an agent."""

    REQUIRED = "required"
    IMMEDIATE = "immediate"


class PlaybookConfig(_Section):
    name: Identifier
    """The playbook's name in status, audit records and confirmations."""
    event: str = Field(pattern=r"^[a-z0-9_-]{1,64}$")
    """Kind of event that starts it (``wrong_way``, ``gathering``, ``camera-lost``…)."""
    camera: Identifier | None = None
    """Only events of this camera (any camera when unset)."""
    rule: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    """Only events of this analytics rule name (any when unset)."""
    output: Identifier
    """The output it drives."""
    state: Identifier
    """The output's state it sets (one of the output's ``states``)."""
    duration_s: float = Field(gt=0.0, le=86_400.0)
    """How long the state holds; then the output returns to its safe state."""
    confirmation: Confirmation = Confirmation.REQUIRED
    """``required`` (the default: an agent decides, decree 2023-828) or ``immediate`` where
    waiting would cost lives (a wrong-way warning), as the city decides."""
    confirm_within_s: float = Field(default=300.0, gt=0.0, le=3600.0)
    """A request no agent confirmed within this time lapses."""
    max_event_age_s: float = Field(default=10.0, gt=0.0, le=3600.0)
    """An event older than this (delayed, replayed after a restart) starts nothing."""
    safe_on_uplink_loss: bool = False
    """Return to the safe state when the link to the CSU is lost."""


class MemoryConfig(_Section):
    frame_budget_mib: int = Field(default=384, ge=32, le=65_536)
    """Memory for raw frames, all cameras together (recording queues, the preview, analytics
    shared memory), in MiB. A frame that would exceed it is dropped and counted, never
    allocated. The default suits a 2 GiB unit; 4K and 8K cameras queue fewer seconds in it."""


#: Full-size frames a camera needs at the least: being captured, kept for the preview, being
#: encoded, and a recording queue of two (edge.framepool.queue_frames).
MIN_FRAMES_PER_CAMERA = 5


class EdgeConfig(_Section):
    unit: UnitConfig = UnitConfig()
    """The unit as a whole."""
    cameras: list[CameraConfig] = Field(
        default_factory=lambda: [CameraConfig()], min_length=1, max_length=8
    )
    """Cameras attached to this unit."""
    logging: LoggingConfig = LoggingConfig()
    """Logging settings."""
    dot1x: Dot1xConfig = Dot1xConfig()
    """802.1X EAP-TLS authentication of the wired uplink port."""
    analytics: AnalyticsConfig = AnalyticsConfig()
    """On-device analytics: motion, detection, tracking, rules, tamper."""
    vault: VaultConfig = VaultConfig()
    """Sealed recording store: retention, recipients of the epoch keys."""
    uplink: UplinkConfig = UplinkConfig()
    """Link to the supervision centre (CSU)."""
    control: ControlConfig = ControlConfig()
    """Local control socket, diagnostics and metrics."""
    outputs: list[OutputConfig] = Field(default_factory=list, max_length=32)
    """Cabinet outputs: signs and PLCs (Modbus), relays (GPIO), audio messages."""
    playbooks: list[PlaybookConfig] = Field(default_factory=list, max_length=64)
    """What an event may do to the outputs, for how long, with or without an agent."""
    outputs_heartbeat_s: float = Field(default=1.0, ge=0.1, le=60.0)
    """Period of the heartbeat written to Modbus controllers that watch one."""
    memory: MemoryConfig = MemoryConfig()
    """Memory budget of the recording path."""

    @model_validator(mode="after")
    def _unique_camera_ids(self) -> EdgeConfig:
        seen: set[str] = set()
        for cam in self.cameras:
            if cam.id in seen:
                raise ValueError(f"camera id {cam.id!r} is used twice")
            seen.add(cam.id)
        return self

    @model_validator(mode="after")
    def _playbooks_name_outputs(self) -> EdgeConfig:
        outputs: dict[str, OutputConfig] = {}
        for i, out in enumerate(self.outputs):
            if out.name in outputs:
                raise _LocatedError(
                    ("outputs", i, "name"), f"output name {out.name!r} is used twice"
                )
            outputs[out.name] = out
        names: set[str] = set()
        cameras = {cam.id for cam in self.cameras}
        for i, pb in enumerate(self.playbooks):
            if pb.name in names:
                raise _LocatedError(
                    ("playbooks", i, "name"), f"playbook name {pb.name!r} is used twice"
                )
            names.add(pb.name)
            target = outputs.get(pb.output)
            if target is None:
                raise _LocatedError(("playbooks", i, "output"), f"no output named {pb.output!r}")
            if pb.state not in target.states:
                raise _LocatedError(
                    ("playbooks", i, "state"),
                    f"output {pb.output!r} has no state {pb.state!r} "
                    f"({', '.join(sorted(target.states))})",
                )
            if pb.duration_s > target.max_duration_s:
                raise _LocatedError(
                    ("playbooks", i, "duration_s"),
                    f"{pb.duration_s:g} s is over the output's max_duration_s "
                    f"({target.max_duration_s:g} s)",
                )
            if pb.camera is not None and pb.camera not in cameras:
                raise _LocatedError(
                    ("playbooks", i, "camera"),
                    f"camera {pb.camera!r} is not among the cameras ({', '.join(sorted(cameras))})",
                )
        return self

    @model_validator(mode="after")
    def _frames_fit_in_budget(self) -> EdgeConfig:
        # Refused here, with the figures, rather than a unit that drops every frame.
        need = 0
        for cam in self.cameras:
            need += MIN_FRAMES_PER_CAMERA * cam.width * cam.height * 3 // 2
            if self.analytics.enabled:
                step = max(1, -(-cam.width // self.analytics.width))
                w, h = (cam.width // step) // 2 * 2, (cam.height // step) // 2 * 2
                need += self.analytics.slots * (w * h * 3 // 2 + 24)
        budget = self.memory.frame_budget_mib * 1024 * 1024
        if need > budget:
            raise ValueError(
                f"memory.frame_budget_mib: {self.memory.frame_budget_mib} MiB cannot hold the "
                f"cameras' frames: they need at least {-(-need // (1024 * 1024))} MiB "
                f"({MIN_FRAMES_PER_CAMERA} frames each, plus analytics shared memory)"
            )
        return self

    @model_validator(mode="after")
    def _analytics_names_cameras(self) -> EdgeConfig:
        # Rules (and face_blur) for a camera id that does not exist would silently never apply.
        ids = {cam.id for cam in self.cameras}
        for section in self.analytics.cameras:
            if section.camera not in ids:
                raise ValueError(
                    f"analytics.cameras: camera {section.camera!r} is not among the cameras "
                    f"({', '.join(sorted(ids))})"
                )
        return self


DEMO_CONFIG_TOML = """\
# Embedded demo default: a synthetic street scene, its windows masked, data in ./edge-data.
[unit]
id = "demo-unit"
data_dir = "./edge-data"

[[cameras]]
id = "cam1"
source = "synthetic"
width = 1280
height = 720
fps = 25

# Every window of the synthetic façade, frames included, with a few pixels to spare
# (edge.capture.scene.windows; tests/test_demo_config.py holds the masks to it).
[[cameras.privacy_masks]]
name = "upper-floor windows"
points = [[0.02, 0.04], [0.98, 0.04], [0.98, 0.19], [0.02, 0.19]]

[[cameras.privacy_masks]]
name = "ground-floor windows"
points = [[0.02, 0.25], [0.98, 0.25], [0.98, 0.40], [0.02, 0.40]]

[vault]
# Demo only: no CSU key exists, so a demo recipient key is created in the data dir.
demo_recipient = true
"""


# --- loading ---------------------------------------------------------------------------------


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out


_HEADER_RE = re.compile(r"^\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"^\s*([A-Za-z0-9_\-\.\"' ]+?)\s*=")


def _split_dotted(key: str) -> list[str]:
    return [p.strip().strip("\"'") for p in key.split(".")]


def locate_line(text: str, loc: tuple[int | str, ...]) -> int | None:
    """Best-effort line (1-based) of the key at ``loc`` in TOML ``text``.

    Tracks table headers (``[a.b]``) and arrays of tables (``[[a.b]]``, counting entries) so
    ``("cameras", 1, "fps")`` finds the ``fps`` line in the second ``[[cameras]]`` block. Falls
    back to the line of the longest prefix of ``loc`` that can be found.
    """
    counts: dict[tuple[str, ...], int] = {}
    table: tuple[int | str, ...] = ()
    best: tuple[int, int] | None = None  # (matched length, line)

    def consider(path: tuple[int | str, ...], lineno: int) -> None:
        nonlocal best
        n = 0
        for a, b in zip(path, loc, strict=False):
            if a != b:
                break
            n += 1
        if n == len(path) and n > 0 and (best is None or n > best[0]):
            best = (n, lineno)

    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0] if '"' not in raw and "'" not in raw else raw
        header = _HEADER_RE.match(line)
        if header:
            names = _split_dotted(header.group(2))
            path: list[int | str] = []
            # Resolve each prefix that is an array of tables to its current entry.
            for i, name in enumerate(names):
                path.append(name)
                key = tuple(str(p) for p in names[: i + 1])
                if header.group(1) == "[[" and i == len(names) - 1:
                    counts[key] = counts.get(key, -1) + 1
                    path.append(counts[key])
                elif key in counts:
                    path.append(counts[key])
            table = tuple(path)
            consider(table, lineno)
            continue
        keym = _KEY_RE.match(line)
        if keym:
            consider(table + tuple(_split_dotted(keym.group(1))), lineno)
    return best[1] if best else None


def _syntax_error(exc: tomllib.TOMLDecodeError, text: str, path: str) -> ConfigError:
    m = re.search(r"\(at line (\d+), column \d+\)", str(exc))
    if m:
        line: int | None = int(m.group(1))
    elif "end of document" in str(exc):
        line = max(1, len(text.splitlines()))
    else:
        line = None
    return ConfigError(f"not valid TOML: {exc}", path=path, line=line)


def _toml(text: str, path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _syntax_error(exc, text, path) from None


def _current(text: str, path: str) -> dict[str, Any]:
    """The file's document in this release's schema (:mod:`edge.configschema`)."""
    doc, _schema = migrate(_toml(text, path), path=path, locate=lambda loc: locate_line(text, loc))
    return doc


def _refusal(exc: ValidationError, text: str, path: str) -> ConfigError:
    err = exc.errors(include_url=False)[0]
    loc = _error_loc(err)
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = renamed_hint(loc) or "unknown key"
    more = f" (and {exc.error_count() - 1} more problem(s))" if exc.error_count() > 1 else ""
    return ConfigError(
        msg + more, path=path, key=_format_loc(loc) or None, line=locate_line(text, loc)
    )


def parse(text: str, *, path: str = "<config>") -> EdgeConfig:
    """Validate TOML text; raise :class:`ConfigError` naming file, key and line of a problem."""
    raw = _current(text, path)
    try:
        return EdgeConfig.model_validate(raw)
    except ValidationError as exc:
        raise _refusal(exc, text, path) from None


def parse_layered(
    text: str, *, path: str = "<config>", unit_text: str, unit_path: str = "<unit>"
) -> EdgeConfig:
    """The baseline ``text`` with the per-unit file ``unit_text`` laid over it (see
    :mod:`edge.unitfile`); a problem names the file the offending key came from, its line
    and key, as :func:`parse` does for one file."""
    raw = _current(text, path)
    unit_raw = _current(unit_text, unit_path)
    for loc in BASELINE_ONLY:
        if from_unit_file(unit_raw, loc):
            raise ConfigError(
                f"set in the baseline ({path}) only: the per-unit file lives in the data "
                "directory and cannot move it",
                path=unit_path,
                key=_format_loc(loc),
                line=locate_line(unit_text, loc),
            )
    try:
        return EdgeConfig.model_validate(merge(raw, unit_raw))
    except ValidationError as exc:
        if from_unit_file(unit_raw, tuple(exc.errors(include_url=False)[0]["loc"])):
            raise _refusal(exc, unit_text, unit_path) from None
        raise _refusal(exc, text, path) from None


def is_provisioned(cfg: EdgeConfig) -> bool:
    """Whether a unit id was given (in the baseline or the unit file): an unprovisioned unit
    records nothing, rather than under a made-up identity."""
    return "id" in cfg.unit.model_fields_set


def all_problems(text: str, *, path: str = "<config>") -> list[ConfigError]:
    """Every problem in a config text as :class:`ConfigError` (for ``edgectl config check``)."""
    try:
        raw = _current(text, path)
    except ConfigError as exc:
        return [exc]
    try:
        EdgeConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_url=False):
            loc = _error_loc(err)
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = renamed_hint(loc) or "unknown key"
            problems.append(
                ConfigError(
                    msg, path=path, key=_format_loc(loc) or None, line=locate_line(text, loc)
                )
            )
        return problems
    return []


DEMO_CONFIG = parse(DEMO_CONFIG_TOML, path="<embedded demo config>")


def load(
    path: Path | None, *, demo: bool = False, data_dir: Path | None = None
) -> tuple[EdgeConfig, str]:
    """Load the configuration; returns it with a description of where it came from.

    ``path=None`` means the default location; ``demo`` asks for the embedded demo default
    instead. Without either, a missing default file is an error, never a silent fallback to
    the demo: a real unit must not record under the demo's settings (its own readable key).
    An explicitly given path that does not exist is an error too. The per-unit file of the
    data directory (``data_dir``, else the file's ``unit.data_dir``) is laid over the file when
    it exists; the origin then names both.
    """
    if demo:
        if path is not None:
            raise ConfigError("give --config FILE or --demo, not both", path=str(path))
        return _absolute(DEMO_CONFIG), "embedded demo default"
    if path is None:
        if not DEFAULT_CONFIG_PATH.exists():
            raise ConfigError(
                f"no configuration at {DEFAULT_CONFIG_PATH} (use --config FILE, or --demo for "
                "the embedded demo)"
            )
        path = DEFAULT_CONFIG_PATH
    text = read_text(path)
    unit_path = unit_file_of(data_dir or _data_dir_named(_toml(text, str(path))))
    try:
        unit_path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return _absolute(parse(text, path=str(path))), str(path)
    except PermissionError as exc:
        # The data directory itself is closed to this user: edged refuses it (exit 73) with
        # its own words once loaded; edgectl reads the baseline and says what it left out.
        origin = f"{path} (not laid over {unit_path}: {exc.strerror})"
        return _absolute(parse(text, path=str(path))), origin
    # A file of a newer schema (a rolled-back slot): the one of this release's, kept beside it.
    readable, note = file_for_this_release(unit_path)
    cfg = parse_layered(
        text, path=str(path), unit_text=read_text(readable), unit_path=str(readable)
    )
    return _absolute(cfg), f"{path} + {readable}" + (f" ({note})" if note else "")


def _data_dir_named(raw: dict[str, Any]) -> Path:
    """The data directory a baseline names, read before validation (the schema's default when
    it names none or names it wrongly: validation says so afterwards)."""
    unit = raw.get("unit")
    named = unit.get("data_dir") if isinstance(unit, dict) else None
    default = UnitConfig.model_fields["data_dir"].default
    return Path(os.path.abspath(named if isinstance(named, str) else default))


def read_text(path: Path) -> str:
    """A configuration file's text, or a :class:`ConfigError` saying why it cannot be read."""
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        step = {
            errno.EACCES: ": run it with sudo, or as a member of the file's group",
            errno.ENOENT: ": check the path (edgectl config check FILE validates one)",
            errno.EISDIR: ": give the TOML file, not its directory",
        }.get(exc.errno or 0, "")
        raise ConfigError(f"cannot read: {exc.strerror}{step}", path=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError(
            "not UTF-8 text: give the TOML configuration file", path=str(path)
        ) from None


def with_data_dir(cfg: EdgeConfig, data_dir: Path) -> EdgeConfig:
    """A copy of ``cfg`` whose data directory is ``data_dir`` (the ``--data-dir`` flag)."""
    unit = cfg.unit.model_copy(update={"data_dir": Path(os.path.abspath(data_dir))})
    return cfg.model_copy(update={"unit": unit})


def _absolute(cfg: EdgeConfig) -> EdgeConfig:
    """The data directory made absolute once, against the working directory at load time:
    code that lists a directory and joins the names it finds to a relative root again builds
    doubled paths (``data/vault/data/vault/…``), so no relative data directory goes further."""
    return with_data_dir(cfg, cfg.unit.data_dir)


# --- what edged checks at start beyond the schema --------------------------------------------

#: Reports one start-up problem: (message, dotted key).
_Problem = Callable[[str, str], None]


def startup_problems(
    cfg: EdgeConfig, *, path: str = "<config>", text: str | None = None, away: bool = False
) -> list[ConfigError]:
    """Everything that would stop ``edged`` from starting with ``cfg`` beyond the schema.

    One function for both: ``edged`` refuses to start on any of these, and ``edgectl config
    check`` reports them, so a file the check passes is a file edged starts with (the Ansible
    role writes /etc/edge/edge.toml only once the check passes). Checked: the recipient keys
    (present unless demo, readable, recipient public keys of ``vault.kem``, no private
    material), the data directory (a directory this process may write, with room for a new
    vault), the model files of enabled features (present, and their pinned SHA-256) and the
    certificate and key files named for enabled features (present, readable; certificates PEM).

    ``away``: the file is checked on another machine (a build host, Ansible's controller)
    where the unit's files do not exist: only the requirements that need no file are checked;
    the files and the data directory are judged on the unit, by ``edgectl config check`` there
    and by ``edged`` at start.
    """
    problems: list[ConfigError] = []

    def problem(message: str, key: str) -> None:
        loc = tuple(int(p) if p.isdigit() else p for p in re.split(r"[.\[\]]+", key) if p)
        line = locate_line(text, loc) if text is not None else None
        problems.append(ConfigError(message, path=path, key=key, line=line))

    _check_recipients(cfg, problem, away)
    if away:
        return problems
    _check_data_dir(cfg.unit.data_dir, problem)
    an = cfg.analytics
    face_blur = any(section.face_blur for section in an.cameras)
    models: list[tuple[Path | None, str | None, str]] = []
    if an.enabled:
        models.append((an.detector.model_path, an.detector.model_sha256, "analytics.detector"))
    if face_blur or an.enabled:
        models.append((an.face_model_path, an.face_model_sha256, "analytics"))
    for model, sha256, section in models:
        key = f"{section}.{'face_model_path' if section == 'analytics' else 'model_path'}"
        if model is not None and _readable_file(model, key, problem, "model file") and sha256:
            from .analytics.litert import sha256_file  # local: hashing only, no interpreter

            actual = sha256_file(model)
            if actual != sha256:
                problem(
                    f"{model}: SHA-256 {actual} differs from the pinned {sha256}: install the "
                    "pinned model, or pin this one",
                    key,
                )
    files: list[tuple[Path | None, str, bool]] = []  # (file, key, is certificates)
    for i, cam in enumerate(cfg.cameras):
        files.append((cam.tls_ca_file, f"cameras[{i}].tls_ca_file", True))
    if cfg.uplink.enabled:
        up = cfg.uplink
        files += [
            (up.ca_file, "uplink.ca_file", True),
            (up.cert_file, "uplink.cert_file", True),
            (up.key_file, "uplink.key_file", False),
        ]
    if an.mqtt.enabled:
        mq = an.mqtt
        files += [
            (mq.ca_file, "analytics.mqtt.ca_file", True),
            (mq.cert_file, "analytics.mqtt.cert_file", True),
            (mq.key_file, "analytics.mqtt.key_file", False),
        ]
    if cfg.dot1x.enabled:
        d = cfg.dot1x
        files += [
            (d.server_ca, "dot1x.server_ca", True),
            (d.client_cert, "dot1x.client_cert", True),
            (d.client_key, "dot1x.client_key", False),
        ]
    for file, key, certificates in files:
        what = "certificate file" if certificates else "key file"
        if file is None or not _readable_file(file, key, problem, what) or not certificates:
            continue
        from cryptography import x509  # local: only when a certificate file is named

        try:
            x509.load_pem_x509_certificates(file.read_bytes())
        except ValueError:
            problem(f"{file}: not PEM certificate(s): give the PEM file (BEGIN CERTIFICATE)", key)
    return problems


def _readable_file(file: Path, key: str, problem: _Problem, what: str) -> bool:
    try:
        with file.open("rb") as fh:
            fh.read(1)
    except IsADirectoryError:
        problem(f"{file}: is a directory, not a {what}: name the file inside it", key)
        return False
    except FileNotFoundError:
        problem(f"{file}: no such {what}: install it there, or correct the path", key)
        return False
    except OSError as exc:
        problem(f"{file}: cannot read the {what}: {exc.strerror}", key)
        return False
    return True


def _check_recipients(cfg: EdgeConfig, problem: _Problem, away: bool) -> None:
    # local: vault.recipient_keys imports this module
    from edge.vault.recipient_keys import load_public

    v = cfg.vault
    if v.csu_public_key is None and not v.demo_recipient:
        problem(
            "required: the CSU recipient public key (csu.pub.json from edge-csu keygen); the "
            "unit never records unencrypted",
            "vault.csu_public_key",
        )
    for file, key in ((v.csu_public_key, "vault.csu_public_key"),
                      (v.escrow_public_key, "vault.escrow_public_key")):  # fmt: skip
        if file is None or away:
            continue
        if not _readable_file(file, key, problem, "recipient public key"):
            continue
        try:
            recipient = load_public(file)
        except ConfigError as exc:  # private material in it
            problem(exc.reason, key)
            continue
        except EdgeError as exc:
            problem(f"{exc}: give the csu.pub.json written by edge-csu keygen", key)
            continue
        if recipient.kem is not v.kem:
            problem(f"{file} is a {recipient.kem.value} key but vault.kem is {v.kem.value}", key)


def _check_data_dir(data_dir: Path, problem: _Problem) -> None:
    """What :func:`edge.app.datadir.lock_data_dir` would meet, found without creating anything."""

    from edge.app.datadir import FRESH_MIN_FREE, unusable

    def refuse(code: int, where: Path, detail: str | None = None) -> None:
        exc = OSError(code, detail or os.strerror(code), str(where))
        problem(str(unusable(data_dir, exc)), "unit.data_dir")

    existing = data_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        refuse(errno.ENOTDIR, existing)
        return
    st = os.statvfs(existing)
    if st.f_flag & os.ST_RDONLY:
        refuse(errno.EROFS, existing)
        return
    if not os.access(
        existing, os.W_OK | os.X_OK, effective_ids=os.access in os.supports_effective_ids
    ):
        refuse(errno.EACCES, existing)
        return
    free = st.f_bavail * st.f_frsize
    if not (data_dir / "vault").is_dir() and free < FRESH_MIN_FREE:
        refuse(
            errno.ENOSPC,
            existing,
            f"{free // 1024} KiB free, a new vault needs {FRESH_MIN_FREE // 1024} KiB",
        )
