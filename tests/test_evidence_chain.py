"""Evidence verifiable with the fleet CA alone: the signing key's certificate, end to end.

Enrolment certifies the Ed25519 signing key with the evidence profile; exports carry that
certificate and the CA chain; ``edge-csu open --ca`` accepts a bundle only when the certificate
chains to the given CA *at the time of the recording* and certifies the very key that signed
everything. Certificates are judged by ``openssl`` (an independent implementation).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.cli.main import main as edgectl
from edge.csu.ca import Profile, RevocationReason, VideoCA, cert_pem
from edge.csu.main import main as edge_csu
from edge.errors import CaError, EnrolmentError, IntegrityError
from edge.identity import enrolment
from edge.identity.unitkeys import keys_dir_of, load_signing_key, load_signing_public_key
from edge.vault.bundle import _DOMAIN, export_bundle, verify_bundle

from .conftest import tool
from .vault_support import SEG_NS, Csu, encoded_segments, fake_segment, make_csu, open_vault
from .video_support import WALL0

UNIT = "unit-1"
RECORDED = dt.datetime.fromtimestamp(WALL0 / 1e9, dt.UTC)
"""When the test recordings were made (months before the tests run)."""


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([tool("openssl"), *args], capture_output=True, text=True, timeout=20)


def _signing_csr_cert(ca: VideoCA, keys: Path) -> x509.Certificate:
    return ca.sign_csr(x509.load_pem_x509_csr((keys / "unit-signing.csr").read_bytes()))


# --- enrolment and certificate profiles --------------------------------------------------------


def test_enrol_certifies_both_keys_with_distinct_profiles(tmp_path: Path, data_dir: Path) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[unit]\nid = "unit-7"\ndata_dir = "{data_dir}"\n')
    common = ["--config", str(cfg)]
    ca_dir = tmp_path / "ca"
    assert edge_csu(["ca", "init", str(ca_dir)]) == 0
    assert edgectl(["enroll", *common]) == 0
    keys = data_dir / "keys"
    req = openssl("req", "-in", str(keys / "unit-signing.csr"), "-noout", "-verify", "-text")
    assert req.returncode == 0, req.stderr
    assert "CN = unit-7" in req.stdout and "ED25519" in req.stdout
    assert "Digital Signature, Non Repudiation" in req.stdout

    # The CA picks the profile from the key; forcing the wrong one is refused both ways.
    tls_crt, sig_crt = tmp_path / "tls.crt", tmp_path / "sig.crt"
    assert (
        edge_csu(["ca", "sign", str(ca_dir), str(keys / "unit-tls.csr"), "--out", str(tls_crt)])
        == 0
    )
    assert (
        edge_csu(["ca", "sign", str(ca_dir), str(keys / "unit-signing.csr"), "--out", str(sig_crt)])
        == 0
    )
    ca = VideoCA.open(ca_dir)
    for csr_name, profile in (
        ("unit-signing.csr", Profile.CLIENT),
        ("unit-tls.csr", Profile.EVIDENCE),
    ):
        csr = x509.load_pem_x509_csr((keys / csr_name).read_bytes())
        with pytest.raises(CaError, match="evidence"):
            ca.sign_csr(csr, profile=profile)
    assert (
        edge_csu(
            [
                "ca",
                "sign",
                str(ca_dir),
                str(keys / "unit-signing.csr"),
                "--profile",
                "client",
                "--out",
                str(tmp_path / "x.crt"),
            ]
        )
        == 2
    )
    assert not (tmp_path / "x.crt").exists()

    # openssl judges the two profiles.
    sig_text = openssl("x509", "-in", str(sig_crt), "-noout", "-text").stdout
    assert "ED25519" in sig_text and "Subject: O = " in sig_text and "CN = unit-7" in sig_text
    assert "Digital Signature, Non Repudiation" in sig_text
    assert "1.3.6.1.5.5.7.3.36" in sig_text or "Document Signing" in sig_text
    assert "TLS Web" not in sig_text and "CA:FALSE" in sig_text
    tls_text = openssl("x509", "-in", str(tls_crt), "-noout", "-text").stdout
    assert "TLS Web Client Authentication" in tls_text and "Non Repudiation" not in tls_text
    chain = str(ca_dir / "chain.pem")
    assert openssl("verify", "-CAfile", chain, str(sig_crt)).returncode == 0
    for purpose in ("sslclient", "sslserver"):  # never usable for TLS or 802.1X
        assert (
            openssl("verify", "-CAfile", chain, "-purpose", purpose, str(sig_crt)).returncode != 0
        )
    assert (
        openssl("verify", "-CAfile", chain, "-purpose", "sslclient", str(tls_crt)).returncode == 0
    )

    # Install both from two files; then status reports both certificates' expiry.
    assert edgectl(["enroll", *common, "--install", str(tls_crt), str(sig_crt), "--ca", chain]) == 0
    installed = keys / "unit-signing.crt"
    assert openssl("verify", "-CAfile", str(keys / "ca.pem"), str(installed)).returncode == 0
    pub_cert = openssl("x509", "-in", str(installed), "-noout", "-pubkey").stdout
    pub_key = openssl("pkey", "-in", str(keys / "unit-signing.pem"), "-pubout").stdout
    assert pub_cert == pub_key and pub_key


def test_status_shows_both_certificates(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(f'[unit]\nid = "{UNIT}"\ndata_dir = "{data_dir}"\n')
    common = ["--config", str(cfg)]
    ca = VideoCA.init(tmp_path / "ca")
    assert edgectl(["enroll", *common]) == 0
    keys = data_dir / "keys"
    tls = x509.load_pem_x509_csr((keys / "unit-tls.csr").read_bytes())
    both = tmp_path / "both.pem"  # one file holding both certificates and the chain
    both.write_bytes(
        cert_pem(ca.sign_csr(tls)) + cert_pem(_signing_csr_cert(ca, keys)) + ca.chain_pem
    )
    capsys.readouterr()
    assert (
        edgectl(
            ["enroll", *common, "--install", str(both), "--ca", str(ca.directory / "chain.pem")]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "installed TLS certificate" in out and "installed evidence-signing certificate" in out
    assert edgectl(["enroll", *common, "--status", "--json"]) == 0
    raw = capsys.readouterr().out
    status = json.loads(raw)
    assert "vidéoprotection" in raw, "the CA's name is printed as written, not escaped"
    ev = status["evidence_certificate"]
    assert status["present"] and status["chains_to_ca"] is True and status["days_left"] > 300
    assert ev["present"] and ev["chains_to_ca"] is True and ev["matches_signing_key"] is True
    assert ev["not_after"] and ev["warning"] is None
    # Without --json: sentences for the technician, not a JSON document.
    assert edgectl(["enroll", *common, "--status"]) == 0
    human = capsys.readouterr().out
    assert not human.lstrip().startswith("{")
    assert f"TLS/802.1X certificate: {UNIT}" in human
    assert f"evidence-signing certificate: {UNIT}" in human
    assert human.count("chains to the city's CA: yes") == 2
    assert f"valid until {status['not_after']}" in human and "vidéoprotection" in human
    assert "certifies the unit's signing key: yes" in human and "!" not in human

    # Renewal of the TLS key keeps the signing key and its certificate.
    sig_before = (keys / "unit-signing.crt").read_bytes()
    assert edgectl(["enroll", *common, "--renew"]) == 0
    renewed = tmp_path / "renewed.pem"
    renewed.write_bytes(
        cert_pem(ca.sign_csr(x509.load_pem_x509_csr((keys / "unit-tls.csr").read_bytes())))
    )
    assert edgectl(["enroll", *common, "--install", str(renewed)]) == 0
    assert "renewed TLS certificate" in capsys.readouterr().out
    assert (keys / "unit-signing.crt").read_bytes() == sig_before
    assert edgectl(["enroll", *common, "--status"]) == 0

    # Without an evidence certificate the status says what that means, and exits 1.
    (keys / "unit-signing.crt").unlink()
    capsys.readouterr()
    assert edgectl(["enroll", *common, "--status", "--json"]) == 1
    warning = json.loads(capsys.readouterr().out)["evidence_certificate"]["warning"]
    assert "pinned unit key" in warning
    assert edgectl(["enroll", *common, "--status"]) == 1
    human = capsys.readouterr().out
    assert "evidence-signing certificate: none" in human and f"  ! {warning}" in human


def test_install_refuses_a_signing_certificate_of_another_key_or_unit(
    tmp_path: Path, data_dir: Path
) -> None:
    ca = VideoCA.init(tmp_path / "ca")
    keys = keys_dir_of(data_dir)
    enrolment.enrol(keys, UNIT, UNIT)
    other = ca.certify(UNIT, ed25519.Ed25519PrivateKey.generate().public_key())
    with pytest.raises(EnrolmentError, match="does not match this unit's signing key"):
        enrolment.install_certificates(keys, cert_pem(other), UNIT, ca_data=ca.chain_pem)
    mine = load_signing_public_key(keys)
    with pytest.raises(EnrolmentError, match="names unit 'unit-2'"):
        enrolment.install_certificates(
            keys, cert_pem(ca.certify("unit-2", mine)), UNIT, ca_data=ca.chain_pem
        )
    foreign = VideoCA.init(tmp_path / "foreign")
    with pytest.raises(EnrolmentError, match="does not chain"):
        enrolment.install_certificates(
            keys, cert_pem(foreign.certify(UNIT, mine)), UNIT, ca_data=ca.chain_pem
        )
    assert not (keys / "unit-signing.crt").exists()


# --- bundles verified with the fleet CA --------------------------------------------------------


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> VideoCA:
    """The city's CA, created before the recordings were made."""
    return VideoCA.init(
        tmp_path_factory.mktemp("fleet") / "ca", now=RECORDED - dt.timedelta(days=30)
    )


