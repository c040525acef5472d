"""Cabinet outputs with real components: pymodbus's own server as the sign controller, ALSA's
aplay for the audio channel, the guard as a real process."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge import config
from edge.app.alerts import AlertHub
from edge.config import EdgeConfig
from edge.errors import ConfigError, OutputError
from edge.events import EventSigner
from edge.outputs import pending
from edge.outputs.audio import AudioDriver, wav_duration
from edge.outputs.engine import OutputEngine
from edge.outputs.modbus import ModbusDriver
from edge.outputs.pending import KeptRequest, PendingStore, pending_path
from tests.conftest import tool
from tests.modbus_util import modbus_server, rtu_line

REGISTER = 10
HEARTBEAT = 11


def sign_config(port: int, *, duration_s: float = 1.0, extra: str = "") -> EdgeConfig:
    return config.parse(f"""
outputs_heartbeat_s = 0.2

[[outputs]]
name = "sign-up"
meaning = "WRONG WAY sign 200 m upstream"
kind = "modbus"
states = {{ wrong-way = 1, closed = 2 }}
[outputs.modbus]
host = "127.0.0.1"
port = {port}
state_register = {REGISTER}
heartbeat_register = {HEARTBEAT}

[[playbooks]]
name = "wrong-way-warning"
event = "wrong_way"
output = "sign-up"
state = "wrong-way"
duration_s = {duration_s}
confirmation = "immediate"

[[playbooks]]
name = "lane-closure"
event = "gathering"
output = "sign-up"
state = "closed"
duration_s = 30
{extra}""")  # fmt: skip


class Audit:
    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any], str]] = []

    def __call__(self, action: str, details: dict[str, Any], actor: str) -> None:
        self.records.append((action, details, actor))

    def actions(self) -> list[str]:
        return [a for a, _, _ in self.records]


def hub() -> AlertHub:
    return AlertHub(EventSigner(ed25519.Ed25519PrivateKey.generate(), "test-unit"))


def analytics_event(hub: AlertHub, kind: str) -> str:
    signer = hub._signer
    ev = signer.sign(camera="cam1", category="alert", kind=kind, rule="lane-1",
                     wall_ns=time.time_ns(), frame_index=7, details={"track": 3})  # fmt: skip
    hub.publish(ev)
    return str(ev.body["id"])


def test_a_wrong_way_event_drives_the_sign_at_once_and_clears_it_after_its_duration(
    tmp_path: Path,
) -> None:
    with modbus_server() as sign:
        audit = Audit()
        engine = OutputEngine(unit_config(sign.port, tmp_path), audit, guard=False)
        alerts = hub()
        alerts.add_listener(engine.on_event)
        beat = sign.register(HEARTBEAT)
        sign.client.write_register(REGISTER, 2, device_id=1)  # left by a previous life
        engine.start()
        try:
            assert sign.register(REGISTER) == 0  # made safe before anything else
            t0 = time.monotonic()
            event_id = analytics_event(alerts, "wrong_way")
            t_on = sign.wait_register(REGISTER, 1, 2.0)
            t_off = sign.wait_register(REGISTER, 0, 5.0)
            assert sign.register(HEARTBEAT) > beat  # the controller sees the unit alive
            snap = settled(engine, "sign-up", "safe")
        finally:
            engine.stop()
    delay = t_on - t0
    held = t_off - t_on
    print(f"event -> sign: {delay * 1000:.1f} ms; held {held:.3f} s for 1.0 s")
    assert delay < 1.0  # a loaded CI machine included; typically a few ms
    assert 0.9 <= held < 2.0
    assert snap["state"] == "safe" and snap["changes"] >= 2
    driven = [d for a, d, _ in audit.records if a == "output-driven"]
    assert driven and driven[0]["event"] == event_id
    assert driven[0]["playbook"] == "wrong-way-warning" and driven[0]["state"] == "wrong-way"
    assert audit.actions()[-1] == "output-safe"


def unit_config(port: int, data_dir: Path) -> EdgeConfig:
    """:func:`sign_config` on a data directory of the test's own (requests are kept there)."""
    return config.with_data_dir(sign_config(port), data_dir)


