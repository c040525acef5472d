"""Signed commands to the cabinet outputs, checked on the unit with real certificates from the
video CA and a real sign controller (pymodbus's server): forged, unsigned, replayed, expired,
other-unit, out-of-scope and non-operator commands change nothing and are audited."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge import config
from edge.csu.ca import Profile, VideoCA
from edge.csu.receiver.commands import CommandQueue
from edge.errors import CommandError
from edge.outputs import commands
from edge.outputs.commands import CommandInbox
from edge.outputs.engine import OutputEngine
from tests.modbus_util import SignController, modbus_server
from tests.test_outputs import REGISTER, Audit, sign_config


@dataclass
class Lab:
    cfg: config.EdgeConfig
    sign: SignController
    engine: OutputEngine
    inbox: CommandInbox
    audit: Audit
    ca: VideoCA
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate
    told: list[tuple[str, dict[str, Any]]]

    def command(self, **overrides: object) -> bytes:
        fields: dict[str, object] = {
            "kind": "manual", "unit": "demo-unit", "outputs": ["sign-up"],
            "output": "sign-up", "state": "closed", "duration_s": 30.0,
        }  # fmt: skip
        fields.update(overrides)
        fields = {k: v for k, v in fields.items() if v is not None}
        key = fields.pop("key", self.key)
        cert = fields.pop("cert", self.cert)
        return commands.sign(key, cert, **fields)  # type: ignore[arg-type]

    def refusals(self) -> list[str]:
        return [str(d["reason"]) for a, d, _ in self.audit.records if a == "output-command-refused"]


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    ca = VideoCA.init(tmp_path / "ca")
    key, cert = ca.issue("agent-dupont", profile=Profile.OPERATOR)
    with modbus_server() as sign:
        cfg = config.with_data_dir(sign_config(sign.port), tmp_path / "unit")
        audit = Audit()
        told: list[tuple[str, dict[str, Any]]] = []  # the signed events the CSU would get
        engine = OutputEngine(
            cfg, audit, guard=False, notify=lambda kind, details: told.append((kind, details))
        )
        engine.start()
        inbox = CommandInbox(cfg, engine, audit, [ca.sub_cert, ca.root_cert])
        try:
            yield Lab(cfg, sign, engine, inbox, audit, ca, key, cert, told)
        finally:
            engine.stop()


def settle(lab: Lab) -> None:
    """Give the engine's thread time to act on anything queued (nothing should be)."""
    time.sleep(0.3)


def test_an_operators_signed_command_drives_the_output_and_names_the_agent(lab: Lab) -> None:
    assert lab.inbox.handle(lab.command())
    lab.sign.wait_register(REGISTER, 2, 2.0)
    accepted = [(d, who) for a, d, who in lab.audit.records if a == "output-command-accepted"]
    assert accepted and accepted[0][1].startswith("operator agent-dupont (certificate ")
    driven = [who for a, _, who in lab.audit.records if a == "output-driven"]
    assert driven == [accepted[0][1]]
    assert lab.inbox.handle(lab.command(state="safe"))
    lab.sign.wait_register(REGISTER, 0, 2.0)


def _forge(envelope: bytes) -> bytes:
    doc = json.loads(envelope)
    body = json.loads(base64.b64decode(doc["body"]))
    body["state"] = "wrong-way"  # an impostor on the link changes what the agent signed
    doc["body"] = base64.b64encode(json.dumps(body).encode()).decode()
    return json.dumps(doc).encode()


def _unsign(envelope: bytes) -> bytes:
    doc = json.loads(envelope)
    doc["signature"] = ""
    return json.dumps(doc).encode()


def test_bad_commands_change_nothing_and_each_refusal_is_audited(lab: Lab, tmp_path: Path) -> None:
    good = lab.command()
    other_ca = VideoCA.init(tmp_path / "other-ca")
    stranger_key, stranger_cert = other_ca.issue("agent-dupont", profile=Profile.OPERATOR)
    unit_key, unit_cert = lab.ca.issue("demo-unit", profile=Profile.CLIENT)
    past = time.time_ns() - 600 * 10**9
    bad = {
        "forged": _forge(good),
        "unsigned": _unsign(good),
        "expired": lab.command(now_ns=past, lifetime_s=60),
        "other unit": lab.command(unit="cam-sud-0002"),
        "out of scope": lab.command(outputs=["speaker"]),
        "unknown output": lab.command(output="barrier", outputs=["barrier"]),
        "too long-lived": lab.command(lifetime_s=3600),
        "from another CA": lab.command(key=stranger_key, cert=stranger_cert),
        "a unit's TLS key": lab.command(key=unit_key, cert=unit_cert),
        "garbage": b'{"v": 1, "body": "not base64!"}',
    }
    for name, envelope in bad.items():
        assert not lab.inbox.handle(envelope), name
    settle(lab)
    assert lab.sign.register(REGISTER) == 0
    reasons = lab.refusals()
    assert len(reasons) == len(bad), reasons
    expected = [
        "signature does not verify", "unsigned", "expired", "for unit 'cam-sud-0002'",
        "outside the command's scope", "no output 'barrier'", "lives over",
        "certificate refused", "not an operator certificate", "not a signed command",
    ]  # fmt: skip
    for reason, words in zip(reasons, expected, strict=True):
        assert words in reason, (words, reason)
    assert not any(a in ("output-driven", "output-command-accepted")
                   for a, _, _ in lab.audit.records)  # fmt: skip


