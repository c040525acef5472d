"""Video CA, enrolment, supplicant file, port-state policy and gate: no root, no daemons.

Certificates and CRLs are judged by ``openssl`` (an independent implementation).
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from edge import config
from edge.cli.main import main as edgectl
from edge.csu.ca import Profile, VideoCA
from edge.csu.main import main as edge_csu
from edge.errors import CaError, ConfigError, Dot1xError, EnrolmentError
from edge.identity.enrolment import certificate_status
from edge.uplink.dot1x import supplicant_conf
from edge.uplink.dot1x.port_state import (
    EventKind,
    PortState,
    interpret_event,
    parse_status,
    state_from_status,
)
from edge.uplink.dot1x.supervisor import Dot1xSupervisor
from edge.uplink.gate import Dot1xGate, OpenGate, make_gate

from .conftest import tool


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("openssl"), *args], capture_output=True, text=True, timeout=20)


def enabled_cfg(data_dir: Path, **extra: str) -> config.EdgeConfig:
    more = "".join(f'{k} = "{v}"\n' for k, v in extra.items())
    return config.parse(
        f'[unit]\nid = "unit-7"\ndata_dir = "{data_dir}"\n[dot1x]\nenabled = true\n'
        f'server_domain_match = "radius.city.test"\n{more}'
    )


# --- CA ----------------------------------------------------------------------------------------


def test_ca_certificates_verify_with_openssl_and_revocation_shows_in_crl(tmp_path: Path) -> None:
    ca = VideoCA.init(tmp_path / "ca")
    _key, cert = ca.issue("unit-1")
    _, server = ca.issue(
        "radius.city.test", profile=Profile.SERVER, dns_names=("radius.city.test",)
    )
    (tmp_path / "unit.crt").write_bytes(cert.public_bytes(encoding=_pem()))
    (tmp_path / "server.crt").write_bytes(server.public_bytes(encoding=_pem()))
    chain, crl = str(tmp_path / "ca" / "chain.pem"), str(tmp_path / "ca" / "crl.pem")
    ok = openssl("verify", "-CAfile", chain, "-crl_check", "-CRLfile", crl, "-purpose",
                 "sslclient", str(tmp_path / "unit.crt"))  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    # EKUs: a unit certificate is not a server certificate, and the reverse.
    assert openssl("verify", "-CAfile", chain, "-purpose", "sslserver",
                   str(tmp_path / "unit.crt")).returncode != 0  # fmt: skip
    assert openssl("verify", "-CAfile", chain, "-purpose", "sslserver",
                   str(tmp_path / "server.crt")).returncode == 0  # fmt: skip
    ca.revoke(cert.serial_number)
    bad = openssl("verify", "-CAfile", chain, "-crl_check", "-CRLfile", crl,
                  str(tmp_path / "unit.crt"))  # fmt: skip
    assert bad.returncode != 0 and "revoked" in bad.stdout + bad.stderr
    text = openssl("crl", "-in", crl, "-noout", "-text").stdout
    assert f"{cert.serial_number:X}" in text.replace(":", "").upper()
    assert (tmp_path / "ca" / "video-ca.key").stat().st_mode & 0o777 == 0o600
    with pytest.raises(CaError, match="already exists"):
        VideoCA.init(tmp_path / "ca")


def _pem() -> Encoding:
    return Encoding.PEM


def test_ca_refuses_bad_requests(tmp_path: Path) -> None:
    ca = VideoCA.init(tmp_path / "ca")
    with pytest.raises(CaError, match="not a unit identity"):
        ca.issue("Unit One")
    with pytest.raises(CaError, match="not issued by this CA"):
        ca.revoke(12345)


# --- enrolment through the command lines -------------------------------------------------------


def test_enrol_sign_install_renew_round_trip(tmp_path: Path, data_dir: Path) -> None:
    cfg_path = tmp_path / "edge.toml"
    cfg_path.write_text(
        f'[unit]\nid = "unit-7"\ndata_dir = "{data_dir}"\n'
        '[dot1x]\nenabled = true\nserver_domain_match = "radius.city.test"\n'
    )
    common = ["--config", str(cfg_path)]
    ca_dir = tmp_path / "ca"
    assert edge_csu(["ca", "init", str(ca_dir)]) == 0
    assert edgectl(["enroll", *common]) == 0
    keys = data_dir / "keys"
    for name in ("unit-tls.key", "unit-signing.pem"):
        assert (keys / name).stat().st_mode & 0o777 == 0o600, name
    csr = keys / "unit-tls.csr"
    check = openssl("req", "-in", str(csr), "-noout", "-verify", "-subject")
    assert check.returncode == 0 and "CN = unit-7" in check.stdout, check.stdout + check.stderr
    first_key = (keys / "unit-tls.key").read_bytes()
    assert edgectl(["enroll", *common]) == 0  # idempotent: same key, same identity
    assert (keys / "unit-tls.key").read_bytes() == first_key

    # A certificate for another key is refused, before anything is written.
    _other_key, other_cert = VideoCA.open(ca_dir).issue("unit-7")
    other = tmp_path / "other.crt"
    other.write_bytes(other_cert.public_bytes(encoding=_pem()))
    with pytest.raises(EnrolmentError, match="does not match"):
        edgectl_raise(["enroll", *common, "--install", str(other), "--ca",
                       str(ca_dir / "chain.pem")])  # fmt: skip
    assert not (keys / "unit-tls.crt").exists()

    assert edge_csu(["ca", "sign", str(ca_dir), str(csr), "--out", str(tmp_path / "u.crt")]) == 0
    # From another CA: refused.
    foreign = VideoCA.init(tmp_path / "foreign")
    with pytest.raises(EnrolmentError, match="does not chain"):
        edgectl_raise(["enroll", *common, "--install", str(tmp_path / "u.crt"), "--ca",
                       str(tmp_path / "foreign" / "chain.pem")])  # fmt: skip
    assert foreign is not None
    assert edgectl(["enroll", *common, "--install", str(tmp_path / "u.crt"), "--ca",
                    str(ca_dir / "chain.pem")]) == 0  # fmt: skip
    installed = x509.load_pem_x509_certificates((keys / "unit-tls.crt").read_bytes())[0]
    assert installed.subject.rfc4514_string().startswith("CN=unit-7,")

    # Renewal: a new key beside the old; the old pair stays until the new cert is installed.
    assert edgectl(["enroll", *common, "--renew"]) == 0
    assert (keys / "unit-tls.key").read_bytes() == first_key
    assert (keys / "unit-tls.key.new").exists()
    assert edge_csu(["ca", "sign", str(ca_dir), str(csr), "--out", str(tmp_path / "u2.crt")]) == 0
    assert edgectl(["enroll", *common, "--install", str(tmp_path / "u2.crt")]) == 0
    assert (keys / "unit-tls.key").read_bytes() != first_key
    assert not (keys / "unit-tls.key.new").exists()
    # The judge: the installed key and certificate belong together and chain to the CA.
    assert (
        openssl("verify", "-CAfile", str(keys / "ca.pem"), str(keys / "unit-tls.crt")).returncode
        == 0
    )
    pub_cert = openssl("x509", "-in", str(keys / "unit-tls.crt"), "-noout", "-pubkey").stdout
    pub_key = openssl("pkey", "-in", str(keys / "unit-tls.key"), "-pubout").stdout
    assert pub_cert == pub_key and pub_key


def edgectl_raise(argv: list[str]) -> None:
    """Run an edgectl command's function directly so its EdgeError reaches the test."""
    from edge.cli.main import build_parser

    args = build_parser().parse_args(argv)
    args.func(args)


