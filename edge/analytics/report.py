"""The evaluation report a city attaches to its declaration: ``report.json`` (the figures),
``summary.txt`` (the same, to read), ``plot.svg`` (counted vs true per count interval) and
``report.sig``, the unit's Ed25519 signature of ``report.json``, which holds the SHA-256 of the
two other files: one signature covers all three, and changing any byte of any file is seen.

The plot is an SVG written here: matplotlib is not part of the unit's image, and a plot of bars
is a few rectangles.
"""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import IntegrityError
from ..fsutil import write_atomic
from ..identity.unitkeys import key_id, public_raw

REPORT = "report.json"
SUMMARY = "summary.txt"
PLOT = "plot.svg"
SIGNATURE = "report.sig"
FORMAT = "edge-analytics-evaluation/1"


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:+.1f} %"


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x * 100:.0f} %"


def summary_text(report: dict[str, Any]) -> str:
    clip, eng = report["clip"], report["engine"]
    out = [
        f"Analytics evaluation of {clip['name']} (SHA-256 {clip['sha256'][:16]}…)",
        f"unit {report['unit']}, key {report['key_id']}, {report['created']}",
        f"{clip['frames']} frames, {clip['seconds']} s at {clip['fps']} fps; engine "
        f"{eng['mode']}, {eng['analysed_frames']} frames analysed at {eng['analysed_size']}, "
        f"{eng['masks']} privacy mask(s) applied first, {eng['mean_process_ms']} ms a frame",
        "",
        "Counting (per line, class, direction)",
        f"  {'line':12} {'class':8} {'way':9} {'true':>5} {'counted':>8} {'error':>9} "
        f"{'misplaced':>10} {'matched':>8} {'false':>6} {'missed':>6}",
    ]
    for c in report["counting"]:
        out.append(
            f"  {c['line']:12} {c['class']:8} {c['direction']:9} {c['true']:>5} "
            f"{c['counted']:>8} {_pct(c['error']):>9} "
            f"{c['interval_abs_error']:>4} / {c['intervals']} x {c['interval_seconds']:g} s"
            f" {c['matched']:>6} {c['false']:>6} {c['missed']:>6}"
        )
    if report["engine"]["mode"] == "motion-only":
        out.append("  motion-only: blobs are `object`, compared with the crossings of every class")
    out += ["", "Rules (alerts on the clip)"]
    out.append(
        f"  {'kind':18} {'rule':12} {'events':>6} {'alerts':>6} {'precision':>9} "
        f"{'recall':>6} {'false/h':>8}"
    )
    for r in report["rules"]:
        out.append(
            f"  {r['kind']:18} {r['rule']:12} {r['events']:>6} {r['alerts']:>6} "
            f"{_share(r['precision']):>9} {_share(r['recall']):>6} "
            f"{r['false_alarms_per_hour']:>8}"
        )
    tr = report["tracking"]
    out += ["", "Tracking"]
    if "mota" in tr:
        out.append(
            f"  MOTA {tr['mota']}, MOTP {tr['motp']}, IDF1 {tr['idf1']}, "
            f"{tr['num_switches']:g} identity switches, {tr['num_misses']:g} misses and "
            f"{tr['num_false_positives']:g} false positives in {tr['num_objects']:g} boxes of "
            f"{tr['num_unique_objects']:g} persons over {tr['frames']} frames ({tr['library']})"
        )
    else:
        out.append(f"  not scored: {tr['why']}")
    return "\n".join(out) + "\n"


