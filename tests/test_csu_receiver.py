"""The real ``edge-csu serve`` over real TLS 1.3 on loopback: who it lets in, what it stores,
what it refuses, HLS for operators with an audit trail, events to a real Mosquitto."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.analytics.events import EventSigner, SignedEvent, verify_wire
from edge.csu.receiver import audit as csu_audit
from edge.csu.receiver import config as serve_config
from edge.csu.serve_cmd import unit_rows
from edge.errors import ConfigError
from edge.uplink.protocol import (
    ENVELOPE_CONTENT_TYPE,
    SEGMENT_CONTENT_TYPE,
    envelope_path,
    segment_path,
)
from edge.vault import keys as vault_keys

from .conftest import tool
from .uplink_util import (
    CSU_NAME,
    Csu,
    Pki,
    Sealer,
    encoded_segments,
    free_port,
    make_csu,
    wait_until,
)

SEC = 1_000_000_000
MAX_BODY = 1024 * 1024


@dataclass
class Unit:
    unit_id: str
    crt: Path
    key: Path
    serial: int
    signing: ed25519.Ed25519PrivateKey
    sealer: Sealer


@dataclass
class Lab:
    csu: Csu
    units: dict[str, Unit]
    tmp: Path
    mqtt_port: int


def _unit(csu: Csu, tmp: Path, unit_id: str, *, enroll: bool = True, **issue: object) -> Unit:
    signing = ed25519.Ed25519PrivateKey.generate()
    crt, key, serial = csu.pki.issue(unit_id, tmp / "units" / unit_id, **issue)  # type: ignore[arg-type]
    if enroll:
        csu.enroll(unit_id, signing)
    return Unit(
        unit_id, crt, key, serial, signing, Sealer(unit_id, "cam1", csu.authority.public, signing)
    )


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("csu")
    mosquitto = tool("mosquitto")
    mqtt_port = free_port()
    broker = subprocess.Popen(
        [mosquitto, "-p", str(mqtt_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    csu = make_csu(tmp, mqtt_port=mqtt_port)
    csu.write_config(max_segment_bytes=MAX_BODY)
    now = dt.datetime.now(dt.UTC)
    units = {
        "unit-a": _unit(csu, tmp, "unit-a"),
        "unit-b": _unit(csu, tmp, "unit-b"),
        "unit-late": _unit(csu, tmp, "unit-late"),
        "stranger": _unit(csu, tmp, "stranger", enroll=False),
        "expired": _unit(csu, tmp, "expired", days=1, not_before=now - dt.timedelta(days=3)),
        "revoked": _unit(csu, tmp, "revoked"),
    }
    csu.pki.ca.revoke(units["revoked"].serial)  # before start: refused at the handshake
    other_ca = Pki.create(tmp / "other-pki")
    crt, key, serial = other_ca.issue("unit-a", tmp / "units" / "foreign")
    units["foreign"] = Unit(
        "unit-a", crt, key, serial, units["unit-a"].signing, units["unit-a"].sealer
    )
    csu.start()
    try:
        yield Lab(csu, units, tmp, mqtt_port)
    finally:
        csu.stop()
        broker.terminate()
        broker.wait()


def connect(lab: Lab, unit: Unit | None, *, tls12: bool = False) -> http.client.HTTPSConnection:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(lab.csu.pki.chain)
    if tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    if unit is not None:
        ctx.load_cert_chain(unit.crt, unit.key)
    conn = http.client.HTTPSConnection("127.0.0.1", lab.csu.ports["units"], timeout=10)
    sock = socket.create_connection(("127.0.0.1", lab.csu.ports["units"]), timeout=10)
    conn.sock = ctx.wrap_socket(sock, server_hostname=CSU_NAME)
    return conn


def put(
    conn: http.client.HTTPSConnection, path: str, body: bytes, ctype: str = SEGMENT_CONTENT_TYPE
) -> tuple[int, dict[str, object]]:
    conn.request("PUT", path, body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    data = resp.read()
    return resp.status, json.loads(data) if data.startswith(b"{") else {"raw": data.decode()}


def fresh_segment(unit: Unit, payload: bytes = b"m" * 1000) -> bytes:
    now = time.time_ns()
    return unit.sealer.seal(b"init", payload, start_ns=now - SEC, end_ns=now)


def attempt(lab: Lab, unit: Unit | None, **kw: bool) -> str:
    """What happens to a cursor request: the HTTP status, or the TLS error."""
    try:
        conn = connect(lab, unit, **kw)
        conn.request("GET", f"/v1/units/{unit.unit_id if unit else 'x'}/cursor")
        return str(conn.getresponse().status)
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return f"tls: {exc}"


# --- acceptance ---------------------------------------------------------------------------------


def test_stores_byte_identical_and_acknowledges_a_retry_without_storing_twice(lab: Lab) -> None:
    unit = lab.units["unit-a"]
    conn = connect(lab, unit)
    raw = fresh_segment(unit)
    seq = unit.sealer.sequence - 1
    status, body = put(conn, segment_path("unit-a", "cam1", seq), raw)
    assert status == 201 and body["sha256"] == hashlib.sha256(raw).hexdigest()
    status, body = put(conn, segment_path("unit-a", "cam1", seq), raw)
    assert status == 200 and body["status"] == "duplicate"
    assert lab.csu.stored("unit-a", "cam1")[seq] == raw
    index = (lab.csu.directory / "storage/unit-a/cam1/index.jsonl").read_text().splitlines()
    assert sum(json.loads(line)["sequence"] == seq for line in index) == 1


def test_out_of_order_arrival_is_accepted_and_chain_breaks_are_refused(lab: Lab) -> None:
    unit = lab.units["unit-b"]
    conn = connect(lab, unit)
    raws = [fresh_segment(unit) for _ in range(4)]
    # live first (3), backfill after (0, 1, 2): every link is checked once both sides are there
    for seq in (3, 0, 2, 1):
        assert put(conn, segment_path("unit-b", "cam1", seq), raws[seq])[0] == 201
    # a validly signed segment 4 that does not continue 3 (forked chain) is refused
    fork = Sealer("unit-b", "cam1", lab.csu.authority.public, unit.signing)
    fork.sequence = 4
    now = time.time_ns()
    status, body = put(
        conn, segment_path("unit-b", "cam1", 4), fork.seal(b"i", b"x", start_ns=now, end_ns=now)
    )
    assert status == 409 and "continue" in str(body["error"])
    # other bytes under a stored sequence: refused
    other = Sealer("unit-b", "cam1", lab.csu.authority.public, unit.signing)
    status, _ = put(
        conn, segment_path("unit-b", "cam1", 0), other.seal(b"i", b"y", start_ns=now, end_ns=now)
    )
    assert status == 409
    conn.request("GET", "/v1/units/unit-b/cursor")
    cursor = json.loads(conn.getresponse().read())
    assert cursor["cameras"]["cam1"] == {"first": 0, "last": 3, "count": 4, "gaps": []}


# --- refusals -----------------------------------------------------------------------------------


def test_refuses_clients_without_a_valid_enrolled_certificate(lab: Lab) -> None:
    assert attempt(lab, lab.units["unit-a"]) == "200"
    assert attempt(lab, None).startswith("tls:")  # no client certificate
    # The handshake fails: the receiver closes without an HTTP answer (asyncio drops the alert).
    assert attempt(lab, lab.units["foreign"]).startswith("tls:")  # certificate of another CA
    assert attempt(lab, lab.units["expired"]).startswith("tls:")
    assert attempt(lab, lab.units["revoked"]).startswith("tls:")  # on the CRL at start
    assert attempt(lab, lab.units["stranger"]) == "403"  # valid certificate, not enrolled
    assert attempt(lab, lab.units["unit-a"], tls12=True).startswith("tls:")
    # the receiver says why in its log
    log = lab.csu.log()
    for reason in (
        "certificate has expired",
        "certificate revoked",
        "self-signed certificate in certificate chain",  # the other CA's chain
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "UNSUPPORTED_PROTOCOL",
    ):
        assert f"refused a TLS handshake on the units listener: {reason}" in log, reason


def test_revocation_after_start_takes_effect_without_restart(lab: Lab) -> None:
    unit = lab.units["unit-late"]
    assert attempt(lab, unit) == "200"
    open_conn = connect(lab, unit)  # a connection made before the revocation is published
    lab.csu.pki.ca.revoke(unit.serial)
    # New connections: refused at the handshake, which follows the new CRL (test_csu_crl.py).
    assert attempt(lab, unit).startswith("tls:")
    # The connection already open: refused per request.
    open_conn.request("GET", f"/v1/units/{unit.unit_id}/cursor")
    assert open_conn.getresponse().status == 403


def test_a_unit_cannot_write_as_another(lab: Lab) -> None:
    conn = connect(lab, lab.units["unit-a"])
    status, body = put(conn, segment_path("unit-b", "cam1", 99), b"x")
    assert status == 403 and "unit-b" in str(body["error"])


def _s_client(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            tool("openssl"),
            "s_client",
            "-connect",
            f"127.0.0.1:{lab.csu.ports['units']}",
            "-servername",
            CSU_NAME,
            "-CAfile",
            str(lab.csu.pki.chain),
            "-ign_eof",
            *args,
        ],
        input="GET /v1/units/unit-a/cursor HTTP/1.1\r\nHost: csu\r\nConnection: close\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=20,
    )


def test_openssl_s_client_as_an_independent_judge(lab: Lab) -> None:
    unit = lab.units["unit-a"]
    ok = _s_client(lab, "-cert", str(unit.crt), "-key", str(unit.key))
    assert "HTTP/1.1 200" in ok.stdout and "TLSv1.3" in ok.stdout
    assert "Verify return code: 0 (ok)" in ok.stdout
    no_cert = _s_client(lab)
    assert no_cert.returncode != 0 and "HTTP/1.1" not in no_cert.stdout
    tls12 = _s_client(lab, "-tls1_2", "-cert", str(unit.crt), "-key", str(unit.key))
    assert tls12.returncode != 0 and "HTTP/1.1" not in tls12.stdout
    assert "Cipher is (NONE)" in tls12.stdout  # no TLS 1.2 session was ever established


# --- bad input (fuzzed) -------------------------------------------------------------------------


class Prober:
    """One unit's connection, re-opened whenever the receiver closed it after a refusal."""

    def __init__(self, lab: Lab, unit: Unit) -> None:
        self.lab, self.unit = lab, unit
        self.conn = connect(lab, unit)

    def put(self, path: str, body: bytes, ctype: str = SEGMENT_CONTENT_TYPE) -> int:
        for _ in range(2):
            try:
                return put(self.conn, path, body, ctype)[0]
            except (http.client.HTTPException, OSError):
                self.conn = connect(self.lab, self.unit)
        raise AssertionError("receiver unreachable")