def settled(engine: OutputEngine, output: str, state: str, timeout: float = 5.0) -> Any:
    """The output's status once the engine recorded ``state`` (it drives, then records)."""
    deadline = time.monotonic() + timeout
    while (st := engine.snapshot()["outputs"][output])["state"] != state:
        assert time.monotonic() < deadline, f"{output} never recorded {state}: {st}"
        time.sleep(0.01)
    return st


def test_a_playbook_that_needs_an_agent_changes_nothing_until_confirmed(tmp_path: Path) -> None:
    with modbus_server() as sign:
        audit = Audit()
        engine = OutputEngine(unit_config(sign.port, tmp_path), audit, guard=False)
        alerts = hub()
        alerts.add_listener(engine.on_event)
        engine.start()
        try:
            event_id = analytics_event(alerts, "gathering")
            deadline = time.monotonic() + 5
            while not engine.snapshot()["pending"]:
                assert time.monotonic() < deadline, "no pending request"
                time.sleep(0.01)
            time.sleep(0.3)
            assert sign.register(REGISTER) == 0
            [pending] = engine.snapshot()["pending"]
            assert (pending["playbook"], pending["event"]) == ("lane-closure", event_id)
            engine.confirm("no-such-event", "lane-closure", "agent martin")
            engine.confirm(event_id, "lane-closure", "agent dupont")
            sign.wait_register(REGISTER, 2, 2.0)
            # The register is written before the engine records the change: wait for the record.
            st = settled(engine, "sign-up", "closed")
            assert st["agent"] == "agent dupont"
        finally:
            engine.stop()
        assert sign.register(REGISTER) == 0  # edged stopping: safe
    refused = [(d, who) for a, d, who in audit.records if a == "output-command-refused"]
    assert refused and refused[0][1] == "agent martin"
    driven = [(d, who) for a, d, who in audit.records if a == "output-driven"]
    assert driven == [(driven[0][0], "agent dupont")] and driven[0][0]["event"] == event_id
    assert "output-confirmation-requested" in audit.actions()


def wait_for(what: str, cond: Callable[[], Any], timeout: float = 5.0) -> Any:
    """``cond()`` once it is true, polled until ``timeout``."""
    deadline = time.monotonic() + timeout
    while not (value := cond()):
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)
    return value


def kept_requests(data_dir: Path) -> list[dict[str, Any]]:
    data = json.loads((data_dir / "outputs" / "pending-requests.json").read_bytes())
    return list(data["requests"])


def request_left_by_a_stopped_engine(port: int, data_dir: Path) -> str:
    """A lane-closure request waiting when edged stops; its event id."""
    engine = OutputEngine(unit_config(port, data_dir), Audit(), guard=False)
    alerts = hub()
    alerts.add_listener(engine.on_event)
    engine.start()
    try:
        event_id = analytics_event(alerts, "gathering")
        wait_for("a pending request", lambda: engine.snapshot()["pending"])
    finally:
        engine.stop()
    return event_id


