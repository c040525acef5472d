"""Console log-in with an operator's client certificate (the CA's ``console`` profile), over
real TLS 1.3 against a real ``edge-csu serve``: certificates issued and revoked by the real
``edge-csu ca``, accounts made by the real ``edge-csu operator``, each refusal checked in the
receiver's audit log, and OpenSSL's own judgement of the issued certificate's purpose.

No browser here: Chromium's client-certificate selection is not practical headless (it needs
an NSS database and a selection policy); Python's ``ssl`` and ``openssl s_client`` present the
certificate instead."""

from __future__ import annotations

import datetime as dt
import hashlib
import http.client
import json
import re
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from edge.csu.ca import Profile, VideoCA, cert_pem, key_pem
from edge.csu.console.accounts import AuthMethod, OperatorStore
from edge.csu.console.certlogin import CONSOLE_LOGIN, judge, profile_problem
from edge.csu.console.credentials import totp_at, totp_step
from edge.csu.console.roles import Role, Scope
from edge.csu.receiver import access_log as csu_audit
from edge.errors import CaError

from .uplink_util import Csu, make_csu, wait_until

PASSWORD = "pavé-de-la-place-2026"


def cli(*args: str, stdin: str = "", check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.csu.main", *args],
        input=stdin, capture_output=True, text=True, timeout=60, check=check,
    )  # fmt: skip


@dataclass
class Cert:
    crt: Path
    key: Path

    @property
    def der(self) -> bytes:
        leaf = x509.load_pem_x509_certificates(self.crt.read_bytes())[0]
        return leaf.public_bytes(serialization.Encoding.DER)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


