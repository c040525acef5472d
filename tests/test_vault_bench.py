"""``edgectl bench vault`` runs and reports its ratios (small sizes: a smoke test, not a timing)."""

from __future__ import annotations

import json

import pytest

from edge.cli.main import main as edgectl


def test_bench_vault_json(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--rows", "5000", "--seconds", "2", "--width", "320", "--height", "240", "--fps", "10"]
    assert edgectl(["bench", "vault", "--json", *args]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["benchmark"] == "vault"
    assert result["index_rows"] == 5003  # the generated rows and three real sealed files
    assert result["range_10min_segments"] == 300
    assert 0 < result["seal_share_of_recording_cpu"] < 1
    assert result["seal_mb_per_s"] > 0 and 0 < result["seal_vs_memcpy"] < 1
    assert result["recovery_s"] > 0
