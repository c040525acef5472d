"""The receiver learns a unit's signing key from its evidence certificate (real TLS 1.3, the real
``edge-csu serve``): accepted with no hand-copied key, refused with a precise reason for another
CA, another unit, a TLS profile or a key-compromise revocation; pinned keys still work."""

from __future__ import annotations

import datetime as dt
import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.config import EdgeConfig, UnitConfig, UplinkConfig
from edge.csu.ca import RevocationReason, VideoCA, cert_pem
from edge.csu.receiver import trust
from edge.csu.receiver.registry import RevocationList, UnitRegistry
from edge.identity import enrolment
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key, public_pem
from edge.uplink.client import UplinkClient
from edge.uplink.protocol import CERTIFICATE_CONTENT_TYPE, segment_path, signing_certificate_path

from .conftest import tool
from .uplink_util import (
    CSU_NAME,
    Csu,
    MemoryOutbox,
    Pki,
    Sealer,
    make_csu,
    unit_files,
    wait_until,
)

SEC = 1_000_000_000


@dataclass
class Unit:
    unit_id: str
    crt: Path
    key: Path
    signing: ed25519.Ed25519PrivateKey
    sealer: Sealer

    def conn(self, csu: Csu) -> http.client.HTTPSConnection:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(csu.pki.chain)
        ctx.load_cert_chain(self.crt, self.key)
        sock = socket.create_connection(("127.0.0.1", csu.ports["units"]), timeout=10)
        conn = http.client.HTTPSConnection("127.0.0.1", csu.ports["units"], timeout=10)
        conn.sock = ctx.wrap_socket(sock, server_hostname=CSU_NAME)
        return conn

    def put(self, csu: Csu, path: str, body: bytes, ctype: str) -> tuple[int, dict[str, object]]:
        conn = self.conn(csu)
        try:
            conn.request("PUT", path, body=body, headers={"Content-Type": ctype})
            resp = conn.getresponse()
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def present(self, csu: Csu, pem: bytes) -> tuple[int, dict[str, object]]:
        return self.put(csu, signing_certificate_path(self.unit_id), pem, CERTIFICATE_CONTENT_TYPE)

    def send_segment(self, csu: Csu) -> tuple[int, dict[str, object]]:
        now = time.time_ns()
        raw = self.sealer.seal(b"init", b"m" * 500, start_ns=now - SEC, end_ns=now)
        path = segment_path(self.unit_id, "cam1", self.sealer.sequence - 1)
        return self.put(csu, path, raw, "application/vnd.edge.sealed-segment")


@dataclass
class Lab:
    csu: Csu
    tmp: Path
    other_ca: VideoCA

    @property
    def ca(self) -> VideoCA:
        return self.csu.pki.ca

    @property
    def registry(self) -> Path:
        return self.csu.directory / "units"

    def unit(self, unit_id: str) -> Unit:
        crt, key, _ = self.csu.pki.issue(unit_id, self.tmp / "units" / unit_id)
        signing = ed25519.Ed25519PrivateKey.generate()
        sealer = Sealer(unit_id, "cam1", self.csu.authority.public, signing)
        return Unit(unit_id, crt, key, signing, sealer)

    def evidence(self, unit: Unit, *, ca: VideoCA | None = None, cn: str | None = None) -> bytes:
        """The evidence certificate of the unit's signing key, with the CA chain (as installed
        on the unit by enrolment)."""
        ca = ca or self.ca
        cert = ca.certify(cn or unit.unit_id, unit.signing.public_key())
        return cert_pem(cert) + ca.chain_pem


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("signing-cert")
    csu = make_csu(tmp)
    other = VideoCA.init(tmp / "other-ca")
    csu.start()
    try:
        yield Lab(csu, tmp, other)
    finally:
        csu.stop()


def units_json(csu: Csu) -> dict[str, dict[str, object]]:
    out = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "units", "--config", str(csu.config), "--json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return {row["unit"]: row for row in json.loads(out)}


# --- acceptance ---------------------------------------------------------------------------------


