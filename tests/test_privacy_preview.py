"""The installer's masked preview and the ``edgectl mask`` commands."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge import config as config_mod
from edge.cli.main import main
from edge.config import PrivacyMaskConfig
from edge.frames import Frame, i420_size
from edge.privacy.masker import PrivacyMasker
from edge.privacy.preview import OUTLINE_RGB, i420_to_rgb, render_preview
from edge.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.vault import layout
from edge.vault.audit import read_audit

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


@pytest.fixture
def unit_dir() -> Iterator[Path]:
    """A directory any user may read and write (the role test runs as ``nobody``)."""
    path = Path(tempfile.mkdtemp(prefix="edge-preview-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def installed(unit_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The unit's installed configuration (``/etc/edge/edge.toml`` on a unit) with the two
    masks of CONFIG, and a data directory holding the unit's signing key."""
    data = unit_dir / "data"
    text = CONFIG.replace('id = "test-unit"', f'id = "test-unit"\ndata_dir = "{data}"')
    path = unit_dir / "installed.toml"
    path.write_text(text, encoding="utf-8")
    path.chmod(0o644)
    load_or_create_signing_key(keys_dir_of(data))
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", path)
    return path


def preview_records(installed: Path) -> list[dict[str, object]]:
    cfg, _ = config_mod.load(installed)
    key = load_or_create_signing_key(keys_dir_of(cfg.unit.data_dir))
    records, problems = read_audit(
        layout.vault_dir(cfg.unit.data_dir) / "audit.log", key.public_key()
    )
    assert problems == []
    return [r.details for r in records if r.action == "mask-preview"]


def test_edgectl_mask_preview_writes_the_png(
    tmp_path: Path, installed: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Changed with the rule that a direct preview is role-checked, audited and always applies
    # the installed masks: it now runs against an installed configuration and its vault.
    config = tmp_path / "edge.toml"
    config.write_text(CONFIG, encoding="utf-8")
    out = tmp_path / "preview.png"
    args = ["mask", "preview", "--direct", "--config", str(config), "--out", str(out)]
    assert main(args) == 0
    with Image.open(out) as png:
        assert png.size == (320, 180)
        rgb = np.array(png.convert("RGB"))
    assert (rgb == np.array(OUTLINE_RGB, dtype=np.uint8)).all(axis=2).sum() > 100
    assert "2 installed + 0 candidate mask(s)" in capsys.readouterr().out
    assert not list(tmp_path.glob("*.tmp"))


def inner_pixels(masks: list[PrivacyMaskConfig]) -> np.ndarray:
    """Pixels well inside the masks (away from outlines and name labels)."""
    inner = PrivacyMasker(masks, 320, 180).luma_mask()
    for shift in (8, -8):
        inner &= np.roll(inner, shift, axis=0) & np.roll(inner, shift, axis=1)
    inner[30:60, :] = False  # the shop window's name label sits below its first vertex (64, 36)
    return inner


def test_direct_preview_applies_the_installed_masks_whatever_the_candidate(
    tmp_path: Path, installed: Path
) -> None:
    """A candidate configuration without masks (or with other ones) cannot unmask the scene:
    the installed masks always apply, candidates only add, and the preview is audited."""
    bare = CONFIG.split("[[cameras.privacy_masks]]")[0]
    extra = (
        '[[cameras.privacy_masks]]\nname = "door"\n'
        "points = [[0.02, 0.5], [0.16, 0.5], [0.16, 0.95], [0.02, 0.95]]\n"
    )
    shown = {}
    for name, text in (("bare", bare), ("extra", bare + extra)):
        config = tmp_path / f"{name}.toml"
        config.write_text(text, encoding="utf-8")
        out = tmp_path / f"{name}.png"
        args = ["mask", "preview", "--direct", "--config", str(config), "--out", str(out)]
        assert main(args) == 0
        with Image.open(out) as png:
            shown[name] = np.array(png.convert("RGB"))
    installed_masks = config_mod.load(installed)[0].cameras[0].privacy_masks
    solid = [m for m in installed_masks if m.fill.value == "solid"]
    door = [
        PrivacyMaskConfig(
            name="door", points=[(0.02, 0.5), (0.16, 0.5), (0.16, 0.95), (0.02, 0.95)]
        )
    ]
    for rgb in shown.values():
        inside = rgb[inner_pixels(solid)]
        assert inside.size > 1000 and int(inside.max()) - int(inside.min()) <= 2, "scene shows"
    door_inner = inner_pixels(door)
    door_inner[85:115, :] = False  # its name label
    inside_door = shown["extra"][door_inner]
    assert inside_door.size > 50 and int(inside_door.max()) - int(inside_door.min()) <= 2
    records = preview_records(installed)
    assert [r["camera"] for r in records] == ["street", "street"]
    assert records[0]["installed_masks"] == ["shop window", "balcony"]
    assert records[0]["candidate_masks"] == [] and records[1]["candidate_masks"] == ["door"]


def test_direct_preview_needs_the_installer_role(unit_dir: Path, installed: Path) -> None:
    """Run as ``nobody`` (a real change of identity in a child process): refused, no picture,
    even though every file the command reads is readable and the output directory writable."""
    config = unit_dir / "candidate.toml"
    config.write_text(CONFIG, encoding="utf-8")
    config.chmod(0o644)
    out = unit_dir / "preview.png"
    err = unit_dir / "stderr.txt"
    # The child cannot read the interpreter's own files as nobody: load what it runs first.
    import edge.capture.synthetic  # noqa: F401
    from edge.cli.main import build_parser

    build_parser()
    pid = os.fork()
    if pid == 0:  # the child: drop to nobody, run edgectl, report through the exit status
        code = 99
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            with err.open("w", encoding="utf-8") as stream:
                sys.stderr = stream
                code = main(
                    ["mask", "preview", "--direct", "--config", str(config), "--out", str(out)]
                )
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which fails
            err.write_text(repr(exc), encoding="utf-8")
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 2, err.read_text(encoding="utf-8")
    assert "needs the install role" in err.read_text(encoding="utf-8")
    assert not out.exists()


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
