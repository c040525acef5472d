"""802.1X EAP-TLS against real hostapd, FreeRADIUS and wpa_supplicant in network namespaces.

Each test builds a fresh lab (tests/dot1x_lab.py): the unit's wpa_supplicant runs the
configuration our code rendered, our supervisor watches it, and the uplink gate is judged.
"""

from __future__ import annotations

import datetime as dt
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from edge.csu.ca import Profile, VideoCA
from edge.uplink.dot1x.port_state import PortState
from edge.uplink.dot1x.supervisor import Dot1xAlert, Dot1xSupervisor
from edge.uplink.dot1x.supplicant_conf import Dot1xSettings, render
from edge.uplink.gate import Dot1xGate

from .conftest import require_root, tool
from .dot1x_lab import SERVER_NAME, SWITCH_IP, Creds, Lab, wait_until

pytestmark = pytest.mark.root

UNIT_ID = "unit-0042"


@dataclass
class Pki:
    creds: Creds
    server: tuple[Path, Path]
    unit: tuple[Path, Path]
    unit_other_ca: tuple[Path, Path]
    unit_expired: tuple[Path, Path]
    unit_revoked: tuple[Path, Path]
    server_other_ca: tuple[Path, Path]
    server_wrong_name: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    root = tmp_path_factory.mktemp("pki")
    # Created 60 days ago, so the expired unit certificate was valid under it once.
    created = dt.datetime.now(dt.UTC) - dt.timedelta(days=60)
    ca = VideoCA.init(root / "ca", now=created)
    other = VideoCA.init(root / "other-ca", organisation="Another city", now=created)
    creds = Creds(root, ca)
    w = creds.write
    server = w("server", *ca.issue(SERVER_NAME, profile=Profile.SERVER, dns_names=(SERVER_NAME,)))
    unit = w("unit", *ca.issue(UNIT_ID))
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
    expired = w("unit-expired", *ca.issue(UNIT_ID, days=10, not_before=past))
    revoked_key, revoked_cert = ca.issue(UNIT_ID)
    ca.revoke(revoked_cert.serial_number)
    revoked = w("unit-revoked", revoked_key, revoked_cert)
    other_unit = w("unit-other-ca", *other.issue(UNIT_ID))
    other_server = w(
        "server-other-ca",
        *other.issue(SERVER_NAME, profile=Profile.SERVER, dns_names=(SERVER_NAME,)),
    )
    wrong_name = w(
        "server-wrong-name",
        *ca.issue("evil.example.net", profile=Profile.SERVER, dns_names=("evil.example.net",)),
    )
    return Pki(creds, server, unit, other_unit, expired, revoked, other_server, wrong_name)


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short directory: control socket paths must stay under 108 bytes."""
    require_root()
    for name in ("hostapd", "wpa_supplicant", "freeradius", "nft", "ip"):
        tool(name)
    path = Path(tempfile.mkdtemp(prefix="e1x-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@dataclass
class Unit:
    lab: Lab
    supervisor: Dot1xSupervisor
    gate: Dot1xGate
    alerts: list[Dot1xAlert]


@pytest.fixture
def run_unit(workdir: Path, pki: Pki) -> Iterator[object]:
    started: list[Unit] = []
    labs: list[Lab] = []

    def start(
        unit: tuple[Path, Path],
        *,
        radius: bool = False,
        server: tuple[Path, Path] | None = None,
        port_gate: bool = False,
        supplicant: bool = True,
    ) -> Unit:
        the_lab = Lab.create(workdir)
        labs.append(the_lab)
        server = server or pki.server
        if radius:
            the_lab.start_radius(pki.creds, server)
        the_lab.start_hostapd(pki.creds, server, radius=radius)
        if port_gate:
            the_lab.install_port_gate()
        settings = Dot1xSettings(
            interface="eth0",
            identity=UNIT_ID,
            client_cert=unit[1],
            client_key=unit[0],
            server_ca=pki.creds.chain(),
            domain_match=SERVER_NAME,
            domain_suffix_match=None,
            ctrl_dir=workdir / "wctl",
            ctrl_group="root",
            supplicant_conf=workdir / "wpa_supplicant.conf",
        )
        alerts: list[Dot1xAlert] = []
        sup = Dot1xSupervisor(
            settings,
            status_interval_s=0.3,
            reply_timeout_s=1.0,
            on_alert=alerts.append,
            client_dir=Path("/tmp"),
            startup_grace_s=3.0,
        )
        u = Unit(the_lab, sup, Dot1xGate(sup), alerts)
        started.append(u)
        if supplicant:
            launch(u)
        return u

    yield start
    for u in started:
        u.supervisor.stop()
    for the_lab in labs:
        the_lab.close()


def launch(u: Unit) -> None:
    u.lab.start_supplicant(render(u.supervisor.settings, origin="test"))
    u.supervisor.start()
    # Attached before the exchange starts, so the supervisor sees why it fails.
    wait_until(lambda: u.supervisor.confirmed_age_s() < 60, 5, "supervisor attached")
    u.lab.nudge(u.supervisor.settings.ctrl_socket)


def settle(u: Unit, states: set[PortState], timeout_s: float = 10.0) -> None:
    if not u.supervisor.wait_for(states, timeout_s):
        pytest.fail(f"supervisor stayed {u.supervisor.snapshot()}\n{u.lab.logs()}")


def csu_reachable(u: Unit, timeout_s: float = 1.0) -> bool:
    """One TCP exchange with the CSU service in the switch namespace, ignoring the gate."""
    with u.lab.unit_socket() as s:
        s.settimeout(timeout_s)
        try:
            s.connect((SWITCH_IP, 7443))
            s.sendall(b"hello\n")
            return s.recv(100) == b"csu-ok\n"
        except OSError:
            return False


@pytest.mark.parametrize("backend", ["internal", "freeradius"])
def test_good_certificate_authenticates_and_opens_gate(
    run_unit: object, pki: Pki, backend: str
) -> None:
    u = run_unit(pki.unit, radius=backend == "freeradius")  # type: ignore[operator]
    settle(u, {PortState.AUTHENTICATED})
    assert u.gate.is_open(), u.gate.reason()
    snap = u.supervisor.snapshot()
    assert snap["supplicant"]["suppPortStatus"] == "Authorized"
    assert snap["client_certificate"]["subject"] == UNIT_ID
    assert snap["client_certificate"]["warning"] is None
    assert not u.alerts
    # The switch side agrees: hostapd authorised this MAC, through FreeRADIUS when asked.
    wait_until(lambda: "AP-STA-CONNECTED" in (u.lab.workdir / "hostapd.log").read_text(), 5, "")
    if backend == "freeradius":
        radius_log = (u.lab.workdir / "radius.log").read_text()
        assert f"Login OK: [{UNIT_ID}]" in radius_log, radius_log[-2000:]


# What the supervisor can know: the server sends EAP-Failure without saying why, so the reason
# is "the server rejected the unit" plus what the unit sees in its own certificate.
CLIENT_CASES = {
    "other_ca": ("unit_other_ca", "does not chain to the configured ca"),
    "expired": ("unit_expired", "unit certificate expired on"),
    "revoked": ("unit_revoked", "rejected the unit"),
}


@pytest.mark.parametrize("backend", ["internal", "freeradius"])
@pytest.mark.parametrize("case", sorted(CLIENT_CASES))
def test_bad_client_certificate_is_never_authorised(
    run_unit: object, pki: Pki, backend: str, case: str
) -> None:
    attr, words = CLIENT_CASES[case]
    u = run_unit(getattr(pki, attr), radius=backend == "freeradius")  # type: ignore[operator]
    settle(u, {PortState.HELD})
    reason = u.supervisor.reason.lower()
    assert "rejected the unit" in reason and words in reason, reason
    for other, other_words in CLIENT_CASES.values():
        if other != attr and other_words != "rejected the unit":
            assert other_words not in reason, reason
    assert not u.gate.is_open()
    assert "held" in u.gate.reason()
    wait_until(lambda: bool(u.alerts), 2, "alert")  # raised just after the transition
    assert u.alerts[0].state is PortState.HELD
    assert PortState.AUTHENTICATED not in {a.state for a in u.alerts}
    assert u.supervisor.snapshot()["previous_state"] != "authenticated"
    hostapd_log = (u.lab.workdir / "hostapd.log").read_text()
    assert "AP-STA-CONNECTED" not in hostapd_log
    if case == "expired":  # diagnostics say so from the certificate itself, too
        assert u.supervisor.snapshot()["client_certificate"]["expired"] is True


@pytest.mark.parametrize("impostor", ["server_other_ca", "server_wrong_name"])
def test_impostor_authentication_server_is_refused(
    run_unit: object, pki: Pki, impostor: str
) -> None:
    u = run_unit(pki.unit, server=getattr(pki, impostor))  # type: ignore[operator]
    settle(u, {PortState.HELD})
    reason = u.supervisor.reason
    assert "the unit refused the RADIUS server" in reason, reason
    if impostor == "server_wrong_name":
        assert "mismatch" in reason.lower(), reason
    assert not u.gate.is_open()
    # The impostor's hostapd never got a successful exchange out of the unit.
    assert "AP-STA-CONNECTED" not in (u.lab.workdir / "hostapd.log").read_text()


def test_switch_port_gate_csu_only_after_authentication_until_logoff(
    run_unit: object, pki: Pki
) -> None:
    u = run_unit(pki.unit, port_gate=True, supplicant=False)  # type: ignore[operator]
    u.lab.start_csu()
    # The switch port passes only EAPOL: the CSU is unreachable before authentication, even
    # for a client that ignored the unit's own gate.
    assert not csu_reachable(u)
    assert not u.gate.is_open()
    launch(u)
    # The CSU client's way: wait for the gate, then connect.
    assert u.gate.wait_open(10), u.gate.reason()
    wait_until(lambda: u.lab.unit_mac() in u.lab.authorized_macs(), 5, "switch authorisation")
    assert csu_reachable(u, timeout_s=3)
    # An established session carries data while authorised...
    with u.lab.unit_socket() as session:
        session.settimeout(3)
        session.connect((SWITCH_IP, 7443))
        session.sendall(b"1\n")
        assert session.recv(100) == b"csu-ok\n"
        # ...and stops after LOGOFF: the gate closes and the switch drops the unit's frames.
        from edge.uplink.dot1x.ctrl import WpaCtrl

        with WpaCtrl(u.supervisor.settings.ctrl_socket, client_dir=Path("/tmp")) as ctrl:
            assert ctrl.request("LOGOFF").strip() == "OK"
        settle(u, {PortState.HELD})
        assert "logged off" in u.supervisor.reason
        assert not u.gate.is_open()
        wait_until(lambda: u.lab.unit_mac() not in u.lab.authorized_macs(), 5, "deauthorisation")
        session.settimeout(1)
        session.sendall(b"2\n")
        with pytest.raises(OSError):  # TimeoutError: nothing comes back through the port
            session.recv(100)
    assert not csu_reachable(u)
    assert u.lab.port_events[0].startswith("AP-STA-CONNECTED")
    assert u.lab.port_events[-1].startswith("AP-STA-DISCONNECTED")


def test_supplicant_killed_closes_gate_and_alerts(run_unit: object, pki: Pki) -> None:
    u = run_unit(pki.unit)  # type: ignore[operator]
    settle(u, {PortState.AUTHENTICATED})
    assert u.gate.is_open()
    u.lab.kill_supplicant()
    settle(u, {PortState.FAILED}, timeout_s=5)
    assert not u.gate.is_open()
    assert "lost the supplicant" in u.supervisor.reason
    wait_until(lambda: bool(u.alerts), 2, "alert")
    assert [a.state for a in u.alerts] == [PortState.FAILED]


def test_supervisor_waits_for_a_late_supplicant(run_unit: object, pki: Pki) -> None:
    u = run_unit(pki.unit, supplicant=False)  # type: ignore[operator]
    u.supervisor.start()
    time.sleep(0.5)  # within the start-up grace: not a failure yet
    assert u.supervisor.state is PortState.CONNECTING
    assert not u.gate.is_open()
    u.lab.start_supplicant(render(u.supervisor.settings, origin="test"))
    wait_until(lambda: u.supervisor.confirmed_age_s() < 60, 5, "supervisor attached")
    u.lab.nudge(u.supervisor.settings.ctrl_socket)
    settle(u, {PortState.AUTHENTICATED})
    assert not u.alerts


def test_installer_flow_enrol_sign_install_renew(workdir: Path, pki: Pki) -> None:
    """edgectl enroll → edge-csu ca sign → edgectl enroll --install → the rendered file
    authenticates; --renew + --install swaps the key, and the new certificate authenticates
    once the old one is revoked."""
    from cryptography import x509

    from edge import config
    from edge.cli.main import main as edgectl
    from edge.csu.main import main as edge_csu
    from edge.uplink.dot1x.supplicant_conf import settings

    ca_dir = pki.creds.ca.directory
    cfg_path = workdir / "edge.toml"
    cfg_path.write_text(
        f'[unit]\nid = "{UNIT_ID}"\ndata_dir = "{workdir}/data"\n'
        f'[dot1x]\nenabled = true\nserver_domain_match = "{SERVER_NAME}"\n'
        f'ctrl_dir = "{workdir}/wctl"\nctrl_group = "root"\nstatus_interval_s = 0.3\n'
    )
    conf = ["--config", str(cfg_path)]
    keys = workdir / "data" / "keys"
    csr, crt = keys / "unit-tls.csr", workdir / "unit.crt"
    assert edgectl(["enroll", *conf]) == 0
    assert edge_csu(["ca", "sign", str(ca_dir), str(csr), "--out", str(crt)]) == 0
    chain = str(ca_dir / "chain.pem")
    assert edgectl(["enroll", *conf, "--install", str(crt), "--ca", chain]) == 0
    cfg, _ = config.load(cfg_path)
    s = settings(cfg)  # every path from the defaults: keys/unit-tls.*, keys/ca.pem

    the_lab = Lab.create(workdir)
    try:
        the_lab.start_hostapd(pki.creds, pki.server)
        the_lab.start_supplicant(render(s))
        sup = Dot1xSupervisor.from_config(cfg, client_dir=Path("/tmp"))
        sup.start()
        try:
            wait_until(lambda: sup.confirmed_age_s() < 60, 5, "supervisor attached")
            the_lab.nudge(s.ctrl_socket)
            assert sup.wait_for({PortState.AUTHENTICATED}, 10), sup.snapshot()
            old = x509.load_pem_x509_certificates((keys / "unit-tls.crt").read_bytes())[0]

            # Renewal while authenticated: the port stays up on the old pair meanwhile.
            assert edgectl(["enroll", *conf, "--renew"]) == 0
            assert edge_csu(["ca", "sign", str(ca_dir), str(csr), "--out", str(crt)]) == 0
            assert sup.state is PortState.AUTHENTICATED
            assert edgectl(["enroll", *conf, "--install", str(crt)]) == 0

            # The city revokes the old certificate; switch and unit restart (the switch with the
            # new CRL). Only the new certificate can authenticate now.
            pki.creds.ca.revoke(old.serial_number)
            the_lab.kill_supplicant()
            the_lab.stop_hostapd()
            the_lab.start_hostapd(pki.creds, pki.server)
            the_lab.start_supplicant(render(s))
            assert sup.wait_for({PortState.CONNECTING, PortState.FAILED}, 5)
            wait_until(lambda: sup.confirmed_age_s() < 1, 10, "supervisor re-attached")
            the_lab.nudge(s.ctrl_socket)
            assert sup.wait_for({PortState.AUTHENTICATED}, 10), sup.snapshot()
            assert sup.snapshot()["client_certificate"]["serial"] != f"{old.serial_number:x}"
        finally:
            sup.stop()
    finally:
        the_lab.close()
