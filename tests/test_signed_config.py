"""Configuration documents signed by the city: ``edge-csu ca issue --profile config``,
``edge-csu config sign``, the unit's checks, and a real edged applying them from
``edgectl config apply`` and from a real ``edge-csu serve`` over mutual TLS; every outcome
in the signed audit log."""

from __future__ import annotations

import base64
import datetime as dt
import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from edge import __version__, signedconfig
from edge.csu.ca import Profile, VideoCA, cert_pem, key_pem
from edge.identity import configsigning, evidence
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.signedconfig import Scope, SignedConfigError, open_envelope, sign
from edge.vault.audit import check_audit

from .conftest import REPO
from .daemon_util import running_edged, write_config
from .test_provision import sockdir as sockdir
from .test_provision import status
from .test_uplink_e2e import unit_config
from .uplink_util import free_port, make_csu, unit_files, wait_until


def cli(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True, text=True, timeout=90, check=False, cwd=REPO,
    )  # fmt: skip


class Signer:
    """A configuration signer made with the real command (``edge-csu ca issue``)."""

    def __init__(self, ca_dir: Path, out: Path, name: str = "city-config") -> None:
        result = cli("edge.csu.main", "ca", "issue", str(ca_dir), name, "--profile", "config",
                     "--out", str(out))  # fmt: skip
        assert result.returncode == 0, result.stderr
        self.key, self.cert = out.with_name(out.name + ".key"), out.with_name(out.name + ".crt")

    def sign(self, settings: str, scope: str, version: int, out: Path) -> Path:
        toml = out.with_suffix(".toml")
        toml.write_text(settings)
        result = cli("edge.csu.main", "config", "sign", str(toml), "--scope", scope,
                     "--version", str(version), "--key", str(self.key), "--cert", str(self.cert),
                     "--out", str(out))  # fmt: skip
        assert result.returncode == 0, result.stderr
        return out


# --- the profile and the checks (pure) --------------------------------------------------------


@pytest.fixture
def city(tmp_path: Path) -> VideoCA:
    return VideoCA.init(tmp_path / "ca")


def _signer(ca: VideoCA) -> tuple[Any, bytes]:
    key, cert = ca.issue("city-config", profile=Profile.CONFIG)
    return key, cert_pem(cert) + cert_pem(ca.sub_cert)


def _certs(ca: VideoCA) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(ca.chain_pem)


def test_the_config_profile_is_its_own(city: VideoCA) -> None:
    # Taken here, not at import: the city CA's certificates are issued as the test runs.
    now = dt.datetime.now(dt.UTC)
    _key, chain = _signer(city)
    cert = x509.load_pem_x509_certificates(chain)[0]
    assert configsigning.profile_problem(cert) is None
    assert evidence.profile_problem(cert) is not None  # never an evidence signer...
    ekus = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    assert ekus == {configsigning.CONFIG_SIGNING}  # ...nor a TLS client or server
    _tls_key, tls = city.issue("unit-1", profile=Profile.CLIENT)
    assert "not configuration signing" in str(configsigning.profile_problem(tls))
    _srv_key, srv = city.issue("csu.test", profile=Profile.SERVER, dns_names=("csu.test",))
    assert configsigning.profile_problem(srv) is not None
    assert configsigning.chain_problem([tls], _certs(city), now) is not None


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("applied", None),
        ("other key", "does not verify"),
        ("other CA", "does not chain"),
        ("flipped byte", "does not verify"),
        ("other unit", "for unit 'unit-2'"),
        ("other group", "for group 'sud'"),
        ("older version", "not newer than version 5"),
        ("replayed version", "not newer than version 5"),
        ("TLS certificate as signer", "not a configuration-signing one"),
        ("expired signer", "does not chain"),
    ],
)
def test_the_unit_checks_signer_signature_scope_and_version(
    city: VideoCA, tmp_path: Path, case: str, words: str | None
) -> None:
    # Taken here, not at import: the city CA's certificates are issued as the test runs.
    now = dt.datetime.now(dt.UTC)
    key, chain = _signer(city)
    settings: dict[str, Any] = {"vault": {"retention_days": 10}}
    scope, version = Scope("unit", "unit-1"), 6
    if case == "other unit":
        scope = Scope("unit", "unit-2")
    if case == "other group":
        scope = Scope("group", "sud")
    if case == "older version":
        version = 4
    if case == "replayed version":
        version = 5
    if case == "other key":
        key, _ = _signer(city)  # another signer of the same CA, its chain not sent
    if case == "other CA":
        key, chain = _signer(VideoCA.init(tmp_path / "other-ca"))
    if case == "TLS certificate as signer":
        key, cert = city.issue("unit-9", profile=Profile.CLIENT)
        chain = cert_pem(cert)
    if case == "expired signer":
        key, cert = city.issue(
            "city-config", profile=Profile.CONFIG, days=1, not_before=now - dt.timedelta(days=3)
        )
        chain = cert_pem(cert)
    if case in ("other key", "TLS certificate as signer", "expired signer"):
        # sign() checks its own inputs; a forger builds the envelope by hand
        envelope = _forge(settings, scope, version, key, chain)
    else:
        envelope = sign(settings, scope=scope, version=version, key=key, chain_pem=chain, now=now)
    if case == "flipped byte":
        outer = json.loads(envelope)
        doc = bytearray(base64.b64decode(outer["document"]))
        doc[doc.index(b"10")] = ord("9")  # retention 10 -> 90... still JSON, not the signed one
        outer["document"] = base64.b64encode(bytes(doc)).decode()
        envelope = json.dumps(outer).encode()

    def check() -> signedconfig.Verified:
        return open_envelope(
            envelope,
            ca_certs=_certs(city),
            unit_id="unit-1",
            groups=["nord"],
            floors={"unit:unit-1": 5},
            now=now,
        )

    if words is None:
        verified = check()
        assert (verified.version, verified.settings) == (6, settings)
        assert verified.signer.startswith("city-config (serial ")
    else:
        with pytest.raises(SignedConfigError, match=words):
            check()


