"""The CSU's events through the real Mosquitto started with the shipped configuration
(``edge/data/mosquitto/``): TLS only, no anonymous client, subscribers read only; the real
``edge-csu serve`` publishes with a password from a file, its publisher with a certificate."""

from __future__ import annotations

import asyncio
import http.client
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from paho.mqtt.enums import CallbackAPIVersion

from edge.csu.ca import Profile
from edge.csu.receiver import settings as serve_config
from edge.csu.receiver.mqtt_relay import EventPublisher, read_password
from edge.csu.receiver.settings import MqttConfig
from edge.errors import ConfigError
from edge.events import EventSigner, verify_wire

from .conftest import REPO, tool
from .uplink_util import CSU_NAME, Csu, free_port, make_csu, wait_until

SHIPPED = REPO / "edge" / "data" / "mosquitto"
CONSOLE_PASSWORD = "console-secret"
CSU_PASSWORD = "csu-secret"


@dataclass
class Broker:
    directory: Path
    password_port: int
    certificate_port: int
    ca: Path
    proc: subprocess.Popen[bytes]

    def log(self) -> str:
        return (self.directory / "mosquitto.log").read_text(errors="replace")


def _mosquitto_passwd() -> str:
    path = shutil.which("mosquitto_passwd")
    if path is None:
        pytest.skip("mosquitto_passwd not installed")
    return path


def start_shipped_broker(directory: Path, csu: Csu) -> Broker:
    """The shipped files with their /etc paths and ports moved into ``directory`` and bound to
    loopback; ``user root`` only because the test's key files belong to root."""
    directory.mkdir(parents=True)
    crt, key, _ = csu.pki.issue("localhost", directory / "issued", profile=Profile.SERVER)
    shutil.copy(crt, directory / "broker.crt")
    shutil.copy(key, directory / "broker.key")
    shutil.copy(csu.pki.chain, directory / "ca.pem")
    shutil.copy(SHIPPED / "acl", directory / "acl")
    passwd = directory / "passwd"
    subprocess.run(
        [_mosquitto_passwd(), "-b", "-c", str(passwd), "city-console", CONSOLE_PASSWORD],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [_mosquitto_passwd(), "-b", str(passwd), "edge-csu", CSU_PASSWORD],
        check=True,
        capture_output=True,
    )
    password_port, certificate_port = free_port(), free_port()
    conf = (SHIPPED / "edge-csu.conf").read_text()
    assert "allow_anonymous false" in conf and "listener 8883\n" in conf
    conf = (
        conf.replace("/etc/mosquitto/edge/", f"{directory}/")
        .replace("listener 8883\n", f"listener {password_port} 127.0.0.1\n")
        .replace("listener 8884\n", f"listener {certificate_port} 127.0.0.1\n")
    )
    (directory / "mosquitto.conf").write_text("user root\nlog_dest stderr\n" + conf)
    proc = subprocess.Popen(
        [tool("mosquitto"), "-c", str(directory / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=(directory / "mosquitto.log").open("wb"),
    )
    broker = Broker(directory, password_port, certificate_port, directory / "ca.pem", proc)

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"mosquitto exited: {broker.log()}")
        try:
            socket.create_connection(("127.0.0.1", certificate_port), 0.2).close()
            socket.create_connection(("127.0.0.1", password_port), 0.2).close()
            return True
        except OSError:
            return False

    wait_until(listening, 10, "mosquitto listening")
    return broker


class Subscriber:
    """A paho client that records its CONNACK and every message it receives."""

    def __init__(
        self,
        broker: Broker,
        *,
        port: int | None = None,
        tls: bool = True,
        username: str | None = None,
        password: str | None = None,
    ) -> None:
        self.connack: str | None = None
        self.received: list[tuple[str, bytes]] = []
        self.subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        if tls:
            ctx = ssl.create_default_context(cafile=str(broker.ca))
            self.client.tls_set_context(ctx)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = lambda _c, _u, msg: self.received.append(
            (msg.topic, bytes(msg.payload))
        )
        self.client.reconnect_delay_set(30, 30)  # one attempt is what the test judges
        self.client.connect_async("localhost", port or broker.password_port)
        self.client.loop_start()

    def _on_connect(
        self, client: paho.Client, _u: object, _f: object, reason: object, _p: object
    ) -> None:
        self.connack = str(reason)
        if not getattr(reason, "is_failure", True):
            client.subscribe("edge/#", qos=1)

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Csu, Broker]]:
    tmp = tmp_path_factory.mktemp("csu-mqtt")
    csu = make_csu(tmp)
    broker = start_shipped_broker(tmp / "broker", csu)
    try:
        yield csu, broker
    finally:
        broker.proc.terminate()
        broker.proc.wait(10)


def test_anonymous_and_plaintext_clients_get_nothing(setup: tuple[Csu, Broker]) -> None:
    _, broker = setup
    anonymous = Subscriber(broker)
    plaintext = Subscriber(broker, tls=False, username="city-console", password=CONSOLE_PASSWORD)
    wrong = Subscriber(broker, username="city-console", password="guess")
    try:
        wait_until(lambda: anonymous.connack is not None, 10, "CONNACK to the anonymous client")
        wait_until(lambda: wrong.connack is not None, 10, "CONNACK to a wrong password")
        assert anonymous.connack == "Not authorized", anonymous.connack
        assert wrong.connack == "Not authorized", wrong.connack
        time.sleep(1.0)
        assert plaintext.connack is None  # the TLS listener never answers plain MQTT
        assert not anonymous.subscribed.is_set() and not plaintext.subscribed.is_set()
    finally:
        for client in (anonymous, plaintext, wrong):
            client.stop()


