"""``edgectl bench mask --json`` prints the masking ratio against memcpy."""

from __future__ import annotations

import json

import pytest

from edge.cli.main import main


def test_bench_mask_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["bench", "mask", "--json", "--width", "640", "--height", "360", "--repeat", "5"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "mask"
    assert 30.0 < result["coverage_percent"] < 36.0
    for prefix in ("", "pixelate_", "worst_case_", "rectangle_", "columns_", "disc_"):
        assert result[f"{prefix}mask_ms"] > 0 and result[f"{prefix}memcpy_ms"] > 0
        ratio = result[f"{prefix}mask_ms"] / result[f"{prefix}memcpy_ms"]
        assert result[f"{prefix}mask_vs_memcpy"] == pytest.approx(ratio, rel=1e-2, abs=1e-3)
    assert result["columns_coverage_percent"] == pytest.approx(result["coverage_percent"], abs=1.0)
    assert result["columns_operations"] == 6, "three rectangles in each of luma and chroma"
