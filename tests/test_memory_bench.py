"""``edgectl bench memory --json`` end to end with tiny settings (a smoke test, not a timing)."""

from __future__ import annotations

from .test_video_bench import bench


def test_bench_memory_reports_rss_and_frame_memory_with_goals() -> None:
    result = bench("memory", "--seconds", "2", "--scale", "0.1", "--scenarios", "1080p25")
    assert result["benchmark"] == "memory"
    figures = result["1080p25"]
    assert isinstance(figures, dict)
    assert figures["cameras"] == ["192x108@25"]
    assert figures["samples"] >= 2
    assert 10 < figures["edged_rss_mib"] < 2000
    assert figures["unit_pss_mib"] > 0 and figures["unit_processes"] >= 1
    assert figures["goal"] == "edged_rss_mib <= 150"
    assert isinstance(figures["goal_met"], bool)
    # edged's own frame pool accounting, read back over the control socket.
    assert 0 < figures["frame_peak_mib"] <= figures["frame_budget_mib"] == 384
    assert figures["frames_encoded"] > 0
    assert isinstance(result["idle_python_rss_mib"], float)


def test_bench_memory_reports_the_analytics_process_on_its_own() -> None:
    result = bench("memory", "--seconds", "3", "--scale", "0.1", "--scenarios", "1080p25-analytics")
    figures = result["1080p25-analytics"]
    assert isinstance(figures, dict)
    assert figures["analytics"] is True and figures["analytics_processes"] == 1
    # A Python process with numpy and the detector loaded: tens of MiB, counted apart from edged.
    assert 10 < figures["analytics_rss_mib"] < 2000
    assert figures["unit_processes"] >= 2
