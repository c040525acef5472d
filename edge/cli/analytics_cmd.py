"""``edgectl analytics check-model`` and ``edgectl analytics verify-event``.

Maintenance staff are not authorised viewers: neither command shows a picture. ``check-model``
proves the pinned model is the one on disk and that LiteRT runs it; ``verify-event`` checks
signed events (one wire-form JSON document per line, as MQTT subscribers store them) against
the unit's public signing key.
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
        help="check the analytics model, verify signed events",
        description="On-device analytics: prove the pinned detector model is the one on disk, "
        "and check signed events. Neither command shows a picture.",
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
