"""The receiver follows the CA's CRL without a restart (issue #11, item 14).

A CRL is valid until its nextUpdate (7 days by default); OpenSSL then refuses every client
certificate ("CRL has expired"). The receiver used to load the CRL into its TLS context once at
start, so a week later every unit was refused even after a fresh CRL was published, until
someone restarted it. Real ``edge-csu serve``, real TLS 1.3 handshakes, short-lived CRLs.
"""

from __future__ import annotations

import datetime as dt
import http.client
import socket
import ssl
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.main import main as edge_csu
from edge.csu.receiver.registry import RevocationList

from .uplink_util import CSU_NAME, Csu, make_csu, wait_until

UNIT = "unit-crl"


def _cursor(csu: Csu, crt: Path, key: Path) -> str:
    """The HTTP status of a cursor request, or the TLS error that stopped it."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(csu.pki.chain)
    ctx.load_cert_chain(crt, key)
    try:
        sock = socket.create_connection(("127.0.0.1", csu.ports["units"]), timeout=10)
        conn = http.client.HTTPSConnection("127.0.0.1", csu.ports["units"], timeout=10)
        conn.sock = ctx.wrap_socket(sock, server_hostname=CSU_NAME)
        conn.request("GET", f"/v1/units/{UNIT}/cursor")
        status = str(conn.getresponse().status)
        conn.close()
        return status
    except (ssl.SSLError, ConnectionError, OSError) as exc:
        return f"tls: {exc}"


def _crl_expiring_in(csu: Csu, seconds: float) -> dt.datetime:
    """Publish a 7-day CRL that reaches its nextUpdate ``seconds`` from now."""
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(days=7) + dt.timedelta(seconds=seconds)
    crl = csu.pki.ca.publish_crl(now=issued, days=7)
    assert crl.next_update_utc is not None
    return crl.next_update_utc


def test_a_fresh_crl_is_picked_up_without_restart_and_an_expired_one_fails_closed(
    tmp_path: Path,
) -> None:
    csu = make_csu(tmp_path)
    crt, key, serial = csu.pki.issue(UNIT, tmp_path / "unit")
    csu.enroll(UNIT, ed25519.Ed25519PrivateKey.generate())
    csu.start()
    try:
        assert _cursor(csu, crt, key) == "200"
        # The CRL in force passes its nextUpdate: refused, and the log says why and what to
        # do (fail closed: an expired CRL is never treated as "nothing revoked"). Published
        # once the receiver is up, so that a slow start cannot eat the time before it expires.
        next_update = _crl_expiring_in(csu, 2.0)
        time.sleep(max(0.0, (next_update - dt.datetime.now(dt.UTC)).total_seconds()) + 1.0)
        assert _cursor(csu, crt, key).startswith("tls:")
        wait_until(lambda: "CRL has expired" in csu.log(), 5, "the handshake refusal logged")
        # A fresh CRL is published: the next handshake succeeds, no restart.
        csu.pki.ca.publish_crl()
        assert _cursor(csu, crt, key) == "200"
        assert "every unit handshake is refused until a fresh CRL is published" in csu.log()
        # And a revocation published later is enforced at the handshake itself.
        csu.pki.ca.revoke(serial)
        assert _cursor(csu, crt, key).startswith("tls:")
        wait_until(
            lambda: (
                "refused a TLS handshake on the units listener: certificate revoked" in csu.log()
            ),
            5,
            "the revoked certificate refused at the handshake",
        )
    finally:
        csu.stop()


class _Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_revocation_list_reports_its_expiry(tmp_path: Path) -> None:
    csu = make_csu(tmp_path)
    start = dt.datetime.now(dt.UTC)
    crl = csu.pki.ca.publish_crl(now=start, days=7)
    clock = _Clock(start)
    revocations = RevocationList(csu.pki.ca.directory / "crl.pem", csu.pki.chain, clock=clock)
    assert revocations.next_update() == crl.next_update_utc
    assert revocations.expiry_problem() is None
    clock.now = start + dt.timedelta(days=8)
    problem = revocations.expiry_problem()
    assert problem is not None and "expired on" in problem and "edge-csu ca crl" in problem
    version, _ = revocations.verified_pem()
    fresh = csu.pki.ca.publish_crl(now=clock.now, days=7)
    newer, pem = revocations.verified_pem()
    assert newer > version and pem == csu.pki.ca.crl_pem
    assert revocations.next_update() == fresh.next_update_utc
    assert revocations.expiry_problem() is None


def test_units_listing_says_when_the_crl_has_expired(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csu = make_csu(tmp_path)
    assert edge_csu(["units", "--config", str(csu.config)]) == 0
    assert "valid until" in capsys.readouterr().out
    csu.pki.ca.publish_crl(now=dt.datetime.now(dt.UTC) - dt.timedelta(days=8), days=7)
    assert edge_csu(["units", "--config", str(csu.config), "--json"]) == 0
    err = capsys.readouterr().err
    assert "EXPIRED" in err and "every unit handshake is refused" in err
