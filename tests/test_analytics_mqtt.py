"""Signed events published over MQTT with TLS to a real Mosquitto broker on loopback."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID
from paho.mqtt.enums import CallbackAPIVersion

from edge.analytics.events import EventSigner, SignedEvent, verify_wire
from edge.analytics.mqtt import MqttPublisher, MqttState
from edge.config import MqttConfig
from edge.errors import IntegrityError

from .conftest import tool


def mosquitto() -> str:
    return tool("mosquitto")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class Broker:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("test city CA", ca_key, None, None)
        srv_key = ec.generate_private_key(ec.SECP256R1())
        srv = _cert("localhost", srv_key, ca, ca_key)
        self.ca = root / "ca.pem"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        (root / "server.pem").write_bytes(srv.public_bytes(serialization.Encoding.PEM))
        (root / "server.key").write_bytes(_pem_key(srv_key))
        other_key = ec.generate_private_key(ec.SECP256R1())
        self.other_ca = root / "other-ca.pem"
        self.other_ca.write_bytes(
            _cert("another CA", other_key, None, None).public_bytes(serialization.Encoding.PEM)
        )
        (root / "mosquitto.conf").write_text(
            f"user root\nper_listener_settings false\nallow_anonymous true\n"
            f"persistence true\npersistence_location {root}/\nlog_dest stderr\n"
            f"listener {self.port} 127.0.0.1\ncafile {self.ca}\n"
            f"certfile {root / 'server.pem'}\nkeyfile {root / 'server.key'}\n"
            "tls_version tlsv1.2\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [mosquitto(), "-c", str(self.root / "mosquitto.conf")],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "mosquitto.log").open("wb"),
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError(
            "mosquitto did not start: " + (self.root / "mosquitto.log").read_text()
        )

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    yield b
    b.stop()


class Subscriber:
    def __init__(self, broker: Broker) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        self.ready = threading.Event()
        # A persistent session (fixed id, clean_session off): the broker keeps the subscription
        # and queues QoS 1 messages for it across a broker restart.
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="test-subscriber",
            clean_session=False,
        )
        self.client.tls_set(ca_certs=str(broker.ca))
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        assert self.ready.wait(10), "no SUBACK from the broker"

    def _on_connect(
        self, client: paho.Client, userdata: object, flags: object, reason: object, props: object
    ) -> None:
        client.subscribe("edge/#", qos=1)

    def _on_subscribe(
        self, client: object, userdata: object, mid: int, reasons: object, props: object
    ) -> None:
        self.ready.set()  # the SUBACK: from now on the broker routes messages to us

    def _on_message(self, client: object, userdata: object, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait(self, n: int, timeout: float = 10) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.messages) >= n:
                    return list(self.messages)
            time.sleep(0.02)
        return list(self.messages)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def event(signer: EventSigner, n: int) -> SignedEvent:
    return signer.sign(
        camera="cam1",
        category="alert",
        kind="gathering",
        rule="square",
        wall_ns=time.time_ns(),
        frame_index=n,
        details={"persons": 5 + n},
        snapshot=b"\xff\xd8 not really a jpeg",
    )


def wait_state(pub: MqttPublisher, state: MqttState, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pub.state is state:
            return True
        time.sleep(0.02)
    return False


def test_events_reach_a_tls_broker_signed_and_verifiable(broker: Broker) -> None:
    broker.start()
    sub = Subscriber(broker)
    key = ed25519.Ed25519PrivateKey.generate()
    signer = EventSigner(key, "unit-7")
    cfg = MqttConfig(enabled=True, host="localhost", port=broker.port)
    pub = MqttPublisher(cfg, unit_id="unit-7", ca_file=str(broker.ca), client_id="edge-unit-7")
    pub.start()
    try:
        assert wait_state(pub, MqttState.CONNECTED)
        sent = [event(signer, n) for n in range(3)]
        for e in sent:
            pub.publish(e)
        got = sub.wait(3)
    finally:
        pub.stop()
        sub.close()
    assert [t for t, _ in got] == ["edge/unit-7/cam1/alert/gathering"] * 3
    bodies = [verify_wire(payload, key.public_key()) for _, payload in got]
    assert bodies == [e.body for e in sent]
    assert b"not really a jpeg" not in b"".join(p for _, p in got)  # snapshots stay home
    # A byte changed on the way is caught by any subscriber holding the unit's public key.
    tampered = got[0][1].replace(b'"persons":5', b'"persons":9')
    with pytest.raises(IntegrityError, match="altered"):
        verify_wire(tampered, key.public_key())


def test_events_published_while_the_broker_is_down_are_delivered_when_it_is_up(
    broker: Broker,
) -> None:
    broker.start()
    sub = Subscriber(broker)  # subscribes once; its session survives the broker's restart
    broker.stop()
    key = ed25519.Ed25519PrivateKey.generate()
    signer = EventSigner(key, "unit-7")
    cfg = MqttConfig(enabled=True, host="localhost", port=broker.port)
    pub = MqttPublisher(cfg, unit_id="unit-7", ca_file=str(broker.ca), client_id="edge-unit-7")
    pub.start()
    try:
        for n in range(2):
            pub.publish(event(signer, n))
        assert pub.state is not MqttState.CONNECTED
        broker.start()
        assert wait_state(pub, MqttState.CONNECTED, timeout=15)
        got = sub.wait(2, timeout=15)
    finally:
        pub.stop()
        sub.close()
    assert [verify_wire(p, key.public_key())["frame_index"] for _, p in got] == [0, 1]


def test_a_broker_with_a_certificate_from_another_ca_is_refused(broker: Broker) -> None:
    broker.start()
    cfg = MqttConfig(enabled=True, host="localhost", port=broker.port)
    pub = MqttPublisher(
        cfg, unit_id="unit-7", ca_file=str(broker.other_ca), client_id="edge-unit-7"
    )
    pub.start()
    try:
        assert not wait_state(pub, MqttState.CONNECTED, timeout=2)
    finally:
        pub.stop()
