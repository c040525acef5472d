"""Cabinet outputs with real components: pymodbus's own server as the sign controller, ALSA's
aplay for the audio channel, the guard as a real process."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import wave
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge import config
from edge.app.alerts import AlertHub
from edge.config import EdgeConfig
from edge.errors import ConfigError, OutputError
from edge.events import EventSigner
from edge.outputs.audio import AudioDriver, wav_duration
from edge.outputs.engine import OutputEngine
from edge.outputs.modbus import ModbusDriver
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


def test_a_wrong_way_event_drives_the_sign_at_once_and_clears_it_after_its_duration() -> None:
    with modbus_server() as sign:
        audit = Audit()
        engine = OutputEngine(sign_config(sign.port), audit, guard=False)
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


def settled(engine: OutputEngine, output: str, state: str, timeout: float = 5.0) -> Any:
    """The output's status once the engine recorded ``state`` (it drives, then records)."""
    deadline = time.monotonic() + timeout
    while (st := engine.snapshot()["outputs"][output])["state"] != state:
        assert time.monotonic() < deadline, f"{output} never recorded {state}: {st}"
        time.sleep(0.01)
    return st


def test_a_playbook_that_needs_an_agent_changes_nothing_until_confirmed() -> None:
    with modbus_server() as sign:
        audit = Audit()
        engine = OutputEngine(sign_config(sign.port), audit, guard=False)
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


def test_an_unreachable_controller_shows_and_is_made_safe_when_it_answers_again() -> None:
    with modbus_server() as sign:
        port = sign.port
    audit = Audit()
    engine = OutputEngine(sign_config(port), audit, guard=False)
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


def test_losing_the_uplink_ends_only_the_playbooks_that_say_so() -> None:
    with modbus_server() as sign:
        audit = Audit()
        cfg = sign_config(sign.port, duration_s=60.0).model_copy()
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
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with modbus_server() as sign:
        engine = OutputEngine(sign_config(sign.port), Audit())
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
    text = audio_config(tmp_path, played).model_dump_json()
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
