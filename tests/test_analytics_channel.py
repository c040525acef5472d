"""The analytics process is treated as hostile: it runs models from outside (#11 item 21).

It must hold no key material, and nothing it sends may run code in edged or stop edged from
serving: no pickle crosses, every message is checked, and a child that breaks the protocol is
replaced. The hostile children here are real spawned processes that write raw bytes on the real
pipes; the checks on their messages are also exercised directly.
"""

from __future__ import annotations

import base64
import json
import os
import pickle
import re
import struct
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from edge.analytics import channel, worker
from edge.analytics.bridge import AnalyticsBridge
from edge.analytics.shm import FrameRing
from edge.app import sandbox
from edge.errors import ProtocolError
from edge.events import EventDraft, SignedEvent, verify_wire
from edge.identity.unitkeys import keys_dir_of, load_signing_key, load_signing_public_key

from .conftest import require_root
from .test_analytics_e2e import motion_only_config, wait_for

MARKER_ENV = "EDGE_TEST_PWNED_MARKER"
KEY_ENV = "EDGE_TEST_KEY_PATH"
CONFIG_ENV = "EDGE_TEST_CONFIG_PATH"
PORT_ENV = "EDGE_TEST_PORT"
SCENARIO_ENV = "EDGE_TEST_HOSTILE"


