"""``edge-csu bench`` runs end to end and reports its figures (not a speed test)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

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


@pytest.mark.slow  # Swift, PostgreSQL, HAProxy and three receiver starts: about 90 s
def test_bench_of_the_cluster_reports_its_figures_and_loses_nothing_to_the_kill() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "bench", "--cluster", "--units", "4",
         "--seconds", "6", "--segment-s", "1", "--rate-mbps", "0.5", "--flat-seconds", "2",
         "--flat-connections", "4", "--json"],
        capture_output=True, text=True, timeout=400, cwd=REPO,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["benchmark"] == "csu-cluster" and result["receivers"] == 2
    for phase in ("cluster_1", "cluster_2", "embedded"):
        assert result[phase]["segments_acknowledged"] == result[phase]["segments_produced"] > 0
    assert result["cluster_1"]["units_per_receiver_core"] > 0
    assert result["embedded"]["units_per_receiver_core"] > 0
    assert result["scaling_1_to_2_receivers"] > 0
    # the kill -9 broke some units' connections, and each was served again by the survivor
    assert result["cluster_2"]["failover_units"] >= 1
    assert 0 < result["failover_p50_s"] <= result["failover_max_s"] < 30
    audit = result["cluster_2"]["audit_after_all_cluster_phases"]
    assert audit["lost"] == 0 and audit["stored_twice"] == 0 and audit["chain_breaks"] == 0
