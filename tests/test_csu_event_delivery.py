"""Events reach the broker at least once, deduplicated by id (edge/csu/receiver/mqtt_relay.py):
an event is marked published only once the real Mosquitto acknowledged it. A broker away
answers the unit 503 and leaves the event marked unpublished; the unit's retry, or the
receiver's own republication (at start, periodically), delivers it later, also when the
receiver was killed with the message still in its queue. Cluster mode: the same through
PostgreSQL's publication claim (default tier: events live in the database, no object store)."""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from paho.mqtt.enums import CallbackAPIVersion

from edge.csu.receiver import mqtt_relay
from edge.csu.receiver import settings as serve_config
from edge.csu.receiver.archive import Verdict
from edge.csu.receiver.cluster import ClusterStore
from edge.csu.receiver.mqtt_relay import EventPublisher, SeenEvents
from edge.csu.receiver.pgindex import PgSegmentIndex
from edge.csu.receiver.settings import ClusterConfig, MqttConfig
from edge.errors import ConfigError
from edge.events import EventSigner, SignedEvent

from .conftest import tool
from .pg_util import postgres
from .uplink_util import CSU_NAME, Csu, free_port, make_csu, wait_until

UNIT = "unit-a"


class Broker:
    """Mosquitto on a loopback port, anonymous, with persistence: a subscriber's session
    (clean_session false, QoS 1) and the messages queued for it survive a restart, as on the
    city's broker."""

    def __init__(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = free_port()
        (directory / "mosquitto.conf").write_text(
            f"user root\nallow_anonymous true\npersistence true\n"
            f"persistence_location {directory}/\nlistener {self.port} 127.0.0.1\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [tool("mosquitto"), "-c", str(self.directory / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def listening() -> bool:
            assert self.proc is not None and self.proc.poll() is None, "mosquitto exited"
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return True
            except OSError:
                return False

        wait_until(listening, 10, "mosquitto listening")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Subscriber:
    """A city subscriber: a persistent session on ``city/#`` (QoS 1) that drops an event id
    it has already received (:class:`SeenEvents`), and counts what the broker delivered."""

    def __init__(self, broker: Broker, client_id: str) -> None:
        self.delivered: list[bytes] = []
        self.events: list[bytes] = []
        self._seen = SeenEvents()
        self._lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = lambda c, *_: c.subscribe("city/#", qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect_async("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        payload = bytes(message.payload)
        with self._lock:
            self.delivered.append(payload)
            if self._seen.first_time(payload):
                self.events.append(payload)

    def ids(self) -> list[str]:
        with self._lock:
            return [_event_id(p) for p in self.events]

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _event_id(wire: bytes) -> str:
    from edge.uplink.event_checks import parse_event

    return str(parse_event(wire)["id"])


def _event(signing: ed25519.Ed25519PrivateKey, n: int, unit: str = UNIT) -> SignedEvent:
    return EventSigner(signing, unit).sign(
        camera="cam1", category="alert", kind="intrusion", rule="gate", wall_ns=time.time_ns(),
        frame_index=n, details={"n": n},
    )  # fmt: skip


class Unit:
    def __init__(self, csu: Csu, tmp: Path) -> None:
        self.csu = csu
        self.signing = ed25519.Ed25519PrivateKey.generate()
        self.crt, self.key, _ = csu.pki.issue(UNIT, tmp / "units" / UNIT)
        csu.enroll(UNIT, self.signing)

    def post(self, event: SignedEvent) -> tuple[int, str]:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.csu.pki.chain)
        ctx.load_cert_chain(self.crt, self.key)
        port = self.csu.ports["units"]
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=30)
        conn.sock = ctx.wrap_socket(
            socket.create_connection(("127.0.0.1", port), timeout=30), server_hostname=CSU_NAME
        )
        try:
            conn.request(
                "POST", f"/v1/units/{UNIT}/events", body=event.wire(),
                headers={"Content-Type": "application/json"},
            )  # fmt: skip
            response = conn.getresponse()
            return response.status, response.read().decode()
        finally:
            conn.close()


def _csu(tmp: Path, broker: Broker, republish_interval_s: float) -> tuple[Csu, Unit]:
    csu = make_csu(tmp)
    csu.write_config(
        extra=(
            f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\ntls = false\n'
            f'topic_prefix = "city"\nack_timeout_s = 1\n'
            f"republish_interval_s = {republish_interval_s}\n"
        )
    )
    return csu, Unit(csu, tmp)


def _files(csu: Csu, event_id: str) -> tuple[Path, Path]:
    events = csu.directory / "storage" / UNIT / "events"
    return events / f"{event_id}.json", events / f"{event_id}.unpublished"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    broker = Broker(tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.stop()


def test_an_event_is_published_when_the_broker_is_back_through_the_units_retry(
    tmp_path: Path, broker: Broker
) -> None:
    """Broker stopped: the unit gets 503, the event is stored and marked unpublished. Broker
    back: the unit's retry (no periodic pass here) waits for the queued message's
    acknowledgement and is answered; the subscriber has it once, then a later event."""
    broker.start()
    subscriber = Subscriber(broker, "city-retry")
    csu, unit = _csu(tmp_path, broker, republish_interval_s=3600)
    csu.start()
    try:
        event = _event(unit.signing, 1)
        event_id = str(event.body["id"])
        broker.stop()
        status, answer = unit.post(event)
        assert status == 503 and "stored but not yet published; send again" in answer
        stored, marker = _files(csu, event_id)
        assert stored.read_bytes() == event.wire() and marker.exists()
        broker.start()  # the subscriber's session and the receiver's client reconnect

        def retried() -> bool:
            status, answer = unit.post(event)
            assert status in (200, 201, 503), answer
            return status != 503

        wait_until(retried, 60, "the retry answered", interval=0.2)
        assert not marker.exists()
        later = _event(unit.signing, 2)
        assert unit.post(later) == (201, '{"status": "stored"}')
        # messages of one publisher on one topic arrive in order: once the later event is
        # here, every publication of the first one is too
        wait_until(lambda: str(later.body["id"]) in subscriber.ids(), 30, "the later event")
        assert subscriber.ids() == [event_id, str(later.body["id"])]
    finally:
        csu.stop()
        subscriber.stop()


def test_an_event_queued_by_a_receiver_killed_before_the_acknowledgement_is_not_lost(
    tmp_path: Path, broker: Broker
) -> None:
    """The receiver takes the event while the broker is away (paho queues it), then is killed
    with SIGKILL; the unit never sends it again. At its next start the receiver publishes it
    (and marks it), so the subscriber gets it; the unit's late retry is then answered 200."""
    csu, unit = _csu(tmp_path, broker, republish_interval_s=3600)
    csu.start()
    try:
        event = _event(unit.signing, 1)
        event_id = str(event.body["id"])
        status, answer = unit.post(event)
        assert status == 503, answer
        stored, marker = _files(csu, event_id)
        assert stored.exists() and marker.exists()
        assert csu.proc is not None
        csu.proc.send_signal(signal.SIGKILL)
        csu.proc.wait(10)
        broker.start()
        subscriber = Subscriber(broker, "city-restart")
        try:
            csu.start()
            wait_until(lambda: subscriber.ids() == [event_id], 30, "the event republished")
            wait_until(lambda: not marker.exists(), 10, "the event marked published")
            assert unit.post(event) == (200, '{"status": "duplicate"}')
            later = _event(unit.signing, 2)
            assert unit.post(later)[0] == 201
            wait_until(lambda: len(subscriber.ids()) == 2, 30, "the later event")
            assert subscriber.ids() == [event_id, str(later.body["id"])]
        finally:
            subscriber.stop()
    finally:
        csu.stop()


def test_the_periodic_pass_publishes_an_event_left_unmarked_and_subscribers_drop_the_repeat(
    tmp_path: Path, broker: Broker
) -> None:
    """An event the broker acknowledged but the receiver did not mark (it died between the
    two, or its store failed then) stays marked unpublished, with nothing left in the MQTT
    client's queue and the unit silent: the periodic pass publishes it again. The subscriber
    gets it twice (at least once) and keeps it once (its id)."""
    broker.start()
    subscriber = Subscriber(broker, "city-periodic")
    csu, unit = _csu(tmp_path, broker, republish_interval_s=1)
    csu.start()
    try:
        event = _event(unit.signing, 1)
        event_id = str(event.body["id"])
        assert unit.post(event)[0] == 201
        _, marker = _files(csu, event_id)
        assert not marker.exists()  # answered 201 only once acknowledged and marked
        wait_until(lambda: subscriber.ids() == [event_id], 30, "the event published")
        marker.touch()  # the fault: the mark lost
        os.utime(marker, (time.time() - 60, time.time() - 60))
        wait_until(lambda: len(subscriber.delivered) == 2, 30, "the event published again")
        wait_until(lambda: not marker.exists(), 10, "the event marked published")
        assert subscriber.delivered == [event.wire()] * 2
        assert subscriber.ids() == [event_id]
    finally:
        csu.stop()
        subscriber.stop()


def test_qos_0_and_unbounded_waits_are_refused_in_the_configuration(tmp_path: Path) -> None:
    def load(mqtt: str) -> serve_config.ServeConfig:
        path = tmp_path / "csu.toml"
        path.write_text('[mqtt]\nenabled = true\nca_file = "ca.pem"\n' + mqtt)
        return serve_config.load(path)

    with pytest.raises(ConfigError, match="qos 0 is never acknowledged"):
        load("qos = 0\n")
    with pytest.raises(ConfigError, match="ack_timeout_s"):
        load("ack_timeout_s = 30\n")
    with pytest.raises(ConfigError, match="republish_batch"):
        load("republish_batch = 0\n")
    cfg = load("qos = 2\n").mqtt
    assert (cfg.qos, cfg.ack_timeout_s, cfg.republish_interval_s) == (2, 5.0, 30.0)


def test_subscribers_drop_an_event_id_they_have_seen() -> None:
    signing = ed25519.Ed25519PrivateKey.generate()
    first, second = _event(signing, 1).wire(), _event(signing, 2).wire()
    other_unit = _event(signing, 1, unit="unit-b").wire()
    seen = SeenEvents(capacity=2)
    assert [seen.first_time(w) for w in (first, first, second, other_unit)] == [
        True, False, True, True,
    ]  # fmt: skip
    assert seen.first_time(first)  # the oldest id left the window of 2


# --- cluster mode --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conninfo() -> Iterator[str]:
    with postgres() as info:
        index = PgSegmentIndex(info, "setup")
        index.migrate()
        index.close()
        yield info


def _cluster_store(conninfo: str, receiver: str, secret: Path) -> ClusterStore:
    secret.write_text("unused\n")  # events live in the database: no object store reached
    return ClusterStore(
        ClusterConfig.model_validate(
            {
                "receiver_id": receiver,
                "database": {"conninfo": conninfo},
                "object_store": {
                    "endpoint": "http://127.0.0.1:9",
                    "bucket": "segments",
                    "access_key": "k",
                    "secret_file": secret,
                },
            }
        )
    )


def _published(conninfo: str, event_id: str) -> bool:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT published FROM events WHERE event_id = %s", (event_id,))
        return bool(row.fetchone()[0])  # type: ignore[index]


def test_cluster_an_event_left_by_a_dead_receiver_is_published_by_another_after_the_lease(
    conninfo: str, tmp_path: Path, broker: Broker
) -> None:
    """r1 stored an event and claimed its publication, then died before the broker's
    acknowledgement. r2's republication leaves it alone while r1's lease runs, takes it once
    the lease has passed, publishes it to the real broker and marks it; receivers claiming at
    once get disjoint batches."""
    broker.start()
    subscriber = Subscriber(broker, "city-cluster")
    r1 = _cluster_store(conninfo, "r1", tmp_path / "s1")
    r2 = _cluster_store(conninfo, "r2", tmp_path / "s2")
    signing = ed25519.Ed25519PrivateKey.generate()
    event = _event(signing, 1, unit="unit-cl")
    event_id = str(event.body["id"])
    assert r1.store_event("unit-cl", event_id, event.wire(), to_publish=True) is Verdict.STORED

    async def republish_by_r2() -> int:
        loop = asyncio.get_running_loop()

        async def run_blocking(fn: object, *args: object) -> object:
            return await loop.run_in_executor(None, fn, *args)  # type: ignore[arg-type]

        async def mark(unit: str, eid: str) -> None:
            await run_blocking(r2.mark_published, unit, eid)

        publisher = EventPublisher(
            MqttConfig(
                enabled=True, host="127.0.0.1", port=broker.port, tls=False,
                topic_prefix="city", ack_timeout_s=8,
            ),
            client_id="r2",
            on_acked=mark,
        )  # fmt: skip
        publisher.start()
        try:
            return await mqtt_relay.republish_once(
                publisher, r2, run_blocking, limit=10, min_age_s=0
            )
        finally:
            publisher.stop()

    try:
        assert r2.claim_unpublished(10, 0) == []  # r1's lease runs
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute(
                "UPDATE events SET claimed_ns = claimed_ns - %s WHERE event_id = %s",
                (int(11e9), event_id),
            )
        assert asyncio.run(republish_by_r2()) == 1
        assert _published(conninfo, event_id)
        wait_until(lambda: subscriber.ids() == [event_id], 30, "the event at the subscriber")
        assert r1.claim_unpublished(10, 0) == [] and r2.claim_unpublished(10, 0) == []

        # two receivers claiming at once: every event claimed by exactly one of them
        ids = []
        for n in range(2, 42):
            e = _event(signing, n, unit="unit-cl")
            ids.append(str(e.body["id"]))
            r1.store_event("unit-cl", ids[-1], e.wire(), to_publish=True)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("UPDATE events SET claimed_ns = 0 WHERE NOT published")
        barrier = threading.Barrier(2)
        claimed: dict[str, list[str]] = {}

        def claim(name: str, store: ClusterStore) -> None:
            barrier.wait()
            claimed[name] = [e for _, e, _ in store.claim_unpublished(30, 0)]

        threads = [threading.Thread(target=claim, args=p) for p in (("r1", r1), ("r2", r2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not set(claimed["r1"]) & set(claimed["r2"]), claimed
        assert sorted(claimed["r1"] + claimed["r2"]) == sorted(ids)
    finally:
        subscriber.stop()
        r1.close()
        r2.close()
