"""The city's CRL on the unit: fetched from a real receiver over the mutual-TLS uplink, kept
only when the city's CA signed it and it is newer, and then used to refuse a revoked operator's
command and a revoked signer's configuration document. An impostor's list, an altered one and
an older one replayed to un-revoke someone are refused."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from edge import signedconfig
from edge.config import EdgeConfig, UnitConfig, UplinkConfig
from edge.csu.ca import Profile, RevocationReason, VideoCA, cert_pem
from edge.errors import CommandError, EnrolmentError
from edge.identity.revocation import CityCrl, path_in
from edge.outputs import commands
from edge.uplink.client import UplinkClient

from .test_receipts import UNIT, Gate, Rig, running_rig
from .uplink_util import CSU_NAME, wait_until


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def ca_certs(ca: VideoCA) -> list[x509.Certificate]:
    return [ca.sub_cert, ca.root_cert]


def test_only_the_city_cas_newer_list_is_kept(tmp_path: Path) -> None:
    ca = VideoCA.init(tmp_path / "ca")
    _, agent = ca.issue("agent-durand", profile=Profile.OPERATOR)
    first = ca.publish_crl(now=now() - dt.timedelta(hours=2)).public_bytes(Encoding.PEM)
    path = path_in(tmp_path / "unit")
    crl = CityCrl(path, ca_certs(ca))
    assert crl.status(now()) is None and crl.problem(agent, now(), before="now") is None
    assert crl.offer(first, now()) is not None
    assert crl.offer(first, now()) is None  # the one held: nothing written, nothing audited
    revoked = ca.revoke(agent.serial_number, RevocationReason.CESSATION_OF_OPERATION)
    assert "1 revoked certificate(s)" in str(crl.offer(revoked.public_bytes(Encoding.DER), now()))
    problem = crl.problem(agent, now(), before="this command")
    assert problem is not None and "revoked (cessationOfOperation)" in problem
    # an older list replayed (by an impostor, or a CSU restored from backup) would un-revoke
    with pytest.raises(EnrolmentError, match="older than the CRL in force"):
        crl.offer(first, now())
    # another CA's list, and the city's list with one byte changed
    other = VideoCA.init(tmp_path / "other").publish_crl(now=now())  # same names, other key
    with pytest.raises(EnrolmentError, match="does not verify against the city's CA"):
        crl.offer(other.public_bytes(Encoding.PEM), now())
    der = bytearray(ca.publish_crl(now=now()).public_bytes(Encoding.DER))
    der[-10] ^= 0x01  # in the signature
    with pytest.raises(EnrolmentError, match="signature does not verify"):
        crl.offer(bytes(der), now())
    future = ca.publish_crl(now=now() + dt.timedelta(days=2)).public_bytes(Encoding.PEM)
    with pytest.raises(EnrolmentError, match="in this unit's future"):
        crl.offer(future, now())
    with pytest.raises(EnrolmentError, match="not a CRL"):
        crl.offer(b"<html>captive portal</html>", now())
    # it survives a restart; a damaged copy is said and replaced by the next good offer
    assert CityCrl(path, ca_certs(ca)).problem(agent, now(), before="now") is not None
    path.write_bytes(path.read_bytes()[:200])
    damaged = CityCrl(path, ca_certs(ca))
    assert damaged.damaged is not None and "not a CRL" in damaged.damaged
    assert damaged.offer(ca.publish_crl(now=now()).public_bytes(Encoding.PEM), now())
    assert CityCrl(path, ca_certs(ca)).damaged is None
    assert damaged.problem(agent, now(), before="now")
    # stale: past its next update it stays in force, and says so
    later = now() + dt.timedelta(days=8)
    status = damaged.status(later)
    assert status is not None and status.stale and status.revoked == 1
    assert damaged.problem(agent, later, before="now") is not None


def test_the_unit_takes_the_csus_crl_and_refuses_a_revoked_operator_and_signer(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        _takes_the_crl_and_refuses(rig)


def _takes_the_crl_and_refuses(rig: Rig) -> None:
    ca = rig.csu.pki.ca
    op_key, op_cert = ca.issue("agent-martin", profile=Profile.OPERATOR)
    ok_key, ok_cert = ca.issue("agent-petit", profile=Profile.OPERATOR)
    cfg_key, cfg_cert = ca.issue("config-signer", profile=Profile.CONFIG)
    ca.revoke(op_cert.serial_number, RevocationReason.KEY_COMPROMISE)
    ca.revoke(cfg_cert.serial_number, RevocationReason.SUPERSEDED)
    city = CityCrl(path_in(rig.data), ca_certs(ca))
    cfg = EdgeConfig(
        unit=UnitConfig(id=UNIT, data_dir=rig.data),
        uplink=UplinkConfig(
            enabled=True,
            csu_url=f"https://127.0.0.1:{rig.port}",
            server_name=CSU_NAME,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
        ),
    )
    vault = rig.vault()

    def take(data: bytes) -> None:
        city.offer(data, now())

    client = UplinkClient(cfg, vault, Gate(), on_crl=take)
    client.start()
    try:
        wait_until(lambda: city.status(now()) is not None, 30, "the CSU's CRL on the unit")
    finally:
        client.stop()
        vault.close()
    status = city.status(now())
    assert status is not None and status.revoked == 2 and not status.stale

    def command(key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> bytes:
        return commands.sign(
            key, cert, kind="manual", unit=UNIT, outputs=["sign-up"], output="sign-up",
            state="closed", duration_s=30.0,
        )  # fmt: skip

    now_ns = time.time_ns()
    certs = ca_certs(ca)
    accepted = commands.verify(
        command(ok_key, ok_cert), unit_id=UNIT, ca_certs=certs, now_ns=now_ns, crl=city
    )
    assert accepted.agent.startswith("operator agent-petit")
    revoked = command(op_key, op_cert)
    commands.verify(revoked, unit_id=UNIT, ca_certs=certs, now_ns=now_ns)  # without the CRL
    with pytest.raises(CommandError, match="revoked for key compromise"):
        commands.verify(revoked, unit_id=UNIT, ca_certs=certs, now_ns=now_ns, crl=city)
    document = signedconfig.sign(
        {"uplink": {"bandwidth_kbps": 900}},
        scope=signedconfig.Scope("unit", UNIT),
        version=1,
        key=cfg_key,
        chain_pem=cert_pem(cfg_cert) + ca.chain_pem,
        now=now(),
    )
    with pytest.raises(signedconfig.SignedConfigError, match=r"revoked \(superseded\)"):
        signedconfig.open_envelope(
            document, ca_certs=certs, unit_id=UNIT, groups=[], floors={}, now=now(), crl=city
        )