def test_expiry_warning_30_days_ahead(tmp_path: Path) -> None:
    ca = VideoCA.init(tmp_path / "ca")
    _, cert = ca.issue("unit-1", days=365)
    end = cert.not_valid_after_utc
    assert (
        certificate_status(cert, warning_days=30, now=end - dt.timedelta(days=31))["warning"]
        is None
    )
    soon = certificate_status(cert, warning_days=30, now=end - dt.timedelta(days=29))
    assert soon["expiring_soon"] and "renew" in str(soon["warning"])
    gone = certificate_status(cert, warning_days=30, now=end + dt.timedelta(days=1))
    assert gone["expired"] and "expired on" in str(gone["warning"])


# --- configuration and supplicant file ---------------------------------------------------------


def test_config_refuses_an_unconstrained_server() -> None:
    with pytest.raises(ConfigError, match="server_domain_match"):
        config.parse("[dot1x]\nenabled = true\n")
    assert config.DEMO_CONFIG.dot1x.enabled is False


def test_rendered_file_constrains_the_server_and_is_private(tmp_path: Path, data_dir: Path) -> None:
    cfg = enabled_cfg(data_dir, server_domain_suffix_match="video.city.test")
    s = supplicant_conf.settings(cfg)
    text = supplicant_conf.render(s)
    assert "eap=TLS" in text and "key_mgmt=IEEE8021X" in text and "ap_scan=0" in text
    assert f'ca_cert="{data_dir}/keys/ca.pem"' in text
    assert 'domain_match="radius.city.test"' in text
    assert 'domain_suffix_match="video.city.test"' in text
    assert 'identity="unit-7"' in text
    out = tmp_path / "etc" / "wpa.conf"
    assert supplicant_conf.write(out, text) is True
    assert out.stat().st_mode & 0o777 == 0o600
    assert supplicant_conf.write(out, text) is False  # idempotent
    bad = supplicant_conf.Dot1xSettings(**{**s.__dict__, "identity": 'x"\n\tca_cert=""'})
    with pytest.raises(Dot1xError, match="quote"):
        supplicant_conf.render(bad)
    with pytest.raises(Dot1xError, match="any RADIUS server"):
        supplicant_conf.render(
            supplicant_conf.Dot1xSettings(
                **{**s.__dict__, "domain_match": None, "domain_suffix_match": None}
            )
        )


