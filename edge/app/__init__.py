"""The edged application: daemon, recording pipeline, control socket, alerts, self-test, metrics,
diagnostics, data-directory lock and process set-up."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.app.alerts import AlertHub as AlertHub
    from edge.app.control import Role as Role
    from edge.app.control import call as call
    from edge.app.daemon import Daemon as Daemon
    from edge.app.daemon import main as main
    from edge.app.diagnostics import Finding as Finding
    from edge.app.diagnostics import Level as Level
    from edge.app.diagnostics import evaluate as evaluate
    from edge.app.diagnostics import worst as worst
    from edge.app.metrics import write_textfile as write_textfile
    from edge.app.pipeline import CameraPipeline as CameraPipeline
    from edge.app.process import die_with_parent as die_with_parent
    from edge.app.process import setup_logging as setup_logging
    from edge.app.process import setup_process as setup_process

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "AlertHub": "alerts",
    "CameraPipeline": "pipeline",
    "Daemon": "daemon",
    "Finding": "diagnostics",
    "Level": "diagnostics",
    "Role": "control",
    "call": "control",
    "die_with_parent": "process",
    "evaluate": "diagnostics",
    "main": "daemon",
    "setup_logging": "process",
    "setup_process": "process",
    "worst": "diagnostics",
    "write_textfile": "metrics",
}
__all__ = [
    "AlertHub",
    "CameraPipeline",
    "Daemon",
    "Finding",
    "Level",
    "Role",
    "call",
    "die_with_parent",
    "evaluate",
    "main",
    "setup_logging",
    "setup_process",
    "worst",
    "write_textfile",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
