"""Cabinet outputs in the diagnostics, the status screen and the metrics textfile."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from edge.app import metrics
from edge.app.diagnostics import Level, evaluate
from edge.cli.status import render
from tests.test_diagnostics import healthy, report


def _output(state: str, **extra: Any) -> dict[str, Any]:
    return {
        "kind": "modbus", "meaning": "LANE CLOSED panel", "state": state, "since_ns": 0,
        "until_s": None, "playbook": None, "agent": None, "error": None, "changes": 2,
        "errors": 0, **extra,
    }  # fmt: skip


def with_outputs(**outputs: Any) -> dict[str, Any]:
    status = healthy()
    status["daemon"]["outputs"] = {
        "outputs": {
            "sign-up": _output("closed", until_s=42.0, playbook="lane-closure"),
            "speaker": _output("safe"),
        },
        "pending": [],
        "guard_pid": 4242,
        **outputs,
    }
    return status


def test_outputs_in_their_states_are_one_healthy_line_on_the_screen() -> None:
    status = with_outputs()
    findings = evaluate(report(status))
    [line] = [f for f in findings if f.section == "outputs"]
    assert line.level is Level.OK and line.summary == "sign-up CLOSED 42s, speaker safe"
    screen = render(report(status), findings, colour=False)
    assert "OUTPUTS" in screen and "sign-up CLOSED 42s" in screen


def test_a_failed_write_a_missing_guard_and_a_waiting_request_are_problems() -> None:
    status = with_outputs(
        guard_pid=None,
        pending=[{"playbook": "lane-closure", "event": "e1", "camera": "cam2",
                  "expires_in_s": 250.0}],
    )  # fmt: skip
    status["daemon"]["outputs"]["outputs"]["speaker"] = _output(
        "unknown", error="output speaker: aplay not started", errors=3
    )
    found = {(f.level, f.summary) for f in evaluate(report(status)) if f.section == "outputs"}
    assert (Level.FAILING, "speaker: not driven (unknown)") in found
    assert (Level.FAILING, "guard not running") in found
    assert (Level.DEGRADED, "lane-closure waits for an agent (250s)") in found


def test_output_metrics_parse_as_openmetrics(tmp_path: Path) -> None:
    status = with_outputs(
        pending=[{"playbook": "p", "event": "e", "camera": "c", "expires_in_s": 1.0}]
    )
    status["daemon"]["outputs"]["outputs"]["speaker"] = _output("unknown", errors=3, error="x")
    path = tmp_path / "edge.prom"
    metrics.write_textfile(path, report(status))
    families = {f.name: f for f in text_string_to_metric_families(path.read_text())}  # type: ignore[no-untyped-call]
    active = {s.labels["output"]: s.value for s in families["edge_output_active"].samples}
    assert active == {"sign-up": 1, "speaker": -1}
    errors = {s.labels["output"]: s.value for s in families["edge_output_errors_total"].samples}
    assert errors == {"sign-up": 0, "speaker": 3}
    assert families["edge_output_requests_pending"].samples[0].value == 1
    assert families["edge_output_guard_up"].samples[0].value == 1
