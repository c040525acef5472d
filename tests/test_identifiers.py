"""Identifiers are checked whole, and an event the broker did not take is not lost (issue #11,
item 20); operator tokens expire.

``re.match(r"^…$")`` accepts a trailing newline (``$`` also matches before a final ``\\n``): an
event id ``"evt-nl\\n"`` became a file name with a newline in it. Every identifier pattern of
the firmware must refuse it.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import http.client
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge import config
from edge.csu import ca
from edge.csu.main import main as edge_csu
from edge.csu.receiver import archive as csu_store
from edge.csu.receiver import settings as serve_config
from edge.csu.receiver.mqtt_relay import EventPublisher
from edge.errors import ConfigError, IntegrityError
from edge.events import EventSigner
from edge.health import door
from edge.uplink import event_checks as wire_events
from edge.uplink import protocol, spool
from edge.vault import layout, timespec
from edge.video import dirsink

from .uplink_util import CSU_NAME, Csu, free_port, make_csu

PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (protocol.ID_RE, "unit-1"),
    (ca._UNIT_CN_RE, "unit-1"),
    (ca._DNS_RE, "csu.city.test"),
    (csu_store._SEG_NAME, "000000000001.seg"),
    (timespec._DURATION, "10m"),
    (layout.SEGMENT_RE, "000001-0000000001.seg"),
    (layout.ENVELOPE_RE, "000001-" + "a" * 32 + ".env"),
    (layout.DAY_RE, "2026-12-01"),
    (layout.HOUR_RE, "13"),
    (spool._NAME, "1234567890123456789-evt-1.json"),
    (wire_events._EVENT_ID, "evt-nl"),
    (dirsink.SEGMENT_RE, "seg-00000001.m4s"),
    (dirsink.CAMERA_ID_RE, "cam1"),
    (config._SOURCE_RE, "synthetic"),
    (door._SPEC, "gpio:/dev/gpiochip0:17"),
]


@pytest.mark.parametrize(("pattern", "good"), PATTERNS, ids=[p.pattern for p, _ in PATTERNS])
def test_identifier_patterns_refuse_a_trailing_newline(pattern: re.Pattern[str], good: str) -> None:
    assert pattern.match(good)
    assert not pattern.match(good + "\n")


def test_config_and_event_parsers_refuse_a_trailing_newline() -> None:
    with pytest.raises(ConfigError):
        config.parse('[[cameras]]\nid = "cam1"\nsource = "file:/srv/a.mp4\\n"\n')
    # Schema patterns (pydantic's engine: "$" is the end of the text) hold as well.
    with pytest.raises(ConfigError, match=r"cameras\[0\]\.id"):
        config.parse('[[cameras]]\nid = "cam1\\n"\nsource = "synthetic"\n')
    with pytest.raises(ValueError):
        door.parse_spec("gpio:/dev/gpiochip0:17\n")
    key = ed25519.Ed25519PrivateKey.generate()
    signed = EventSigner(key, "unit-1").sign(
        camera="cam1", category="count", kind="k", rule="r", wall_ns=0, frame_index=0,
        details={}, extra={"id": "evt-nl\n"},
    )  # fmt: skip
    with pytest.raises(IntegrityError, match="event id"):
        wire_events.parse_event(signed.wire())


# --- a receiver in this process, to make the broker refuse an event ---------------------------


class _Served:
    def __init__(self, csu: Csu) -> None:
        self.csu = csu
        self.cfg = serve_config.load(csu.config)
        self.ports: dict[str, int] = {}
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _main(self) -> None:
        from edge.csu.receiver.server import serve

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()

        def ready(units: int, operators: int) -> None:
            self.ports = {"units": units, "operators": operators}
            self._ready.set()

        await serve(self.cfg, self._stop, ready)

    def start(self) -> None:
        self._thread.start()
        assert self._ready.wait(20)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[_Served]:
    csu = make_csu(tmp_path, mqtt_port=free_port())  # no broker there: paho keeps retrying
    server = _Served(csu)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _post_event(served: _Served, crt: Path, key: Path, unit: str, body: bytes) -> int:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(served.csu.pki.chain)
    ctx.load_cert_chain(crt, key)
    sock = socket.create_connection(("127.0.0.1", served.ports["units"]), timeout=10)
    conn = http.client.HTTPSConnection("127.0.0.1", served.ports["units"], timeout=10)
    conn.sock = ctx.wrap_socket(sock, server_hostname=CSU_NAME)
    conn.request(
        "POST", protocol.events_path(unit), body, {"Content-Type": protocol.EVENT_CONTENT_TYPE}
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    return resp.status


def test_an_event_the_broker_did_not_take_is_published_on_the_retry(
    served: _Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    published: list[bytes] = []
    refuse_next = [True]

    async def flaky(
        self: EventPublisher, unit_id: str, camera_id: str, event_id: str, payload: bytes
    ) -> bool:
        # Fault injection: the first message is not acknowledged (paho's queue full, the
        # broker away past ack_timeout_s); the others are, and recorded as the real one does.
        if refuse_next[0]:
            refuse_next[0] = False
            return False
        published.append(payload)
        assert self._on_acked is not None
        await self._on_acked(unit_id, event_id)
        return True

    monkeypatch.setattr(EventPublisher, "publish", flaky)
    signing = ed25519.Ed25519PrivateKey.generate()
    crt, key, _ = served.csu.pki.issue("unit-e", tmp_path / "unit")
    served.csu.enroll("unit-e", signing)
    body = (
        EventSigner(signing, "unit-e")
        .sign(camera="cam1", category="count", kind="k", rule="r", wall_ns=time.time_ns(),
              frame_index=1, details={})
        .wire()
    )  # fmt: skip
    event_id = json.loads(body)["event"]["id"]
    events = served.csu.directory / "storage/unit-e/events"
    # Stored, but the broker did not take it: the unit is told to send it again (not final).
    status = _post_event(served, crt, key, "unit-e", body)
    assert status == 503 and not protocol.is_final_refusal(status)
    assert (events / f"{event_id}.json").read_bytes() == body
    assert (events / f"{event_id}.unpublished").exists()
    assert published == []
    # The unit's retry: a duplicate for the store, published now.
    assert _post_event(served, crt, key, "unit-e", body) == 200
    assert published == [body]
    assert not (events / f"{event_id}.unpublished").exists()
    # Once published, a further retry is not published again.
    assert _post_event(served, crt, key, "unit-e", body) == 200
    assert published == [body]


# --- operator tokens ---------------------------------------------------------------------------


def test_operator_tokens_expire(tmp_path: Path) -> None:
    csu = make_csu(tmp_path)
    cfg = serve_config.load(csu.config)
    now = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    assert cfg.operator_for_token(csu.operator_token, now).operator == "alice"
    expired = cfg.operator_for_token(csu.expired_token, now)
    assert expired.operator is None and expired.refusal is not None
    assert "bob" in expired.refusal and "expired" in expired.refusal
    assert cfg.operator_for_token("nope", now).refusal == "unknown token"
    assert cfg.operator_for_token(None, now).refusal == "no bearer token"
    # An entry without an expiry, or without a UTC offset, is a configuration error.
    text = csu.config.read_text()
    for bad in ("expires = 2100-01-01T00:00:00Z\n", "expires = 2100-01-01T00:00:00Z"):
        replaced = text.replace(
            bad, "" if bad.endswith("\n") else "expires = 2100-01-01T00:00:00", 1
        )
        with pytest.raises(ConfigError, match=r"operators\[0\]\.expires"):
            serve_config.parse(replaced)


def test_token_new_prints_an_entry_the_receiver_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert edge_csu(["token", "new", "--name", "carol", "--days", "30"]) == 0
    out = capsys.readouterr().out
    token = out.split("shown only now): ")[1].split()[0]
    entry = out[out.index("[[operators]]") :]
    cfg = serve_config.parse(entry)
    op = cfg.operators[0]
    assert op.created is not None and op.expires - op.created == dt.timedelta(days=30)
    assert cfg.operator_for_token(token, op.created + dt.timedelta(days=29)).operator == "carol"
    assert cfg.operator_for_token(token, op.expires).operator is None
    assert edge_csu(["token", "new", "--name", "carol", "--days", "0"]) == 2
    assert edge_csu(["token", "new", "--name", "bad name", "--days", "3"]) == 2
