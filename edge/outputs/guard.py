"""The output guard: a small process that returns every cabinet output to safe when edged
dies, whatever the death.

edged starts it (:class:`edge.outputs.engine.OutputEngine`) and writes the outputs'
configuration on its standard input, one JSON line, then keeps the pipe open without ever
writing again. Only edged holds the write end, so the guard reads end of file exactly when
edged closes it: an orderly stop, an exception, ``kill -9``, the OOM killer. It then drives
every output safe, trying again for ``_PERSIST_S`` against a controller that does not answer,
and exits. SIGTERM (systemd stopping the service's control group) does the same; SIGINT is
ignored (its own session already keeps a terminal's Ctrl-C away).

Why a process and not a thread, a systemd ``ExecStopPost=`` or the PLC alone: a thread dies
with edged; ``ExecStopPost=`` runs only after systemd has noticed and stopped the whole unit
(seconds) and not at all for an edged started by hand; a PLC watchdog on the heartbeat register
is used too where the controller supports it, but GPIO relays and audio have none.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import time
from types import FrameType

from edge.config import OutputConfig
from edge.errors import OutputError
from edge.outputs.base import OutputDriver, make_driver

log = logging.getLogger("edge-output-guard")

#: How long an unanswered controller is tried again. Under systemd, the guard gets SIGTERM with
#: the rest of edged's control group (``KillMode=control-group``) and is killed
#: ``TimeoutStopSec=`` (20 s) later: this must end first (tests/test_systemd_unit.py).
_PERSIST_S = 15.0


def make_safe(drivers: list[OutputDriver], persist_s: float = _PERSIST_S) -> list[str]:
    """Drive every output safe, trying the failing ones again for ``persist_s``; the names of
    those still not safe."""
    pending = list(drivers)
    deadline = time.monotonic() + persist_s
    while pending:
        failed = []
        for driver in pending:
            try:
                driver.safe()
            except OutputError as exc:
                log.error("%s", exc)
                failed.append(driver)
            else:
                log.warning("output %s returned to its safe state", driver.name)
        pending = failed
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.5)
    for driver in drivers:
        driver.close()
    return [d.name for d in pending]


class _Stopped(Exception):  # noqa: N818 - a signal, not an error
    """SIGTERM arrived: leave the wait for end of file."""


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="edge-output-guard: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        raise _Stopped

    line = sys.stdin.buffer.readline()
    outputs = [OutputConfig.model_validate(o) for o in json.loads(line)]
    drivers = [make_driver(o) for o in outputs]
    signal.signal(signal.SIGTERM, on_term)
    sys.stdout.write("armed\n")
    sys.stdout.flush()
    try:
        while sys.stdin.buffer.read(4096):
            pass  # edged never writes again; anything is ignored until end of file
        why = "edged is gone"
    except _Stopped:
        why = "stopped (SIGTERM)"
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # nothing may cut the way back to safe
    log.info("%s: driving %d output(s) to their safe state", why, len(drivers))
    return 0 if not make_safe(drivers) else 1


if __name__ == "__main__":
    sys.exit(main())
