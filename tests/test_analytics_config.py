"""The analytics section of the configuration, and the example in docs/ANALYTICS.md."""

from __future__ import annotations

import re

import pytest

from edge import config
from edge.errors import ConfigError

from .conftest import REPO


def test_analytics_is_off_by_default_and_the_demo_stays_valid() -> None:
    assert config.DEMO_CONFIG.analytics.enabled is False
    assert config.DEMO_CONFIG.analytics.for_camera("cam1").lines == []


def test_the_documented_example_is_a_valid_configuration() -> None:
    doc = (REPO / "docs" / "ANALYTICS.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", doc, re.S)
    assert example is not None
    cfg = config.parse(example.group(1), path="docs/ANALYTICS.md")
    cam = cfg.analytics.for_camera("cam1")
    assert cfg.analytics.enabled and cam.lines[0].name == "kerb"
    assert cam.wrong_ways[0].direction == (1.0, 0.0) and cam.parkings[0].max_seconds == 5400


def test_rule_names_are_unique_per_camera() -> None:
    text = """
[[analytics.cameras]]
camera = "cam1"
[[analytics.cameras.lines]]
name = "door"
points = [[0.4, 0.5], [0.6, 0.5]]
[[analytics.cameras.gatherings]]
name = "door"
zone = [[0, 0], [1, 0], [1, 1]]
"""
    with pytest.raises(ConfigError, match="rule name 'door' is used twice"):
        config.parse(text)


def test_unknown_keys_and_bad_values_are_located() -> None:
    with pytest.raises(ConfigError) as err:
        config.parse("[analytics]\nenabled = true\nrate = 5\n", path="edge.toml")
    assert err.value.key == "analytics.rate" and err.value.line == 3
    with pytest.raises(ConfigError) as err:
        config.parse('[analytics.detector]\nmodel_sha256 = "not hex"\n', path="edge.toml")
    assert err.value.key == "analytics.detector.model_sha256"