def _forge(settings: dict[str, Any], scope: Scope, version: int, key: Any, chain: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    document = signedconfig.canonical(
        {"format": signedconfig.DOCUMENT_FORMAT, "version": version, "scope": scope.as_json(),
         "issued_at": "2026-01-01T00:00:00Z", "settings": settings}
    )  # fmt: skip
    signature = key.sign(signedconfig._DOMAIN + document, ec.ECDSA(hashes.SHA256()))
    return json.dumps(
        {"format": signedconfig.ENVELOPE_FORMAT, "document": base64.b64encode(document).decode(),
         "signature": base64.b64encode(signature).decode(), "chain": chain.decode()}
    ).encode()  # fmt: skip


@pytest.mark.parametrize(
    "settings",
    [
        {"uplink": {"csu_url": "https://evil.example"}},
        {"unit": {"id": "other"}},
        {"vault": {"csu_public_key": "/tmp/k"}},
        {"cameras": [{"id": "cam1", "source": "rtsp://evil/"}]},
        {"analytics": {"face_model_path": "/tmp/m"}},
    ],
)
def test_a_document_may_not_set_identity_keys_files_or_where_video_goes(
    city: VideoCA, settings: dict[str, Any]
) -> None:
    # Taken here, not at import: the city CA's certificates are issued as the test runs.
    now = dt.datetime.now(dt.UTC)
    key, chain = _signer(city)
    with pytest.raises(SignedConfigError, match="may"):
        sign(settings, scope=Scope("unit", "u"), version=1, key=key, chain_pem=chain, now=now)


# --- a real edged ------------------------------------------------------------------------------

MASKS_V1 = """\
[[cameras]]
id = "cam1"
[[cameras.privacy_masks]]
name = "city window"
points = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.3]]

[vault]
retention_days = 12
"""

MASKS_V3 = """\
[[cameras]]
id = "cam1"
privacy_masks = []
"""


def _audit(data_dir: Path) -> list[dict[str, Any]]:
    log = data_dir / "vault" / "audit.log"
    return [json.loads(line) for line in log.read_text().splitlines()]


def _daemon(config: Path) -> dict[str, Any]:
    daemon: dict[str, Any] = status(config)[1]["daemon"]
    return daemon


def test_edged_applies_signed_documents_refuses_the_rest_and_audits_each(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    city = VideoCA.init(tmp_path / "ca")
    keys = data_dir / "keys"
    keys.mkdir()
    (keys / "ca.pem").write_bytes(city.chain_pem)
    signer = Signer(tmp_path / "ca", tmp_path / "signer")
    stranger = Signer(VideoCA.init(tmp_path / "other-ca").directory, tmp_path / "stranger")
    config = write_config(
        tmp_path / "edge.toml",
        data_dir,
        extra=f'\n[control]\nsocket = "{sockdir}/control.sock"\n',
    )
    docs = tmp_path / "docs"
    docs.mkdir()

    def apply(doc: Path) -> subprocess.CompletedProcess[str]:
        return cli("edge.cli.main", "config", "apply", "--config", str(config), str(doc))

    with running_edged(config, tmp_path) as (proc, notify):
        notify.wait_for("READY=1", 30)
        before = _daemon(config)
        assert before["signed_config"]["documents"] == []
        assert before["cameras"][0]["masks"] == 1

        v1 = signer.sign(MASKS_V1, "unit:test-unit", 1, docs / "v1.json")
        done = apply(v1)
        assert done.returncode == 0, done.stderr
        assert "unit:test-unit version 1 signed by city-config" in done.stdout
        after = _daemon(config)
        assert after["cameras"][0]["masks"] == 2  # the city's mask added to the local one
        assert after["vault"]["retention_days"] == 12
        assert after["signed_config"]["documents"][0]["version"] == 1
        assert after["signed_config"]["digest"] != before["signed_config"]["digest"]
        assert "already in effect" in apply(v1).stdout  # offered again: nothing to do

        refusals = {
            "signed by another key": (
                stranger.sign(MASKS_V1, "unit:test-unit", 2, docs / "stranger.json"),
                "does not chain to the city's CA",
            ),
            "for another unit": (
                signer.sign(MASKS_V1, "unit:other-unit", 2, docs / "other.json"),
                "for unit 'other-unit'",
            ),
        }
        v1_again = docs / "again" / "v1.json"  # a different document with an old version
        v1_again.parent.mkdir()
        refusals["replayed (older version)"] = (
            signer.sign("[vault]\nretention_days = 2\n", "unit:test-unit", 1, v1_again),
            "not newer than version 1",
        )
        tampered = docs / "tampered.json"
        outer = json.loads(v1.read_bytes())
        body = base64.b64decode(outer["document"]).replace(
            b'"retention_days":12', b'"retention_days":30'
        )
        outer["document"] = base64.b64encode(body).decode()
        tampered.write_text(json.dumps(outer))
        refusals["tampered"] = (tampered, "does not verify")
        for what, (doc, words) in refusals.items():
            refused = apply(doc)
            assert refused.returncode != 0, what
            assert words in refused.stderr, (what, refused.stderr)
        same = _daemon(config)
        assert same["signed_config"]["digest"] == after["signed_config"]["digest"]
        assert same["vault"]["retention_days"] == 12

        # The installer removes the local mask by hand: refused, the masks stay.
        text = config.read_text()
        start = text.index("[[cameras.privacy_masks]]")
        config.write_text(text[:start] + text[start:].split("\n", 3)[3])
        proc.send_signal(signal.SIGHUP)
        wait_until(
            lambda: (_daemon(config).get("last_reload") or {}).get("ok") is False, 20, "refusal"
        )
        refused_reload = _daemon(config)
        assert "needs a configuration document signed by the city" in str(
            refused_reload["last_reload"]["error"]
        )
        assert refused_reload["cameras"][0]["masks"] == 2

        # The city signs the removal of its own mask: applied, with the local removal pending.
        v3 = signer.sign(MASKS_V3, "unit:test-unit", 3, docs / "v3.json")
        assert apply(v3).returncode == 0
        assert _daemon(config)["cameras"][0]["masks"] == 0
        assert proc.poll() is None

    records = _audit(data_dir)
    applied = [r for r in records if r["action"] == "config-signed-applied"]
    assert [r["details"]["version"] for r in applied] == [1, 3]
    assert applied[0]["details"]["old_digest"] == before["signed_config"]["digest"]
    assert applied[0]["details"]["new_digest"] == after["signed_config"]["digest"]
    assert applied[0]["actor"].startswith("city-config (serial ")
    refused_records = [r for r in records if r["action"] == "config-signed-refused"]
    assert len(refused_records) == len(refusals)
    for record, (_doc, words) in zip(refused_records, refusals.values(), strict=True):
        assert words in record["details"]["reason"]
    assert any(
        r["action"] == "config-reload-failed" and "signed by the city" in r["details"]["error"]
        for r in records
    )
    key = load_or_create_signing_key(keys_dir_of(data_dir))
    assert not check_audit(data_dir / "vault" / "audit.log", key.public_key()).problems

    # A restart keeps the signed documents in effect (checked again) and their floor.
    second = tmp_path / "second"
    second.mkdir()
    with running_edged(config, second) as (_proc, notify):
        notify.wait_for("READY=1", 30)
        again = _daemon(config)
        assert [d["version"] for d in again["signed_config"]["documents"]] == [3]
        assert again["cameras"][0]["masks"] == 0
        assert "not newer than version 3" in apply(v1_again).stderr


def test_the_unit_fetches_its_document_from_the_csu_over_mutual_tls(tmp_path: Path) -> None:
    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    data_dir = tmp_path / "unit"
    unit_files(csu, "test-unit", data_dir)
    csu.enroll("test-unit", load_or_create_signing_key(keys_dir_of(data_dir)))
    key, cert = csu.pki.ca.issue("city-config", profile=Profile.CONFIG)
    (tmp_path / "signer.key").write_bytes(key_pem(key))
    (tmp_path / "signer.crt").write_bytes(cert_pem(cert) + cert_pem(csu.pki.ca.sub_cert))
    offered = csu.directory / "config"
    offered.mkdir()
    settings = tmp_path / "settings.toml"
    settings.write_text("[vault]\nretention_days = 7\n\n[uplink]\nbandwidth_kbps = 4000\n")
    signer = ["--key", str(tmp_path / "signer.key"), "--cert", str(tmp_path / "signer.crt")]
    for scope, version, name in (
        ("unit:test-unit", 4, "mine.json"),
        ("unit:someone-else", 9, "theirs.json"),
        ("group:nord", 2, "nord.json"),  # the unit is in no group: never offered to it
    ):
        signed = cli("edge.csu.main", "config", "sign", str(settings), "--scope", scope,
                     "--version", str(version), *signer, "--out", str(offered / name))  # fmt: skip
        assert signed.returncode == 0, signed.stderr
    lower = cli("edge.csu.main", "config", "sign", str(settings), "--scope", "unit:test-unit",
                "--version", "4", *signer, "--out", str(offered / "again.json"))  # fmt: skip
    assert lower.returncode != 0 and "sign a higher one" in lower.stderr
    config = unit_config(
        tmp_path / "edge.toml", data_dir, csu, port,
        uplink=f'ca_file = "{data_dir / "keys" / "ca.pem"}"\nbackoff_initial_s = 0.2',
    )  # fmt: skip
    csu.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "edge.app.daemon", "--config", str(config), "--run-for", "6"],
            capture_output=True, text=True, timeout=90, cwd=REPO,
        )  # fmt: skip
    finally:
        csu.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert "signed configuration unit:test-unit version 4 by city-config" in result.stderr
    applied = [r for r in _audit(data_dir) if r["action"].startswith("config-signed")]
    # Only the unit's own document was offered to it; applied once, from the CSU.
    assert [(r["action"], r["details"]["version"], r["details"]["from"]) for r in applied] == [
        ("config-signed-applied", 4, "CSU")
    ]
    assert json.loads((data_dir / "config" / "signed-versions.json").read_text()) == {
        "unit:test-unit": 4
    }
    # The city's CRL came with it, checked and kept (edge/identity/revocation.py), once.
    [crl] = [r for r in _audit(data_dir) if r["action"].startswith("crl-")]
    assert crl["action"] == "crl-updated" and "0 revoked certificate(s)" in crl["details"]["crl"]
    kept = x509.load_pem_x509_crl((data_dir / "uplink" / "city-crl.pem").read_bytes())
    served = x509.load_pem_x509_crl((csu.pki.ca.directory / "crl.pem").read_bytes())
    assert kept == served

    # The fleet view: what the unit reported of itself on its requests.
    units = cli("edge.csu.main", "units", "--config", str(csu.config), "--json")
    assert units.returncode == 0, units.stderr
    (row,) = json.loads(units.stdout)
    fleet = row["fleet"]
    assert fleet["version"] == __version__
    assert fleet["config_documents"] == {"unit:test-unit": 4}
    assert fleet["config_digest"] == applied[0]["details"]["new_digest"]
    assert fleet["last_update"] is None
    text = cli("edge.csu.main", "units", "--config", str(csu.config))
    assert f"v{__version__} slot " in text.stdout, text.stdout
    assert f"config {fleet['config_digest'][:12]}… (unit:test-unit v4)" in text.stdout


