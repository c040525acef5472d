"""The uplink gate: may the CSU client send right now?

ANSSI/CNPP R19 puts every access port behind 802.1X. When 802.1X is enabled, the unit sends
nothing to the CSU unless its port is authenticated: :class:`Dot1xGate` is open only while the
supervisor reports AUTHENTICATED *and* has confirmed it recently (a stuck or dead supervisor
closes the gate). There is never any fallback: :class:`OpenGate` exists only for units whose
configuration disables 802.1X, and :func:`make_gate` is the one place that chooses.

The CSU client checks :meth:`UplinkGate.is_open` before each connection and each send, and may
block in :meth:`UplinkGate.wait_open`; all methods are safe from any thread.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod

from edge.uplink.dot1x.port_state import PortState

from ..config import EdgeConfig
from ..errors import Dot1xError
from .dot1x.supervisor import Dot1xSupervisor


class UplinkGate(ABC):
    """Whether the uplink may send; see the module docstring."""

    @abstractmethod
    def is_open(self) -> bool:
        """True when the uplink may send now."""

    @abstractmethod
    def reason(self) -> str:
        """Why the gate is open or closed, in words (for logs and diagnostics)."""

    def wait_open(self, timeout_s: float) -> bool:
        """Block until the gate is open or ``timeout_s`` passes; returns :meth:`is_open`."""
        deadline = time.monotonic() + timeout_s
        while not self.is_open():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(remaining, 0.1))
        return True


class OpenGate(UplinkGate):
    """Always open: only for a unit whose configuration disables 802.1X."""

    def is_open(self) -> bool:
        return True

    def reason(self) -> str:
        return "802.1X disabled in configuration"


class Dot1xGate(UplinkGate):
    """Open only while the port is AUTHENTICATED and the supervisor confirmed it recently."""

    def __init__(self, supervisor: Dot1xSupervisor) -> None:
        self.supervisor = supervisor

    def is_open(self) -> bool:
        return (
            self.supervisor.state is PortState.AUTHENTICATED
            and self.supervisor.confirmed_age_s() <= self.supervisor.max_confirmation_age_s
        )

    def reason(self) -> str:
        state = self.supervisor.state
        if state is PortState.AUTHENTICATED:
            age = self.supervisor.confirmed_age_s()
            if age > self.supervisor.max_confirmation_age_s:
                return f"802.1X state not confirmed for {age:.0f} s (supervisor stuck)"
            return f"802.1X port authenticated: {self.supervisor.reason}"
        return f"802.1X port {state.value}: {self.supervisor.reason}"

    def wait_open(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while not self.is_open():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # Woken by the next transition; re-checked at least every 0.5 s for staleness.
            self.supervisor.wait_change(min(remaining, 0.5))
        return True


def make_gate(cfg: EdgeConfig, supervisor: Dot1xSupervisor | None) -> UplinkGate:
    """The gate for ``cfg``: :class:`OpenGate` only when 802.1X is disabled, else 802.1X."""
    if not cfg.dot1x.enabled:
        return OpenGate()
    if supervisor is None or not supervisor.enabled:
        raise Dot1xError("802.1X is enabled but no supervisor was given for the uplink gate")
    return Dot1xGate(supervisor)