def test_a_request_waiting_when_edged_stops_waits_again_after_a_restart(tmp_path: Path) -> None:
    with modbus_server() as sign:
        event_id = request_left_by_a_stopped_engine(sign.port, tmp_path)
        assert sign.register(REGISTER) == 0  # edged stopped: safe, the request kept on disk
        store = tmp_path / "outputs" / "pending-requests.json"
        assert store.stat().st_mode & 0o777 == 0o600
        [kept] = kept_requests(tmp_path)
        assert (kept["event"], kept["playbook"], kept["output"]) == (
            event_id, "lane-closure", "sign-up")  # fmt: skip
        assert abs(kept["expires_ns"] - kept["made_ns"] - 300 * 10**9) < 1000  # the window

        audit = Audit()
        engine = OutputEngine(unit_config(sign.port, tmp_path), audit, guard=False)
        engine.start()
        try:
            [pending] = engine.snapshot()["pending"]
            assert (pending["playbook"], pending["event"]) == ("lane-closure", event_id)
            assert 0 < pending["expires_in_s"] <= 300
            assert sign.register(REGISTER) == 0  # a restart drives nothing by itself
            assert "output-driven" not in audit.actions()
            [restored] = [d for a, d, _ in audit.records if a == "output-confirmation-restored"]
            assert restored["event"] == event_id and 0 < restored["confirm_within_s"] <= 300
            engine.confirm(event_id, "lane-closure", "agent dupont")
            sign.wait_register(REGISTER, 2, 2.0)
            st = settled(engine, "sign-up", "closed")
            assert st["agent"] == "agent dupont"
            wait_for("no request shown", lambda: engine.snapshot()["pending"] == [])
            wait_for("the request off the disk", lambda: kept_requests(tmp_path) == [])
        finally:
            engine.stop()
        assert sign.register(REGISTER) == 0
    driven = [(d["event"], who) for a, d, who in audit.records if a == "output-driven"]
    assert driven == [(event_id, "agent dupont")]


def test_a_request_whose_window_closed_while_edged_was_stopped_lapses(tmp_path: Path) -> None:
    with modbus_server() as sign:
        event_id = request_left_by_a_stopped_engine(sign.port, tmp_path)
        audit = Audit()
        later = 301 * 10**9  # edged came back after the 300 s window
        engine = OutputEngine(unit_config(sign.port, tmp_path), audit, guard=False,
                              wall_ns=lambda: time.time_ns() + later)  # fmt: skip
        engine.start()
        try:
            assert engine.snapshot()["pending"] == []
            [lapsed] = [(d, who) for a, d, who in audit.records
                        if a == "output-confirmation-lapsed"]  # fmt: skip
            assert lapsed == (
                {"output": "sign-up", "reason": "expired while edged was stopped",
                 "playbook": "lane-closure", "event": event_id},
                "edged",
            )  # fmt: skip
            assert kept_requests(tmp_path) == []
            engine.confirm(event_id, "lane-closure", "agent dupont")
            refused = wait_for(
                "the confirmation refused",
                lambda: [(d, who) for a, d, who in audit.records if a == "output-command-refused"],
            )
            assert refused[0][1] == "agent dupont" and refused[0][0]["event"] == event_id
            assert sign.register(REGISTER) == 0
        finally:
            engine.stop()
    assert "output-driven" not in audit.actions()


def test_a_clock_stepped_back_while_stopped_gives_at_most_one_window(tmp_path: Path) -> None:
    with modbus_server() as sign:
        event_id = request_left_by_a_stopped_engine(sign.port, tmp_path)
        audit = Audit()
        back = 3600 * 10**9  # the clock went back an hour while edged was stopped
        engine = OutputEngine(unit_config(sign.port, tmp_path), audit, guard=False,
                              wall_ns=lambda: time.time_ns() - back)  # fmt: skip
        engine.start()
        try:
            [pending] = engine.snapshot()["pending"]
            assert pending["event"] == event_id
            assert pending["expires_in_s"] <= 300  # not 3900: capped at confirm_within_s
        finally:
            engine.stop()


@pytest.mark.parametrize(
    "damage",
    [b"\x00torn", b'{"format": 1, "requests": [{"playbook": 3}]}', b"[]"],
    ids=["torn", "wrong-field", "wrong-shape"],
)
def test_a_damaged_file_of_requests_is_kept_aside_audited_and_edged_runs(
    tmp_path: Path, damage: bytes
) -> None:
    store = tmp_path / "outputs" / "pending-requests.json"
    store.parent.mkdir(parents=True)
    store.write_bytes(damage)
    with modbus_server() as sign:
        audit = Audit()
        engine = OutputEngine(unit_config(sign.port, tmp_path), audit, guard=False)
        alerts = hub()
        alerts.add_listener(engine.on_event)
        engine.start()
        try:
            [(action, details, actor)] = [r for r in audit.records if "damaged" in r[0]]
            assert (action, actor) == ("output-pending-damaged", "edged")
            assert "kept as pending-requests.json.damaged-" in details["reason"]
            [aside] = store.parent.glob("pending-requests.json.damaged-*")
            assert aside.read_bytes() == damage  # kept as it was, for the maintenance
            assert engine.snapshot()["pending"] == []
            event_id = analytics_event(alerts, "gathering")  # the engine works on
            wait_for("a pending request", lambda: engine.snapshot()["pending"])
            assert [r["event"] for r in kept_requests(tmp_path)] == [event_id]
        finally:
            engine.stop()