@dataclass
class Lab:
    csu: Csu
    tmp: Path
    certs: dict[str, Cert]
    totp_secret: str

    @property
    def port(self) -> int:
        return self.csu.ports["operators"]

    @property
    def ca_dir(self) -> Path:
        return self.csu.pki.ca.directory

    def audit(self) -> list[dict[str, Any]]:
        return csu_audit.read(self.csu.directory / "audit.jsonl")

    def context(self, cert: str | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.csu.pki.chain))
        ctx.check_hostname = False  # the certificate names csu.test, we dial 127.0.0.1
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        if cert is not None:
            ctx.load_cert_chain(self.certs[cert].crt, self.certs[cert].key)
        return ctx

    def operator(self, *args: str, stdin: str = "") -> str:
        return cli("operator", *args, "--config", str(self.csu.config), stdin=stdin).stdout

    def failures(self, name: str) -> int:
        db = sqlite3.connect(f"file:{self.csu.directory / 'operators.db'}?mode=ro", uri=True)
        try:
            row = db.execute("SELECT failures FROM operators WHERE name=?", (name,)).fetchone()
        finally:
            db.close()
        return int(row[0])

    def issue(self, name: str, file: str, *extra: str) -> Cert:
        out = self.tmp / "operators" / file
        out.parent.mkdir(exist_ok=True)
        cli("ca", "issue", str(self.ca_dir), name, "--out", str(out), *extra)
        cert = Cert(out.with_name(file + ".crt"), out.with_name(file + ".key"))
        self.certs[file] = cert
        return cert


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("console-cert")
    csu = make_csu(tmp)
    lab = Lab(csu, tmp, {}, "")
    for name, role, auth in (
        ("dupont", "supervisor", "certificate"),
        ("martin", "viewer", "certificate"),
        ("t.chef", "supervisor", "totp"),
    ):
        out = lab.operator(
            "add", "--name", name, "--role", role, "--auth", auth, "--password-stdin",
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        match = re.search(r"secret=([A-Z2-7]+)", out)
        assert (match is None) == (auth == "certificate"), out
        if match:
            lab.totp_secret = match.group(1)
    for name, file in (("dupont", "dupont"), ("dupont", "dupont-b"), ("martin", "martin")):
        lab.issue(name, file, "--profile", "console", "--days", "30")
    # what must never log in: a unit's TLS certificate and an agent's command-signing one,
    # both named after the account, by the same CA
    lab.issue("dupont", "unit-dupont", "--profile", "client")
    lab.issue("dupont", "signer-dupont", "--profile", "operator")
    # an expired console certificate (back-dated by the library: the command has no option)
    ca = VideoCA.open(lab.ca_dir)
    key, cert = ca.issue(
        "dupont", profile=Profile.CONSOLE, days=1,
        not_before=dt.datetime.now(dt.UTC) - dt.timedelta(days=3),
    )  # fmt: skip
    expired = Cert(tmp / "operators" / "expired.crt", tmp / "operators" / "expired.key")
    expired.crt.write_bytes(cert_pem(cert) + cert_pem(ca.sub_cert))
    expired.key.write_bytes(key_pem(key))
    lab.certs["expired"] = expired
    # a console certificate of another city's CA
    other = VideoCA.init(tmp / "other-ca")
    key, cert = other.issue("dupont", profile=Profile.CONSOLE)
    foreign = Cert(tmp / "operators" / "foreign.crt", tmp / "operators" / "foreign.key")
    foreign.crt.write_bytes(cert_pem(cert) + cert_pem(other.sub_cert))
    foreign.key.write_bytes(key_pem(key))
    lab.certs["foreign"] = foreign
    csu.start()
    try:
        yield lab
    finally:
        csu.stop()


@dataclass
class Response:
    status: int
    body: str


@dataclass
class Client:
    """One TLS connection (kept alive) presenting ``cert``, with the listener's cookies."""

    lab: Lab
    cert: str | None = None
    cookies: dict[str, str] = field(default_factory=dict)
    conn: http.client.HTTPSConnection | None = None

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> Response:
        if self.conn is None:
            self.conn = http.client.HTTPSConnection(
                "127.0.0.1", self.lab.port, context=self.lab.context(self.cert), timeout=30
            )
        headers = {}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = f"https://127.0.0.1:{self.lab.port}"
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        text = resp.read().decode(errors="replace")
        for line in resp.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        return Response(resp.status, text)

    def login(self, name: str, password: str = PASSWORD, code: str = "") -> Response:
        return self.request(
            "POST", "/console/login", {"name": name, "password": password, "code": code}
        )

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def with_cert(self, cert: str | None) -> Client:
        """The same cookies over a new connection presenting ``cert``."""
        return Client(self.lab, cert, dict(self.cookies))


def refusals(lab: Lab, action: str, who: str) -> list[str]:
    return [str(e.get("reason")) for e in lab.audit() if e["action"] == action and e["who"] == who]


def test_openssl_judges_the_issued_console_certificate_a_tls_client_one(lab: Lab) -> None:
    cert = lab.certs["dupont"]
    assert cert.key.stat().st_mode & 0o777 == 0o600
    chain = str(lab.csu.pki.chain)

    def verify(purpose: str, which: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["openssl", "verify", "-purpose", purpose, "-CAfile", chain,
             str(lab.certs[which].crt)],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip

    assert verify("sslclient", "dupont").returncode == 0
    assert verify("sslserver", "dupont").returncode != 0
    assert verify("sslclient", "signer-dupont").returncode != 0  # commands only, no TLS
    text = subprocess.run(
        ["openssl", "x509", "-noout", "-text", "-in", str(cert.crt)],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "TLS Web Client Authentication" in text and CONSOLE_LOGIN.dotted_string in text
    assert "Subject: O = Ville - vid" in text and "CN = dupont" in text
    # The receiver asks for it and takes it: s_client presents it, the page names the operator.
    request = "GET /console/ HTTP/1.1\r\nHost: csu.test\r\nConnection: close\r\n\r\n"
    shown = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{lab.port}", "-tls1_3", "-quiet",
         "-CAfile", chain, "-cert", str(cert.crt), "-key", str(cert.key)],
        input=request, capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert "HTTP/1.1 200" in shown.stdout, shown.stderr[-2000:]
    assert 'id="cert-login"' in shown.stdout and 'value="dupont"' in shown.stdout
    # the library's own profile check agrees with the one log-in uses
    leaf = x509.load_pem_x509_certificates(cert.crt.read_bytes())[0]
    unit = x509.load_pem_x509_certificates(lab.certs["unit-dupont"].crt.read_bytes())[0]
    assert profile_problem(leaf) is None
    assert "not a console certificate" in str(profile_problem(unit))


def test_the_console_profile_takes_account_names_only_and_never_overwrites_a_key(
    lab: Lab,
) -> None:
    out = lab.tmp / "operators" / "bad"
    done = cli("ca", "issue", str(lab.ca_dir), "Jean Dupont", "--profile", "console",
               "--out", str(out), check=False)  # fmt: skip
    assert done.returncode != 0 and "not an operator account name" in done.stderr
    again = cli("ca", "issue", str(lab.ca_dir), "dupont", "--profile", "console",
                "--out", str(lab.tmp / "operators" / "dupont"), check=False)  # fmt: skip
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
    listed = cli("ca", "list", str(lab.ca_dir)).stdout
    assert re.search(r"console\s+dupont", listed), listed


def test_a_certificate_account_logs_in_with_its_certificate_and_password_no_code(
    lab: Lab,
) -> None:
    client = Client(lab, "dupont")
    form = client.request("GET", "/console/")
    assert form.status == 200 and 'id="cert-login"' in form.body
    assert 'value="dupont"' in form.body and "Certificat de connexion" in form.body
    done = client.login("dupont")
    assert done.status == 303, done.body
    me = json.loads(client.request("GET", "/console/api/me").body)
    assert me["name"] == "dupont" and me["via"] == "session" and me["role"] == "supervisor"
    login = [e for e in lab.audit() if e["action"] == "login" and e["who"] == "dupont"][-1]
    assert login["certificate"] == lab.certs["dupont"].sha256
    client.close()
    # the certificate alone is not enough: a wrong password is refused and counted
    before = lab.failures("dupont")
    wrong = Client(lab, "dupont").login("dupont", password="not-the-right-password")
    assert wrong.status == 401
    assert refusals(lab, "login-refused", "dupont")[-1].startswith("wrong password")
    assert lab.failures("dupont") == before + 1
    assert Client(lab, "dupont").login("dupont").status == 303  # and a success resets it
    assert lab.failures("dupont") == 0


def test_password_and_code_accounts_log_in_as_before(lab: Lab) -> None:
    client = Client(lab)
    form = client.request("GET", "/console/")
    assert 'id="cert-login"' not in form.body and 'autocomplete="one-time-code"' in form.body
    code = totp_at(lab.totp_secret, totp_step(time.time()))
    assert client.login("t.chef", code=code).status == 303
    assert json.loads(client.request("GET", "/console/api/me").body)["name"] == "t.chef"
    # without the code it is refused, certificate or not
    refused = Client(lab, "dupont").login("t.chef")
    assert refused.status == 401
    assert refusals(lab, "login-refused", "t.chef")[-1].startswith("wrong or reused one-time")
    lab.operator("unlock", "--name", "t.chef")


def test_each_certificate_refusal_at_log_in_is_audited_and_counted(lab: Lab) -> None:
    cases = (
        (None, "no client certificate (the account logs in with its console certificate)"),
        ("martin", "the certificate is 'martin''s, not dupont's"),
        ("unit-dupont", "not a console certificate"),
    )
    for cert, reason in cases:
        before = lab.failures("dupont")
        client = Client(lab, cert)
        refused = client.login("dupont")
        assert refused.status == 401, (cert, refused.body)
        assert "Connexion refusée" in refused.body
        assert reason in refusals(lab, "login-refused", "dupont")[-1], cert
        assert lab.failures("dupont") == before + 1, cert
        client.close()
    # revoked while the connection that presented it is open: the handshake passed, the
    # log-in on that same connection is refused by the receiver's current CRL
    lab.issue("dupont", "dupont-late", "--profile", "console")
    client = Client(lab, "dupont-late")
    assert 'id="cert-login"' in client.request("GET", "/console/").body
    cli("ca", "revoke", str(lab.ca_dir), str(lab.certs["dupont-late"].crt))
    before = lab.failures("dupont")
    assert client.login("dupont").status == 401
    assert "revoked" in refusals(lab, "login-refused", "dupont")[-1]
    assert lab.failures("dupont") == before + 1
    client.close()
    lab.operator("unlock", "--name", "dupont")
    assert lab.failures("dupont") == 0


@pytest.mark.parametrize(
    ("cert", "reason"),
    [
        ("expired", "certificate has expired"),
        ("signer-dupont", "unsuitable certificate purpose"),
        ("foreign", "unable to get local issuer certificate"),
        ("revoked", "certificate revoked"),
    ],
)
def test_a_certificate_refused_at_the_handshake_is_audited(
    lab: Lab, cert: str, reason: str
) -> None:
    if cert == "revoked":
        lab.issue("dupont", "revoked", "--profile", "console")
        cli("ca", "revoke", str(lab.ca_dir), str(lab.certs["revoked"].crt))
    seen = len(lab.audit())
    client = Client(lab, cert)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        client.request("GET", "/console/")  # TLS 1.3: the alert arrives with the first read
    client.close()

    def audited() -> bool:
        return any(
            e["action"] == "login-refused" and reason in str(e.get("reason"))
            for e in lab.audit()[seen:]
        )

    wait_until(audited, 20, f"a login-refused record saying {reason!r}")
    [entry] = [e for e in lab.audit()[seen:] if e["action"] == "login-refused"]
    assert entry["who"] == "-" and entry["remote"] == "127.0.0.1"
    assert entry["reason"].startswith("client certificate refused at the TLS handshake")


def test_a_certificate_session_is_bound_to_its_certificate(lab: Lab) -> None:
    client = Client(lab, "dupont")
    assert client.login("dupont").status == 303
    assert client.request("GET", "/console/api/me").status == 200
    for other, reason in (
        (None, "no client certificate on this connection"),
        ("dupont-b", "another client certificate than the one the session was opened with"),
        ("martin", "another client certificate than the one the session was opened with"),
    ):
        thief = client.with_cert(other)
        assert thief.request("GET", "/console/api/me").status == 401, other
        assert thief.request("GET", "/v1/view/unit-a/street/live.m3u8").status == 401, other
        assert thief.request("GET", "/console/audit").status == 303, other  # to the log-in
        assert reason in refusals(lab, "session-refused", "dupont")[-1], other
        thief.close()
    # the session itself is untouched: its own certificate still opens it
    assert client.request("GET", "/console/api/me").status == 200
    # the certificate revoked while the connection is open: the next request is refused
    lab.issue("dupont", "dupont-c", "--profile", "console")
    revoked = Client(lab, "dupont-c")
    assert revoked.login("dupont").status == 303
    assert revoked.request("GET", "/console/api/me").status == 200
    cli("ca", "revoke", str(lab.ca_dir), str(lab.certs["dupont-c"].crt))
    assert revoked.request("GET", "/console/api/me").status == 401
    assert "revoked" in refusals(lab, "session-refused", "dupont")[-1]
    revoked.close()
    client.close()


def test_switching_an_account_between_codes_and_certificate(lab: Lab) -> None:
    out = lab.operator("set-auth", "--name", "martin", "--auth", "totp")
    secret = re.search(r"secret=([A-Z2-7]+)", out)
    assert secret, out
    listed = lab.operator("list")
    assert re.search(r"martin\s+viewer\s+totp", listed), listed
    client = Client(lab, "martin")  # a certificate presented is ignored by a TOTP account
    code = totp_at(secret.group(1), totp_step(time.time()))
    assert client.login("martin", code=code).status == 303
    assert client.request("GET", "/console/api/me").status == 200
    client.close()
    out = lab.operator("set-auth", "--name", "martin", "--auth", "certificate")
    assert "--profile console" in out and "secret=" not in out
    assert client.request("GET", "/console/api/me").status == 401  # its sessions ended
    assert Client(lab, "martin").login("martin").status == 303
    actions = [(e["action"], e.get("auth")) for e in lab.audit() if e.get("operator") == "martin"]
    assert ("operator-set-auth", "totp") in actions
    assert ("operator-set-auth", "certificate") in actions


def test_an_accounts_database_of_the_previous_release_is_brought_up_to_date(
    tmp_path: Path,
) -> None:
    path = tmp_path / "operators.db"
    db = sqlite3.connect(path)
    db.executescript(
        """CREATE TABLE operators (name TEXT PRIMARY KEY, role TEXT NOT NULL,
        scope TEXT NOT NULL, password TEXT NOT NULL, totp_secret TEXT NOT NULL,
        totp_last_step INTEGER NOT NULL DEFAULT 0, disabled INTEGER NOT NULL DEFAULT 0,
        failures INTEGER NOT NULL DEFAULT 0, last_failure REAL NOT NULL DEFAULT 0,
        created REAL NOT NULL);
        CREATE TABLE sessions (token_sha256 TEXT PRIMARY KEY, name TEXT NOT NULL
        REFERENCES operators(name), csrf TEXT NOT NULL, created REAL NOT NULL,
        last_seen REAL NOT NULL);"""
    )
    db.close()
    store = OperatorStore(path)
    store.add("old.hand", Role.VIEWER, Scope(), PASSWORD, "A" * 32)
    [op] = store.list()
    assert op.auth is AuthMethod.TOTP
    done = store.login("old.hand", PASSWORD, totp_at("A" * 32, totp_step(time.time())))
    assert done.session is not None and done.session.cert_sha256 is None


def test_the_log_in_judgement_refuses_what_the_handshake_would_let_pass_later(
    tmp_path: Path,
) -> None:
    """The checks log-in repeats after the handshake: a certificate that expired while its
    connection stayed open, a unit's TLS certificate of the same CA, one the CRL revokes."""
    ca = VideoCA.init(tmp_path / "ca")
    chain = x509.load_pem_x509_certificates(ca.chain_pem)
    now = dt.datetime.now(dt.UTC)
    _, console = ca.issue("dupont", profile=Profile.CONSOLE, days=30)
    _, unit = ca.issue("dupont", profile=Profile.CLIENT)
    der = console.public_bytes(serialization.Encoding.DER)
    ok = judge(der, chain, [], now)
    assert ok.problem is None and ok.name == "dupont"
    assert ok.sha256 == hashlib.sha256(der).hexdigest()
    later = judge(der, chain, [], now + dt.timedelta(days=31))
    assert f"{console.serial_number:x} of dupont refused: the certificate expired on" in str(
        later.problem
    )
    as_unit = judge(unit.public_bytes(serialization.Encoding.DER), chain, [], now)
    assert str(as_unit.problem).endswith(
        "refused: validation failed: not a console certificate (its extendedKeyUsage has no "
        "console log-in purpose)"
    ), as_unit.problem
    crl = ca.revoke(console.serial_number)
    revoked = judge(der, chain, [crl], now + dt.timedelta(seconds=1))
    assert "revoked" in str(revoked.problem)
    with pytest.raises(CaError, match="not an operator account name"):
        ca.issue("Jean Dupont", profile=Profile.CONSOLE)
