"""Publishing verified events to an MQTT broker (paho-mqtt, its own network thread).

Publishing never blocks the receiver: paho queues messages while the broker is away and
reconnects by itself; an event is stored before it is published, so a broker outage loses
no event (subscribers may re-read them from the store).
"""

from __future__ import annotations

import logging

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from .config import MqttConfig

log = logging.getLogger(__name__)


class EventPublisher:
    def __init__(self, cfg: MqttConfig, client_id: str = "edge-csu") -> None:
        self.cfg = cfg
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.reconnect_delay_set(1, 30)

    def start(self) -> None:
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        self._client.loop_start()
        log.info("publishing events to mqtt://%s:%d", self.cfg.host, self.cfg.port)

    def topic(self, unit_id: str, camera_id: str) -> str:
        return f"{self.cfg.topic_prefix}/{unit_id}/{camera_id}/events"

    def publish(self, unit_id: str, camera_id: str, payload: bytes) -> None:
        info = self._client.publish(self.topic(unit_id, camera_id), payload, qos=self.cfg.qos)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("MQTT publish for %s/%s failed: rc %s", unit_id, camera_id, info.rc)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
