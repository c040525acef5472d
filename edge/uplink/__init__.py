"""Public API of :mod:`edge.uplink` (see ``__all__``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.uplink.client import UplinkClient as UplinkClient
    from edge.uplink.client import UplinkState as UplinkState
    from edge.uplink.gate import Dot1xGate as Dot1xGate
    from edge.uplink.gate import OpenGate as OpenGate
    from edge.uplink.gate import make_gate as make_gate
    from edge.uplink.policy import Scheduler as Scheduler
    from edge.uplink.policy import TokenBucket as TokenBucket
    from edge.uplink.spool import EventSpool as EventSpool

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "Dot1xGate": "gate",
    "EventSpool": "spool",
    "OpenGate": "gate",
    "Scheduler": "policy",
    "TokenBucket": "policy",
    "UplinkClient": "client",
    "UplinkState": "client",
    "make_gate": "gate",
}
__all__ = [
    "Dot1xGate",
    "EventSpool",
    "OpenGate",
    "Scheduler",
    "TokenBucket",
    "UplinkClient",
    "UplinkState",
    "make_gate",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