def _event_to_csu(csu: Csu, unit_crt: Path, unit_key: Path, signer: EventSigner) -> bytes:
    wire = signer.sign(
        camera="cam1",
        category="count",
        kind="line-crossing",
        rule="north-gate",
        wall_ns=time.time_ns(),
        frame_index=1,
        details={"direction": "in", "count": 1},
    ).wire()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(csu.pki.chain)
    ctx.load_cert_chain(unit_crt, unit_key)
    conn = http.client.HTTPSConnection("127.0.0.1", csu.ports["units"], timeout=10)
    conn.sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", csu.ports["units"]), timeout=10),
        server_hostname=CSU_NAME,
    )
    conn.request(
        "POST", "/v1/units/unit-a/events", body=wire, headers={"Content-Type": "application/json"}
    )
    assert conn.getresponse().status == 201
    conn.close()
    return wire


def test_receiver_publishes_over_tls_with_a_password_and_subscribers_only_read(
    setup: tuple[Csu, Broker],
) -> None:
    csu, broker = setup
    password_file = csu.directory / "mqtt.password"
    password_file.write_text(CSU_PASSWORD + "\n")
    password_file.chmod(0o600)
    csu.write_config(
        extra=(
            f'[mqtt]\nenabled = true\nhost = "localhost"\nport = {broker.password_port}\n'
            f'ca_file = "{broker.ca}"\nusername = "edge-csu"\n'
            f'password_file = "{password_file}"\n'
        )
    )
    signing = ed25519.Ed25519PrivateKey.generate()
    crt, key, _ = csu.pki.issue("unit-a", csu.directory.parent / "unit-a")
    csu.enroll("unit-a", signing)
    console = Subscriber(broker, username="city-console", password=CONSOLE_PASSWORD)
    csu.start()
    try:
        assert console.subscribed.wait(10), console.connack
        wire = _event_to_csu(csu, crt, key, EventSigner(signing, "unit-a"))
        wait_until(lambda: console.received, 10, "the event at the subscriber")
        [(topic, payload)] = console.received
        assert topic == "edge/unit-a/cam1/events" and payload == wire
        verify_wire(payload, signing.public_key())
        # a subscriber cannot publish: a forged event never reaches anyone
        forged = console.client.publish("edge/unit-a/cam1/events", b'{"forged": 1}', qos=1)
        forged.wait_for_publish(5)
        time.sleep(1.0)
        assert len(console.received) == 1
        assert "publishing events to mqtts://localhost" in csu.log()
    finally:
        console.stop()
        csu.stop()


def test_publisher_with_a_client_certificate_and_one_outside_the_acl(
    setup: tuple[Csu, Broker],
) -> None:
    """The receiver's message is acknowledged and delivered; one the ACL refuses is not
    taken for published (MQTT 5: the broker says so in its acknowledgement)."""
    csu, broker = setup
    issued = csu.directory.parent / "mqtt-clients"
    crt, key, _ = csu.pki.issue("edge-csu", issued)
    other_crt, other_key, _ = csu.pki.issue("intruder", issued)
    console = Subscriber(broker, username="city-console", password=CONSOLE_PASSWORD)
    acked: list[tuple[str, str]] = []

    async def record(unit: str, event_id: str) -> None:
        acked.append((unit, event_id))

    publishers = [
        EventPublisher(
            MqttConfig(
                enabled=True,
                host="localhost",
                port=broker.certificate_port,
                ca_file=broker.ca,
                cert_file=c,
                key_file=k,
                ack_timeout_s=8,  # paho queues until connected: the wait includes the TLS
            ),
            client_id=f"test-{c.stem}",
            on_acked=record,
        )
        for c, k in ((crt, key), (other_crt, other_key))
    ]

    async def publish() -> tuple[bool, bool]:
        for publisher in publishers:
            publisher.start()
        intruder = await publishers[1].publish("unit-x", "cam1", "evt-x", b"from the intruder")
        receiver = await publishers[0].publish("unit-b", "cam2", "evt-b", b"from the receiver")
        return intruder, receiver

    try:
        assert console.subscribed.wait(10), console.connack
        assert asyncio.run(publish()) == (False, True)
        assert acked == [("unit-b", "evt-b")]
        wait_until(lambda: console.received, 10, "the receiver's message")
        time.sleep(0.5)
        assert console.received == [("edge/unit-b/cam2/events", b"from the receiver")]
    finally:
        for publisher in publishers:
            publisher.stop()
        console.stop()


def test_mqtt_settings_keep_passwords_out_of_the_file_and_off_plaintext(tmp_path: Path) -> None:
    def load(mqtt: str) -> serve_config.ServeConfig:
        path = tmp_path / "csu.toml"
        path.write_text("[mqtt]\nenabled = true\n" + mqtt)
        return serve_config.load(path)

    with pytest.raises(ConfigError, match="unknown key"):
        load('username = "edge-csu"\npassword = "inline"\n')
    with pytest.raises(ConfigError, match="only sent over TLS"):
        load('tls = false\nhost = "127.0.0.1"\nusername = "u"\npassword_file = "p"\n')
    with pytest.raises(ConfigError, match="over TLS only"):
        load('tls = false\nhost = "broker.city.example"\n')
    with pytest.raises(ConfigError, match="go together"):
        load('username = "edge-csu"\n')
    cfg = load('username = "edge-csu"\npassword_file = "secret"\nca_file = "ca.pem"\n')
    assert cfg.mqtt.tls and cfg.mqtt.port == 8883 and cfg.mqtt.password_file == tmp_path / "secret"
    secret = tmp_path / "secret"
    secret.write_text("pw\n")
    secret.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_password(secret)
    secret.chmod(0o600)
    assert read_password(secret) == "pw"
