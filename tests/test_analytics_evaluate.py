"""Evaluation of the analytics on real footage: OpenCV's sample pedestrian clip ``vtest.avi``
as Debian's opencv-doc ships it (found through dpkg, never by a fixed path), with the
hand-made labels in ``tests/footage/vtest.labels.toml``."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import json
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.analytics.evaluate import load_labels, match_crossings, run_engine, score_tracks
from edge.cli.main import main
from edge.config import AnalyticsConfig
from edge.errors import ConfigError
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key, public_pem

FOOTAGE = Path(__file__).parent / "footage"
LABELS = FOOTAGE / "vtest.labels.toml"


def _vtest() -> Path:
    listed = subprocess.run(
        ["dpkg", "-L", "opencv-doc"], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    found = [Path(p) for p in listed if Path(p).name == "vtest.avi" and Path(p).is_file()]
    assert found, "opencv-doc lists no vtest.avi (tools/apt-packages.txt installs it)"
    return found[0]


def test_the_packaged_clip_is_the_one_labelled() -> None:
    clip = _vtest()
    labels = tomllib.loads(LABELS.read_text(encoding="utf-8"))
    assert hashlib.sha256(clip.read_bytes()).hexdigest() == labels["clip"]["sha256"]
    probe = json.loads(
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-count_frames",
                "-select_streams",
                "v:0",
                "-show_entries",
                "stream=nb_read_frames,r_frame_rate,width,height",
                "-of",
                "json",
                str(clip),
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["streams"][0]
    assert (probe["width"], probe["height"], probe["r_frame_rate"]) == (768, 576, "10/1")
    frames = int(probe["nb_read_frames"])
    assert frames == 795
    rows = labels["truth"]["crossings"]
    assert len(rows) == 33 and all(0 <= r[0] < frames for r in rows)
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert labels["truth"]["events"] == []  # nobody leaves a bag, falls or starts a fire


# -- edgectl analytics evaluate on the real clip -------------------------------------------


@dataclass(frozen=True)
class Evaluated:
    config: Path
    out: Path
    report: dict[str, Any]
    stdout: str


CONFIG = """\
[unit]
id = "cabinet-7"
data_dir = "{data}"

