"""Camera and storage hot-plug, from the kernel's uevents through pyudev.

When a V4L2 camera disappears the capture loop notices on its own (reads fail, it backs off);
this monitor adds the *why* ("camera unplugged") to alerts and status, and when the device
comes back it asks the capture loop to retry at once instead of waiting out its back-off.
Storage removal (the data medium, or an export stick) is reported the same way.

:func:`classify` is the pure part; :class:`HotplugMonitor` is a thin pyudev observer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class HotplugEvent:
    kind: str  # "camera" | "storage"
    action: str  # "add" | "remove"
    devnode: str
    description: str


def classify(
    subsystem: str, action: str, devnode: str | None, props: dict[str, str]
) -> HotplugEvent | None:
    """Pure: what a uevent means for the unit, or ``None`` when it does not matter."""
    if action not in ("add", "remove") or not devnode:
        return None
    if subsystem == "video4linux":
        name = props.get("ID_V4L_PRODUCT") or props.get("ID_MODEL") or devnode
        return HotplugEvent("camera", action, devnode, f"camera {name} ({devnode})")
    if subsystem == "block" and props.get("DEVTYPE") in ("disk", "partition"):
        name = props.get("ID_MODEL") or props.get("ID_FS_LABEL") or devnode
        return HotplugEvent("storage", action, devnode, f"storage {name} ({devnode})")
    return None


class HotplugMonitor:
    """Watches udev for cameras and storage; calls ``on_event`` from pyudev's observer thread."""

    def __init__(self, on_event: Callable[[HotplugEvent], None]) -> None:
        self.on_event = on_event
        self.observer: Any = None
        self.error: str | None = None

    def start(self) -> None:
        try:
            import pyudev

            context = pyudev.Context()
            monitor = pyudev.Monitor.from_netlink(context)
            monitor.filter_by("video4linux")
            monitor.filter_by("block")
            self.observer = pyudev.MonitorObserver(monitor, callback=self._handle, name="hotplug")
            self.observer.start()
        except (ImportError, OSError) as exc:
            self.error = f"hot-plug monitoring unavailable: {exc}"
            log.warning("%s", self.error)

    def stop(self) -> None:
        if self.observer is not None:
            self.observer.send_stop()

    def _handle(self, device: Any) -> None:
        event = classify(
            device.subsystem, device.action or "", device.device_node, dict(device.properties)
        )
        if event is not None:
            log.warning(
                "%s %s", event.description, "plugged in" if event.action == "add" else "REMOVED"
            )
            self.on_event(event)