def test_a_document_that_no_longer_verifies_at_start_keeps_its_masks_and_nothing_else(
    tmp_path: Path, data_dir: Path, sockdir: Path
) -> None:
    city = VideoCA.init(tmp_path / "ca")
    keys = data_dir / "keys"
    keys.mkdir()
    (keys / "ca.pem").write_bytes(city.chain_pem)
    signer = Signer(tmp_path / "ca", tmp_path / "signer")
    config = write_config(
        tmp_path / "edge.toml", data_dir, extra=f'\n[control]\nsocket = "{sockdir}/control.sock"\n'
    )
    doc = signer.sign(MASKS_V1, "unit:test-unit", 1, tmp_path / "v1.json")
    first = tmp_path / "first"
    first.mkdir()
    with running_edged(config, first) as (_proc, notify):
        notify.wait_for("READY=1", 30)
        applied = cli("edge.cli.main", "config", "apply", "--config", str(config), str(doc))
        assert applied.returncode == 0, applied.stderr
        assert _daemon(config)["cameras"][0]["masks"] == 2
    # The unit's CA file replaced by another city's: the document no longer verifies.
    (keys / "ca.pem").write_bytes(VideoCA.init(tmp_path / "other-ca").chain_pem)
    second = tmp_path / "second"
    second.mkdir()
    with running_edged(config, second) as (_proc, notify):
        notify.wait_for("READY=1", 30)
        daemon = _daemon(config)
        assert daemon["cameras"][0]["masks"] == 2  # the city's mask stays on
        assert daemon["vault"]["retention_days"] == 30  # its retention does not apply
        assert daemon["signed_config"]["documents"] == []
        assert "does not chain" in daemon["signed_config"]["last"]["error"]