def _record(base: Path, csu: Csu, *, video: bool = False) -> Path:
    data = base / "data"
    vault = open_vault(data, csu, device_id=UNIT, epoch_seconds=0.0)
    segments = (
        encoded_segments(seconds=3.0) if video else [fake_segment("cam1", n) for n in range(4)]
    )
    for seg in segments:
        vault.write(seg)
    vault.close()
    return data


def _enrol(data: Path, ca: VideoCA, **validity: dt.datetime | int) -> x509.Certificate:
    """Certify the unit's signing key (validity around the recording unless given)."""
    keys = keys_dir_of(data)
    enrolment.enrol(keys, UNIT, UNIT)
    kw: dict[str, object] = {"not_before": RECORDED - dt.timedelta(days=1), "days": 365}
    kw.update(validity)
    cert = ca.certify(UNIT, load_signing_public_key(keys), **kw)  # type: ignore[arg-type]
    # Installed as the unit would: key, name and chain checked at the certificate's start.
    enrolment.install_certificates(
        keys, cert_pem(cert), UNIT, ca_data=ca.chain_pem, now=cert.not_valid_before_utc
    )
    return cert


def _export(data: Path, out: Path) -> Path:
    export_bundle(
        data,
        start_ns=0,
        end_ns=2**62,
        case="PV-9",
        out_dir=out,
        device_id=UNIT,
        signing_key=load_signing_key(keys_dir_of(data)),
    )
    return out


