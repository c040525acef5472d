"""``edgectl analytics preview`` and ``calibrate``: the installer sees, on the masked picture,
where each counting line is and which side counts as forward, every rule's zone, and the ground
grid of the calibration; the masks still hide what they hide, and the preview is audited."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge import config as config_mod
from edge.analytics.ground import homography, to_image
from edge.analytics.overlay import GRID_RGB, LINE_RGB, ZONE_RGB, draw_rules, forward_of
from edge.cli.main import main
from edge.config import CameraAnalyticsConfig, GroundCalibration, LineRuleConfig, parse
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.privacy.masker import PrivacyMasker
from edge.vault import layout
from edge.vault.audit import read_audit

BASE = """\
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
"""

RULES = """
[analytics]
enabled = true

[[analytics.cameras]]
camera = "street"

[[analytics.cameras.lines]]
name = "kerb"
points = [[0.05, 0.8], [0.95, 0.8]]

[[analytics.cameras.intrusions]]
name = "depot"
zone = [[0.7, 0.35], [0.95, 0.35], [0.95, 0.6], [0.7, 0.6]]
"""


def _count(rgb: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((rgb == np.array(colour, dtype=np.uint8)).all(axis=2).sum())


def test_forward_is_a_quarter_turn_clockwise_on_screen() -> None:
    assert forward_of((0.0, 0.5), (1.0, 0.5)) == pytest.approx((0.0, 1.0))  # drawn rightwards
    assert forward_of((0.5, 0.0), (0.5, 1.0)) == pytest.approx((-1.0, 0.0))  # drawn downwards


def test_the_arrow_points_to_the_side_that_counts_forward() -> None:
    for points, forward_half in (
        (((0.05, 0.5), (0.95, 0.5)), "below"),
        (((0.95, 0.5), (0.05, 0.5)), "above"),
    ):
        image = Image.new("RGB", (320, 180))
        cam = CameraAnalyticsConfig(
            camera="c", lines=[LineRuleConfig(name="l", points=points, hysteresis=0.0)]
        )
        draw_rules(image, cam)
        rgb = np.array(image)
        below = _count(rgb[95:], LINE_RGB)
        above = _count(rgb[:85], LINE_RGB)
        assert (below > above) is (forward_half == "below"), (points, below, above)


def test_the_ground_grid_is_a_metre_grid_in_perspective() -> None:
    image = Image.new("RGB", (320, 180))
    pts = [(0.3, 0.5), (0.7, 0.5), (0.9, 0.9), (0.1, 0.9)]
    world = [(0.0, 4.0), (4.0, 4.0), (4.0, 0.0), (0.0, 0.0)]
    draw_rules(
        image, CameraAnalyticsConfig(camera="c", ground=GroundCalibration(image=pts, world=world))
    )
    rgb = np.array(image)
    grid = (rgb == np.array(GRID_RGB, dtype=np.uint8)).all(axis=2)
    hm = homography(pts, world)
    # Where two grid lines cross on the ground (whole metres), the picture has a grid pixel;
    # half-way between lines it has none.
    for gx, gy in ((1, 1), (2, 3), (3, 2)):
        u, v = to_image(hm, (gx, gy))
        x, y = round(u * 320), round(v * 180)
        assert grid[y - 1 : y + 2, x - 1 : x + 2].any(), (gx, gy)
    u, v = to_image(hm, (1.5, 2.5))
    assert not grid[
        round(v * 180) - 1 : round(v * 180) + 2, round(u * 320) - 1 : round(u * 320) + 2
    ].any()


@pytest.fixture
def unit_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="edge-rules-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def installed(unit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = unit_dir / "data"
    text = BASE.replace('id = "test-unit"', f'id = "test-unit"\ndata_dir = "{data}"')
    path = unit_dir / "installed.toml"
    path.write_text(text, encoding="utf-8")
    load_or_create_signing_key(keys_dir_of(data))
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", path)
    return path


def test_edgectl_analytics_preview_draws_the_rules_on_the_masked_picture(
    tmp_path: Path, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = tmp_path / "candidate.toml"
    candidate.write_text(BASE + RULES, encoding="utf-8")
    out = tmp_path / "rules.png"
    args = ["analytics", "preview", "--direct", "--config", str(candidate), "--out", str(out)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 line(s), 1 zone(s)" in printed and "line kerb: (0.05, 0.8) -> (0.95, 0.8)" in printed
    with Image.open(out) as png:
        rgb = np.array(png.convert("RGB"))
    assert rgb.shape == (180, 320, 3)
    assert _count(rgb[140:], LINE_RGB) > 300  # the line at y = 0.8 (row 144)
    assert _count(rgb[148:], LINE_RGB) > _count(rgb[:140], LINE_RGB)  # its arrow below it
    assert _count(rgb, ZONE_RGB["intrusion"]) > 100
    # The mask still hides the shop window: well inside it, one solid colour.
    cfg = parse(BASE)
    inner = PrivacyMasker(cfg.cameras[0].privacy_masks, 320, 180).luma_mask()
    for shift in (10, -10):
        inner &= np.roll(inner, shift, axis=0) & np.roll(inner, shift, axis=1)
    inner[30:60, :] = False  # the mask's name label
    inside = rgb[inner]
    assert len(inside) > 200 and (inside == inside[0]).all()
    # Audited as a preview of the installed masks, before any picture was read.
    data = config_mod.load(installed)[0].unit.data_dir
    key = load_or_create_signing_key(keys_dir_of(data))
    records, problems = read_audit(layout.vault_dir(data) / "audit.log", key.public_key())
    assert problems == [] and [r.action for r in records][-1] == "mask-preview"


def test_edgectl_analytics_calibrate_gives_the_ground_section_and_areas(
    tmp_path: Path, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    candidate = tmp_path / "candidate.toml"
    zone = "[[0.2, 0.6], [0.8, 0.6], [0.9, 0.9], [0.1, 0.9]]"
    candidate.write_text(
        BASE + RULES + f'\n[[analytics.cameras.fires]]\nname = "bins"\nzone = {zone}\n',
        encoding="utf-8",
    )
    out = tmp_path / "grid.png"
    image = "0.2,0.6 0.8,0.6 0.9,0.9 0.1,0.9"
    args = ["analytics", "calibrate", "--direct", "--config", str(candidate)]
    assert main([*args, "--image", image, "--rect", "6,10", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["max_error_m"] < 1e-6
    assert doc["zone_areas_m2"]["fire: bins"] == pytest.approx(60.0)
    # The printed section, pasted into the configuration, is accepted and gives the same area.
    cfg = parse(BASE + RULES + doc["toml"])
    assert cfg.analytics.cameras[0].ground is not None
    with Image.open(out) as png:
        assert _count(np.array(png.convert("RGB")), GRID_RGB) > 200
    # Three points on a line: refused, with the reason.
    bad = "0.1,0.1 0.2,0.2 0.3,0.3 0.1,0.9"
    assert main([*args, "--image", bad, "--rect", "6,10"]) == 2
    assert "on one line" in capsys.readouterr().err