class _Gadget:
    """Unpickling this runs code: it creates the marker file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mknod, (self.marker,))


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _good_draft() -> EventDraft:
    return EventDraft(
        category="alert",
        kind="gathering",
        rule="square",
        wall_ns=1_800_000_000 * 10**9,
        frame_index=7,
        details={"persons": 4},
    )


# --- the checks, message by message -------------------------------------------------------------


def test_a_good_draft_round_trips() -> None:
    draft = EventDraft(
        category="count",
        kind="line_crossing",
        rule="north gate",
        wall_ns=2 * 10**18,
        frame_index=12,
        details={"counts": {"person/forward": 3}, "interval_seconds": 60.0},
        interval_start_ns=2 * 10**18 - 60 * 10**9,
        snapshot=b"\xff\xd8\xff\xe0 jpeg",
    )
    (payload,) = _read_all(channel.encode(draft))
    assert channel.decode(payload) == draft
    stats = channel.ChildStats(analysed=3, fps=4.5, tamper=("covered",), learning=True)
    assert channel.decode(channel.encode(stats)[4:]) == stats


def _read_all(data: bytes) -> list[bytes]:
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, data)
    os.close(w)
    try:
        reader = channel.MessageReader(r)
        payloads = reader.read()
        if reader.error is not None:
            raise reader.error
        return payloads
    finally:
        os.close(r)


def _event(**changes: Any) -> bytes:
    doc = json.loads(channel.encode(_good_draft())[4:])
    doc.update(changes)
    return json.dumps(doc).encode()


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "not JSON"),
        (b"\x80\x04\x95", "not JSON"),  # the start of a pickle
        (b"[" * 200_000 + b"]" * 200_000, "nested deeper"),
        (_event(details={"a": {"b": {"c": {"d": {"e": {"f": {"g": {}}}}}}}}), "nested deeper"),
        (b'{"type": "stats", "fps": NaN}', "NaN"),
        (b'{"type": "event"}', "category"),
        (_event(category="door"), "category"),
        (_event(rule="unit"), "reserved"),  # the unit's own alarms are not analytics' to raise
        (_event(kind="Door Open\n"), "event.kind"),
        (_event(state="opened"), "state"),
        (_event(wall_ns=-1), "wall_ns"),
        (_event(wall_ns=True), "wall_ns"),
        (_event(details=[1]), "details"),
        (_event(camera="other-cam"), "unexpected field"),
        (_event(unit="someone-else"), "unexpected field"),
        (_event(snapshot="not base64!"), "base64"),
        (_event(snapshot=base64.b64encode(b"GIF89a").decode()), "JPEG"),
        (_event(category="count", interval_start_ns=1), "counts"),
        (_event(category="count", details={"counts": {"x": 1}}, interval_start_ns=1), "label/way"),
        (
            _event(
                category="count",
                details={"counts": {"object/forward": 1}},
                interval_start_ns=1_800_000_000 * 10**9,  # = wall_ns: an empty interval
            ),
            "start before it ends",
        ),
        (b'{"type": "stats", "tamper": "x"}', "tamper"),
        (b'{"type": "exec", "code": "print(1)"}', "unknown message type"),
    ],
)
def test_malformed_messages_are_protocol_errors(payload: bytes, match: str) -> None:
    with pytest.raises(ProtocolError, match=match):
        channel.decode(payload)


def test_a_pickle_gadget_is_refused_without_running(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    gadget = pickle.dumps(("event", _Gadget(str(marker))))
    with pytest.raises(ProtocolError):
        channel.decode(gadget)
    assert not marker.exists()


def test_an_oversized_announcement_is_refused_before_it_is_read() -> None:
    with pytest.raises(ProtocolError, match="announced"):
        _read_all(struct.pack(">I", 2**31) + b"x" * 10)
    # What came whole before it is still delivered, in order; nothing after it is.
    r, w = os.pipe()
    os.set_blocking(r, False)
    os.write(w, channel.encode(channel.Started("motion")) + struct.pack(">I", 2**31) + b"x")
    reader = channel.MessageReader(r)
    try:
        assert [channel.decode(p) for p in reader.read()] == [channel.Started("motion")]
        assert reader.error is not None and reader.read() == []
    finally:
        os.close(r)
        os.close(w)


def test_returned_slots_out_of_range_are_ignored() -> None:
    r, w = os.pipe()
    os.set_blocking(r, False)
    try:
        os.write(w, bytes([2, 255, 0, 9, 3]))
        assert channel.read_returned_slots(r, 3) == [2, 0]
        assert channel.read_returned_slots(r, 3) == []  # nothing more: never blocks
    finally:
        os.close(r)
        os.close(w)


# --- real hostile children ----------------------------------------------------------------------


def hostile_child(
    spec: worker.WorkerSpec,
    ring: FrameRing,
    ready: Connection,
    free: Connection,
    out: Connection,
    stop: Connection,
) -> None:
    """Stands in for the analytics process after a malicious model took it over."""
    scenario = os.environ[SCENARIO_ENV]
    marker = os.environ[MARKER_ENV]
    fd = out.fileno()
    channel.send(fd, channel.Started("hostile"))
    channel.send(fd, _good_draft())  # what it sent before turning
    os.write(free.fileno(), bytes([250, 251, 0, 0, 1, 1]))  # slots it never held
    if scenario == "pickle":
        os.write(fd, _frame(pickle.dumps(("event", _Gadget(marker)))))
    elif scenario == "huge":
        os.write(fd, struct.pack(">I", 2**31 - 1) + b"\0" * 65536)
    elif scenario == "nested":
        os.write(fd, _frame(b"[" * 500_000 + b"]" * 500_000))
    elif scenario == "forged-unit-alarm":
        os.write(fd, _frame(_event(rule="unit", kind="door_open")))
    elif scenario == "stall":
        os.write(fd, struct.pack(">I", 100) + b"{")  # half a message, then silence
    elif scenario == "escape":
        channel.send(fd, channel.Failed(_try_to_escape()))
    while not stop.poll(0.1):
        pass


def _try_to_escape() -> str:
    """What code run through a malicious model would try first, and how each attempt ended."""
    import signal
    import socket

    results = []
    for what, attempt in (
        ("key", lambda: Path(os.environ[KEY_ENV]).read_bytes()),
        ("config", lambda: Path(os.environ[CONFIG_ENV]).read_bytes()),
        ("write", lambda: Path(os.environ[MARKER_ENV]).write_bytes(b"x")),
        ("tcp", lambda: socket.create_connection(("127.0.0.1", int(os.environ[PORT_ENV])), 2)),
        ("signal", lambda: os.kill(os.getppid(), signal.SIGTERM)),
        ("parent-memory", lambda: Path(f"/proc/{os.getppid()}/environ").read_bytes()),
    ):
        try:
            attempt()
            results.append(f"{what}=done")
        except OSError as exc:
            results.append(f"{what}={type(exc).__name__}")
    return " ".join(results)


def test_code_run_by_a_model_cannot_read_the_key_or_reach_edged(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real confinement of the analytics process (Landlock), applied before any model is
    read, against what a hijacked process would try: read the key or the configuration (camera
    passwords), write, connect out, signal edged, read edged's memory."""
    try:
        sandbox._abi(sandbox._libc())
    except OSError:
        pytest.skip("this kernel has no Landlock")
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    config_file = data_dir.parent / "edge.toml"
    config_file.write_text('[unit]\nid = "x"\n')
    monkeypatch.setenv(SCENARIO_ENV, "escape")
    monkeypatch.setenv(MARKER_ENV, str(data_dir / "pwned"))
    monkeypatch.setenv(KEY_ENV, str(keys_dir_of(data_dir) / "unit-signing.pem"))
    monkeypatch.setenv(CONFIG_ENV, str(config_file))
    monkeypatch.setenv(PORT_ENV, str(listener.getsockname()[1]))
    monkeypatch.setattr(worker, "run", hostile_child)
    cfg = motion_only_config(data_dir)
    bridge = AnalyticsBridge(cfg, cfg.cameras[0], mqtt=False)
    bridge.start()
    try:
        assert wait_for(lambda: (bridge.stats()["last_failure"] or "").startswith("key="), 20)
        outcome = dict(kv.split("=") for kv in bridge.stats()["last_failure"].split())
    finally:
        bridge.stop()
        listener.close()
    assert (keys_dir_of(data_dir) / "unit-signing.pem").exists()  # it is there, and refused:
    assert outcome["key"] == "PermissionError", outcome
    assert outcome["config"] == "PermissionError", outcome
    assert outcome["write"] == "PermissionError", outcome
    assert outcome["parent-memory"] == "PermissionError", outcome
    abi = sandbox._abi(sandbox._libc())
    if abi >= 4:
        assert outcome["tcp"] == "PermissionError", outcome
    if abi >= 6:
        assert outcome["signal"] == "PermissionError", outcome
    assert not (data_dir / "pwned").exists()


