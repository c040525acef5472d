"""Evaluation of the analytics on real footage: OpenCV's sample pedestrian clip ``vtest.avi``
as Debian's opencv-doc ships it (found through dpkg, never by a fixed path), with the
hand-made labels in ``tests/footage/vtest.labels.toml``."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tomllib
from pathlib import Path

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