@pytest.fixture(scope="module")
def certified(tmp_path_factory: pytest.TempPathFactory, fleet: VideoCA) -> tuple[Path, Path]:
    """A bundle of a unit enrolled before it recorded; its data directory."""
    base = tmp_path_factory.mktemp("certified")
    data = _record(base, make_csu(base / "csu"))
    _enrol(data, fleet)
    return _export(data, base / "bundle"), data


def _copy(bundle: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "b"
    shutil.copytree(bundle, dest)
    return dest


def _resign(bundle: Path, data: Path, cert_file: str, pem: bytes) -> None:
    """Replace a certificate of the bundle and re-sign the manifest with the unit's own key,
    as a unit (or a thief of its key) could: only the certificate check can catch it."""
    (bundle / cert_file).write_bytes(pem)
    manifest = json.loads((bundle / "manifest.json").read_text())
    for entry in manifest["certificates"]:
        if entry["file"] == cert_file:
            entry["sha256"] = hashlib.sha256(pem).hexdigest()
            entry["size"] = len(pem)
    body = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    (bundle / "manifest.json").write_bytes(body)
    key = load_signing_key(keys_dir_of(data))
    (bundle / "manifest.sig").write_bytes(key.sign(_DOMAIN + hashlib.sha256(body).digest()))


def test_bundle_verifies_with_the_root_alone(certified: tuple[Path, Path], fleet: VideoCA) -> None:
    bundle, _data = certified
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["signing_certificate"] == "certs/unit-signing.crt"
    assert {c["file"] for c in manifest["certificates"]} >= {
        "certs/unit-signing.crt",
        "certs/ca.pem",
    }
    verified = verify_bundle(bundle, fleet_ca=[fleet.root_cert])
    assert verified.certificate is not None and "fleet CA" in verified.trust
    # openssl agrees, at the time of the recording, with the root as the only trust anchor.
    at = str(WALL0 // 10**9)
    root = bundle.parent / "root.pem"
    root.write_bytes(cert_pem(fleet.root_cert))
    ok = openssl("verify", "-attime", at, "-CAfile", str(root), "-untrusted",
                 str(bundle / "certs/ca.pem"), str(bundle / "certs/unit-signing.crt"))  # fmt: skip
    assert ok.returncode == 0, ok.stdout + ok.stderr


def test_no_trust_anchor_is_refused(certified: tuple[Path, Path], tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="no trust anchor"):
        verify_bundle(certified[0])


def test_another_ca_is_refused(certified: tuple[Path, Path], tmp_path: Path) -> None:
    other = VideoCA.init(tmp_path / "other", now=RECORDED - dt.timedelta(days=30))
    with pytest.raises(IntegrityError, match="does not chain to the given CA"):
        verify_bundle(certified[0], fleet_ca=[other.root_cert])
    with pytest.raises(IntegrityError, match="no root"):  # a sub-CA alone is no anchor
        verify_bundle(certified[0], fleet_ca=[other.sub_cert])


def test_swapped_certificate_is_refused(
    certified: tuple[Path, Path], fleet: VideoCA, tmp_path: Path
) -> None:
    bundle, data = certified
    stranger = ed25519.Ed25519PrivateKey.generate().public_key()
    other_unit = cert_pem(fleet.certify(UNIT, stranger, not_before=RECORDED - dt.timedelta(1)))
    plain = _copy(bundle, tmp_path)
    (plain / "certs/unit-signing.crt").write_bytes(other_unit)
    with pytest.raises(IntegrityError, match="digest differs"):
        verify_bundle(plain, fleet_ca=[fleet.root_cert])
    resigned = tmp_path / "resigned"
    shutil.copytree(bundle, resigned)
    _resign(resigned, data, "certs/unit-signing.crt", other_unit)
    verify_bundle(resigned, trust_bundle_key=True)  # intact as a bundle...
    with pytest.raises(IntegrityError, match=r"certifies key .* signed with key"):
        verify_bundle(resigned, fleet_ca=[fleet.root_cert])  # ...but not this unit's evidence


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("another unit's name", "names unit 'unit-2'"),
        ("the TLS certificate", "not an evidence-signing certificate"),
    ],
)
def test_certificate_of_the_right_key_but_wrong_kind_is_refused(
    what: str, message: str, certified: tuple[Path, Path], fleet: VideoCA, tmp_path: Path
) -> None:
    bundle, data = certified
    copy = _copy(bundle, tmp_path)
    start = RECORDED - dt.timedelta(days=1)
    if what == "the TLS certificate":
        _key, cert = fleet.issue(UNIT, not_before=start)
    else:
        cert = fleet.certify("unit-2", load_signing_public_key(keys_dir_of(data)), not_before=start)
    _resign(copy, data, "certs/unit-signing.crt", cert_pem(cert))
    with pytest.raises(IntegrityError, match=message):
        verify_bundle(copy, fleet_ca=[fleet.root_cert])


