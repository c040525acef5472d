"""Playbooks as pure policy, and the outputs' configuration schema (no thread, no socket)."""

from __future__ import annotations

from typing import Any

import pytest

from edge import config
from edge.errors import ConfigError
from edge.outputs.playbooks import PlaybookPolicy

BASE = """
[[cameras]]
id = "cam1"

[[outputs]]
name = "sign-up"
meaning = "WRONG WAY sign 200 m upstream"
kind = "modbus"
states = { wrong-way = 1, closed = 2 }
max_duration_s = 120
[outputs.modbus]
host = "192.0.2.10"
state_register = 10

[[playbooks]]
name = "wrong-way-warning"
event = "wrong_way"
output = "sign-up"
state = "wrong-way"
duration_s = 60
confirmation = "immediate"
safe_on_uplink_loss = true

[[playbooks]]
name = "lane-closure"
event = "gathering"
camera = "cam1"
output = "sign-up"
state = "closed"
duration_s = 90
confirm_within_s = 30
"""

T0_NS = 1_800_000_000 * 10**9


def policy() -> PlaybookPolicy:
    cfg = config.parse(BASE)
    return PlaybookPolicy(cfg.outputs, cfg.playbooks)


def event(kind: str, *, id_: str = "e1", age_s: float = 0.0, **extra: Any) -> dict[str, Any]:
    body = {"id": id_, "kind": kind, "camera": "cam1", "rule": "r", "state": None}
    return {**body, "wall_ns": T0_NS - int(age_s * 1e9), **extra}


def test_an_immediate_playbook_drives_at_once_and_returns_to_safe_after_its_duration() -> None:
    p = policy()
    [d] = p.on_event(event("wrong_way"), 100.0, T0_NS)
    assert (d.kind, d.output, d.state, d.until, d.playbook) == (
        "drive", "sign-up", "wrong-way", 160.0, "wrong-way-warning"
    )  # fmt: skip
    assert p.tick(159.9) == []
    [end] = p.tick(160.0)
    assert (end.kind, end.output, end.event_id) == ("safe", "sign-up", "e1")
    assert p.active == {} and p.tick(500.0) == []


def test_a_playbook_that_needs_an_agent_waits_for_the_confirmation_and_lapses_without() -> None:
    p = policy()
    [req] = p.on_event(event("gathering"), 10.0, T0_NS)
    assert req.kind == "request" and p.active == {}
    [d] = p.confirm("e1", "lane-closure", "agent dupont", 20.0)
    assert (d.kind, d.state, d.agent, d.until) == ("drive", "closed", "agent dupont", 110.0)
    with pytest.raises(KeyError):  # confirmed once: a second confirmation finds nothing
        p.confirm("e1", "lane-closure", "agent dupont", 21.0)
    [end] = p.tick(110.0)
    assert (end.kind, end.event_id) == ("safe", "e1")
    p.on_event(event("gathering", id_="e2"), 200.0, T0_NS)
    [lapsed] = p.tick(230.0)
    assert (lapsed.kind, lapsed.event_id) == ("lapsed", "e2")
    with pytest.raises(KeyError):
        p.confirm("e2", "lane-closure", "agent late", 231.0)


def test_one_event_waits_for_each_of_its_playbooks_confirmations_apart() -> None:
    """Excessive density may ask for an audio message and a lane closure, each confirmed (or
    not) by an agent: confirming one leaves the other waiting, and each lapses on its own."""
    cfg = config.parse(
        BASE
        + """
[[playbooks]]
name = "lane-sign"
event = "gathering"
output = "sign-up"
state = "wrong-way"
duration_s = 30
confirm_within_s = 60
"""
    )
    p = PlaybookPolicy(cfg.outputs, cfg.playbooks)
    requests = p.on_event(event("gathering"), 10.0, T0_NS)
    assert sorted((r.kind, r.playbook) for r in requests) == [
        ("request", "lane-closure"), ("request", "lane-sign")
    ]  # fmt: skip
    [d] = p.confirm("e1", "lane-sign", "agent dupont", 20.0)
    assert (d.kind, d.state, d.playbook) == ("drive", "wrong-way", "lane-sign")
    [lapsed] = [x for x in p.tick(40.0) if x.kind == "lapsed"]  # lane-closure: 30 s window
    assert (lapsed.playbook, lapsed.event_id) == ("lane-closure", "e1")
    with pytest.raises(KeyError):
        p.confirm("e1", "lane-closure", "agent late", 41.0)


