"""Accuracy of the analytics on a labelled clip: what ``edgectl analytics evaluate`` measures.

The clip goes through the code edged runs, in its order: each frame is masked in place by
:class:`PrivacyMasker`, offered at ``analytics.rate_fps`` like :meth:`AnalyticsBridge.offer`
does, decimated like the frame ring does, and analysed by :class:`AnalyticsEngine` (motion,
the configured detector, tracker, rules). What comes out is compared with hand-made labels:

- counting: per line, class and direction, the total counted against the true crossings;
  per count interval (the engine publishes counts per interval, so the intervals are what a
  city sees): a count in the wrong interval is an error there even when totals agree; and
  crossing by crossing (a twin of the line fed the engine's tracks times each count): matched
  within ``CROSSING_SLACK_S``, false, missed, so that errors that cancel out are seen;
- rules: an alert is true when a labelled event of its rule and kind spans its time (give or
  take ``EVENT_SLACK_S``); per rule, precision, recall and false alarms per hour of footage;
- tracking: when the labels name a MOT Challenge ground-truth file, MOTA, IDF1 and identity
  switches on the annotated frames the engine analysed, through ``motmetrics`` (the reference
  implementation of the CLEAR-MOT and ID metrics), the engine's confirmed tracks scaled back to
  the clip's pixels.

The labels file is TOML (``tests/footage/vtest.labels.toml`` is the worked example): the clip's
SHA-256 (a report never describes a different clip), its masks and the camera's rules in the
configuration's own schema, and under ``[truth]`` the crossings and the events.
"""

from __future__ import annotations

import hashlib
import math
import subprocess
import tomllib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
import numpy as np
from pydantic import ValidationError

from ..config import AnalyticsConfig, CameraAnalyticsConfig, PrivacyMaskConfig
from ..errors import AnalyticsError, ConfigError
from ..frames import Frame
from ..privacy.masker import PrivacyMasker
from .engine import AnalyticsEngine
from .rules import LineCounter
from .shm import analysis_geometry
from .worker import make_detector

CROSSING_SLACK_S = 1.5
"""A counted crossing matches a true one of its line and direction this close in time (labels
are good to about 0.3 s; the engine sees 5 frames a second and a track's anchor lags)."""
EVENT_SLACK_S = 5.0
"""An alert this long before or after a labelled event still matches it (rules have delays)."""
WALL0_NS = 1_700_000_000 * 10**9
"""Wall clock of the clip's first frame: fixed, so two evaluations give the same report. It is
a Tuesday, 23:13 in Paris: a rule the labels give a night-time schedule is armed; rules without
a schedule always are."""
DIRECTIONS = ("forward", "backward")


@dataclass(frozen=True, slots=True)
class Crossing:
    frame: int
    line: str
    direction: str
    label: str


@dataclass(frozen=True, slots=True)
class LabelledEvent:
    first: int
    last: int
    kind: str
    rule: str


@dataclass(frozen=True, slots=True)
class Labels:
    path: Path
    clip_name: str
    clip_sha256: str
    package: str | None
    fps: float
    masks: list[PrivacyMaskConfig]
    camera: CameraAnalyticsConfig
    crossings: list[Crossing]
    events: list[LabelledEvent]
    mot_gt: Path | None


def _rows(doc: dict[str, Any], key: str, width: int, path: Path) -> list[list[Any]]:
    rows = doc.get(key, [])
    if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == width for r in rows):
        raise ConfigError(f"{path}: {key} must be a list of rows of {width} values")
    return rows


