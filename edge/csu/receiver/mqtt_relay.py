"""Publishing verified events to an MQTT broker (paho-mqtt, its own network thread).

Delivery is **at least once, deduplicated by event id**. An event is stored (and marked
unpublished) before it is published, and marked published only once the broker has
acknowledged it (QoS 1 PUBACK, QoS 2 PUBCOMP; QoS 0 is refused by the configuration). The
unit's request waits for that acknowledgement up to ``ack_timeout_s`` without holding a thread
(paho's callback resolves a future on the event loop); without it the unit is answered 503 and
its durable spool sends the event again. Events that stay unpublished (the unit went silent, a
receiver died with the message still in paho's queue) are published again by
:func:`republish_periodically`, at start and every ``republish_interval_s``. A crash between
the broker's acknowledgement and the mark publishes the event a second time: MQTT gives no
exactly-once across a crash, so subscribers drop an event id they have seen (the id is in the
signed payload; :class:`SeenEvents`).

The broker is reached over TLS (:func:`edge.mqtt_tls.broker_context`, the unit's publisher
uses the same) and the receiver authenticates with a client certificate or a user name and a
password read from a file; ``edge/data/mosquitto/`` is a broker configuration that refuses
anonymous and plaintext clients and lets subscribers only read (see docs/UPLINK.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import stat
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from edge.csu.receiver.settings import MqttConfig

from ...errors import ConfigError, IntegrityError, StorageUnavailableError
from ...mqtt_tls import broker_context
from ...uplink import event_checks as wire_events

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


#: Messages paho may hold unacknowledged (queued while the broker is away, or in flight);
#: past it an event is answered 503 at once instead of growing the queue without bound.
MAX_QUEUED = 10_000

#: What a store gives to publish: (unit, event id, signed wire body).
Unpublished = tuple[str, str, bytes]


class EventPublisher:
    """The receiver's MQTT client. :meth:`publish` runs on the receiver's event loop;
    ``on_acked(unit, event_id)`` (a coroutine function: the store's mark) runs there once the
    broker acknowledges an event, whether or not its unit's request still waits."""

    def __init__(
        self,
        cfg: MqttConfig,
        client_id: str = "edge-csu",
        *,
        on_acked: Callable[[str, str], Awaitable[None]] | None = None,
    ) -> None:
        self.cfg = cfg
        self._on_acked = on_acked
        # MQTT 5: a broker refusing a message (its ACL) says so in the acknowledgement, where
        # MQTT 3.1.1 acknowledges it and drops it silently.
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
        )
        self._client.reconnect_delay_set(1, 30)
        self._client.max_queued_messages_set(MAX_QUEUED)
        if cfg.tls:
            self._client.tls_set_context(
                broker_context(cfg.ca_file, cfg.cert_file, cfg.key_file, section="mqtt")
            )
        if cfg.username is not None and cfg.password_file is not None:
            self._client.username_pw_set(cfg.username, read_password(cfg.password_file))
        self._client.on_connect = self._on_connect
        self._client.on_publish = self._on_publish
        self._url = f"{'mqtts' if cfg.tls else 'mqtt'}://{cfg.host}:{cfg.port}"
        self._loop: asyncio.AbstractEventLoop | None = None
        # Events handed to paho and not yet acknowledged (and recorded), by (unit, event id):
        # a retry meanwhile waits for the same message instead of queueing a second one.
        self._pending: dict[tuple[str, str], asyncio.Future[bool]] = {}
        self._by_mid: dict[int, tuple[str, str]] = {}
        self._recording: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        self._client.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        self._client.loop_start()
        log.info("publishing events to %s", self._url)

    def _on_connect(
        self, client: object, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker %s refused the receiver: %s", self._url, reason)

    def _on_publish(
        self, client: object, userdata: object, mid: int, reason: object, props: object
    ) -> None:
        # paho's network thread, inside paho's locks: only hand the acknowledgement over.
        loop = self._loop
        if loop is not None and not loop.is_closed():
            failed = bool(getattr(reason, "is_failure", False))
            loop.call_soon_threadsafe(self._acked, mid, failed, str(reason))

    def _acked(self, mid: int, failed: bool, reason: str) -> None:
        key = self._by_mid.pop(mid, None)
        if key is None:
            return
        future = self._pending.get(key)
        if future is None or future.done():
            return
        if failed:  # the broker refused the message in its acknowledgement (its ACL)
            log.warning("MQTT broker refused event %s of %s: %s", key[1], key[0], reason)
            del self._pending[key]
            future.set_result(False)
            return
        assert self._loop is not None
        task = self._loop.create_task(self._record(key, future))
        self._recording.add(task)  # the loop keeps only a weak reference
        task.add_done_callback(self._recording.discard)

    async def _record(self, key: tuple[str, str], future: asyncio.Future[bool]) -> None:
        marked = False
        try:
            if self._on_acked is not None:
                await self._on_acked(*key)
            marked = True
        except (StorageUnavailableError, OSError) as exc:  # not marked: published again later
            log.warning("event %s of %s acknowledged but not marked: %s", key[1], key[0], exc)
            if not future.done():
                future.set_exception(exc)
        finally:
            if not future.done():  # (cancelled by stop() meanwhile: nothing to settle)
                future.set_result(marked)
            if self._pending.get(key) is future:
                del self._pending[key]

    def topic(self, unit_id: str, camera_id: str) -> str:
        return f"{self.cfg.topic_prefix}/{unit_id}/{camera_id}/events"

    async def publish(self, unit_id: str, camera_id: str, event_id: str, payload: bytes) -> bool:
        """Publish an event and wait (``ack_timeout_s`` at most) for the broker's
        acknowledgement and ``on_acked``; True then, False when either did not come in time
        or paho refused the message. A message not acknowledged in time stays in paho's queue
        (sent when the broker is back, then marked); :class:`StorageUnavailableError` from
        ``on_acked`` is raised here."""
        self._loop = asyncio.get_running_loop()
        key = (unit_id, event_id)
        future = self._pending.get(key)
        if future is None:
            try:
                info = self._client.publish(
                    self.topic(unit_id, camera_id), payload, qos=self.cfg.qos
                )
            except (ValueError, OSError) as exc:  # paho refuses a bad topic or payload
                log.warning("MQTT publish for %s/%s refused: %s", unit_id, camera_id, exc)
                return False
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                # MQTT_ERR_QUEUE_SIZE: MAX_QUEUED messages already wait for the broker
                log.warning("MQTT publish for %s/%s failed: rc %s", unit_id, camera_id, info.rc)
                return False
            # Registered before paho's acknowledgement can reach the loop (_acked runs on it).
            future = self._loop.create_future()
            future.add_done_callback(_retrieve)
            self._pending[key] = future
            self._by_mid[info.mid] = key
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.cfg.ack_timeout_s)
        except TimeoutError:
            return False

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._by_mid.clear()