@pytest.mark.parametrize(
    ("not_before", "days", "accepted"),
    [
        (RECORDED - dt.timedelta(days=10), 5, False),  # expired before the recording
        (RECORDED + dt.timedelta(hours=5), 365, False),  # not yet valid during the recording
        (RECORDED - dt.timedelta(hours=1), 2, True),  # expired since: still valid evidence
    ],
)
def test_validity_is_judged_at_recording_time(
    not_before: dt.datetime,
    days: int,
    accepted: bool,
    fleet: VideoCA,
    tmp_path: Path,
) -> None:
    data = _record(tmp_path, make_csu(tmp_path / "csu"))
    cert = _enrol(data, fleet, not_before=not_before, days=days)
    if accepted:  # the point of the case: expired today, valid while recording
        assert cert.not_valid_after_utc < dt.datetime.now(dt.UTC)
    bundle = _export(data, tmp_path / "bundle")
    if accepted:
        verify_bundle(bundle, fleet_ca=[fleet.root_cert])
    else:
        with pytest.raises(IntegrityError, match="not valid when the evidence was recorded"):
            verify_bundle(bundle, fleet_ca=[fleet.root_cert])


def test_revocation(certified: tuple[Path, Path], tmp_path: Path, fleet: VideoCA) -> None:
    bundle, _data = certified
    ca_dir = tmp_path / "ca"
    shutil.copytree(fleet.directory, ca_dir)  # the module's CA stays unrevoked for other tests
    ca = VideoCA.open(ca_dir)
    serial = x509.load_pem_x509_certificates((bundle / "certs/unit-signing.crt").read_bytes())[0]
    # Retired after the recording (unit replaced): what it signed before stays valid evidence.
    crl = ca.revoke(serial.serial_number, RevocationReason.CESSATION_OF_OPERATION)
    verify_bundle(bundle, fleet_ca=[ca.root_cert], crls=[crl])
    # Key compromise: nothing signed with it can be trusted any more.
    records = ca.issued()
    (ca_dir / "issued.json").write_text(
        json.dumps([{**r.to_json(), "reason": "key_compromise"} for r in records])
    )
    crl = ca.publish_crl()
    with pytest.raises(IntegrityError, match="revoked for key compromise"):
        verify_bundle(bundle, fleet_ca=[ca.root_cert], crls=[crl])
    # A CRL signed by someone else is not believed either way.
    forged = VideoCA.init(tmp_path / "forged").publish_crl()
    assert forged.issuer == crl.issuer
    with pytest.raises(IntegrityError, match=r"CRL .* does not verify"):
        verify_bundle(bundle, fleet_ca=[ca.root_cert], crls=[forged])