@st.composite
def bad_bodies(draw: st.DrawFn) -> tuple[str, int, bytes]:
    unit_id = "unit-a"
    sealer = Sealer(unit_id, "cam9", _KEYS.authority, _KEYS.signing)
    sealer.sequence = draw(st.integers(1000, 2000))
    now = time.time_ns()
    good = sealer.seal(b"init", draw(st.binary(max_size=200)), start_ns=now, end_ns=now)
    seq = sealer.sequence - 1
    kind = draw(st.sampled_from(["garbage", "truncated", "flipped", "wrong-seq", "other-unit-key"]))
    if kind == "garbage":
        return kind, seq, draw(st.binary(max_size=400))
    if kind == "truncated":
        return kind, seq, good[: draw(st.integers(0, len(good) - 1))]
    if kind == "flipped":
        pos = draw(st.integers(0, len(good) - 1))
        return (
            kind,
            seq,
            good[:pos] + bytes([good[pos] ^ (1 << draw(st.integers(0, 7)))]) + good[pos + 1 :],
        )
    if kind == "wrong-seq":
        return kind, seq + draw(st.integers(1, 50)), good
    stranger = Sealer(unit_id, "cam9", _KEYS.authority, ed25519.Ed25519PrivateKey.generate())
    stranger.sequence = seq
    return kind, seq, stranger.seal(b"init", b"x", start_ns=now, end_ns=now)


