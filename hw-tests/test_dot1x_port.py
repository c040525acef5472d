"""802.1X on a real unit wired to a real switch port (installer acceptance, ANSSI/CNPP R19).

Needs the unit's configuration (``/etc/edge/edge.toml``, or ``EDGE_CONFIG``) with
``dot1x.enabled = true``, wpa_supplicant running on the port (Debian's
``wpa_supplicant-wired@IFACE.service``) and an enrolled certificate. Skips with the reason
otherwise, so it is safe to run anywhere. Checks, each within a time limit:

* the port is authorised (the supplicant says AUTHENTICATED, and the uplink gate is open);
* a fresh re-authentication on request succeeds (the switch and RADIUS accept the unit now,
  not only at boot);
* the CSU answers a TCP connection through the port (``uplink.csu_url``);
* the unit certificate is not within the expiry warning window.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from edge import config
from edge.errors import Dot1xError
from edge.identity.enrolment import read_certificate_status
from edge.uplink.dot1x.ctrl import WpaCtrl
from edge.uplink.dot1x.port_state import PortState, parse_status, state_from_status
from edge.uplink.dot1x.supervisor import Dot1xSupervisor
from edge.uplink.dot1x.supplicant_conf import Dot1xSettings, settings
from edge.uplink.gate import make_gate

AUTH_TIMEOUT_S = 30.0


@pytest.fixture
def unit_cfg() -> config.EdgeConfig:
    path = Path(os.environ.get("EDGE_CONFIG", str(config.DEFAULT_CONFIG_PATH)))
    if not path.exists():
        pytest.skip(f"no unit configuration at {path} (not an installed unit)")
    cfg, _ = config.load(path)
    if not cfg.dot1x.enabled:
        pytest.skip(f"{path}: dot1x.enabled is false (802.1X not used on this unit)")
    s = settings(cfg)
    if not s.ctrl_socket.exists():
        pytest.skip(
            f"no wpa_supplicant control socket at {s.ctrl_socket}: "
            f"start wpa_supplicant-wired@{s.interface}.service"
        )
    return cfg


def port_state(s: Dot1xSettings) -> tuple[PortState, str]:
    with WpaCtrl(s.ctrl_socket) as ctrl:
        return state_from_status(parse_status(ctrl.request("STATUS")))


def wait_authenticated(s: Dot1xSettings, timeout_s: float) -> tuple[PortState, str]:
    deadline = time.monotonic() + timeout_s
    state, reason = port_state(s)
    while state is not PortState.AUTHENTICATED and time.monotonic() < deadline:
        time.sleep(0.5)
        state, reason = port_state(s)
    return state, reason


def test_port_is_authorised_and_gate_opens(unit_cfg: config.EdgeConfig) -> None:
    s = settings(unit_cfg)
    state, reason = wait_authenticated(s, AUTH_TIMEOUT_S)
    assert state is PortState.AUTHENTICATED, f"port not authorised: {reason}"
    sup = Dot1xSupervisor.from_config(unit_cfg)
    sup.start()
    try:
        gate = make_gate(unit_cfg, sup)
        assert gate.wait_open(10), gate.reason()
    finally:
        sup.stop()


def test_reauthentication_succeeds_now(unit_cfg: config.EdgeConfig) -> None:
    s = settings(unit_cfg)
    try:
        with WpaCtrl(s.ctrl_socket) as ctrl:
            assert ctrl.request("REAUTHENTICATE").strip() == "OK"
    except Dot1xError as exc:
        pytest.fail(f"cannot ask the supplicant to re-authenticate: {exc}")
    time.sleep(1)
    state, reason = wait_authenticated(s, AUTH_TIMEOUT_S)
    assert state is PortState.AUTHENTICATED, f"re-authentication failed: {reason}"


def test_csu_reachable_through_the_port(unit_cfg: config.EdgeConfig) -> None:
    uplink = getattr(unit_cfg, "uplink", None)
    url = getattr(uplink, "csu_url", None)
    if not url or not getattr(uplink, "enabled", False):
        pytest.skip("uplink.csu_url not configured or uplink disabled: nothing to reach")
    parts = urlsplit(str(url))
    if not parts.hostname:
        pytest.skip(f"uplink.csu_url {url!r} has no host name")
    state, reason = wait_authenticated(settings(unit_cfg), AUTH_TIMEOUT_S)
    assert state is PortState.AUTHENTICATED, f"port not authorised: {reason}"
    port = parts.port or 443
    try:
        with socket.create_connection((parts.hostname, port), timeout=10):
            pass
    except OSError as exc:
        pytest.fail(f"CSU {parts.hostname}:{port} unreachable with the port authorised: {exc}")


def test_certificate_not_expiring(unit_cfg: config.EdgeConfig) -> None:
    s = settings(unit_cfg)
    status = read_certificate_status(
        s.client_cert, warning_days=unit_cfg.dot1x.expiry_warning_days, ca_path=s.server_ca
    )
    assert status.get("present"), status.get("warning")
    assert status.get("warning") is None, status["warning"]
