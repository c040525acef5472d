"""Publishing signed events to an MQTT broker (paho-mqtt), over TLS by default.

Topic: ``<prefix>/<unit>/<camera>/<category>/<kind>`` (``edge/unit-7/cam1/alert/gathering``);
payload: the event's wire form (signed JSON, no snapshot). Subscribers verify with the unit's
public key; the broker needs no trust beyond delivery.

The connection is an explicit state machine; paho's network thread reconnects with back-off
and queues messages published while the broker is away (bounded: the oldest wait, the newest
beyond the bound are dropped and counted), so :meth:`MqttPublisher.publish` never blocks the
bridge's drain thread.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from ..config import EdgeConfig, MqttConfig
from ..mqtt_tls import broker_context
from ..unitkeys import keys_dir_of
from .events import SignedEvent

log = logging.getLogger(__name__)

MAX_QUEUED = 1000


class MqttState(enum.Enum):
    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class MqttPublisher:
    """One broker connection.

    paho calls ``_on_connect``/``_on_disconnect``/``_on_publish`` from its network thread;
    :meth:`publish` may be called from any thread (paho's client is thread-safe for publish).
    ``_lock`` protects ``state`` and the counters, which :meth:`stats` reads.
    """

    def __init__(
        self, cfg: MqttConfig, *, unit_id: str, ca_file: str | None, client_id: str
    ) -> None:
        self.cfg = cfg
        self.unit_id = unit_id
        self._lock = threading.Lock()
        self.state = MqttState.STOPPED
        self.published = 0
        self.acknowledged = 0
        self.dropped = 0
        self._prefix = f"[mqtt {cfg.host}:{cfg.port}]"
        self._last: paho.MQTTMessageInfo | None = None  # the latest publish (stop() waits for it)
        self._client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv311,
        )
        self._client.max_queued_messages_set(MAX_QUEUED)
        self._client.reconnect_delay_set(min_delay=1, max_delay=60)
        if cfg.tls:
            self._client.tls_set_context(
                broker_context(ca_file, cfg.cert_file, cfg.key_file, section="analytics.mqtt")
            )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_publish = self._on_publish

    @classmethod
    def from_config(cls, cfg: EdgeConfig) -> MqttPublisher:
        m = cfg.analytics.mqtt
        ca = m.ca_file if m.ca_file is not None else keys_dir_of(cfg.unit.data_dir) / "ca.pem"
        return cls(
            m,
            unit_id=cfg.unit.id,
            ca_file=str(ca) if m.tls else None,
            client_id=f"edge-{cfg.unit.id}",
        )

    def _set_state(self, state: MqttState, reason: str) -> None:
        with self._lock:
            old, self.state = self.state, state
        if old is not state:
            log.info("%s %s -> %s: %s", self._prefix, old.value, state.value, reason)

    def start(self) -> None:
        self._set_state(MqttState.CONNECTING, "start")
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        self._client.loop_start()

    def stop(self, timeout: float = 5.0) -> None:
        """Disconnect after the last message handed to paho is out, waiting at most
        ``timeout`` seconds (and not at all while the broker is away)."""
        last = self._last
        if last is not None and self.state is MqttState.CONNECTED:
            with contextlib.suppress(RuntimeError, ValueError):
                last.wait_for_publish(timeout)
        self._client.disconnect()
        self._client.loop_stop()
        self._set_state(MqttState.STOPPED, "stop")

    def topic(self, event: SignedEvent) -> str:
        b = event.body
        return f"{self.cfg.topic_prefix}/{self.unit_id}/{b['camera']}/{b['category']}/{b['kind']}"

    def publish(self, event: SignedEvent) -> None:
        info = self._client.publish(self.topic(event), event.wire(), qos=self.cfg.qos)
        self._last = info
        with self._lock:
            if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
                self.dropped += 1
            else:
                self.published += 1
        if info.rc == paho.MQTT_ERR_QUEUE_SIZE:
            log.warning("%s queue full: event %s dropped", self._prefix, event.body["id"])

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self.state.value,
                "published": self.published,
                "acknowledged": self.acknowledged,
                "dropped": self.dropped,
            }

    # --- paho network thread -----------------------------------------------------------------

    def _on_connect(self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if reason.is_failure:
            self._set_state(MqttState.DISCONNECTED, f"broker refused: {reason}")
        else:
            self._set_state(MqttState.CONNECTED, "connected")

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, props: Any
    ) -> None:
        if self.state is not MqttState.STOPPED:
            self._set_state(MqttState.DISCONNECTED, f"{reason}; paho reconnects")

    def _on_publish(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        with self._lock:
            self.acknowledged += 1
