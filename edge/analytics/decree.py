"""What an analytics event may say: decree n° 2023-828 allows signalling events, never
identifying anyone. Pure checks, applied by edged to every draft of the analytics process
(:mod:`edge.analytics.channel`) before it signs it, and the provenance every event carries.

* **No identity, no biometrics, no face output.** An event's ``details`` hold only the fields
  of :data:`DETAIL_FIELDS`, each of its type: counts, durations, ratios, an anonymous track
  number (a counter of this analytics process, never linked to anything), a box in the frame,
  a class label from the detector's declared list (``analytics.detector.labels``, or
  ``object`` without a model). No nesting beyond the counts, no free text, no field that could
  hold a face crop, landmarks, an embedding, a plate or a name. A key that names such a thing
  is refused with its reason; any other unknown key is refused too.
* **Provenance.** Every event of the analytics process (counts, alerts, tamper) carries,
  signed, the SHA-256 of the model that produced it (``motion-only`` without one) and the
  version of the analytics configuration in force (the SHA-256 of its canonical JSON): what
  was deployed when an alert was raised or a count made can be proven.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Collection
from typing import Any

from ..config import EdgeConfig
from ..errors import ProtocolError

#: Every field an event's details may hold, and its type.
DETAIL_FIELDS: dict[str, str] = {
    "counts": "counts",
    "interval_seconds": "number",
    "persons": "int",
    "seconds": "number",
    "seconds_unattended": "number",
    "seconds_present": "number",
    "cause": "word",
    "spread_ratio": "number",
    "mean_speed": "number",
    "baseline_speed": "number",
    "track": "int",
    "label": "label",
    "angle_degrees": "number",
    "box": "box",
    "area_m2": "number",
    "per_m2": "number",
    "area": "number",
    "growth": "number",
    "flicker": "number",
    "coherence": "number",
    "contrast_ratio": "number",
    "sharpness_ratio": "number",
    "layout_correlation": "number",
    "seconds_without_frames": "number",
}

#: Words that name identity, biometric or face output: a key holding one is refused with this
#: reason (the decree forbids it), whatever else it says.
FORBIDDEN = re.compile(
    r"face|landmark|embedding|biometr|identi|name|plate|licen[cs]e|gender|sex|age_|ethnic|"
    r"descriptor|keypoint|feature|recogni|iris|gait|fingerprint|person_id|re_?id|crop|portrait",
    re.IGNORECASE,
)
_WORD = re.compile(r"[a-z][a-z0-9_]{0,31}")
WAYS = frozenset({"forward", "backward"})


def _refuse(key: str, why: str) -> ProtocolError:
    return ProtocolError(f"event detail {key[:40]!r} {why}")


def check_details(details: dict[str, Any], labels: Collection[str] | None = None) -> None:
    """Refuse details that could carry identity, biometric or face output; ``labels`` the
    class labels the detector was declared with (None: any word)."""
    for key, value in details.items():
        if not isinstance(key, str):
            raise _refuse(str(key), "is not a text key")
        if FORBIDDEN.search(key):
            raise _refuse(
                key,
                "would carry identity, biometric or face output: decree 2023-828 forbids it",
            )
        kind = DETAIL_FIELDS.get(key)
        if kind is None:
            raise _refuse(key, "is not a field analytics events may hold")
        _check_value(key, kind, value, labels)


def _number(value: object) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and abs(value) < 1e12
    )


def _label(value: object, labels: Collection[str] | None) -> bool:
    if not isinstance(value, str) or not _WORD.fullmatch(value):
        return False
    return labels is None or value in labels


def _check_value(key: str, kind: str, value: object, labels: Collection[str] | None) -> None:
    ok: bool
    if kind == "number":
        ok = _number(value)
    elif kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31
    elif kind == "word":
        ok = isinstance(value, str) and bool(_WORD.fullmatch(value))
    elif kind == "label":
        ok = _label(value, labels)
    elif kind == "box":
        ok = (
            isinstance(value, list)
            and len(value) == 4
            and all(_number(v) and -1.0 <= float(v) <= 2.0 for v in value)
        )
    else:  # counts: {"label/way": n}
        ok = isinstance(value, dict) and all(
            isinstance(k, str)
            and k.count("/") == 1
            and _label(k.split("/")[0], labels)
            and k.split("/")[1] in WAYS
            for k in value
        )
    if not ok:
        raise _refuse(key, f"is not a {kind} of an anonymous event")


def declared_labels(cfg: EdgeConfig) -> frozenset[str]:
    """The class labels analytics may name: the detector's declared ones, or ``object``."""
    if cfg.analytics.detector.model_path is None:
        return frozenset({"object"})
    return frozenset(cfg.analytics.detector.labels) | {"object"}


def config_version(cfg: EdgeConfig, camera: str) -> str:
    """SHA-256 of the canonical JSON of the analytics settings in force for ``camera``: the
    global ones (rate, size, detector, time zone) and the camera's rules. MQTT settings (a
    broker address, credentials' paths) are not part of what produced an alert."""
    an = cfg.analytics
    doc = {
        "analytics": an.model_dump(mode="json", exclude={"cameras", "mqtt"}),
        "camera": an.for_camera(camera).model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def model_digest(cfg: EdgeConfig) -> str:
    """The model's SHA-256 (the pinned one, else the file's), or ``motion-only``."""
    det = cfg.analytics.detector
    if det.model_path is None:
        return "motion-only"
    if det.model_sha256:
        return det.model_sha256
    from .litert import sha256_file  # local: hashing only, no interpreter

    try:
        return sha256_file(det.model_path)
    except OSError as exc:  # the child refuses the model too; say so in the alert
        return f"unreadable: {exc.strerror}"


def provenance(cfg: EdgeConfig, camera: str) -> dict[str, str]:
    """What every event of ``camera``'s analytics (counts, alerts, tamper) carries, signed,
    under ``provenance``."""
    return {"model_sha256": model_digest(cfg), "config_sha256": config_version(cfg, camera)}