class _Keys:
    authority: vault_keys.RecipientPublic
    signing: ed25519.Ed25519PrivateKey


_KEYS = _Keys()


def test_bad_input_is_refused_with_a_clear_status_and_others_keep_being_served(lab: Lab) -> None:
    _KEYS.authority = lab.csu.authority.public
    _KEYS.signing = lab.units["unit-a"].signing
    prober = Prober(lab, lab.units["unit-a"])
    bystander = Prober(lab, lab.units["unit-b"])
    seen: dict[str, set[int]] = {}

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(bad_bodies())
    def check(case: tuple[str, int, bytes]) -> None:
        kind, seq, body = case
        status = prober.put(segment_path("unit-a", "cam9", seq), body)
        seen.setdefault(kind, set()).add(status)
        assert status in (400, 422), (kind, status)

    check()
    assert seen.get("other-unit-key", {422}) == {422}
    assert seen.get("wrong-seq", {400}) == {400}
    # oversized, wrong content type
    assert prober.put(segment_path("unit-a", "cam9", 5), b"\0" * (MAX_BODY + 1)) == 413
    assert prober.put(segment_path("unit-a", "cam9", 5), b"x", "text/plain") == 415
    # a truncated body (the client vanishes mid-request) does not disturb the server
    raw_sock = connect(lab, lab.units["unit-a"]).sock
    assert raw_sock is not None
    raw_sock.sendall(
        f"PUT {segment_path('unit-a', 'cam9', 7)} HTTP/1.1\r\nHost: x\r\n"
        f"Content-Type: {SEGMENT_CONTENT_TYPE}\r\nContent-Length: 5000\r\n\r\n".encode()
        + b"partial"
    )
    raw_sock.close()
    # a client speaking garbage instead of HTTP gets a 400 and is disconnected
    garbage_sock = connect(lab, lab.units["unit-a"]).sock
    assert garbage_sock is not None
    garbage_sock.sendall(b"\x16\x03\x01 not http at all \xff\xfe\r\n\r\n")
    assert garbage_sock.recv(200).split(b" ")[1] == b"400"
    garbage_sock.close()
    # everyone else is still served
    unit_b = lab.units["unit-b"]
    raw = fresh_segment(unit_b)
    assert bystander.put(segment_path("unit-b", "cam1", unit_b.sealer.sequence - 1), raw) == 201
    assert not (lab.csu.directory / "storage/unit-a/cam9").exists() or not list(
        (lab.csu.directory / "storage/unit-a/cam9").glob("*.seg")
    )