def load_labels(path: Path) -> Labels:
    """Read and check a labels file; :class:`ConfigError` says what is wrong and where."""
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not TOML: {exc}") from None
    clip = doc.get("clip")
    if not isinstance(clip, dict) or not isinstance(clip.get("sha256"), str):
        raise ConfigError(f"{path}: [clip] needs sha256 (of the labelled clip) and fps")
    fps = clip.get("fps")
    if not isinstance(fps, int | float) or not 0 < fps <= 120:
        raise ConfigError(f"{path}: clip.fps must be a frame rate (0 < fps <= 120)")
    try:
        camera = CameraAnalyticsConfig.model_validate(doc.get("camera", {}))
        masks = [PrivacyMaskConfig.model_validate(m) for m in doc.get("masks", [])]
    except ValidationError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    lines = {c.name for c in camera.lines}
    truth = doc.get("truth", {})
    if not isinstance(truth, dict):
        raise ConfigError(f"{path}: [truth] must be a table of crossings and events")
    crossings = []
    for frame, line, way, label in _rows(truth, "crossings", 4, path):
        if not isinstance(frame, int) or frame < 0 or line not in lines or way not in DIRECTIONS:
            raise ConfigError(
                f"{path}: crossing {[frame, line, way, label]}: want [frame >= 0, one of the "
                f"camera's lines {sorted(lines)}, forward|backward, class]"
            )
        crossings.append(Crossing(frame, line, way, str(label)))
    events = []
    for first, last, kind, rule in _rows(truth, "events", 4, path):
        if not (isinstance(first, int) and isinstance(last, int) and 0 <= first <= last):
            raise ConfigError(f"{path}: event {[first, last, kind, rule]}: frames first <= last")
        events.append(LabelledEvent(first, last, str(kind), str(rule)))
    mot = clip.get("mot_gt")
    return Labels(
        path=path,
        clip_name=str(clip.get("name", "")),
        clip_sha256=clip["sha256"].lower(),
        package=clip.get("package"),
        fps=float(fps),
        masks=masks,
        camera=camera,
        crossings=crossings,
        events=events,
        mot_gt=(path.parent / mot) if isinstance(mot, str) else None,
    )