def plot_svg(report: dict[str, Any]) -> str:
    """Bars per count interval: true crossings (grey) and counted (blue), one panel a line."""
    series = report["series"]
    lines = sorted({s["line"] for s in series})
    w, panel_h, left = 640, 180, 40
    h = 30 + panel_h * max(1, len(lines))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        f'viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="11">',
        f'<text x="{left}" y="16">{escape(report["clip"]["name"])}: crossings per count '
        "interval, true (grey) and counted (blue)</text>",
    ]
    for k, line in enumerate(lines):
        rows = [s for s in series if s["line"] == line]
        top = 30 + k * panel_h
        base = top + panel_h - 30
        peak = max([1] + [max(r["true"], r["counted"]) for r in rows])
        scale = (panel_h - 50) / peak
        slot = (w - left - 10) / max(1, len(rows))
        parts.append(f'<text x="{left}" y="{top + 12}">line {escape(line)}</text>')
        parts.append(f'<line x1="{left}" y1="{base}" x2="{w - 10}" y2="{base}" stroke="black"/>')
        parts.append(f'<text x="4" y="{base - peak * scale + 4:.1f}">{peak}</text>')
        for i, r in enumerate(rows):
            x = left + i * slot
            bw = slot * 0.38
            for j, (key, colour) in enumerate((("true", "#999999"), ("counted", "#1f77b4"))):
                bh = r[key] * scale
                parts.append(
                    f'<rect x="{x + slot * 0.1 + j * bw:.1f}" y="{base - bh:.1f}" '
                    f'width="{bw:.1f}" height="{bh:.1f}" fill="{colour}">'
                    f"<title>{key} {r[key]}</title></rect>"
                )
            parts.append(f'<text x="{x + slot * 0.1:.1f}" y="{base + 14}">{r["start"]:g} s</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def write_report(
    out_dir: Path, body: dict[str, Any], key: ed25519.Ed25519PrivateKey, *, unit: str, created: str
) -> Path:
    """Write the four files into ``out_dir``; the signature last, so a report interrupted half
    way never verifies."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SIGNATURE).unlink(missing_ok=True)
    report = {
        "format": FORMAT,
        "unit": unit,
        "key_id": key_id(public_raw(key.public_key())),
        "created": created,
        **body,
    }
    summary = summary_text(report).encode()
    plot = plot_svg(report).encode()
    report["files"] = {
        SUMMARY: hashlib.sha256(summary).hexdigest(),
        PLOT: hashlib.sha256(plot).hexdigest(),
    }
    data = (json.dumps(report, indent=2, sort_keys=True) + "\n").encode()
    write_atomic(out_dir / SUMMARY, summary)
    write_atomic(out_dir / PLOT, plot)
    write_atomic(out_dir / REPORT, data)
    sig = {
        "algorithm": "Ed25519",
        "key_id": report["key_id"],
        "signature": base64.b64encode(key.sign(data)).decode(),
    }
    write_atomic(out_dir / SIGNATURE, (json.dumps(sig, sort_keys=True) + "\n").encode())
    return out_dir / REPORT


def verify_report(out_dir: Path, key: ed25519.Ed25519PublicKey) -> dict[str, Any]:
    """The report, once its signature and every file it names check; else IntegrityError."""
    try:
        data = (out_dir / REPORT).read_bytes()
        sig = json.loads((out_dir / SIGNATURE).read_bytes())
        raw = base64.b64decode(sig["signature"], validate=True)
    except OSError as exc:
        raise IntegrityError(f"{out_dir}: cannot read the report: {exc.strerror}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"{out_dir / SIGNATURE}: not a report signature ({exc})") from None
    want = key_id(public_raw(key))
    if sig.get("key_id") != want:
        raise IntegrityError(f"signed by key {sig.get('key_id')}, not by this key ({want})")
    try:
        key.verify(raw, data)
    except InvalidSignature:
        raise IntegrityError(f"{out_dir / REPORT}: the signature does not match") from None
    report: dict[str, Any] = json.loads(data)
    for name, digest in report.get("files", {}).items():
        if name not in (SUMMARY, PLOT):
            raise IntegrityError(f"{out_dir / REPORT}: names an unexpected file {name!r}")
        try:
            got = hashlib.sha256((out_dir / name).read_bytes()).hexdigest()
        except OSError as exc:
            raise IntegrityError(f"{out_dir / name}: cannot read: {exc.strerror}") from None
        if got != digest:
            raise IntegrityError(f"{out_dir / name}: changed since the report was signed")
    return report
