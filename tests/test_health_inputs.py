"""Door switch debounce, hot-plug classification, alert hub, machine-health readers."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.app.alerts import AlertHub
from edge.events import EventSigner, SignedEvent, verify_wire
from edge.health import system
from edge.health.door import DoorLogic, parse_spec
from edge.health.hotplug import classify


def test_door_debounce_and_transitions() -> None:
    door = DoorLogic(debounce_s=0.2)
    assert door.feed(False, 0.0) is False  # first reading sets the state
    assert door.feed(True, 1.0) is None  # a bounce is not yet a change
    assert door.feed(False, 1.05) is None
    assert door.feed(True, 2.0) is None
    assert door.feed(True, 2.1) is None
    assert door.feed(True, 2.25) is True  # stable for 0.25 s: door opened
    assert door.feed(True, 3.0) is None
    assert door.feed(False, 4.0) is None
    assert door.feed(False, 4.3) is False
    assert door.openings == 1


def test_door_spec_parsing() -> None:
    spec = parse_spec("gpio:/dev/gpiochip0:17:active-low")
    assert (spec.kind, spec.device, spec.line, spec.active_low) == (
        "gpio",
        "/dev/gpiochip0",
        17,
        True,
    )
    spec = parse_spec("input:/dev/input/by-path/platform-door-event:SW_LID")
    assert (spec.kind, spec.code) == ("input", "SW_LID")
    with pytest.raises(ValueError, match="expected gpio"):
        parse_spec("gpio:17")


def test_hotplug_classification() -> None:
    cam = classify("video4linux", "remove", "/dev/video0", {"ID_V4L_PRODUCT": "USB Camera"})
    assert cam is not None and (cam.kind, cam.action) == ("camera", "remove")
    assert "USB Camera" in cam.description
    disk = classify("block", "add", "/dev/sda1", {"DEVTYPE": "partition", "ID_FS_LABEL": "EXPORT"})
    assert disk is not None and disk.kind == "storage"
    assert classify("net", "add", "/dev/x", {}) is None
    assert classify("video4linux", "change", "/dev/video0", {}) is None


def test_alert_hub_signs_raises_once_and_clears() -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    hub = AlertHub(EventSigner(key, "cab-1"))
    seen: list[SignedEvent] = []
    hub.add_listener(seen.append)
    hub.raise_alert("cabinet-door-open", "unit", "cabinet door opened")
    hub.raise_alert("cabinet-door-open", "unit", "cabinet door opened")  # still open: no storm
    assert hub.active() == ["cabinet-door-open (unit)"]
    hub.clear_alert("cabinet-door-open", "unit", "cabinet door closed")
    hub.clear_alert("cabinet-door-open", "unit", "cabinet door closed")
    assert [e.body["state"] for e in seen] == ["raised", "cleared"]
    assert hub.active() == []
    body = verify_wire(seen[0].wire(), key.public_key())
    assert body["unit"] == "cab-1" and body["details"]["message"] == "cabinet door opened"
    assert [r["state"] for r in hub.snapshot()["recent"]] == ["raised", "cleared"]


def test_failing_listener_does_not_stop_others() -> None:
    hub = AlertHub(EventSigner(ed25519.Ed25519PrivateKey.generate(), "cab-1"))
    seen: list[SignedEvent] = []

    def broken(_event: SignedEvent) -> None:
        raise RuntimeError("consumer down")

    hub.add_listener(broken)
    hub.add_listener(seen.append)
    hub.raise_alert("camera-lost", "cam1", "no frame for 6 s")
    assert len(seen) == 1


def test_thermal_and_throttling_readers(tmp_path: Path) -> None:
    zone = tmp_path / "class/thermal/thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "temp").write_text("61234\n")
    (zone / "type").write_text("cpu-thermal\n")
    [reading] = system.thermal_zones(tmp_path)
    assert (reading.kind, reading.celsius) == ("cpu-thermal", 61.234)
    fw = tmp_path / "devices/platform/soc/soc:firmware"
    fw.mkdir(parents=True)
    (fw / "get_throttled").write_text("50005\n")
    assert system.throttling(tmp_path) == [
        "under-voltage now",
        "throttled now",
        "under-voltage has occurred",
        "throttling has occurred",
    ]
    assert system.throttling(tmp_path / "absent") is None


def test_chrony_tracking_parse() -> None:
    line = (
        "C0A80001,ntp1.ville.fr,2,1732800000.1,0.000123,-0.000010,0.000020,-12.3,0.01,0.02,"
        "0.001,0.002,64.0,Normal"
    )
    sync = system.parse_chrony_tracking(line)
    assert sync.synchronised and sync.stratum == 2 and sync.offset_s == pytest.approx(0.000123)
    unsynced = system.parse_chrony_tracking(line.replace("Normal", "Not synchronised"))
    assert not unsynced.synchronised