def test_render_config_cli(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg_path = tmp_path / "edge.toml"
    cfg_path.write_text(
        f'[unit]\nid = "unit-7"\ndata_dir = "{data_dir}"\n[dot1x]\nenabled = true\n'
        'interface = "end0"\nserver_domain_match = "radius.city.test"\n'
        f'supplicant_conf = "{tmp_path}/wpa_supplicant-wired-end0.conf"\n'
    )
    assert edgectl(["dot1x", "render-config", "--config", str(cfg_path), "--output"]) == 0
    assert edgectl(["dot1x", "render-config", "--config", str(cfg_path), "--output"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith(": changed") and out[1].endswith(": unchanged")
    assert (
        "ctrl_interface=DIR=/run/wpa_supplicant GROUP=edge"
        in (tmp_path / "wpa_supplicant-wired-end0.conf").read_text()
    )
    # status with no supplicant running: failed, exit code 1, JSON on stdout with --json
    assert edgectl(["dot1x", "status", "--config", str(cfg_path), "--json"]) == 1
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == "failed" and "control socket" in status["reason"]
    # and sentences without it
    assert edgectl(["dot1x", "status", "--config", str(cfg_path)]) == 1
    human = capsys.readouterr().out.splitlines()
    assert human[0] == "802.1X on end0: failed"
    assert human[1] == f"  {status['reason']}"
    assert "no unit certificate" in human[-1] and "edgectl enroll" in human[-1]


# --- port-state policy -------------------------------------------------------------------------

STATUS_OK = """bssid=01:80:c2:00:00:03
wpa_state=COMPLETED
Supplicant PAE state=AUTHENTICATED
suppPortStatus=Authorized
EAP state=SUCCESS
selectedMethod=13 (EAP-TLS)
eap_tls_version=TLSv1.2
"""


@pytest.mark.parametrize(
    ("pae", "port", "expected"),
    [
        ("AUTHENTICATED", "Authorized", PortState.AUTHENTICATED),
        ("AUTHENTICATING", "Authorized", PortState.AUTHENTICATED),  # re-authentication
        ("AUTHENTICATING", "Unauthorized", PortState.CONNECTING),
        ("CONNECTING", "Unauthorized", PortState.CONNECTING),
        ("HELD", "Unauthorized", PortState.HELD),
        ("LOGOFF", "Authorized", PortState.HELD),
        (None, None, PortState.CONNECTING),
    ],
)
def test_port_state_from_status(pae: str | None, port: str | None, expected: PortState) -> None:
    status = parse_status(STATUS_OK)
    for key, value in (("Supplicant PAE state", pae), ("suppPortStatus", port)):
        if value is None:
            status.pop(key)
        else:
            status[key] = value
    assert state_from_status(status)[0] is expected


def test_event_interpretation() -> None:
    cert_error = (
        "CTRL-EVENT-EAP-TLS-CERT-ERROR reason=10 depth=0 subject='/CN=evil.x' err='Domain mismatch'"
    )
    event = interpret_event(cert_error)
    assert event.kind is EventKind.DETAIL and "Domain mismatch" in event.detail
    ok = "CTRL-EVENT-EAP-STATUS status='remote certificate verification' parameter='success'"
    assert interpret_event(ok).kind is EventKind.SERVER_VERIFIED
    alert = "CTRL-EVENT-EAP-STATUS status='remote TLS alert' parameter='certificate revoked'"
    assert "revoked" in interpret_event(alert).detail
    assert interpret_event("CTRL-EVENT-TERMINATING").kind is EventKind.TERMINATING


def test_gate_choice_never_falls_back(data_dir: Path) -> None:
    assert isinstance(make_gate(config.DEMO_CONFIG, None), OpenGate)
    cfg = enabled_cfg(data_dir)
    with pytest.raises(Dot1xError):
        make_gate(cfg, None)
    sup = Dot1xSupervisor.from_config(cfg)
    gate = make_gate(cfg, sup)
    assert isinstance(gate, Dot1xGate)
    assert not gate.is_open() and "connecting" in gate.reason()
    assert gate.wait_open(0.2) is False


def test_client_socket_path_over_108_bytes_is_refused(tmp_path: Path) -> None:
    """Refused with a clear error rather than silently truncated by the kernel."""
    from edge.uplink.dot1x.ctrl import WpaCtrl

    with pytest.raises(Dot1xError, match="longer than"):
        WpaCtrl(Path("/run/wpa_supplicant/eth0"), client_dir=tmp_path / ("x" * 100))


def test_csu_ca_issue_revoke_crl_commands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "ca"
    assert edge_csu(["ca", "init", str(ca_dir)]) == 0
    out = tmp_path / "radius"
    assert edge_csu(["ca", "issue", str(ca_dir), "radius.city.test", "--out", str(out)]) == 0
    crt = tmp_path / "radius.crt"
    assert (tmp_path / "radius.key").stat().st_mode & 0o777 == 0o600
    verify = openssl("verify", "-CAfile", str(ca_dir / "chain.pem"), "-purpose", "sslserver",
                     "-verify_hostname", "radius.city.test", str(crt))  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert edge_csu(["ca", "revoke", str(ca_dir), str(crt), "--reason", "key_compromise"]) == 0
    assert (
        edge_csu(["ca", "crl", str(ca_dir), "--days", "2", "--out", str(tmp_path / "c.pem")]) == 0
    )
    text = openssl("crl", "-in", str(tmp_path / "c.pem"), "-noout", "-text").stdout
    assert "Key Compromise" in text
    capsys.readouterr()
    assert edge_csu(["ca", "list", str(ca_dir)]) == 0
    assert "revoked" in capsys.readouterr().out


def test_gate_closes_when_the_supervisor_stops_confirming(data_dir: Path) -> None:
    """Fault injection: a supervisor thread that hangs leaves a stale AUTHENTICATED behind."""
    import time

    sup = Dot1xSupervisor.from_config(enabled_cfg(data_dir))
    gate = Dot1xGate(sup)
    sup._set_state(PortState.AUTHENTICATED, "port authorised", alert=False)
    sup._confirmed_mono = time.monotonic()
    assert gate.is_open()
    sup._confirmed_mono = time.monotonic() - sup.max_confirmation_age_s - 1
    assert not gate.is_open() and "not confirmed" in gate.reason()
    sup.stop()  # never started: the state becomes DISABLED and the gate stays shut
    sup._confirmed_mono = time.monotonic()
    assert not gate.is_open()
