"""802.1X EAP-TLS authentication of the unit's wired uplink port (ANSSI/CNPP R19).

wpa_supplicant does the protocol work; this package renders its configuration
(:mod:`.supplicant_conf`), talks to its control socket (:mod:`.ctrl`), interprets what it says
(:mod:`.port_state`, pure) and supervises it from ``edged`` (:mod:`.supervisor`). The uplink gate
(:mod:`edge.uplink.gate`) opens only while the supervisor sees the port authorised.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.uplink.dot1x.ctrl import WpaCtrl as WpaCtrl
    from edge.uplink.dot1x.port_state import PortState as PortState
    from edge.uplink.dot1x.supervisor import Dot1xAlert as Dot1xAlert
    from edge.uplink.dot1x.supervisor import Dot1xSupervisor as Dot1xSupervisor
    from edge.uplink.dot1x.supplicant_conf import Dot1xSettings as Dot1xSettings

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "Dot1xAlert": "supervisor",
    "Dot1xSettings": "supplicant_conf",
    "Dot1xSupervisor": "supervisor",
    "PortState": "port_state",
    "WpaCtrl": "ctrl",
}
__all__ = ["Dot1xAlert", "Dot1xSettings", "Dot1xSupervisor", "PortState", "WpaCtrl"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
