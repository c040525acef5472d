"""Alarms the daemon raises itself: cabinet door (R59), camera lost or unplugged, storage
removed, 802.1X failures. Analytics events (counts, rules, tamper) arrive already signed by the
analytics bridge (in edged: the analytics process itself holds no key) and pass through the
same hub.

Every event is signed with the unit key in the one event format of the firmware
(:mod:`edge.events`), kept in a short in-memory history for ``edgectl status``, and
handed to every listener (the vault's event log, the uplink, MQTT). A condition that ends
(door closed, camera back) is *cleared* with a second event, so the CSU sees both edges.

Thread-safety: any thread may raise, clear or add listeners; ``_lock`` protects the history and
the active set. Listeners are called outside the lock, in the raising thread, and must not
block (they queue).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from edge.events import EventSigner, SignedEvent
from edge.snapshot import AlertsStatus

log = logging.getLogger(__name__)

Listener = Callable[[SignedEvent], None]


class AlertHub:
    def __init__(self, signer: EventSigner, *, history: int = 50) -> None:
        self._signer = signer
        self._lock = threading.Lock()
        self._recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=history)
        self._active: dict[tuple[str, str], dict[str, Any]] = {}
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners.append(listener)

    def raise_alert(self, kind: str, camera: str, message: str, **details: Any) -> None:
        """A condition starts; raising an already active one again does nothing."""
        with self._lock:
            if (kind, camera) in self._active:
                return
        self.publish(self._sign(kind, camera, "raised", {"message": message, **details}))

    def clear_alert(self, kind: str, camera: str, message: str) -> None:
        """A condition ends; clearing one that is not active does nothing."""
        with self._lock:
            if (kind, camera) not in self._active:
                return
        self.publish(self._sign(kind, camera, "cleared", {"message": message}))

    def _sign(self, kind: str, camera: str, state: str, details: dict[str, Any]) -> SignedEvent:
        return self._signer.sign(
            camera=camera,
            category="alert",
            kind=kind,
            rule="unit",
            wall_ns=time.time_ns(),
            frame_index=-1,
            details=details,
            state=state,
        )

    def notice(self, category: str, kind: str, rule: str, details: dict[str, Any]) -> None:
        """A one-off signed event of the unit (an output changed, a request waits for an
        agent), for the CSU and every other listener."""
        self.publish(
            self._signer.sign(
                camera="unit",
                category=category,
                kind=kind,
                rule=rule,
                wall_ns=time.time_ns(),
                frame_index=-1,
                details=details,
            )
        )

    def publish(self, event: SignedEvent) -> None:
        """Record an event (ours or the analytics process's) and hand it to every listener."""
        summary = {
            "time": event.body.get("time"),
            "camera": event.body.get("camera"),
            "category": event.body.get("category"),
            "kind": event.body.get("kind"),
            "state": event.body.get("state"),
            "message": (event.body.get("details") or {}).get("message", ""),
        }
        key = (str(summary["kind"]), str(summary["camera"]))
        with self._lock:
            self._recent.append(summary)
            if summary["state"] == "raised":
                self._active[key] = event.body
            elif summary["state"] == "cleared":
                self._active.pop(key, None)
            listeners = list(self._listeners)
        if event.body.get("category") != "count":
            log.warning(
                "event %s %s on %s: %s",
                summary["kind"],
                summary["state"] or "",
                summary["camera"],
                summary["message"],
            )
        for listener in listeners:
            try:
                listener(event)
            except Exception:  # a failing consumer must not stop the others or the daemon
                log.exception("event listener failed")

    def active(self, category: str | None = None) -> list[str]:
        """Conditions raised and not yet cleared, as "kind (camera)"."""
        with self._lock:
            return [
                f"{k} ({c})"
                for (k, c), body in self._active.items()
                if category is None or body.get("category") == category
            ]

    def snapshot(self) -> AlertsStatus:
        with self._lock:
            recent = list(self._recent)[-10:]
        return {"active": self.active(), "recent": recent}