# --- events and MQTT ----------------------------------------------------------------------------


def test_events_are_verified_stored_and_published_to_mqtt(lab: Lab) -> None:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    received: list[bytes] = []
    subscribed = threading.Event()
    sub = mqtt.Client(CallbackAPIVersion.VERSION2)
    sub.on_connect = lambda c, *_: c.subscribe("city/#", qos=1)
    sub.on_subscribe = lambda *_: subscribed.set()
    sub.on_message = lambda _c, _u, msg: received.append(bytes(msg.payload))
    sub.connect("127.0.0.1", lab.mqtt_port)
    sub.loop_start()
    try:
        assert subscribed.wait(10)
        unit = lab.units["unit-a"]
        signed = line_crossing(EventSigner(unit.signing, "unit-a"))
        event_id = signed.body["id"]
        body = signed.wire()
        conn = connect(lab, unit)
        assert put_event(conn, body) == 201
        assert put_event(conn, body) == 200  # retry: not stored or published twice
        forged = line_crossing(EventSigner(ed25519.Ed25519PrivateKey.generate(), "unit-a"))
        assert put_event(conn, forged.wire()) == 422
        other_unit = line_crossing(EventSigner(unit.signing, "unit-b"))
        assert put_event(conn, other_unit.wire()) == 400
        assert put_event(conn, b"{not json") == 400
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        assert len(received) == 1
        assert verify_wire(received[0], unit.signing.public_key())["id"] == event_id
        stored = lab.csu.directory / f"storage/unit-a/events/{event_id}.json"
        assert stored.read_bytes() == body
    finally:
        sub.loop_stop()
        sub.disconnect()


def test_event_ids_and_cameras_are_checked_before_anything_is_stored(lab: Lab) -> None:
    unit = lab.units["unit-a"]
    signer = EventSigner(unit.signing, "unit-a")
    events = lab.csu.directory / "storage/unit-a/events"
    before = set(events.iterdir()) if events.is_dir() else set()
    conn = connect(lab, unit)
    for bad in ({"id": "evt-nl\n"}, {"camera": "#"}, {"camera": "+"}, {"camera": "cam1\n"},
                {"camera": "../x"}, {"unit": "unit-a\n"}):  # fmt: skip
        signed = line_crossing(signer, **bad)
        assert put_event(conn, signed.wire()) == 400, bad
    after = set(events.iterdir()) if events.is_dir() else set()
    assert after == before  # nothing stored, so a retry can never be answered "duplicate"
    good = line_crossing(signer)
    assert put_event(conn, good.wire()) == 201


