"""Publishing verified events to an MQTT broker (paho-mqtt, its own network thread).

Publishing never blocks the receiver: paho queues messages while the broker is away and
reconnects by itself; an event is stored before it is published, so a broker outage loses
no event (subscribers may re-read them from the store). An event paho does not take stays
marked unpublished in the store and the unit is told to send it again (503); the retry
publishes it (at least once: subscribers deduplicate on the event id, as QoS 1 requires).
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

    def publish(self, unit_id: str, camera_id: str, payload: bytes) -> bool:
        """Hand an event to paho; False when it was not taken (the caller keeps it pending).

        A broker that is away is not a failure: paho queues the message and sends it on
        reconnection (QoS 1 and 2).
        """
        try:
            info = self._client.publish(self.topic(unit_id, camera_id), payload, qos=self.cfg.qos)
        except (ValueError, OSError) as exc:  # paho refuses a bad topic or payload by raising
            log.warning("MQTT publish for %s/%s refused: %s", unit_id, camera_id, exc)
            return False
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            log.warning("MQTT publish for %s/%s failed: rc %s", unit_id, camera_id, info.rc)
            return False
        return True

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