def test_unenrolled_export_says_so_and_needs_a_pinned_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fleet: VideoCA
) -> None:
    csu = make_csu(tmp_path / "csu")
    data = _record(tmp_path, csu)
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[unit]\nid = "{UNIT}"\ndata_dir = "{data}"\n\n[vault]\ncsu_public_key = "{csu.pub}"\n'
    )
    out = tmp_path / "bundle"
    capsys.readouterr()
    args = [
        "--config",
        str(cfg),
        "--from",
        f"@{WALL0 / 1e9}",
        "--to",
        f"@{(WALL0 + 8 * SEG_NS) / 1e9}",
    ]
    assert edgectl(["export", *args, "--case", "PV-1", "--out", str(out)]) == 0
    assert "WARNING: unit not enrolled" in capsys.readouterr().out
    assert json.loads((out / "manifest.json").read_text())["signing_certificate"] is None
    with pytest.raises(IntegrityError, match="no evidence-signing certificate"):
        verify_bundle(out, fleet_ca=[fleet.root_cert])
    verify_bundle(out, unit_public_key=load_signing_public_key(keys_dir_of(data)))


def test_edge_csu_open_with_the_fleet_ca(
    tmp_path: Path, fleet: VideoCA, capsys: pytest.CaptureFixture[str]
) -> None:
    csu = make_csu(tmp_path / "csu")
    data = _record(tmp_path, csu, video=True)
    _enrol(data, fleet)
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[unit]\nid = "{UNIT}"\ndata_dir = "{data}"\n\n[vault]\ncsu_public_key = "{csu.pub}"\n'
    )
    bundle = tmp_path / "bundle"
    span = ["--from", f"@{WALL0 / 1e9 - 1}", "--to", f"@{WALL0 / 1e9 + 3600}"]
    capsys.readouterr()
    assert (
        edgectl(["export", "--config", str(cfg), *span, "--case", "PV-3", "--out", str(bundle)])
        == 0
    )
    exported = capsys.readouterr().out
    assert "evidence chain: certs/unit-signing.crt" in exported and "WARNING" not in exported
    root = tmp_path / "root.pem"
    root.write_bytes(cert_pem(fleet.root_cert))
    clip = tmp_path / "clip.mp4"
    base = ["open", str(bundle), "--key", str(csu.key), "--out", str(clip)]
    capsys.readouterr()
    assert edge_csu(base) == 1  # no anchor: refused, nothing written
    assert "REFUSED" in capsys.readouterr().out and not clip.exists()
    other = VideoCA.init(tmp_path / "other")
    (tmp_path / "other.pem").write_bytes(cert_pem(other.root_cert))
    assert edge_csu([*base, "--ca", str(tmp_path / "other.pem")]) == 1
    assert "does not chain" in capsys.readouterr().out and not clip.exists()
    assert edge_csu([*base, "--ca", str(root), "--crl", str(fleet.directory / "crl.pem")]) == 0
    assert "fleet CA (evidence certificate" in capsys.readouterr().out
    frames = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "csv=p=0", str(clip)],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    assert int(frames) == 30
    clip.unlink()
    assert edge_csu([*base, "--trust-bundle-key"]) == 0
    assert "WARNING: trusting the unit key inside the bundle" in capsys.readouterr().out
    assert edge_csu([*base, "--trust-bundle-key", "--ca", str(root)]) == 2


