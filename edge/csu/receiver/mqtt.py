"""Publishing verified events to an MQTT broker (paho-mqtt, its own network thread).

Publishing never blocks the receiver: paho queues messages while the broker is away and
reconnects by itself; an event is stored before it is published, so a broker outage loses
no event (subscribers may re-read them from the store). An event paho does not take stays
marked unpublished in the store and the unit is told to send it again (503); the retry
publishes it (at least once: subscribers deduplicate on the event id, as QoS 1 requires).

The broker is reached over TLS (:func:`edge.mqtt_tls.broker_context`, the unit's publisher
uses the same) and the receiver authenticates with a client certificate or a user name and a
password read from a file; ``edge/data/mosquitto/`` is a broker configuration that refuses
anonymous and plaintext clients and lets subscribers only read (see docs/UPLINK.md).
"""

from __future__ import annotations

import logging
import stat
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from ...errors import ConfigError
from ...mqtt_tls import broker_context
from .config import MqttConfig

log = logging.getLogger(__name__)


def read_password(path: Path) -> str:
    """The broker password: the file's first line. Refused if others may read the file."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the MQTT password file: {exc}", path=str(path)) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"MQTT password file is open to other users (mode {stat.S_IMODE(mode):o}): "
            f"chmod 600 {path}",
            path=str(path),
        )
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise ConfigError("MQTT password file is empty", path=str(path))
    return password


class EventPublisher:
    def __init__(self, cfg: MqttConfig, client_id: str = "edge-csu") -> None:
        self.cfg = cfg
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.reconnect_delay_set(1, 30)
        if cfg.tls:
            self._client.tls_set_context(
                broker_context(cfg.ca_file, cfg.cert_file, cfg.key_file, section="mqtt")
            )
        if cfg.username is not None and cfg.password_file is not None:
            self._client.username_pw_set(cfg.username, read_password(cfg.password_file))
        self._client.on_connect = self._on_connect
        self._url = f"{'mqtts' if cfg.tls else 'mqtt'}://{cfg.host}:{cfg.port}"

    def start(self) -> None:
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        self._client.loop_start()
        log.info("publishing events to %s", self._url)

    def _on_connect(
        self, client: object, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker %s refused the receiver: %s", self._url, reason)

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
