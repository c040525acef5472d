"""``edge-csu bench`` runs end to end and reports its figures (not a speed test)."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import REPO


def test_bench_reports_capacity_latency_and_the_raw_sink_ratio() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "bench", "--units", "3", "--seconds", "2.5",
         "--segment-s", "0.5", "--rate-mbps", "1", "--flat-seconds", "1", "--json"],
        capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
    )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["benchmark"] == "csu-receiver" and result["units"] == 3
    assert result["paced"]["failures"] == 0 and result["paced"]["segments"] >= 10
    assert 0 < result["paced"]["latency_p50_s"] <= result["paced"]["latency_p95_s"]
    assert result["receiver_flat_mb_s"] > 0 and result["raw_tls_sink_mb_s"] > 0
    assert result["ratio_to_raw_sink"] > 0 and result["units_per_core"] > 0


def test_bench_of_the_cluster_index_reports_both_modes_and_the_scaling() -> None:
    from .pg_util import postgres

    with postgres() as conninfo:
        out = subprocess.run(
            [sys.executable, "-m", "edge.csu.main", "bench", "--index-database", conninfo,
             "--index-segments", "200", "--json"],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=True,
        )  # fmt: skip
    result = json.loads(out.stdout)
    assert result["benchmark"] == "csu-cluster-index" and result["segments"] == 200
    for key in ("embedded_1_per_s", "embedded_2_per_s", "cluster_1_per_s", "cluster_2_per_s"):
        assert result[key] > 0, key
    assert result["cluster_scaling_1_to_2"] > 0 and result["cluster_to_embedded"] > 0