def test_a_bundle_cannot_bring_its_own_root(
    certified: tuple[Path, Path], fleet: VideoCA, tmp_path: Path
) -> None:
    """A bundle cannot bring its own root: a self-signed root inside it is never an anchor."""
    bundle, data = certified
    rogue = VideoCA.init(tmp_path / "rogue", now=RECORDED - dt.timedelta(days=30))
    key = load_signing_public_key(keys_dir_of(data))
    cert = rogue.certify(UNIT, key, not_before=RECORDED - dt.timedelta(days=1))
    copy = _copy(bundle, tmp_path)
    _resign(copy, data, "certs/unit-signing.crt", cert_pem(cert))
    _resign(copy, data, "certs/ca.pem", rogue.chain_pem)
    with pytest.raises(IntegrityError, match="does not chain"):
        verify_bundle(copy, fleet_ca=[fleet.root_cert])
    verify_bundle(copy, fleet_ca=[rogue.root_cert])  # the same bundle, under its own CA


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(which=st.integers(0, 10_000), bit=st.integers(0, 10**9))
def test_any_bit_flip_in_a_certified_bundle_is_refused(
    certified: tuple[Path, Path], fleet: VideoCA, which: int, bit: int
) -> None:
    """Certificates included: with the fleet CA as the only anchor, nothing can be altered."""
    bundle = certified[0]
    files = sorted(p for p in bundle.rglob("*") if p.is_file())
    path = files[which % len(files)]
    original = path.read_bytes()
    flipped = bytearray(original)
    flipped[(bit // 8) % len(flipped)] ^= 1 << (bit % 8)
    path.write_bytes(bytes(flipped))
    try:
        with pytest.raises(IntegrityError):
            verify_bundle(bundle, fleet_ca=[fleet.root_cert])
    finally:
        path.write_bytes(original)
    verify_bundle(bundle, fleet_ca=[fleet.root_cert])
