"""``edgectl bench outputs`` runs and reports its figures (a smoke test, not a timing)."""

from __future__ import annotations

import json

import pytest

from edge.cli.main import main as edgectl


def test_bench_outputs_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert edgectl(["bench", "outputs", "--json", "--repeat", "3"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "outputs" and result["repeat"] == 3
    for key in ("roundtrip_ms", "event_to_output_ms", "kill_to_safe_ms"):
        assert 0 < result[key]["p50"] <= result[key]["max"], key
    assert result["event_vs_roundtrip"] > 0 and result["kill_to_safe_vs_roundtrip"] > 0