def test_a_unit_with_a_valid_evidence_certificate_needs_no_hand_copied_key(lab: Lab) -> None:
    unit = lab.unit("unit-cert")
    status, body = unit.send_segment(lab.csu)
    assert status == 403 and body["error"] == "unit unit-cert is not enrolled"
    pem = lab.evidence(unit)
    status, body = unit.present(lab.csu, pem)
    assert status == 201, body
    signing_key = body["signing_key"]
    assert isinstance(signing_key, dict) and signing_key["source"] == "certificate"
    assert not (lab.registry / "unit-cert.pem").exists()
    # The stored certificate is judged by openssl too: it chains to the receiver's CA.
    stored = lab.registry / "unit-cert.crt"
    verify = subprocess.run(
        [tool("openssl"), "verify", "-CAfile", str(lab.csu.pki.chain), str(stored)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert verify.returncode == 0 and ": OK" in verify.stdout, verify.stdout + verify.stderr
    assert unit.send_segment(lab.csu)[0] == 201
    assert unit.present(lab.csu, pem)[0] == 200  # presented again: held, nothing rewritten
    row = units_json(lab.csu)["unit-cert"]
    leaf = x509.load_pem_x509_certificate(pem)
    assert row["enrolled"] is True
    assert row["signing_key"] == {
        "source": "certificate",
        "trusted": True,
        "key_id": signing_key["key_id"],
        "not_after": leaf.not_valid_after_utc.isoformat(),
        "serial": f"{leaf.serial_number:x}",
        "problem": None,
    }
    table = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "units", "--config", str(lab.csu.config)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    line = next(r for r in table.splitlines() if r.startswith("unit-cert "))
    assert f"yes (certificate until {leaf.not_valid_after_utc:%Y-%m-%d})" in line


def test_the_unit_presents_its_certificate_by_itself(lab: Lab, tmp_path: Path) -> None:
    """The real uplink client of a freshly enrolled unit: nothing was copied to the CSU."""
    unit_id = "unit-fresh"
    data_dir = tmp_path / "unit"
    unit_files(lab.csu, unit_id, data_dir)
    keys = keys_dir_of(data_dir)
    signing = load_or_create_signing_key(keys)
    csr = x509.load_pem_x509_csr(enrolment.make_signing_csr(signing, unit_id))
    enrolment.install_certificates(
        keys, cert_pem(lab.ca.sign_csr(csr)) + lab.ca.chain_pem, unit_id, ca_data=lab.ca.chain_pem
    )
    outbox = MemoryOutbox(tmp_path / "outbox")
    sealer = Sealer(unit_id, "cam1", lab.csu.authority.public, signing)
    outbox.add_envelope("cam1", sealer.epoch.epoch_id, sealer.envelope)
    for _ in range(3):
        end = time.time_ns()
        outbox.add_segment(sealer.seal(b"init", b"v" * 800, start_ns=end - SEC, end_ns=end))
    cfg = EdgeConfig(
        unit=UnitConfig(id=unit_id, data_dir=data_dir),
        uplink=UplinkConfig(
            enabled=True,
            csu_url=f"https://127.0.0.1:{lab.csu.ports['units']}",
            server_name=CSU_NAME,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
        ),
    )
    client = UplinkClient(cfg, outbox, _OpenGate())
    client.start()
    try:
        wait_until(lambda: outbox.pending_count() == 0, 20, "the outbox to drain")
        assert client.snapshot()["signing_certificate"] == "signing certificate accepted"
        # Renewed on the unit while connected: presented again on the same connection.
        renewed = lab.ca.sign_csr(csr)
        enrolment.install_certificates(
            keys, cert_pem(renewed) + lab.ca.chain_pem, unit_id, ca_data=lab.ca.chain_pem
        )
        end = time.time_ns()
        outbox.add_segment(sealer.seal(b"init", b"w" * 800, start_ns=end - SEC, end_ns=end))
        client.wake()
        held = lab.registry / f"{unit_id}.crt"
        wait_until(
            lambda: x509.load_pem_x509_certificates(held.read_bytes())[0] == renewed,
            20,
            "the renewed certificate at the CSU",
        )
        wait_until(lambda: outbox.pending_count() == 0, 20, "the outbox to drain")
        snap = client.snapshot()
    finally:
        client.stop()
    assert sorted(lab.csu.stored(unit_id, "cam1")) == [0, 1, 2, 3]
    assert snap["counters"]["refused"] == 0
    assert (lab.registry / f"{unit_id}.crt").exists()
    assert not (lab.registry / f"{unit_id}.pem").exists()
    # edgectl uplink check makes the same connection, presenting the certificate too.
    config = tmp_path / "edge.toml"
    config.write_text(
        f'[unit]\nid = "{unit_id}"\ndata_dir = "{data_dir}"\n\n[uplink]\nenabled = true\n'
        f'csu_url = "https://127.0.0.1:{lab.csu.ports["units"]}"\nserver_name = "{CSU_NAME}"\n'
    )
    out = subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "uplink", "check", "--config", str(config),
         "--json"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    report = json.loads(out.stdout)
    assert out.returncode == 0 and report["result"] == "ok", report
    assert report["signing_certificate"] == "signing certificate already held"
    assert report["csu_holds"]["cam1"]["count"] == 4


class _OpenGate:
    def is_open(self) -> bool:
        return True

    def reason(self) -> str:
        return "802.1X disabled"


# --- refusals -----------------------------------------------------------------------------------


def test_certificates_that_do_not_certify_the_unit_are_refused_with_the_reason(lab: Lab) -> None:
    unit = lab.unit("unit-bad")
    tls_profile = cert_pem(x509.load_pem_x509_certificate(unit.crt.read_bytes()))
    other_unit = lab.unit("unit-other")
    cases = {
        "another CA": (lab.evidence(unit, ca=lab.other_ca), "does not chain to the given CA"),
        "another unit's CN": (
            lab.evidence(unit, cn="unit-other"),
            "it names unit 'unit-other', the TLS client certificate is 'unit-bad''s",
        ),
        "TLS profile": (
            tls_profile + lab.ca.chain_pem,
            "not an evidence-signing certificate: its key is not Ed25519",
        ),
        "another unit's certificate": (
            lab.evidence(other_unit),
            "it names unit 'unit-other', the TLS client certificate is 'unit-bad''s",
        ),
    }
    for case, (pem, reason) in cases.items():
        status, body = unit.present(lab.csu, pem)
        assert status == 422, case
        assert str(body["error"]).startswith("signing certificate refused: "), (case, body)
        assert reason in str(body["error"]), (case, body)
        assert not (lab.registry / "unit-bad.crt").exists(), case
        # Placed by hand in the registry instead: the unit's segments are refused, saying why.
        (lab.registry / "unit-bad.crt").write_bytes(pem)
        status, body = unit.send_segment(lab.csu)
        assert status == 403, case
        assert str(body["error"]).startswith("signing certificate of unit-bad refused: "), case
        assert reason in str(body["error"]), (case, body)
        (lab.registry / "unit-bad.crt").unlink()
    status, body = unit.present(lab.csu, b"-----BEGIN CERTIFICATE-----\nnot base64\n")
    assert status == 400 and "not a PEM certificate file" in str(body["error"])
    status, body = unit.present(lab.csu, b"x" * (trust.MAX_CERTIFICATE_BYTES + 1))
    assert status == 413


def test_revocation_for_key_compromise_withdraws_the_unit(lab: Lab) -> None:
    unit = lab.unit("unit-stolen")
    pem = lab.evidence(unit)
    assert unit.present(lab.csu, pem)[0] == 201
    assert unit.send_segment(lab.csu)[0] == 201
    serial = x509.load_pem_x509_certificate(pem).serial_number
    lab.ca.revoke(serial, RevocationReason.KEY_COMPROMISE)  # the receiver re-reads the CRL
    status, body = unit.send_segment(lab.csu)
    assert status == 403
    assert "signing certificate of unit-stolen refused" in str(body["error"])
    assert "revoked for key compromise" in str(body["error"])
    # A hand-pinned copy of the same key does not bring it back: it is in other hands.
    UnitRegistry.enroll(lab.registry, unit.unit_id, public_pem(unit.signing.public_key()))
    assert unit.send_segment(lab.csu)[0] == 403
    # Nor does presenting the certificate again.
    status, body = unit.present(lab.csu, pem)
    assert status == 422 and "revoked for key compromise" in str(body["error"])
    assert units_json(lab.csu)["unit-stolen"]["enrolled"] is False


def test_an_older_certificate_cannot_replace_a_newer_one(lab: Lab) -> None:
    unit = lab.unit("unit-roll")
    old = lab.ca.certify(
        "unit-roll", unit.signing.public_key(), not_before=trust.utcnow() - dt.timedelta(days=2)
    )
    assert unit.present(lab.csu, cert_pem(old) + lab.ca.chain_pem)[0] == 201
    new = lab.evidence(unit)
    assert unit.present(lab.csu, new)[0] == 201  # a renewal replaces it
    status, body = unit.present(lab.csu, cert_pem(old) + lab.ca.chain_pem)
    assert status == 409 and "older than the valid signing certificate held" in str(body["error"])
    held = x509.load_pem_x509_certificates((lab.registry / "unit-roll.crt").read_bytes())[0]
    assert held == x509.load_pem_x509_certificate(new)


# --- the pinned-key form ------------------------------------------------------------------------


def test_pinned_keys_still_work_and_a_valid_certificate_takes_precedence(lab: Lab) -> None:
    pinned = lab.unit("unit-pin")
    lab.csu.enroll("unit-pin", pinned.signing)
    assert pinned.send_segment(lab.csu)[0] == 201
    assert units_json(lab.csu)["unit-pin"]["signing_key"]["source"] == "pinned"  # type: ignore[index]
    # An invalid certificate beside the pin: the pin is used, the listing says why.
    (lab.registry / "unit-pin.crt").write_bytes(lab.evidence(pinned, ca=lab.other_ca))
    assert pinned.send_segment(lab.csu)[0] == 201
    key = units_json(lab.csu)["unit-pin"]["signing_key"]
    assert isinstance(key, dict) and key["source"] == "pinned"
    assert "does not chain" in str(key["problem"]) and "using the pinned key" in str(key["problem"])
    # A valid certificate of a new key replaces the pinned old one.
    (lab.registry / "unit-pin.crt").unlink()
    rekeyed = Unit(
        "unit-pin", pinned.crt, pinned.key, ed25519.Ed25519PrivateKey.generate(), pinned.sealer
    )
    rekeyed.sealer = Sealer("unit-pin", "cam2", lab.csu.authority.public, rekeyed.signing)
    assert rekeyed.present(lab.csu, lab.evidence(rekeyed))[0] == 201
    now = time.time_ns()
    old_signed = pinned.sealer.seal(b"i", b"x", start_ns=now - SEC, end_ns=now)
    status, body = pinned.put(
        lab.csu,
        segment_path("unit-pin", "cam1", pinned.sealer.sequence - 1),
        old_signed,
        "application/vnd.edge.sealed-segment",
    )
    assert status == 422, body  # the pinned key is no longer the one trusted
    assert (
        rekeyed.put(
            lab.csu,
            segment_path("unit-pin", "cam2", 0),
            rekeyed.sealer.seal(b"i", b"y", start_ns=now - SEC, end_ns=now),
            "application/vnd.edge.sealed-segment",
        )[0]
        == 201
    )
    key = units_json(lab.csu)["unit-pin"]["signing_key"]
    assert isinstance(key, dict) and key["source"] == "certificate"
    assert "pinned key of another key is ignored" in str(key["problem"])


# --- policy, without sockets --------------------------------------------------------------------


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def test_the_verdict_follows_the_certificate_validity_without_restart(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    signing = ed25519.Ed25519PrivateKey.generate()
    start = trust.utcnow()
    cert = pki.ca.certify("unit-x", signing.public_key(), days=10, not_before=start)
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "unit-x.crt").write_bytes(cert_pem(cert) + pki.ca.chain_pem)
    clock = Clock(start - dt.timedelta(hours=1))
    crl = RevocationList(pki.ca.directory / "crl.pem", pki.chain)
    registry = UnitRegistry(tmp_path / "units", ca_file=pki.chain, crl=crl, clock=clock)
    early = registry.trust("unit-x")
    assert early.key is None and "it is not valid before" in early.refusal
    clock.now = start + dt.timedelta(days=1)
    valid = registry.trust("unit-x")
    assert valid.key is not None and valid.source is trust.Source.CERTIFICATE
    assert valid.not_after == cert.not_valid_after_utc
    clock.now = start + dt.timedelta(days=11)
    late = registry.trust("unit-x")
    assert late.key is None and "it expired on" in late.refusal
    # A pinned key without the certificate form (no CA given): the old registry's behaviour.
    UnitRegistry.enroll(tmp_path / "units", "unit-x", public_pem(signing.public_key()))
    assert UnitRegistry(tmp_path / "units").trust("unit-x").source is trust.Source.PINNED
    assert sorted(UnitRegistry(tmp_path / "units").unit_ids()) == ["unit-x"]


def test_upload_policy_is_pure(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path / "pki")
    signing = ed25519.Ed25519PrivateKey.generate()
    now = trust.utcnow()
    cert = pki.ca.certify("unit-y", signing.public_key())
    cas = x509.load_pem_x509_certificates(pki.ca.chain_pem)
    pem = cert_pem(cert) + pki.ca.chain_pem
    first = trust.upload_verdict("unit-y", pem, held=None, ca_certs=cas, crls=[], now=now)
    assert first.status == 201 and first.pem is not None
    # The root brought by the unit is never stored as part of its chain.
    stored = x509.load_pem_x509_certificates(first.pem)
    assert [c.subject == c.issuer for c in stored] == [False, False]
    again = trust.upload_verdict("unit-y", pem, held=first.pem, ca_certs=cas, crls=[], now=now)
    assert again.status == 200 and again.pem is None
    wrong = trust.upload_verdict("unit-z", pem, held=None, ca_certs=cas, crls=[], now=now)
    assert wrong.status == 422 and "names unit 'unit-y'" in wrong.reason
    no_ca = trust.upload_verdict("unit-y", pem, held=None, ca_certs=[], crls=[], now=now)
    assert no_ca.status == 422 and "no root" in no_ca.reason