def test_a_full_disk_stops_neither_requests_nor_confirmations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(self: PendingStore, requests: object) -> None:  # the fault: no space left
        raise OSError(28, "No space left on device")

    with modbus_server() as sign:
        audit = Audit()
        engine = OutputEngine(unit_config(sign.port, tmp_path), audit, guard=False)
        alerts = hub()
        alerts.add_listener(engine.on_event)
        engine.start()
        try:
            monkeypatch.setattr(PendingStore, "save", full)
            first = analytics_event(alerts, "gathering")
            wait_for("a pending request", lambda: engine.snapshot()["pending"])
            assert not (tmp_path / "outputs" / "pending-requests.json").exists()
            engine.confirm(first, "lane-closure", "agent dupont")
            sign.wait_register(REGISTER, 2, 2.0)
            monkeypatch.undo()  # space again: the next change is written
            second = analytics_event(alerts, "gathering")
            store = tmp_path / "outputs" / "pending-requests.json"
            wait_for("the request on disk", lambda: store.exists()
                     and [r["event"] for r in kept_requests(tmp_path)] == [second])  # fmt: skip
        finally:
            engine.stop()
    assert [d["event"] for a, d, _ in audit.records if a == "output-driven"] == [first]


def test_the_file_of_requests_is_bounded_and_forgets_removed_playbooks(tmp_path: Path) -> None:
    cfg = sign_config(1502)
    now = time.time_ns()
    store = PendingStore(pending_path(tmp_path))
    reqs = [KeptRequest("lane-closure", f"ev{i}", "cam1", "sign-up", now + i, now + 10**11)
            for i in range(pending.MAX_KEPT + 5)]  # fmt: skip
    store.save(reqs)
    assert store.path.stat().st_size <= pending.MAX_BYTES
    loaded = store.load()
    assert loaded == reqs[5:] and store.damaged is None  # the newest kept
    gone = KeptRequest("removed-playbook", "ev-x", "cam1", "sign-up", now, now + 10**11)
    moved = KeptRequest("lane-closure", "ev-y", "cam1", "elsewhere", now, now + 10**11)
    playbooks = {p.name: p for p in cfg.playbooks}
    restored, lapsed = pending.restore([gone, moved, *loaded[:1]], playbooks, now)
    assert [r.request.event for r in restored] == ["ev5"]
    assert [(x.request.event, x.reason) for x in lapsed] == [
        ("ev-x", "playbook no longer configured for this output"),
        ("ev-y", "playbook no longer configured for this output"),
    ]
    store.path.write_bytes(b" " * (pending.MAX_BYTES + 1))
    assert store.load() == [] and "over" in (store.damaged or "")


def test_an_unreachable_controller_shows_and_is_made_safe_when_it_answers_again(
    tmp_path: Path,
) -> None:
    with modbus_server() as sign:
        port = sign.port
    audit = Audit()
    engine = OutputEngine(unit_config(port, tmp_path), audit, guard=False)
    engine.start()
    try:
        snap = engine.snapshot()["outputs"]["sign-up"]
        assert snap["state"] == "unknown" and "unreachable" in (snap["error"] or "")
        assert snap["errors"] >= 1
        with modbus_server(port) as sign:
            sign.client.write_register(REGISTER, 1, device_id=1)
            sign.wait_register(REGISTER, 0, 5.0)  # tried again until it answers
            deadline = time.monotonic() + 5
            while engine.snapshot()["outputs"]["sign-up"]["state"] != "safe":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            engine.stop()
    finally:
        engine.stop()
    assert engine.snapshot()["outputs"]["sign-up"]["error"] is None
    retried = [d for a, d, _ in audit.records if a == "output-safe" and "error" not in d]
    assert any(d["reason"].startswith("retried after: edged started") for d in retried), retried


