"""The CSU receiver (``edge-csu serve``): units push sealed segments, envelopes and events over
mutual TLS 1.3; operators watch HLS decrypted in memory; every viewing is audited.

``settings`` (its own configuration schema), ``registry`` (enrolled units, CRL, TLS contexts),
``archive`` (verified segments per unit / camera / sequence), ``server`` (the units' HTTP API),
``hls`` (operators' video), ``access_log`` (who watched what), ``mqtt_relay`` (event publishing
to the broker), ``limits`` (connection and body bounds). The protocol
itself is shared with the unit's client in :mod:`edge.uplink.protocol`; docs/UPLINK.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.csu.receiver.archive import SegmentStore as SegmentStore
    from edge.csu.receiver.limits import AdmissionGate as AdmissionGate
    from edge.csu.receiver.mqtt_relay import EventPublisher as EventPublisher
    from edge.csu.receiver.registry import RevocationList as RevocationList
    from edge.csu.receiver.registry import UnitRegistry as UnitRegistry
    from edge.csu.receiver.server import serve as serve
    from edge.csu.receiver.settings import ServeConfig as ServeConfig

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "AdmissionGate": "limits",
    "EventPublisher": "mqtt_relay",
    "RevocationList": "registry",
    "SegmentStore": "archive",
    "ServeConfig": "settings",
    "UnitRegistry": "registry",
    "serve": "server",
}
__all__ = [
    "AdmissionGate",
    "EventPublisher",
    "RevocationList",
    "SegmentStore",
    "ServeConfig",
    "UnitRegistry",
    "serve",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