@pytest.mark.parametrize("scenario", ["pickle", "huge", "nested", "forged-unit-alarm", "stall"])
def test_a_hostile_child_cannot_run_code_in_edged_or_stop_it(
    scenario: str, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = data_dir / "pwned"
    monkeypatch.setenv(SCENARIO_ENV, scenario)
    monkeypatch.setenv(MARKER_ENV, str(marker))
    monkeypatch.setattr(worker, "run", hostile_child)
    cfg = motion_only_config(data_dir)
    events: list[SignedEvent] = []
    bridge = AnalyticsBridge(cfg, cfg.cameras[0], listeners=[events.append], mqtt=False)
    bridge.start()
    try:
        assert wait_for(lambda: len(events) >= 1, 20)
        # Its honest-looking draft was checked and signed here, with our camera and unit.
        public = load_signing_public_key(keys_dir_of(data_dir))
        body = verify_wire(events[0].wire(), public)
        assert body["camera"] == cfg.cameras[0].id and body["unit"] == cfg.unit.id
        if scenario == "stall":
            time.sleep(1.0)
            assert bridge.stats()["running"] and bridge.stats()["rejected_messages"] == 0
        else:
            assert wait_for(lambda: bridge.stats()["rejected_messages"] >= 1, 20)
            assert bridge.stats()["last_failure"].startswith("protocol:")
            # Replaced: a new child is started (it is hostile too, and rejected again).
            assert wait_for(lambda: bridge.stats()["restarts"] >= 1, 20)
        assert 0 <= bridge.in_flight() <= cfg.analytics.slots
        assert all(e.body["rule"] != "unit" for e in events)
    finally:
        t0 = time.monotonic()
        bridge.stop(timeout=3.0)
        assert time.monotonic() - t0 < 20.0  # bounded (3 s join, kill), even on a busy machine
    assert not marker.exists(), "edged ran code the analytics process sent"


# --- no key material in the child ---------------------------------------------------------------


def _process_memory(pid: int) -> list[bytes]:
    regions = []
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            start, end = (int(x, 16) for x in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            if "r" not in fields[1] or name in ("[vvar]", "[vsyscall]"):
                continue
            try:
                mem.seek(start)
                regions.append(mem.read(end - start))
            except (OSError, ValueError, OverflowError):
                continue
    return regions


def test_the_analytics_process_holds_no_key_material(data_dir: Path) -> None:
    """Neither in its arguments, its environment, its open files nor anywhere in its memory."""
    require_root()  # reading another process's memory
    cfg = motion_only_config(data_dir)
    bridge = AnalyticsBridge(cfg, cfg.cameras[0], mqtt=False)
    bridge.start()
    try:
        assert wait_for(lambda: bridge.stats()["state"] == "running", 30)
        pid = bridge.stats()["pid"]
        assert bridge.stats()["sandbox"].startswith(("landlock ABI", "not confined: Landlock"))
        key = load_signing_key(keys_dir_of(data_dir))
        raw = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        pem = (keys_dir_of(data_dir) / "unit-signing.pem").read_bytes()
        pem_body = re.sub(rb"-----[A-Z ]+-----|\s", b"", pem)
        der = base64.b64decode(pem_body)
        secrets = {"raw private key": raw, "PEM body": pem_body[:40], "PKCS#8 DER": der}
        for what in ("cmdline", "environ"):
            blob = Path(f"/proc/{pid}/{what}").read_bytes()
            assert not any(s in blob for s in secrets.values()), what
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            target = os.readlink(fd)
            assert str(keys_dir_of(data_dir)) not in target, target
        regions = _process_memory(pid)
        # The scan sees what the child was given (the name of its shared-memory block)...
        ring_name = bridge._ring.name.encode() if bridge._ring is not None else b"?"
        assert any(ring_name in r for r in regions)
        # ... and no form of the key.
        for what, secret in secrets.items():
            assert not any(secret in r for r in regions), f"{what} in the analytics process"
    finally:
        bridge.stop()
