"""The installer's masked preview and the ``edgectl mask`` commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge.cli.main import main
from edge.config import PrivacyMaskConfig
from edge.frames import Frame, i420_size
from edge.privacy.masker import PrivacyMasker
from edge.privacy.preview import OUTLINE_RGB, i420_to_rgb, render_preview

WINDOW = [(0.2, 0.2), (0.6, 0.25), (0.55, 0.7), (0.25, 0.65)]

CONFIG = """\
[unit]
id = "test-unit"

[[cameras]]
id = "street"
source = "synthetic"
width = 320
height = 180
fps = 25

[[cameras.privacy_masks]]
name = "shop window"
points = [[0.2, 0.2], [0.6, 0.25], [0.55, 0.7], [0.25, 0.65]]

[[cameras.privacy_masks]]
name = "balcony"
points = [[0.7, 0.1], [0.9, 0.1], [0.9, 0.3]]
fill = "pixelate"
pixel_size = 16
"""


def bright_frame(width: int, height: int) -> Frame:
    """White everywhere (Y=235, no colour): anything unmasked in a preview is near white."""
    data = np.full(i420_size(width, height), 128, dtype=np.uint8)
    frame = Frame(data, width, height, 0, 0, 0)
    frame.y[...] = 235
    return frame


def test_preview_is_masked_outlined_and_readable(tmp_path: Path) -> None:
    frame = bright_frame(320, 180)
    before = frame.data.copy()
    masks = [PrivacyMaskConfig(name="shop window", points=WINDOW)]
    image = render_preview(frame, masks)
    assert (frame.data == before).all(), "the caller's frame is left alone"
    path = tmp_path / "preview.png"
    image.save(path)
    with Image.open(path) as png:
        assert png.format == "PNG" and png.size == (320, 180) and png.mode == "RGB"
        rgb = np.array(png)
    outline = (rgb == np.array(OUTLINE_RGB, dtype=np.uint8)).all(axis=2)
    assert outline.sum() > 100
    # Inside the mask, away from the outline and the label, only the dark fill shows.
    inner = PrivacyMasker(masks, 320, 180).luma_mask()
    inner[:, :] &= np.roll(inner, 6, axis=0) & np.roll(inner, -6, axis=0)
    inner &= np.roll(inner, 6, axis=1) & np.roll(inner, -6, axis=1)
    inner[30:60, :] = False  # the name label sits below the first vertex (64, 36)
    assert inner.sum() > 1000
    assert rgb[inner].max() < 60, "no scene pixel shows through the mask"
    # Well away from the mask (it ends at x=192, y=126), the scene shows as it is.
    assert rgb[140:].min() > 200 and rgb[:, 200:].min() > 200


def test_i420_to_rgb_matches_known_colours() -> None:
    frame = Frame.blank(4, 2)
    frame.y[...] = 235
    rgb = i420_to_rgb(frame)
    assert (rgb == 255).all()
    frame.y[...] = 16
    assert (i420_to_rgb(frame) == 0).all()


def test_edgectl_mask_preview_writes_the_png(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "preview.png"
    args = ["mask", "preview", "--direct", "--config", str(config), "--out", str(out)]
    assert main(args) == 0
    with Image.open(out) as png:
        assert png.size == (320, 180)
        rgb = np.array(png.convert("RGB"))
    assert (rgb == np.array(OUTLINE_RGB, dtype=np.uint8)).all(axis=2).sum() > 100
    assert "2 mask(s)" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))


def test_edgectl_mask_show_prints_coverage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG, encoding="utf-8")
    assert main(["mask", "show", "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["camera"] == "street" and (report["width"], report["height"]) == (320, 180)
    names = [m["name"] for m in report["masks"]]
    assert names == ["shop window", "balcony"]
    assert report["masks"][0]["vertices"] == 4 and report["masks"][1]["fill"] == "pixelate"
    each = [m["coverage_percent"] for m in report["masks"]]
    assert all(c > 0 for c in each)
    assert max(each) <= report["coverage_percent"] <= sum(each) + 0.01
    assert main(["mask", "show", "--config", str(config)]) == 0
    text = capsys.readouterr().out
    assert "shop window" in text and "balcony" in text and "%" in text


def test_edgectl_mask_show_flags_a_mask_outside_the_frame(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(
        CONFIG + '\n[[cameras.privacy_masks]]\nname = "typo"\n'
        "points = [[1.2, 0.1], [1.5, 0.1], [1.5, 0.4]]\n",
        encoding="utf-8",
    )
    assert main(["mask", "show", "--config", str(config)]) == 0
    typo = [line for line in capsys.readouterr().out.splitlines() if "typo" in line]
    assert len(typo) == 1 and "hides nothing" in typo[0]


def test_edgectl_mask_unknown_camera(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG, encoding="utf-8")
    assert main(["mask", "show", "--config", str(config), "--camera", "nope"]) == 2
    assert "street" in capsys.readouterr().err