def _retrieve(future: asyncio.Future[bool]) -> None:
    """Marks an exception seen (logged by :meth:`EventPublisher._record`) when nobody waits."""
    if not future.cancelled():
        future.exception()


class StoreWithEvents(Protocol):
    """What :func:`republish_once` needs of a store (embedded or cluster)."""

    def claim_unpublished(self, limit: int, min_age_s: float) -> list[Unpublished]: ...


async def republish_once(
    publisher: EventPublisher,
    store: StoreWithEvents,
    run_blocking: Callable[..., Awaitable[Any]],
    *,
    limit: int,
    min_age_s: float,
) -> int:
    """Publish up to ``limit`` stored events still unpublished (those of a unit's request in
    progress excluded by ``min_age_s``; in cluster mode those another receiver holds, by its
    claim); each is marked by ``on_acked``. Stops at the first one the broker does not
    acknowledge (it is away: the rest wait for the next pass). Returns how many were."""
    events: list[Unpublished] = await run_blocking(store.claim_unpublished, limit, min_age_s)
    done = 0
    for unit, event_id, body in events:
        try:
            camera = str(wire_events.parse_event(body)["camera"])
        except IntegrityError as exc:  # verified when stored: a damaged file
            log.error("stored event %s of %s cannot be published: %s", event_id, unit, exc)
            continue
        if not await publisher.publish(unit, camera, event_id, body):
            break
        done += 1
    if events:
        log.info("published %d of %d stored unpublished events", done, len(events))
    return done


async def republish_periodically(
    publisher: EventPublisher,
    store: StoreWithEvents,
    run_blocking: Callable[..., Awaitable[Any]],
    stop: asyncio.Event,
) -> None:
    """:func:`republish_once` at start (every unpublished event: nothing is in progress yet)
    and every ``republish_interval_s`` (those older than twice ``ack_timeout_s``) until
    ``stop``. A store out of reach is logged and tried again at the next pass."""
    cfg = publisher.cfg
    min_age_s = 0.0
    while not stop.is_set():
        try:
            await republish_once(
                publisher, store, run_blocking, limit=cfg.republish_batch, min_age_s=min_age_s
            )
        except (StorageUnavailableError, OSError) as exc:
            log.warning("publishing stored events: %s", exc)
        min_age_s = 2 * cfg.ack_timeout_s
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), cfg.republish_interval_s)


class SeenEvents:
    """What a subscriber keeps to drop an event it has already received (at-least-once
    delivery): the ids of the last ``capacity`` events, per unit. ``first_time(payload)`` is
    False for a repeat; the payload should be verified first (the id is signed)."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def first_time(self, payload: bytes) -> bool:
        event = wire_events.parse_event(payload)
        key = (str(event["unit"]), str(event["id"]))
        if key in self._seen:
            self._seen.move_to_end(key)
            return False
        self._seen[key] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True