def packaged_file(package: str, name: str) -> Path:
    """Where the installed Debian ``package`` keeps a file called ``name`` (dpkg's own list)."""
    try:
        out = subprocess.run(
            ["dpkg", "-L", package], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise AnalyticsError(f"package {package} is not installed ({exc})") from None
    for line in out.splitlines():
        p = Path(line)
        if p.name == name and p.is_file():
            return p
    raise AnalyticsError(f"package {package} lists no file {name} (removed, or excluded by dpkg)")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        raise AnalyticsError(f"{path}: cannot read: {exc.strerror}") from None
    return h.hexdigest()


# -- running the engine -------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    """What the engine said about the clip."""

    frames: int = 0
    analysed: int = 0
    width: int = 0
    height: int = 0
    mode: str = "motion-only"
    counts: list[tuple[float, float, str, str, str, int]] = field(default_factory=list)
    """(interval start s, end s, line, class, direction, count)."""
    crossings: list[tuple[float, str, str, str]] = field(default_factory=list)
    """(time s, line, class, direction) of each counted crossing, for matching."""
    alerts: list[tuple[float, str, str]] = field(default_factory=list)
    """(time s, kind, rule)."""
    analysed_frames: set[int] = field(default_factory=set)
    """Indices of the clip's frames the engine analysed (the others were skipped by rate)."""
    tracks: list[tuple[int, int, float, float, float, float]] = field(default_factory=list)
    """(frame, track id, left, top, width, height) in the clip's pixels, confirmed tracks."""
    process_ms: float = 0.0


def _frames(clip: Path) -> Iterator[Frame]:
    try:
        container = av.open(str(clip))
    except (av.error.FFmpegError, OSError) as exc:
        raise AnalyticsError(f"{clip}: cannot open: {exc}") from None
    with container:
        for index, picture in enumerate(container.decode(video=0)):
            w, h = picture.width // 2 * 2, picture.height // 2 * 2  # I420 wants even sizes
            if picture.format.name != "yuv420p" or (w, h) != (picture.width, picture.height):
                picture = picture.reformat(format="yuv420p", width=w, height=h)
            data = np.ascontiguousarray(picture.to_ndarray(), dtype=np.uint8)
            if data.shape != (h * 3 // 2, w):
                raise AnalyticsError(f"{clip}: frame {index} is not {w}x{h} I420")
            yield Frame(data.reshape(-1), w, h, index, 0, 0)


def run_engine(clip: Path, labels: Labels, cfg: AnalyticsConfig) -> Run:
    """Mask, offer, decimate and analyse every frame of ``clip`` as edged would."""
    run = Run(mode="motion-only" if cfg.detector.model_path is None else "detector")
    engine: AnalyticsEngine | None = None
    # A twin of each line, fed the engine's own tracks, tells when each crossing was counted:
    # the engine only says how many per interval.
    twins = [LineCounter(c) for c in labels.camera.lines]
    masker: PrivacyMasker | None = None
    period_ns = 1e9 / cfg.rate_fps
    last_due: int | None = None
    step = 1
    ms: list[float] = []
    for frame in _frames(clip):
        if engine is None:
            masker = PrivacyMasker(labels.masks, frame.width, frame.height)
            step, run.width, run.height = analysis_geometry(frame.width, frame.height, cfg.width)
            engine = AnalyticsEngine(
                camera=labels.camera.camera,
                cfg=cfg,
                cam_cfg=labels.camera,
                detector=make_detector(cfg),
                clock=lambda: run.frames / labels.fps,
            )
        assert masker is not None
        run.frames += 1
        mono_ns = round(frame.index * 1e9 / labels.fps)
        masker.apply(frame)  # first, as in the capture thread: analytics sees masked pixels
        # The bridge's rate rule (10 % jitter tolerated), so 10 fps at 5 fps is every other.
        if last_due is not None and mono_ns - last_due < period_ns * 0.9:
            continue
        last_due = mono_ns
        h, w = run.height, run.width
        y = np.ascontiguousarray(frame.y[: h * step : step, : w * step : step])
        u = np.ascontiguousarray(frame.u[: h // 2 * step : step, : w // 2 * step : step])
        v = np.ascontiguousarray(frame.v[: h // 2 * step : step, : w // 2 * step : step])
        drafts = engine.process(
            y, u, v, index=frame.index, mono_ns=mono_ns, wall_ns=WALL0_NS + mono_ns
        )
        run.analysed += 1
        run.analysed_frames.add(frame.index)
        t = mono_ns / 1e9
        for twin in twins:
            before = dict(twin.totals)
            twin.update(engine.tracker.tracks, t)
            for (label, way), n in twin.totals.items():
                run.crossings += [(t, twin.cfg.name, label, way)] * (
                    n - before.get((label, way), 0)
                )
        ms.append(engine.stats.process_ms)
        _collect(run, drafts)
        for tr in engine.tracker.tracks:
            if tr.confirmed:
                x1, y1, x2, y2 = tr.box
                fw, fh = frame.width, frame.height
                run.tracks.append(
                    (frame.index, tr.id, x1 * fw, y1 * fh, (x2 - x1) * fw, (y2 - y1) * fh)
                )
    if engine is None:
        raise AnalyticsError(f"{clip}: no video frame")
    _collect(run, engine.flush())
    run.process_ms = float(np.mean(ms)) if ms else 0.0
    return run


def _collect(run: Run, drafts: list[Any]) -> None:
    for d in drafts:
        t = (d.wall_ns - WALL0_NS) / 1e9
        if d.category == "count":
            start = ((d.interval_start_ns or d.wall_ns) - WALL0_NS) / 1e9
            for key, n in d.details["counts"].items():
                label, way = key.split("/")
                run.counts.append((start, t, d.rule, label, way, int(n)))
        elif d.category == "alert":
            run.alerts.append((t, d.kind, d.rule))


# -- comparing ----------------------------------------------------------------------------


def _ratio(num: float, den: float) -> float | None:
    return None if den == 0 else round(num / den, 4)


def score_counts(run: Run, labels: Labels) -> list[dict[str, Any]]:
    """Per line, class and direction (and both directions): counted vs true crossings.

    In motion-only mode the engine labels every blob ``object``; it is then compared with
    the true crossings of every class together (a blob is not known to be a person)."""
    classes_seen = {c for _s, _e, _l, c, _w, _n in run.counts}
    true_classes = sorted({c.label for c in labels.crossings})
    out = []
    for line in labels.camera.lines:
        intervals = sorted({(s, e) for s, e, ln, *_ in run.counts if ln == line.name})
        pairs: list[tuple[str, list[str]]] = (
            [("object", true_classes)] if run.mode == "motion-only" else []
        )
        pairs += [(c, [c]) for c in true_classes if c in classes_seen or run.mode != "motion-only"]
        for cls, truth_cls in pairs:
            for way in (*DIRECTIONS, "both"):
                ways = DIRECTIONS if way == "both" else (way,)
                counted = sum(
                    n
                    for _s, _e, ln, c, w, n in run.counts
                    if ln == line.name and c == cls and w in ways
                )
                truth_t = [
                    x.frame / labels.fps
                    for x in labels.crossings
                    if x.line == line.name and x.label in truth_cls and x.direction in ways
                ]
                per_interval = 0
                for s, e in intervals:
                    got = sum(
                        n
                        for s2, e2, ln, c, w, n in run.counts
                        if (s2, e2) == (s, e) and ln == line.name and c == cls and w in ways
                    )
                    per_interval += abs(got - sum(1 for t in truth_t if s <= t < e))
                # Crossings outside every reported interval (none, unless the run stopped early).
                per_interval += sum(1 for t in truth_t if not any(s <= t < e for s, e in intervals))
                got_t = [
                    (t, w)
                    for t, ln, c, w in run.crossings
                    if ln == line.name and c == cls and w in ways
                ]
                true_tw = [
                    (x.frame / labels.fps, x.direction)
                    for x in labels.crossings
                    if x.line == line.name and x.label in truth_cls and x.direction in ways
                ]
                found = match_crossings(true_tw, got_t)
                out.append(
                    {
                        "line": line.name,
                        "class": cls,
                        "compared_with": truth_cls,
                        "direction": way,
                        "true": len(truth_t),
                        "counted": counted,
                        "error": _ratio(counted - len(truth_t), len(truth_t)),
                        "interval_seconds": line.interval_seconds,
                        "intervals": len(intervals),
                        "interval_abs_error": per_interval,
                        "interval_error": _ratio(per_interval, len(truth_t)),
                        "matched": found,
                        "false": len(got_t) - found,
                        "missed": len(truth_t) - found,
                        "precision": _ratio(found, len(got_t)),
                        "recall": _ratio(found, len(truth_t)),
                    }
                )
    return out


def match_crossings(truth: list[tuple[float, str]], got: list[tuple[float, str]]) -> int:
    """The most pairs of a true and a counted crossing, same direction, at most
    CROSSING_SLACK_S apart, each used once: in time order, each true crossing takes the
    earliest counted one still free within reach (optimal when every window is as wide)."""
    found = 0
    for way in {w for _t, w in truth}:
        ts = sorted(t for t, w in truth if w == way)
        gs = sorted(g for g, w in got if w == way)
        j = 0
        for t in ts:
            while j < len(gs) and gs[j] < t - CROSSING_SLACK_S:
                j += 1  # too early for this crossing, so for every later one too
            if j < len(gs) and gs[j] <= t + CROSSING_SLACK_S:
                found += 1
                j += 1
    return found


ALERT_RULES = {
    "gatherings": "gathering",
    "crowd_movements": "crowd_movement",
    "wrong_ways": "wrong_way",
    "parkings": "parking_overstay",
    "intrusions": "intrusion",
    "densities": "excessive_density",
    "fallen_persons": "person_on_ground",
    "fires": "fire",
    "abandoned_objects": "abandoned_object",
}
"""Each kind of rule in the camera's configuration and the kind of alert it raises."""


def score_rules(run: Run, labels: Labels, seconds: float) -> list[dict[str, Any]]:
    """Per configured rule: alerts, true and false, events found and missed."""
    rules = [
        (kind, rule.name)
        for attr, kind in ALERT_RULES.items()
        for rule in getattr(labels.camera, attr)
    ]
    out = []
    for kind, name in rules:
        alerts = [t for t, k, r in run.alerts if (k, r) == (kind, name)]
        events = [e for e in labels.events if (e.kind, e.rule) == (kind, name)]

        def spans(e: LabelledEvent, t: float) -> bool:
            lo, hi = e.first / labels.fps - EVENT_SLACK_S, e.last / labels.fps + EVENT_SLACK_S
            return lo <= t <= hi

        true = sum(1 for t in alerts if any(spans(e, t) for e in events))
        found = sum(1 for e in events if any(spans(e, t) for t in alerts))
        false = len(alerts) - true
        out.append(
            {
                "kind": kind,
                "rule": name,
                "events": len(events),
                "alerts": len(alerts),
                "true_alerts": true,
                "false_alarms": false,
                "precision": _ratio(true, len(alerts)),
                "recall": _ratio(found, len(events)),
                "false_alarms_per_hour": round(false * 3600.0 / seconds, 2) if seconds else None,
            }
        )
    return out


def score_tracks(run: Run, labels: Labels) -> dict[str, Any]:
    """MOTA, MOTP, IDF1 and identity switches against a MOT Challenge ``gt.txt``."""
    if labels.mot_gt is None:
        return {"annotated": False, "why": "the labels name no MOT ground-truth file (mot_gt)"}
    try:
        import motmetrics as mm
    except ImportError:
        return {"annotated": True, "why": "motmetrics is not installed (pip extra 'evaluate')"}
    gt: dict[int, list[tuple[int, list[float]]]] = {}
    try:
        text = labels.mot_gt.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{labels.mot_gt}: cannot read: {exc.strerror}") from None
    for n, row in enumerate(text.splitlines(), start=1):
        if not row.strip():
            continue
        parts = row.split(",")
        try:
            frame, tid = int(parts[0]) - 1, int(parts[1])  # MOT frames count from 1
            box = [float(x) for x in parts[2:6]]
        except (ValueError, IndexError):
            raise ConfigError(
                f"{labels.mot_gt}:{n}: not a MOT row (frame,id,x,y,w,h,...)"
            ) from None
        gt.setdefault(frame, []).append((tid, box))
    hyp: dict[int, list[tuple[int, list[float]]]] = {}
    for frame, tid, x, y, w, h in run.tracks:
        hyp.setdefault(frame, []).append((tid, [x, y, w, h]))
    acc = mm.MOTAccumulator(auto_id=False)
    # The annotated frames (each lists every person in view) that the engine analysed:
    # frames skipped by the analysis rate were never seen, by design.
    frames = sorted(set(gt) & run.analysed_frames)
    if not frames:
        return {"annotated": True, "why": "no annotated frame was analysed"}
    for frame in frames:
        g, hy = gt.get(frame, []), hyp.get(frame, [])
        dist = iou_distances([b for _i, b in g], [b for _i, b in hy])
        acc.update([i for i, _b in g], [i for i, _b in hy], dist, frameid=frame)
    mh = mm.metrics.create()
    names = [
        "mota",
        "motp",
        "idf1",
        "num_switches",
        "num_misses",
        "num_false_positives",
        "num_objects",
        "num_unique_objects",
    ]
    summary = mh.compute(acc, metrics=names, name="clip")
    values = {k: float(summary[k].iloc[0]) for k in names}
    return {
        "annotated": True,
        "library": f"motmetrics {mm.__version__}",
        "frames": len(frames),
        **{k: (None if math.isnan(v) else round(v, 4)) for k, v in values.items()},
    }


def iou_distances(gt: list[list[float]], hyp: list[list[float]]) -> np.ndarray[Any, Any]:
    """1 - IoU of each (x, y, w, h) pair, NaN (no match possible) under an IoU of 0.5: the
    MOT Challenge's rule. motmetrics 1.4's own ``iou_matrix`` calls ``np.asfarray``, which
    NumPy 2 removed, so the matrix is computed here and the accumulator does the rest."""
    a = np.asarray(gt, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(hyp, dtype=np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 0] + a[:, None, 2], b[None, :, 0] + b[None, :, 2])
    y2 = np.minimum(a[:, None, 1] + a[:, None, 3], b[None, :, 1] + b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    union = (a[:, None, 2] * a[:, None, 3]) + (b[None, :, 2] * b[None, :, 3]) - inter
    iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
    return np.where(iou >= 0.5, 1.0 - iou, np.nan)


def evaluate(clip: Path, labels: Labels, cfg: AnalyticsConfig) -> dict[str, Any]:
    """Run the engine on ``clip`` and score it; the report's content (unsigned)."""
    digest = sha256_file(clip)
    if digest != labels.clip_sha256:
        raise AnalyticsError(
            f"{clip}: SHA-256 {digest} is not the labelled clip's ({labels.clip_sha256}): "
            "these labels describe another clip"
        )
    run = run_engine(clip, labels, cfg)
    seconds = run.frames / labels.fps
    return {
        "clip": {
            "name": clip.name,
            "sha256": digest,
            "package": labels.package,
            "frames": run.frames,
            "fps": labels.fps,
            "seconds": round(seconds, 2),
        },
        "labels": {"file": labels.path.name, "sha256": sha256_file(labels.path)},
        "engine": {
            "mode": run.mode,
            "model_sha256": cfg.detector.model_sha256,
            "analysed_frames": run.analysed,
            "analysed_size": f"{run.width}x{run.height}",
            "rate_fps": cfg.rate_fps,
            "masks": len(labels.masks),
            "mean_process_ms": round(run.process_ms, 2),
        },
        "counting": score_counts(run, labels),
        "rules": score_rules(run, labels, seconds),
        "tracking": score_tracks(run, labels),
        "series": _series(run, labels),
    }


def _series(run: Run, labels: Labels) -> list[dict[str, Any]]:
    """Per line and interval, counted (all classes) vs true: the plot's data."""
    out = []
    for line in labels.camera.lines:
        totals: Counter[tuple[float, float]] = Counter()
        for s, e, ln, _c, _w, n in run.counts:
            if ln == line.name:
                totals[(s, e)] += n
        for (s, e), n in sorted(totals.items()):
            true = sum(
                1 for x in labels.crossings if x.line == line.name and s <= x.frame / labels.fps < e
            )
            out.append(
                {
                    "line": line.name,
                    "start": round(s, 3),
                    "end": round(e, 3),
                    "counted": n,
                    "true": true,
                }
            )
    return out