def _unit_toml(path: Path, unit: str, data_dir: Path, csu: Any, port: int) -> Path:
    path.write_text(
        f"""
[unit]
id = "{unit}"
groups = ["nord"]
data_dir = "{data_dir}"

[[cameras]]
id = "cam1"
width = 320
height = 240
fps = 10
encoder = {{ segment_seconds = 1.0, preset = "ultrafast" }}

[vault]
kem = "x25519"
csu_public_key = "{csu.directory / "keys" / "authority.pub.json"}"

[uplink]
enabled = true
csu_url = "https://127.0.0.1:{port}"
server_name = "csu.test"
ca_file = "{data_dir / "keys" / "ca.pem"}"
backoff_initial_s = 0.2
config_poll_s = 1
"""
    )
    return path


@pytest.mark.slow  # two units and a receiver, and a wave left to time out: about 40 s
def test_edge_csu_fleet_rolls_out_canary_first_and_stops_when_a_wave_goes_silent(
    tmp_path: Path,
) -> None:
    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    key, cert = csu.pki.ca.issue("city-config", profile=Profile.CONFIG)
    (tmp_path / "signer.key").write_bytes(key_pem(key))
    (tmp_path / "signer.crt").write_bytes(cert_pem(cert) + cert_pem(csu.pki.ca.sub_cert))
    configs = {}
    for unit in ("unit-a", "unit-b"):
        data_dir = tmp_path / unit
        unit_files(csu, unit, data_dir)
        csu.enroll(unit, load_or_create_signing_key(keys_dir_of(data_dir)))
        configs[unit] = _unit_toml(tmp_path / f"{unit}.toml", unit, data_dir, csu, port)
    settings = tmp_path / "settings.toml"
    settings.write_text("[vault]\nretention_days = 9\n")

    def edged(unit: str, seconds: float) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "edge.app.daemon", "--config", str(configs[unit]),
             "--run-for", str(seconds)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )  # fmt: skip

    csu.start()
    try:
        # Both units report to the CSU once (their groups with it); then unit-b goes silent.
        for unit in ("unit-a", "unit-b"):
            proc = edged(unit, 4)
            assert proc.wait(60) == 0, proc.communicate()[1][-2000:]
        wait_until(
            lambda: all(
                (csu.directory / "storage" / u / "status.json").exists()
                and "nord"
                in json.loads((csu.directory / "storage" / u / "status.json").read_text())
                .get("fleet", {})
                .get("groups", [])
                for u in ("unit-a", "unit-b")
            ),
            20,
            "both units' reports",
        )
        canary = edged("unit-a", 40)
        try:
            fleet = cli("edge.csu.main", "fleet", "config", str(settings), "--config",
                        str(csu.config), "--group", "nord", "--version", "1",
                        "--key", str(tmp_path / "signer.key"),
                        "--cert", str(tmp_path / "signer.crt"),
                        "--waves", "1,100%", "--wait", "15", "--json")  # fmt: skip
        finally:
            canary.send_signal(signal.SIGTERM)
            canary.wait(30)
    finally:
        csu.stop()
    assert fleet.returncode == 1, fleet.stderr
    outcome = json.loads(fleet.stdout)
    assert [w["units"] for w in outcome["waves"]] == [["unit-a"], ["unit-b"]]
    assert outcome["waves"][0]["result"] == "version 1 in effect"
    assert outcome["stopped"] == "unit-b did not report version 1 within 15 s"
    applied = [r for r in _audit(tmp_path / "unit-a") if r["action"] == "config-signed-applied"]
    assert [(r["details"]["scope"], r["details"]["version"]) for r in applied] == [
        ("unit:unit-a", 1)
    ]