def guard(cfg: EdgeConfig) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.outputs.guard"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(("[" + ",".join(o.model_dump_json() for o in cfg.outputs) + "]\n").encode())
    proc.stdin.flush()
    assert proc.stdout.readline() == b"armed\n"
    return proc


@pytest.mark.parametrize("end", ["eof", "sigterm"])
def test_the_guard_makes_every_output_safe_when_its_pipe_closes_or_it_is_stopped(end: str) -> None:
    with modbus_server() as sign:
        proc = guard(sign_config(sign.port))
        try:
            sign.client.write_register(REGISTER, 1, device_id=1)
            time.sleep(0.2)
            assert sign.register(REGISTER) == 1  # armed, and quiet while edged lives
            t0 = time.monotonic()
            if end == "eof":
                assert proc.stdin is not None
                proc.stdin.close()
            else:
                proc.send_signal(signal.SIGTERM)
            t_safe = sign.wait_register(REGISTER, 0, 5.0)
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert t_safe - t0 < 1.0


def _wav(path: Path, seconds: float, rate: int = 8000) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x01\x00" * int(seconds * rate))
    return path


def audio_config(messages: Path, played: Path) -> EdgeConfig:
    # ALSA's file plugin over its null device: aplay plays in full, and what it played lands
    # in ``played`` as raw samples, so the samples count is the duration heard.
    return config.parse(f"""
[[outputs]]
name = "speaker"
meaning = "loudspeaker on the square"
kind = "audio"
states = {{ disperse = "disperse.wav", long = "long.wav" }}
max_duration_s = 10
[outputs.audio]
device = "file:FILE={played},FORMAT=raw"
messages_dir = "{messages}"
""")  # fmt: skip


def test_a_message_plays_through_alsa_in_full_and_no_longer_than_its_bound(tmp_path: Path) -> None:
    tool("aplay")
    _wav(tmp_path / "disperse.wav", 1.5)
    _wav(tmp_path / "long.wav", 4.0)
    played = tmp_path / "played.raw"
    cfg = audio_config(tmp_path, played)
    driver = AudioDriver(cfg.outputs[0])
    assert driver.check() == []
    assert wav_duration(tmp_path / "disperse.wav") == 1.5
    driver.drive("disperse", 30.0)
    assert driver.wait(10.0) == 0
    assert played.stat().st_size == 2 * 8000 * 1.5  # every sample of the 1.5 s message
    played.unlink()
    driver.drive("long", 2.0)  # a 4 s message in a 2 s action: cut at 2 s
    assert driver.wait(10.0) == 0
    assert played.stat().st_size == 2 * 8000 * 2
    driver.close()


def test_a_missing_or_damaged_message_is_an_error_not_silence(tmp_path: Path) -> None:
    _wav(tmp_path / "long.wav", 11.0)
    (tmp_path / "disperse.wav").write_bytes(b"RIFF\x00\x00garbage")
    driver = AudioDriver(audio_config(tmp_path, tmp_path / "p.raw").outputs[0])
    problems = driver.check()
    assert any("not a readable WAV" in p for p in problems), problems
    assert any("over max_duration_s" in p for p in problems), problems
    with pytest.raises(OutputError, match="not a readable WAV"):
        driver.drive("disperse", 5.0)


def test_losing_the_uplink_ends_only_the_playbooks_that_say_so(tmp_path: Path) -> None:
    with modbus_server() as sign:
        audit = Audit()
        cfg = config.with_data_dir(sign_config(sign.port, duration_s=60.0), tmp_path)
        ww = cfg.playbooks[0].model_copy(update={"safe_on_uplink_loss": True})
        cfg = cfg.model_copy(update={"playbooks": [ww, cfg.playbooks[1]]})
        engine = OutputEngine(cfg, audit, guard=False)
        alerts = hub()
        alerts.add_listener(engine.on_event)
        engine.start()
        try:
            engine.uplink_state(True)
            analytics_event(alerts, "wrong_way")
            sign.wait_register(REGISTER, 1, 2.0)
            engine.uplink_state(False)
            sign.wait_register(REGISTER, 0, 2.0)
        finally:
            engine.stop()
    safe = [d["reason"] for a, d, _ in audit.records if a == "output-safe"]
    assert "uplink lost (safe_on_uplink_loss)" in safe