[[cameras]]
id = "street"
source = "synthetic"
width = 320
height = 180
fps = 25
"""


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> Evaluated:
    """One run of the real engine over the whole clip (about 10 s), shared by the tests."""
    root = tmp_path_factory.mktemp("evaluate")
    data = root / "data"
    load_or_create_signing_key(keys_dir_of(data))
    config = root / "edge.toml"
    config.write_text(CONFIG.format(data=data), encoding="utf-8")
    out = root / "report"
    args = ["analytics", "evaluate", "--config", str(config), "--clip", str(_vtest())]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main([*args, "--labels", str(LABELS), "--out", str(out)])
    assert rc == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return Evaluated(config, out, report, buf.getvalue())


def _row(report: dict[str, Any], way: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = [
        c for c in report["counting"] if c["line"] == "road" and c["direction"] == way
    ]
    assert len(rows) == 1
    return rows[0]


def test_counting_on_the_real_clip_meets_the_goal(evaluated: Evaluated) -> None:
    """Figures in docs/ANALYTICS.md (motion-only: no person model ships in a package)."""
    r = evaluated.report
    assert r["engine"]["mode"] == "motion-only" and r["engine"]["masks"] == 1
    assert r["engine"]["analysed_frames"] == 398 and r["engine"]["analysed_size"] == "384x288"
    both = _row(r, "both")
    assert both["true"] == 33 and abs(both["counted"] - 33) <= 1  # goal: error <= 5 %
    assert abs(both["error"]) <= 0.05
    for way, true in (("forward", 15), ("backward", 18)):
        row = _row(r, way)
        assert row["true"] == true and abs(row["counted"] - true) <= 1
    # Counts in the wrong 10 s interval (crossings near a boundary): 4 of 33 measured.
    assert both["interval_abs_error"] <= 5
    # Crossing by crossing (within 1.5 s): 31 matched; 2 missed (two walkers side by side make
    # one blob, twice); 2 false (a man walks up to the line and turns back at 69-70 s, among
    # others: counted forward, then backward). The exact total is errors cancelling out.
    assert both["matched"] >= 30 and both["false"] <= 3 and both["missed"] <= 3
    assert both["matched"] + both["false"] == both["counted"]  # the twin line agrees
    assert sum(s["true"] for s in r["series"]) == 33


def test_no_false_alarm_on_the_real_clip(evaluated: Evaluated) -> None:
    """Nobody leaves a bag, falls or lights a fire: each rule stays silent (goal: <= 1/h)."""
    rules = {(x["kind"], x["rule"]): x for x in evaluated.report["rules"]}
    assert set(rules) == {
        ("abandoned_object", "road"),
        ("person_on_ground", "road"),
        ("fire", "scene"),
    }
    assert all(x["alerts"] == 0 and x["false_alarms_per_hour"] == 0.0 for x in rules.values())


def test_tracking_on_the_real_clip(evaluated: Evaluated) -> None:
    """Against the hand-drawn boxes of frames 410-450 (tests/footage/README.md): three persons,
    one of them standing almost still, in the 21 frames the engine analysed."""
    tr = evaluated.report["tracking"]
    assert tr["library"].startswith("motmetrics") and tr["frames"] == 21
    assert tr["num_objects"] == 58 and tr["num_unique_objects"] == 3
    assert tr["mota"] >= 0.75 and tr["idf1"] >= 0.85 and tr["num_switches"] == 0
    assert "MOTA" in evaluated.stdout


def test_the_report_is_signed_readable_and_verifies(evaluated: Evaluated) -> None:
    out = evaluated.out
    assert sorted(p.name for p in out.iterdir()) == [
        "plot.svg",
        "report.json",
        "report.sig",
        "summary.txt",
    ]
    assert "road" in evaluated.stdout and "Counting" in evaluated.stdout
    assert (out / "summary.txt").read_text(encoding="utf-8") in evaluated.stdout
    # The plot is SVG a real XML parser reads, with one bar per interval and kind.
    svg = ET.parse(out / "plot.svg").getroot()
    bars = svg.findall("{http://www.w3.org/2000/svg}rect")
    assert len(bars) == 2 * len(evaluated.report["series"]) == 16
    # The signature: Ed25519 over report.json by the unit's key, checked by openssl too.
    sig = json.loads((out / "report.sig").read_text(encoding="utf-8"))
    (out.parent / "sig.bin").write_bytes(base64.b64decode(sig["signature"]))
    pub = keys_dir_of(out.parent / "data") / "unit-signing.pub.pem"
    done = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(pub),
            "-rawin",
            "-in",
            str(out / "report.json"),
            "-sigfile",
            str(out.parent / "sig.bin"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert main(["analytics", "verify-report", "--config", str(evaluated.config), str(out)]) == 0


@pytest.mark.parametrize("victim", ["report.json", "summary.txt", "plot.svg"])
def test_a_changed_report_file_fails_verification(
    evaluated: Evaluated, victim: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "report"
    shutil.copytree(evaluated.out, copy)
    data = (copy / victim).read_bytes()
    (copy / victim).write_bytes(data.replace(b"33", b"34", 1) if b"33" in data else data + b" ")
    assert main(["analytics", "verify-report", "--config", str(evaluated.config), str(copy)]) == 1
    assert "FAILED" in capsys.readouterr().out


def test_a_report_signed_by_another_key_fails(evaluated: Evaluated, tmp_path: Path) -> None:
    other = ed25519.Ed25519PrivateKey.generate().public_key()
    pem = tmp_path / "other.pub.pem"
    pem.write_bytes(public_pem(other))
    args = ["analytics", "verify-report", "--config", str(evaluated.config)]
    assert main([*args, "--public-key", str(pem), str(evaluated.out)]) == 1


def test_labels_of_another_clip_are_refused(
    evaluated: Evaluated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = LABELS.read_text(encoding="utf-8")
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(re.sub(r'sha256 = "[0-9a-f]+"', 'sha256 = "' + "0" * 64 + '"', text))
    args = ["analytics", "evaluate", "--config", str(evaluated.config), "--clip", str(_vtest())]
    rc = main([*args, "--labels", str(wrong), "--out", str(tmp_path / "r")])
    assert rc == 2 and "describe another clip" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_damaged_labels_say_what_is_wrong(tmp_path: Path) -> None:
    text = LABELS.read_text(encoding="utf-8")
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace('[11, "road", "backward"', '[11, "kerb", "backward"'))
    with pytest.raises(ConfigError, match=r"crossing \[11, 'kerb'"):
        load_labels(bad)
    bad.write_text(text.replace("[clip]", "[clip\n"))
    with pytest.raises(ConfigError, match="not TOML"):
        load_labels(bad)


def test_tracking_scores_come_from_motmetrics(evaluated: Evaluated, tmp_path: Path) -> None:
    """The MOT path end to end: ground truth equal to the engine's own confirmed tracks scores
    a perfect MOTA; the same boxes with identities exchanged half way count switches; boxes
    moved off their objects are all misses. Proves frames, boxes and ids line up as MOT
    Challenge files number them (frames from 1, pixels of the clip)."""
    labels = load_labels(LABELS)
    run = run_engine(_vtest(), labels, AnalyticsConfig(enabled=True))
    assert len(run.tracks) > 100

    def gt(rows: list[tuple[int, int, float, float, float, float]]) -> dict[str, Any]:
        path = tmp_path / "gt.txt"
        path.write_text(
            "".join(
                f"{f + 1},{i},{x:.2f},{y:.2f},{w:.2f},{h:.2f},1,1,1\n" for f, i, x, y, w, h in rows
            )
        )
        return score_tracks(run, replace(labels, mot_gt=path))

    same = gt(run.tracks)
    assert same["mota"] == 1.0 and same["idf1"] == 1.0 and same["num_switches"] == 0
    # Each track's truth split in two identities half way through its life: every split is
    # a fragment IDF1 charges for (the detections stay right, so MOTA does not move).
    first = {i: f for f, i, *_ in reversed(run.tracks)}
    last = {i: f for f, i, *_ in run.tracks}
    split = gt(
        [
            (f, i + 100_000 if 2 * f > first[i] + last[i] else i, x, y, w, h)
            for f, i, x, y, w, h in run.tracks
        ]
    )
    assert split["mota"] == 1.0 and split["idf1"] < 0.8
    moved = gt([(f, i, x + 2000, y, w, h) for f, i, x, y, w, h in run.tracks])
    assert moved["num_misses"] == len(run.tracks) and moved["mota"] <= 0.0


def test_crossings_are_matched_at_most_once_and_as_many_as_can_be() -> None:
    f = "forward"
    # Closest pairs first would take 73.1-73.4 and leave 72.6 and 74.4 apart (1.8 s): 1 pair.
    assert match_crossings([(72.6, f), (73.1, f)], [(73.4, f), (74.4, f)]) == 2
    assert match_crossings([(10.0, f), (10.2, f)], [(10.1, f)]) == 1  # one count, one crossing
    assert match_crossings([(10.0, f)], [(10.0, "backward"), (11.6, f)]) == 0  # wrong way, too late


def test_without_the_unit_key_nothing_is_analysed_nor_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key is read first: an evaluation never ends, an hour later, in "cannot sign"."""
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG.format(data=tmp_path / "data"), encoding="utf-8")
    args = ["analytics", "evaluate", "--config", str(config), "--clip", str(_vtest())]
    rc = main([*args, "--labels", str(LABELS), "--out", str(tmp_path / "r")])
    assert rc == 2 and "signing key" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_missing_or_truncated_clip_is_refused_plainly(
    evaluated: Evaluated, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["analytics", "evaluate", "--config", str(evaluated.config), "--labels", str(LABELS)]
    rc = main([*args, "--clip", str(tmp_path / "none.avi"), "--out", str(tmp_path / "r")])
    assert rc == 2 and "none.avi: cannot read" in capsys.readouterr().err
    # A short clip of other frames: refused by its digest before any frame is analysed.
    short = tmp_path / "short.avi"
    short.write_bytes(_vtest().read_bytes()[:200_000])
    rc = main([*args, "--clip", str(short), "--out", str(tmp_path / "r")])
    assert rc == 2 and "describe another clip" in capsys.readouterr().err