def test_a_replayed_command_is_refused_even_after_a_restart(lab: Lab) -> None:
    envelope = lab.command(duration_s=1.0)
    assert lab.inbox.handle(envelope)
    lab.sign.wait_register(REGISTER, 2, 2.0)
    lab.sign.wait_register(REGISTER, 0, 3.0)  # its second is over
    assert not lab.inbox.handle(envelope)
    restarted = CommandInbox(lab.cfg, lab.engine, lab.audit, [lab.ca.sub_cert, lab.ca.root_cert])
    assert not restarted.handle(envelope)
    settle(lab)
    assert lab.sign.register(REGISTER) == 0
    assert [r for r in lab.refusals() if "replayed" in r] == [lab.refusals()[0]] * 2


def test_a_confirmation_for_no_waiting_request_changes_nothing(lab: Lab) -> None:
    envelope = lab.command(kind="confirm", playbook="lane-closure", event="e-none",
                           output=None, state=None, duration_s=None)  # fmt: skip
    # The signature and scope are right: the inbox accepts it, the engine finds no request.
    assert lab.inbox.handle(envelope)
    settle(lab)
    assert lab.sign.register(REGISTER) == 0
    assert any("no request of playbook 'lane-closure'" in r for r in lab.refusals())


def test_the_receivers_queue_offers_each_command_once_and_refuses_a_second_copy(
    lab: Lab, tmp_path: Path
) -> None:
    queue = CommandQueue(tmp_path / "commands")
    envelope = lab.command()
    queue.queue("demo-unit", envelope)
    with pytest.raises(CommandError, match="already queued"):
        queue.queue("demo-unit", envelope)
    [(nonce, data)] = queue.pending("demo-unit")
    assert data == envelope and commands.nonce_of(envelope) == nonce
    assert queue.done("demo-unit", nonce) and queue.pending("demo-unit") == []
    assert queue.is_done("demo-unit", nonce)
    expired = lab.command(now_ns=time.time_ns() - 10**12, lifetime_s=60)
    queue.queue("demo-unit", expired)
    assert queue.pending("demo-unit") == []  # not offered: it can only be refused


def test_a_damaged_nonce_store_is_kept_aside_and_audited(lab: Lab) -> None:
    store = lab.cfg.unit.data_dir / "outputs" / "command-nonces.json"
    assert lab.inbox.handle(lab.command())
    store.write_bytes(b"\x00torn")  # a power cut in the middle of someone else's write
    audit = type(lab.audit)()
    inbox = CommandInbox(lab.cfg, lab.engine, audit, [lab.ca.sub_cert, lab.ca.root_cert])
    [(action, details, _)] = audit.records
    assert action == "output-command-nonces-damaged" and "kept as" in str(details["reason"])
    assert [p.name for p in store.parent.glob("command-nonces.json.damaged-*")]
    assert inbox.handle(lab.command())  # commands still work, on a new store
    assert store.exists()


def test_the_csu_hears_of_every_refused_command(lab: Lab) -> None:
    """A forged or replayed command, or a confirmation nothing waits for, is refused on the unit
    and also told to the CSU as a signed output event, so agents see it, not only the unit's log."""
    forger, forged_cert = VideoCA.init(lab.cfg.unit.data_dir.parent / "other-ca").issue(
        "agent-x", profile=Profile.OPERATOR
    )
    assert not lab.inbox.handle(lab.command(key=forger, cert=forged_cert))
    genuine = lab.command()
    assert lab.inbox.handle(genuine) and not lab.inbox.handle(genuine)  # replayed
    assert lab.inbox.handle(
        lab.command(kind="confirm", playbook="lane-closure", event="no-such-event",
                    output=None, state=None, duration_s=None)
    )  # fmt: skip
    deadline = time.monotonic() + 5
    while len(refused := [d for k, d in lab.told if k == "output-command-refused"]) < 3:
        assert time.monotonic() < deadline, lab.told
        time.sleep(0.02)
    assert [d["agent"] for d in refused][1:] == [refused[1]["agent"]] * 2
    assert refused[1]["agent"].startswith("operator agent-dupont")
    assert "replayed" in refused[1]["reason"] and refused[2]["event"] == "no-such-event"
    assert all(d["message"].startswith("command of ") for d in refused)
    assert len(refused) == len(lab.refusals()) == 3