def test_a_guard_that_cannot_start_leaves_the_outputs_working_and_shows(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with modbus_server() as sign:
        engine = OutputEngine(unit_config(sign.port, tmp_path), Audit())
        monkeypatch.setattr(sys, "executable", "/bin/false")  # the fault: no guard process
        engine.start()
        monkeypatch.undo()
        try:
            assert engine.snapshot()["guard_pid"] is None
            engine.manual("sign-up", "closed", 5.0, "agent")
            sign.wait_register(REGISTER, 2, 2.0)
        finally:
            engine.stop()
        assert sign.register(REGISTER) == 0


def test_a_density_event_plays_the_message_through_the_engine_and_a_missing_one_shows(
    tmp_path: Path,
) -> None:
    tool("aplay")
    _wav(tmp_path / "disperse.wav", 0.5)  # "long.wav" is missing: an installer's slip
    played = tmp_path / "played.raw"
    text = config.with_data_dir(audio_config(tmp_path, played), tmp_path).model_dump_json()
    cfg = EdgeConfig.model_validate_json(text).model_copy(
        update={
            "playbooks": [
                config.PlaybookConfig(
                    name="disperse", event="crowd_movement", output="speaker", state="disperse",
                    duration_s=5.0, confirmation=config.Confirmation.IMMEDIATE,
                )
            ]
        }
    )  # fmt: skip
    audit = Audit()
    engine = OutputEngine(cfg, audit, guard=False)
    alerts = hub()
    alerts.add_listener(engine.on_event)
    engine.start()
    try:
        snap = engine.snapshot()["outputs"]["speaker"]
        assert "long.wav" in (snap["error"] or ""), snap
        analytics_event(alerts, "crowd_movement")
        deadline = time.monotonic() + 10
        while not (played.exists() and played.stat().st_size == 2 * 8000 * 0.5):
            assert time.monotonic() < deadline, "the message was not played in full"
            time.sleep(0.05)
    finally:
        engine.stop()
    assert [d["state"] for a, d, _ in audit.records if a == "output-driven"] == ["disperse"]


def test_a_controller_on_a_modbus_rtu_line_is_driven_and_made_safe_by_the_guard(
    tmp_path: Path,
) -> None:
    with rtu_line(tmp_path) as (line, controller):
        cfg = config.parse(f"""
[[outputs]]
name = "barrier"
meaning = "lane 2 barrier, PLC on RS-485"
kind = "modbus"
states = {{ closed = 7 }}
[outputs.modbus]
transport = "rtu"
serial_port = "{line}"
parity = "N"  # a pseudo-terminal refuses parity settings; a real RS-485 line takes E
state_register = {REGISTER}
""")  # fmt: skip
        driver = ModbusDriver(cfg.outputs[0])
        driver.drive("closed", 5.0)
        driver.close()
        assert controller.register(REGISTER) == 7
        proc = guard(cfg)
        try:
            assert proc.stdin is not None
            proc.stdin.close()  # edged is gone
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert controller.register(REGISTER) == 0


def test_a_modbus_output_needs_the_settings_of_its_transport() -> None:
    base = '[[outputs]]\nname = "s"\nmeaning = "m"\nkind = "modbus"\nstates = { on = 1 }\n'
    with pytest.raises(ConfigError, match="needs serial_port"):
        config.parse(base + '[outputs.modbus]\ntransport = "rtu"\nstate_register = 1\n')
    with pytest.raises(ConfigError, match="needs host"):
        config.parse(base + "[outputs.modbus]\nstate_register = 1\n")
