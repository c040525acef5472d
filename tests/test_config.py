from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge import config
from edge.errors import ConfigError

GOOD = """\
[unit]
id = "cab-0042"
data_dir = "/var/lib/edge"

[[cameras]]
id = "north"
source = "rtsp://10.0.0.5/stream1"
fps = 12.5

[[cameras.privacy_masks]]
name = "flat 2B"
points = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.4]]
fill = "pixelate"

[[cameras]]
id = "south"
source = "file:/srv/clip.mp4"
"""


def test_demo_default_is_valid_and_masked() -> None:
    cfg = config.DEMO_CONFIG
    assert cfg.cameras[0].source == "synthetic"
    # One mask per storey of the façade; tests/test_demo_config.py checks they hide every window.
    assert [m.name for m in cfg.cameras[0].privacy_masks] == [
        "upper-floor windows",
        "ground-floor windows",
    ]
    assert cfg.unit.data_dir == Path("edge-data")


def test_good_config_parses() -> None:
    cfg = config.parse(GOOD, path="edge.toml")
    assert [c.id for c in cfg.cameras] == ["north", "south"]
    assert cfg.cameras[0].privacy_masks[0].fill is config.MaskFill.PIXELATE


@pytest.mark.parametrize(
    ("needle", "replacement", "key", "line", "reason"),
    [
        ("fps = 12.5", "fps = -1", "cameras[0].fps", 8, "greater than 0"),
        ('fill = "pixelate"', 'fill = "blur"', "cameras[0].privacy_masks[0].fill", 13, "solid"),
        ('id = "south"', 'id = "south"\ncolour = 3', "cameras[1].colour", 17, "unknown key"),
        ('source = "file:/srv/clip.mp4"', 'source = "http://x"', "cameras[1].source", 17, "rtsp"),
        ('id = "cab-0042"', 'id = "Cab 42"', "unit.id", 2, "pattern"),
        (
            "[[0.1, 0.1], [0.3, 0.1], [0.3, 0.4]]",
            "[[0.1, 0.1]]",
            "cameras[0].privacy_masks[0].points",
            12,
            "at least 3",
        ),
    ],
)
def test_errors_name_file_key_and_line(
    needle: str, replacement: str, key: str, line: int, reason: str
) -> None:
    text = GOOD.replace(needle, replacement)
    with pytest.raises(ConfigError) as info:
        config.parse(text, path="/etc/edge/edge.toml")
    err = info.value
    assert err.path == "/etc/edge/edge.toml"
    assert err.key == key
    assert err.line == line
    assert reason in str(err)
    assert str(err).startswith(f"/etc/edge/edge.toml:{line}: {key}: ")


def test_toml_syntax_error_has_line() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse('[unit]\nid = "a"\nbroken = [\n', path="x.toml")
    assert info.value.line is not None
    assert "not valid TOML" in str(info.value)


def test_duplicate_camera_ids_refused() -> None:
    with pytest.raises(ConfigError, match="used twice"):
        config.parse('[[cameras]]\nid = "a"\n[[cameras]]\nid = "a"\n')


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_edgectl_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("fps = 12.5", "fps = 0\nspeed = 2"))
    cmd = [sys.executable, "-m", "edge.cli.main", "config", "check"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    ko = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, check=False)
    assert ko.returncode == 1
    assert f"{bad}:8: cameras[0].fps:" in ko.stderr
    assert f"{bad}:9: cameras[0].speed: unknown key" in ko.stderr
    assert "2 problem(s)" in ko.stderr