def line_crossing(signer: EventSigner, **extra: str) -> SignedEvent:
    camera = extra.pop("camera", "cam1")
    return signer.sign(
        extra=extra or None,
        camera=camera,
        category="count",
        kind="line-crossing",
        rule="north-gate",
        wall_ns=time.time_ns(),
        frame_index=120,
        details={"direction": "in", "count": 1},
    )


def put_event(conn: http.client.HTTPSConnection, body: bytes) -> int:
    conn.request(
        "POST", "/v1/units/unit-a/events", body=body, headers={"Content-Type": "application/json"}
    )
    resp = conn.getresponse()
    resp.read()
    return resp.status


# --- HLS for operators, audit -------------------------------------------------------------------


def test_operators_get_hls_that_ffprobe_decodes_and_every_view_is_audited(lab: Lab) -> None:
    unit = lab.units["unit-a"]
    sealer = Sealer("unit-a", "street", lab.csu.authority.public, unit.signing)
    conn = connect(lab, unit)
    assert (
        put(
            conn,
            envelope_path("unit-a", "street", sealer.epoch.epoch_id.hex()),
            sealer.envelope,
            ENVELOPE_CONTENT_TYPE,
        )[0]
        == 201
    )
    start = time.time_ns() - 10 * SEC
    for i, seg in enumerate(encoded_segments(4)):
        raw = sealer.seal(
            seg.init,
            seg.media,
            start_ns=start + i * SEC,
            end_ns=start + (i + 1) * SEC,
            frames=seg.frame_count,
        )
        assert put(conn, segment_path("unit-a", "street", i), raw)[0] == 201
    base = f"https://127.0.0.1:{lab.csu.ports['operators']}/v1/view/unit-a/street"
    probe = [
        tool("ffprobe"),
        "-v",
        "error",
        "-tls_verify",
        "0",
        "-count_frames",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=codec_name,width,height,nb_read_frames",
        "-of",
        "json",
    ]
    # no token: refused, and the refusal audited (below)
    denied = subprocess.run(
        [*probe, f"{base}/live.m3u8"], capture_output=True, text=True, timeout=60
    )
    assert denied.returncode != 0
    headers = f"Authorization: Bearer {lab.csu.operator_token}\r\n"
    live_url = f"{base}/live.m3u8"
    info = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-tls_verify", "0", "-headers", headers,
         "-show_entries", "stream=codec_name,width,height", "-of", "json", live_url],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert info.returncode == 0, info.stderr
    stream = json.loads(info.stdout)["streams"][0]
    assert stream["codec_name"] == "h264" and (stream["width"], stream["height"]) == (320, 180)
    # a live playlist never ends: decode 20 frames of it and stop
    decoded = subprocess.run(
        [tool("ffmpeg"), "-v", "info", "-nostats", "-tls_verify", "0", "-headers", headers,
         "-i", live_url, "-frames:v", "20", "-f", "null", "-"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert decoded.returncode == 0, decoded.stderr[-2000:]
    assert "frame=   20" in decoded.stderr or "frame=20" in decoded.stderr.replace(" ", "")
    recorded = subprocess.run(
        [
            *probe,
            "-headers",
            headers,
            f"{base}/recorded.m3u8?from={start / SEC - 1}&to={start / SEC + 2.5}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert recorded.returncode == 0, recorded.stderr
    assert 20 <= int(json.loads(recorded.stdout)["streams"][0]["nb_read_frames"]) <= 30
    # an evidence export: one fMP4 of the range, remuxed from the decrypted segments
    export_url = (
        f"https://127.0.0.1:{lab.csu.ports['operators']}/v1/export/unit-a/street.mp4"
        f"?from={start / SEC}&to={start / SEC + 4}&case=PV-2026-0042"
    )
    ctx = ssl.create_default_context(cafile=str(lab.csu.pki.chain))
    ctx.check_hostname = False  # the certificate names csu.test, we dial 127.0.0.1
    request = urllib.request.Request(
        export_url, headers={"Authorization": f"Bearer {lab.csu.operator_token}"}
    )
    clip = lab.tmp / "export.mp4"
    with urllib.request.urlopen(request, context=ctx, timeout=30) as resp:
        clip.write_bytes(resp.read())
    frames = subprocess.run(
        [*probe, str(clip)], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert int(json.loads(frames)["streams"][0]["nb_read_frames"]) == 40
    entries = csu_audit.read(lab.csu.directory / "audit.jsonl")
    refusals = [e for e in entries if e["action"] == "refused"]
    assert any(
        e["reason"] == "no bearer token" and e["path"] == "/v1/view/unit-a/street/live.m3u8"
        for e in refusals
    )
    entries = [e for e in entries if e["action"] != "refused"]
    actions = {(e["who"], e["action"]) for e in entries}
    assert {("alice", "view-live"), ("alice", "view-recorded"), ("alice", "view-media")} <= actions
    [export] = [e for e in entries if e["action"] == "export"]
    assert (export["case"], export["first"], export["last"]) == ("PV-2026-0042", 0, 3)
    assert all(e["unit"] == "unit-a" and e["camera"] == "street" for e in entries)
    # the log is tamper-evident
    path = lab.csu.directory / "audit.jsonl"
    lines = path.read_bytes().splitlines()
    tampered = lab.tmp / "audit-tampered.jsonl"
    tampered.write_bytes(b"\n".join(lines[:1] + lines[2:]) + b"\n")
    with pytest.raises(ValueError, match="chain broken"):
        csu_audit.read(tampered)


def test_refused_operator_attempts_are_audited_and_expired_tokens_refused(lab: Lab) -> None:
    ctx = ssl.create_default_context(cafile=str(lab.csu.pki.chain))
    ctx.check_hostname = False  # the certificate names csu.test, we dial 127.0.0.1
    url = f"https://127.0.0.1:{lab.csu.ports['operators']}/v1/view/unit-a/street/live.m3u8"
    audit_path = lab.csu.directory / "audit.jsonl"
    for token in ("guessed-token", lab.csu.expired_token):
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, context=ctx, timeout=30)
        assert refused.value.code == 401
    entries = [e for e in csu_audit.read(audit_path) if e["action"] == "refused"]
    reasons = [e["reason"] for e in entries]
    assert "unknown token" in reasons
    assert "token of bob expired on 2020-04-01T00:00:00+00:00" in reasons
    assert all(e["remote"] == "127.0.0.1" and e["method"] == "GET" for e in entries)
    text = audit_path.read_text()
    assert "guessed-token" not in text and lab.csu.expired_token not in text
    # edge-csu token list shows every operator's expiry
    listing = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "token", "list", "--config", str(lab.csu.config)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert "bob" in listing and "2020-04-01" in listing and "EXPIRED" in listing
    assert "alice" in listing and "2100-01-01" in listing


def test_units_listing_shows_contact_and_chain(lab: Lab) -> None:
    cfg = serve_config.load(lab.csu.config)
    unit = lab.units["unit-b"]
    conn = connect(lab, unit)
    raw = fresh_segment(unit)
    assert put(conn, segment_path("unit-b", "cam1", unit.sealer.sequence - 1), raw)[0] == 201
    # The status file is written by a worker thread: wait for it to say so.
    wait_until(
        lambda: any(
            r["unit"] == "unit-b" and r["last_contact_ns"] and "cam1" in r["cameras"]
            for r in unit_rows(cfg)
        ),
        30,
        "the receiver to record unit-b's contact",
    )
    rows = {r["unit"]: r for r in unit_rows(cfg)}
    assert rows["unit-b"]["enrolled"] and rows["unit-b"]["last_contact_ns"]
    assert rows["unit-b"]["cameras"]["cam1"]["chain"] == "complete"
    assert not rows.get("stranger", {"enrolled": False})["enrolled"]
    table = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "units", "--config", str(lab.csu.config)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    line = next(row for row in table.splitlines() if row.startswith("unit-b "))
    assert "yes" in line and "chain complete" in line


def test_receiver_config_errors_name_file_key_and_line(tmp_path: Path) -> None:
    path = tmp_path / "csu.toml"
    path.write_text('storage_dir = "s"\n\n[units]\nport = 99999\n')
    with pytest.raises(ConfigError) as err:
        serve_config.load(path)
    assert err.value.key == "units.port" and err.value.line == 4 and str(path) in str(err.value)
    path.write_text("[tls]\ncertfile = 'x'\n")
    with pytest.raises(ConfigError, match="unknown key"):
        serve_config.load(path)
