"""``edgectl analytics check-model``, ``verify-event``, ``preview``, ``calibrate``,
``evaluate`` and ``verify-report``.

Maintenance staff are not authorised viewers: ``check-model`` and ``verify-event`` show no
picture; ``preview`` and ``calibrate --out`` draw the rules on the masked preview picture and
need the installer role, like ``edgectl mask preview`` (:mod:`edge.cli.analytics_preview`).
``check-model`` proves the pinned model is the one on disk and that LiteRT runs it;
``verify-event`` checks signed events (one wire-form JSON document per line, as MQTT
subscribers store them) against the unit's public signing key. ``evaluate`` runs the engine on
a labelled clip and writes a signed accuracy report (:mod:`edge.analytics.evaluate`,
:mod:`edge.analytics.report`), no picture in it; ``verify-report`` checks one.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge.identity import SIGNING_PUB_NAME, keys_dir_of, load_public_pem

from ..clihelp import add_command
from ..errors import EdgeError
from .common import add_config_args, load_config


def register(sub: Any) -> None:
    parser = add_command(
        sub,
        "analytics",
        help="check the model, verify events, draw the rules, calibrate, evaluate on a clip",
        description="On-device analytics: prove the pinned detector model is the one on disk, "
        "check signed events (no picture), and for installers draw the rules on the masked "
        "preview and calibrate the ground plane; measure accuracy on a labelled clip (signed "
        "report).",
        example=[("edgectl analytics check-model", "the model is the pinned one and runs")],
    )
    asub = parser.add_subparsers(dest="analytics_command", required=True, metavar="ACTION")
    check = add_command(
        asub,
        "check-model",
        help="verify the model's SHA-256 and run one inference (no picture)",
        description="Check that the detector model on disk has the pinned SHA-256 and that "
        "LiteRT runs one inference with it. Shows no picture. Exit 0 when it does, 1 when "
        "no model is configured (motion blobs stand in), 2 when the model is refused.",
        example=[
            ("edgectl analytics check-model", "after installing or rotating a model"),
            ("edgectl analytics check-model --json", "for scripts"),
        ],
    )
    add_config_args(check, data_dir=False)
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=_check_model)
    verify = add_command(
        asub,
        "verify-event",
        help="verify signed events (JSON lines) with the unit's public key",
        description="Verify signed analytics events (one wire-form JSON document per line, as "
        "MQTT subscribers store them) against the unit's public signing key. Exit 0 when every "
        "event verifies, 1 when one does not (or there are none), 2 when the key is unreadable.",
        example=[
            ("edgectl analytics verify-event events.jsonl", "with this unit's key"),
            (
                "edgectl analytics verify-event --public-key unit-7.pub.pem - < events.jsonl",
                "events of another unit, from stdin",
            ),
        ],
    )
    add_config_args(verify)
    verify.add_argument("file", type=Path, help="file of events, one per line ('-': stdin)")
    verify.add_argument(
        "--public-key", type=Path, default=None, help="PEM public key (default: the unit's)"
    )
    verify.set_defaults(func=_verify_event)

    preview = add_command(
        asub,
        "preview",
        help="masked preview PNG with the counting lines, their forward side and the zones",
        description="Write the masked preview picture (as edgectl mask preview: the installed "
        "masks always apply; installer role; audited) with the camera's counting lines and "
        "the side that counts as forward, their hysteresis band, every rule's zone and name, "
        "and the ground grid of the calibration. Rules come from --config: try a candidate "
        "file before installing it.",
        example=[
            ("edgectl analytics preview --out /tmp/rules.png", "the first camera's rules"),
            (
                "edgectl analytics preview --config candidate.toml --camera cam2 --out /tmp/r.png",
                "new lines and zones before installing them",
            ),
        ],
    )
    _preview_args(preview)
    preview.set_defaults(func=_preview)

    calibrate = add_command(
        asub,
        "calibrate",
        help="ground-plane calibration from four points and their distances",
        description="Compute the ground-plane calibration (homography) from four points on "
        "the ground in the picture (normalised x,y, read off a preview) and their positions in "
        "metres (--world) or the size of the rectangle they make (--rect WIDTH,DEPTH: first to "
        "second point is the width, second to third the depth). Prints the [ground] section "
        "to add and each rule zone's area in square metres; --out writes the masked preview "
        "with the ground grid (one line a metre). Density rules need it.",
        example=[
            (
                "edgectl analytics calibrate --image '0.2,0.6 0.8,0.6 0.9,0.9 0.1,0.9' "
                "--rect 6,10 --out /tmp/grid.png",
                "a 6 m x 10 m rectangle marked on the ground",
            ),
        ],
    )
    _preview_args(calibrate, out_required=False)
    calibrate.add_argument("--image", required=True, help="four points 'x,y x,y x,y x,y'")
    calibrate.add_argument("--world", default=None, help="their positions in metres 'X,Y ...'")
    calibrate.add_argument("--rect", default=None, help="or the rectangle's WIDTH,DEPTH (m)")
    calibrate.add_argument("--json", action="store_true", help="print one JSON object")
    calibrate.set_defaults(func=_calibrate)

    evaluate = add_command(
        asub,
        "evaluate",
        help="accuracy on a labelled clip: counting error, rule precision/recall, signed report",
        description="Run the analytics engine edged runs (privacy masks first, the configured "
        "rate, size and detector) on a clip and compare it with hand-made labels (TOML: the "
        "clip's SHA-256, its masks, the camera's lines and rules, the true crossings and "
        "events; a MOT Challenge gt.txt for tracking scores). Writes report.json, summary.txt "
        "and plot.svg into --out, signed with the unit's key (report.sig). Shows no picture. "
        "Exit 0 when written, 2 when the clip, the labels or the key are refused.",
        example=[
            (
                "edgectl analytics evaluate --clip street.mp4 --labels street.labels.toml "
                "--out /tmp/eval",
                "the report a city attaches to its declaration",
            ),
            ("edgectl analytics verify-report /tmp/eval", "check it, here or at the city"),
        ],
    )
    add_config_args(evaluate)
    evaluate.add_argument("--clip", type=Path, required=True, help="video file to analyse")
    evaluate.add_argument("--labels", type=Path, required=True, help="labels file (TOML)")
    evaluate.add_argument("--out", type=Path, required=True, help="directory for the report")
    evaluate.add_argument("--json", action="store_true", help="print report.json's content")
    evaluate.set_defaults(func=_evaluate)

    verify_report = add_command(
        asub,
        "verify-report",
        help="check an evaluation report's signature and files",
        description="Verify the signature of an evaluation report (report.sig over "
        "report.json, which holds the SHA-256 of summary.txt and plot.svg) with the unit's "
        "public key or --public-key. Exit 0 when it verifies, 1 when it does not, 2 when the "
        "key is unreadable.",
        example=[
            (
                "edgectl analytics verify-report --public-key unit-7.pub.pem eval/",
                "a report from another unit",
            ),
        ],
    )
    add_config_args(verify_report)
    verify_report.add_argument("dir", type=Path, help="directory written by evaluate")
    verify_report.add_argument(
        "--public-key", type=Path, default=None, help="PEM public key (default: the unit's)"
    )
    verify_report.set_defaults(func=_verify_report)


def _preview_args(parser: argparse.ArgumentParser, *, out_required: bool = True) -> None:
    add_config_args(parser, data_dir=False)
    parser.add_argument("--camera", default=None, help="camera id (default: the first camera)")
    parser.add_argument(
        "--out", type=Path, required=out_required, default=None, help="PNG file to write"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="read the camera directly instead of asking edged (commissioning, edged stopped)",
    )


def _preview(args: argparse.Namespace) -> int:
    from .analytics_preview import preview

    return preview(args)


def _calibrate(args: argparse.Namespace) -> int:
    from .analytics_preview import calibrate

    return calibrate(args)


def _evaluate(args: argparse.Namespace) -> int:
    import datetime as dt

    from edge.analytics.evaluate import evaluate, load_labels
    from edge.analytics.report import summary_text, verify_report, write_report
    from edge.identity import load_signing_key

    cfg = load_config(args)
    try:
        # The key first: an hour of analysis must not end in "cannot sign".
        key = load_signing_key(keys_dir_of(cfg.unit.data_dir))
        labels = load_labels(args.labels)
        body = evaluate(args.clip, labels, cfg.analytics)
    except EdgeError as exc:
        print(f"edgectl analytics evaluate: {exc}", file=sys.stderr)
        return 2
    created = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        write_report(args.out, body, key, unit=cfg.unit.id, created=created)
    except OSError as exc:
        print(f"edgectl analytics evaluate: {args.out}: cannot write: {exc}", file=sys.stderr)
        return 2
    report = verify_report(args.out, key.public_key())
    if args.json:
        print(json.dumps(report, sort_keys=True))
    else:
        print(summary_text(report), end="")
        print(f"report written to {args.out} (report.json, summary.txt, plot.svg, report.sig)")
    return 0


def _verify_report(args: argparse.Namespace) -> int:
    from edge.analytics.report import verify_report

    cfg = load_config(args)
    key_path = args.public_key or keys_dir_of(cfg.unit.data_dir) / SIGNING_PUB_NAME
    try:
        key = load_public_pem(key_path.read_bytes(), origin=str(key_path))
    except OSError as exc:
        print(f"{key_path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    except EdgeError as exc:
        print(f"{exc}", file=sys.stderr)
        return 2
    try:
        report = verify_report(args.dir, key)
    except EdgeError as exc:
        print(f"FAILED: {exc}")
        return 1
    print(f"OK: report of unit {report['unit']} on {report['clip']['name']}, {report['created']}")
    return 0


def _check_model(args: argparse.Namespace) -> int:
    from edge.analytics import LiteRTDetector

    cfg = load_config(args)
    det_cfg = cfg.analytics.detector
    if det_cfg.model_path is None:
        print(
            "analytics.detector.model_path is not set: motion-only mode. Motion blobs stand in"
            " for detections, labelled `object`: counting lines count them (FIWARE"
            " ItemFlowObserved) and tamper detection works; gathering, crowd movement, wrong"
            " way and parking never fire (they need persons or vehicles)"
        )
        return 1
    det = LiteRTDetector.from_config(det_cfg)  # raises on a checksum mismatch
    frame = np.zeros((det.input_height, det.input_width, 3), dtype=np.uint8)
    det.detect(frame)
    t0 = time.perf_counter()
    det.detect(frame)
    ms = (time.perf_counter() - t0) * 1e3
    info = {
        "model": str(det.model_path),
        "sha256": det.sha256,
        "pinned": det_cfg.model_sha256 is not None,
        "layout": det.layout.value,
        "input": f"{det.input_width}x{det.input_height}",
        "labels": len(det.labels),
        "threads": det.threads,
        "inference_ms": round(ms, 2),
    }
    if args.json:
        print(json.dumps(info))
    else:
        for key, value in info.items():
            print(f"{key:14} {value}")
        if not info["pinned"]:
            print("warning: no model_sha256 pinned in the configuration", file=sys.stderr)
    return 0


def _verify_event(args: argparse.Namespace) -> int:
    from edge.events import verify_wire

    cfg = load_config(args)
    key_path = args.public_key or keys_dir_of(cfg.unit.data_dir) / SIGNING_PUB_NAME
    try:
        key = load_public_pem(key_path.read_bytes(), origin=str(key_path))
    except OSError as exc:
        print(f"{key_path}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    text = sys.stdin.read() if str(args.file) == "-" else args.file.read_text(encoding="utf-8")
    bad = 0
    total = 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        total += 1
        try:
            body = verify_wire(line.encode(), key)
        except EdgeError as exc:
            bad += 1
            print(f"line {lineno}: FAILED: {exc}")
            continue
        print(
            f"line {lineno}: OK {body['time']} {body['camera']} {body['category']}/{body['kind']}"
        )
    print(f"{total - bad}/{total} event(s) verified")
    return 1 if bad or not total else 0
