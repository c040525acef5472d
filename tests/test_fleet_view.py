"""The fleet view's pure parts: which slot runs, and what the CSU keeps of a unit's report
(a hostile unit's header is bounded, typed, or dropped). The end-to-end view, a real unit
reporting to a real receiver: tests/test_signed_config.py (fetch over mutual TLS)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from edge.csu.fleet_cmd import UpdateGoal, plan_waves, roll_out
from edge.csu.receiver.server import _fleet_report
from edge.csu.serve_cmd import fleet_line
from edge.errors import ConfigError
from edge.slots import running_slot


@pytest.mark.parametrize(
    ("cmdline", "slot"),
    [
        ("root=LABEL=edge-root-a rootfstype=ext4 ro quiet", "A"),
        ("root=LABEL=edge-root-b ro", "B"),
        ("console=ttyAMA0 root=PARTUUID=1a2b3c4d-02 rootwait", "A"),
        ("root=PARTUUID=1a2b3c4d-03 rootwait", "B"),
        ("rauc.slot=B root=/dev/mmcblk0p3", "B"),
        ("rauc.slot=rootfs.0 root=/dev/sda2", "A"),
        ("root=/dev/sda1 ro", None),
        ("root=LABEL=edge-root-ab", None),
    ],
)
def test_the_running_slot_comes_from_the_kernel_command_line(cmdline: str, slot: str) -> None:
    assert running_slot(cmdline) == slot


def test_the_csu_keeps_a_units_report_typed_and_bounded() -> None:
    good = {
        "version": "0.2.0",
        "slot": "B",
        "last_update": {"result": "installed", "version": "0.2.0", "at": 1.5},
        "config_digest": "ab" * 32,
        "config_documents": {"unit:u-1": 3, "group:nord": 7},
        "groups": ["nord", "rpi-cams"],
        "config_refused": None,
    }
    assert _fleet_report(json.dumps(good)) == good
    hostile = dict(
        good,
        slot="C; rm -rf /",
        config_documents={"unit:u-1": "3", "x" * 500: 1, "ok": True},
        last_update={"result": "x" * 1000, "nested": {"a": 1}},
        groups=["nord", "../etc", 7, "Sud"] + [f"g{i}" for i in range(40)],
    )
    kept = _fleet_report(json.dumps(hostile))
    assert kept is not None
    assert kept["slot"] is None
    assert kept["config_documents"] == {"x" * 80: 1}
    assert kept["last_update"] == {"result": "x" * 300}
    assert kept["groups"] == ["nord"] + [f"g{i}" for i in range(12)]
    assert _fleet_report("not json") is None
    assert _fleet_report(json.dumps(["list"])) is None
    assert _fleet_report(json.dumps({"version": 3})) is None
    assert _fleet_report("{" + " " * 5000 + "}") is None
    line = fleet_line(good)
    assert line == (
        f"v0.2.0 slot B, last update installed 0.2.0, config {'ab' * 6}… "
        "(group:nord v7, unit:u-1 v3)"
    )


# --- edge-csu fleet config: waves -----------------------------------------------------------


def test_waves_are_cumulative_and_forget_no_unit() -> None:
    units = [f"u{i:02d}" for i in range(10)]
    assert plan_waves(units, "1,25%,100%") == [units[:1], units[1:3], units[3:]]
    assert plan_waves(units, "1") == [units[:1], units[1:]]
    assert plan_waves(units, "50%,50%,100%") == [units[:5], units[5:]]
    assert plan_waves(units[:1], "1,50%,100%") == [units[:1]]
    with pytest.raises(ConfigError, match="not a count"):
        plan_waves(units, "1,half")
    with pytest.raises(ConfigError, match="empty wave"):
        plan_waves(units, "0,100%")


class FleetSim:
    """Units that apply (or refuse, or ignore) what is written for them, as reports show."""

    def __init__(self, behaviour: dict[str, str], stale: dict[str, str] | None = None) -> None:
        self.behaviour = behaviour
        self.written: list[str] = []
        self.reports: dict[str, dict[str, Any]] = {
            u: {"config_documents": {}, "config_refused": (stale or {}).get(u)} for u in behaviour
        }
        self.now = 0.0

    def write(self, unit: str) -> None:
        self.written.append(unit)
        what = self.behaviour[unit]
        if what == "apply":
            self.reports[unit]["config_documents"] = {f"unit:{unit}": 5}
        elif what == "refuse":
            self.reports[unit]["config_refused"] = "camera 'cam9' is not on this unit"

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _roll(sim: FleetSim, spec: str = "1,50%,100%") -> dict[str, Any]:
    return roll_out(
        plan_waves(sorted(sim.behaviour), spec),
        write=sim.write,
        reports=lambda: sim.reports,
        version=5,
        wait_s=30,
        clock=lambda: sim.now,
        sleep=sim.sleep,
    )


def test_a_roll_out_goes_wave_by_wave_and_stops_at_the_first_refusal_or_silence() -> None:
    everyone = FleetSim({u: "apply" for u in ("a", "b", "c", "d")})
    done = _roll(everyone)
    assert done["stopped"] is None and everyone.written == ["a", "b", "c", "d"]
    assert [w["units"] for w in done["waves"]] == [["a"], ["b"], ["c", "d"]]

    canary_refuses = FleetSim({"a": "refuse", "b": "apply", "c": "apply"})
    stopped = _roll(canary_refuses)
    assert canary_refuses.written == ["a"], "later waves must get nothing"
    assert "a refused version 5: camera 'cam9'" in stopped["stopped"]

    silent = FleetSim({"a": "apply", "b": "ignore", "c": "apply", "d": "apply"})
    stopped = _roll(silent)
    assert silent.written == ["a", "b"] and silent.now >= 30
    assert stopped["stopped"] == "b did not report version 5 within 30 s"

    # A refusal the unit reported before this roll-out is about an earlier document.
    stale = FleetSim({"a": "apply", "b": "apply"}, stale={"a": "an older refusal"})
    assert _roll(stale, "1,100%")["stopped"] is None


class UpdateSim:
    """Units offered a bundle: they run it confirmed, roll back, or say nothing, as reports
    show (``version``, ``last_update``)."""

    def __init__(self, behaviour: dict[str, str], earlier: dict[str, Any] | None = None) -> None:
        self.behaviour = behaviour
        self.offered: list[str] = []
        self.reports: dict[str, dict[str, Any]] = {
            u: {"version": "0.1.0", "last_update": earlier} for u in behaviour
        }
        self.now = 0.0

    def write(self, unit: str) -> None:
        self.offered.append(unit)
        report = self.reports[unit]
        what = self.behaviour[unit]
        if what == "good":
            report.update(version="0.2.0", last_update={"result": "good", "version": "0.2.0"})
        elif what == "pending":  # installed, rebooted, not confirmed yet: not done
            report.update(version="0.2.0", last_update={"result": "installed", "version": "0.2.0"})
        elif what == "rolls-back":
            report["last_update"] = {
                "result": "rolled-back",
                "version": "0.2.0",
                "reason": "the unit booted 0.1.0 (slot A), not the installed 0.2.0",
            }

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _offer(sim: UpdateSim, spec: str = "1,50%,100%") -> dict[str, Any]:
    return roll_out(
        plan_waves(sorted(sim.behaviour), spec),
        write=sim.write,
        reports=lambda: sim.reports,
        goal=UpdateGoal("0.2.0"),
        wait_s=30,
        clock=lambda: sim.now,
        sleep=sim.sleep,
    )


def test_a_bundle_goes_wave_by_wave_and_stops_at_the_first_roll_back_or_silence() -> None:
    everyone = UpdateSim({u: "good" for u in ("a", "b", "c", "d")})
    done = _offer(everyone)
    assert done["stopped"] is None and everyone.offered == ["a", "b", "c", "d"]
    assert [w["result"] for w in done["waves"]] == ["version 0.2.0 in effect"] * 3

    canary_rolls_back = UpdateSim({"a": "rolls-back", "b": "good", "c": "good"})
    stopped = _offer(canary_rolls_back)
    assert canary_rolls_back.offered == ["a"], "later waves must get nothing"
    assert stopped["stopped"] == (
        "a rolled-back the update to 0.2.0: the unit booted 0.1.0 (slot A), not the installed 0.2.0"
    )

    # Running the new version but not confirmed (mark-good) is not done: it times out.
    unconfirmed = UpdateSim({"a": "good", "b": "pending", "c": "good"})
    stopped = _offer(unconfirmed)
    assert unconfirmed.offered == ["a", "b"] and unconfirmed.now >= 30
    assert stopped["stopped"] == "b did not report version 0.2.0 within 30 s"

    # A roll-back reported before this roll-out is about an earlier update.
    stale = UpdateSim(
        {"a": "good", "b": "good"}, earlier={"result": "rolled-back", "version": "0.1.5"}
    )
    assert _offer(stale, "1,100%")["stopped"] is None