def test_events_that_must_start_nothing() -> None:
    p = policy()
    assert p.on_event(event("wrong_way", state="cleared"), 0.0, T0_NS) == []
    assert p.on_event(event("gathering", camera="cam9"), 0.0, T0_NS) == []
    assert p.on_event(event("parking_overstay"), 0.0, T0_NS) == []
    [old] = p.on_event(event("wrong_way", age_s=11.0), 0.0, T0_NS)
    assert old.kind == "ignored" and p.active == {}


def test_uplink_loss_ends_only_the_playbooks_that_say_so() -> None:
    p = policy()
    p.on_event(event("wrong_way"), 0.0, T0_NS)
    [end] = p.on_uplink(False)
    assert (end.kind, end.playbook) == ("safe", "wrong-way-warning")
    p.on_event(event("gathering", id_="e3"), 0.0, T0_NS)
    p.confirm("e3", "lane-closure", "agent", 1.0)
    assert p.on_uplink(False) == [] and "sign-up" in p.active


def test_a_manual_command_is_bounded_by_the_outputs_maximum() -> None:
    p = policy()
    [d] = p.manual("sign-up", "closed", 10_000.0, "agent", 0.0)
    assert d.until == 120.0
    [end] = p.manual("sign-up", "safe", 0.0, "agent", 1.0)
    assert (end.kind, end.agent) == ("safe", "agent")
    with pytest.raises(KeyError):
        p.manual("sign-up", "open-sesame", 1.0, "agent", 0.0)


def test_end_all_makes_every_output_safe_even_an_idle_one() -> None:
    p = policy()
    assert [d.output for d in p.end_all("edged stopping")] == ["sign-up"]


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        (('state = "closed"\nduration_s = 90', 'state = "open"\nduration_s = 90'),
         "playbooks[1].state", "has no state 'open'"),
        (("duration_s = 90", "duration_s = 900"), "playbooks[1].duration_s", "max_duration_s"),
        (('camera = "cam1"', 'camera = "cam2"'), "playbooks[1].camera", "not among the cameras"),
        (('output = "sign-up"\nstate = "closed"', 'output = "sign"\nstate = "closed"'),
         "playbooks[1].output", "no output named"),
        (("closed = 2", "closed = 0"), "outputs[0]", "is the safe state"),
        (("state_register = 10", "state_register = 10\nnoise = 1"),
         "outputs[0].modbus.noise", "unknown key"),
        (('confirm_within_s = 30', 'confirmation = "maybe"'),
         "playbooks[1].confirmation", "'required' or 'immediate'"),
    ],
)  # fmt: skip
def test_configuration_errors_name_the_key_and_its_line(
    change: tuple[str, str], key: str, words: str
) -> None:
    text = BASE.replace(*change)
    assert text != BASE
    with pytest.raises(ConfigError) as err:
        config.parse(text, path="cabinet.toml")
    message = str(err.value)
    assert message.startswith("cabinet.toml:"), message
    assert f": {key}: " in message and words in message, message
    line = int(message.split(":")[1])
    assert key.split(".")[-1].split("[")[0] in text.splitlines()[line - 1] or key == "outputs[0]"


def test_an_output_needs_the_table_of_its_kind_and_only_that() -> None:
    with pytest.raises(ConfigError, match=r"needs its \[outputs.gpio\] table"):
        config.parse(BASE.replace('kind = "modbus"', 'kind = "gpio"'))
    audio = BASE.replace('kind = "modbus"', 'kind = "audio"').replace(
        '[outputs.modbus]\nhost = "192.0.2.10"\nstate_register = 10', "[outputs.audio]"
    )
    with pytest.raises(ConfigError, match=r"must name a .wav file"):
        config.parse(audio)
    audio = audio.replace("wrong-way = 1, closed = 2", 'wrong-way = "ww.wav", closed = "../x.wav"')
    with pytest.raises(ConfigError, match=r"state 'closed' must name a .wav file"):
        config.parse(audio)


def test_the_operations_guide_example_is_a_valid_configuration() -> None:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "OPERATIONS.md").read_text()
    chapter = text[text.index("## 8. Cabinet outputs") :]
    block = re.search(r"```toml\n(.*?)```", chapter, re.S)
    assert block is not None
    cfg = config.parse(block.group(1), path="OPERATIONS.md")
    assert [o.kind.value for o in cfg.outputs] == ["modbus", "modbus", "gpio", "audio"]
    assert [p.confirmation.value for p in cfg.playbooks] == ["immediate", "required"]
