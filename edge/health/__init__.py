"""Public API of :mod:`edge.health` (see ``__all__``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.health.door import DoorLogic as DoorLogic
    from edge.health.door import DoorMonitor as DoorMonitor
    from edge.health.hotplug import HotplugEvent as HotplugEvent
    from edge.health.hotplug import HotplugMonitor as HotplugMonitor

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "DoorLogic": "door",
    "DoorMonitor": "door",
    "HotplugEvent": "hotplug",
    "HotplugMonitor": "hotplug",
}
__all__ = ["DoorLogic", "DoorMonitor", "HotplugEvent", "HotplugMonitor"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
