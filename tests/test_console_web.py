"""The console's log-in, sessions, CSRF, headers and scopes on a real ``edge-csu serve`` over
TLS 1.3, with accounts made by the real ``edge-csu operator`` command; every refusal is
checked in the receiver's hash-chained audit log."""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import json
import re
import shlex
import sqlite3
import ssl
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.ca import Profile
from edge.csu.console.credentials import totp_at, totp_step
from edge.csu.receiver import access_log as csu_audit
from edge.events import EventSigner

from .uplink_util import Csu, make_csu

PASSWORD = "pavé-de-la-place-2026"
SCRIPT_TOKEN = "display-script-token-for-unit-a"


@dataclass
class Console:
    csu: Csu
    secrets: dict[str, str]
    ctx: ssl.SSLContext

    @property
    def port(self) -> int:
        return self.csu.ports["operators"]

    def audit(self) -> list[dict[str, Any]]:
        return csu_audit.read(self.csu.directory / "audit.jsonl")


def operator_cmd(csu: Csu, *args: str, stdin: str = "") -> str:
    return subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "operator", *args, "--config", str(csu.config)],
        input=stdin, capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Console]:
    tmp = tmp_path_factory.mktemp("console")
    csu = make_csu(tmp)
    token_hash = hashlib.sha256(SCRIPT_TOKEN.encode()).hexdigest()
    csu.write_config(
        extra=f"""[[operators]]
name = "wall-script"
token_sha256 = "{token_hash}"
expires = 2100-01-01T00:00:00Z
role = "viewer"
scope = ["unit-a/street"]
"""
    )
    secrets = {}
    for name, role, scope in (
        ("a.viewer", "viewer", "unit-a/street"),
        ("s.chef", "supervisor", ""),
        ("i.enquete", "investigator", ""),
        ("s.nuit", "supervisor", ""),
    ):
        out = operator_cmd(
            csu, "add", "--name", name, "--role", role, "--scope", scope, "--password-stdin",
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        match = re.search(r"secret=([A-Z2-7]+)", out)
        assert match, out
        secrets[name] = match.group(1)
    for unit in ("unit-a", "unit-b"):
        (csu.directory / "storage" / unit / "street").mkdir(parents=True)
    csu.start()
    ctx = ssl.create_default_context(cafile=str(csu.pki.chain))
    ctx.check_hostname = False  # the certificate names csu.test, we dial 127.0.0.1
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        yield Console(csu, secrets, ctx)
    finally:
        csu.stop()


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: str


@dataclass
class Browser:
    """Enough of a browser: cookies of the listener, an Origin on POSTs."""

    console: Console
    cookies: dict[str, str] = field(default_factory=dict)
    set_cookie_lines: list[str] = field(default_factory=list)

    def request(
        self,
        method: str,
        path: str,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", self.console.port, context=self.console.ctx, timeout=30
        )
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = urllib.parse.urlencode(form)
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            hdrs.setdefault("Origin", f"https://127.0.0.1:{self.console.port}")
        conn.request(method, path, body=body, headers=hdrs)
        resp = conn.getresponse()
        text = resp.read().decode(errors="replace")
        for line in resp.headers.get_all("Set-Cookie") or []:
            self.set_cookie_lines.append(line)
            for name, morsel in SimpleCookie(line).items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value
        conn.close()
        return Response(resp.status, resp.headers, text)

    def login(self, name: str, *, code_ahead: int = 0, password: str = PASSWORD) -> Response:
        secret = self.console.secrets.get(name, "A" * 32)
        code = totp_at(secret, totp_step(time.time()) + code_ahead)
        return self.request(
            "POST", "/console/login", {"name": name, "password": password, "code": code}
        )

    def csrf(self) -> str:
        me = self.request("GET", "/console/api/me")
        assert me.status == 200, me.body
        return str(json.loads(me.body)["csrf"])


def test_log_in_gives_a_locked_down_session_cookie_and_a_french_page(console: Console) -> None:
    browser = Browser(console)
    page = browser.request("GET", "/console/")
    assert page.status == 200 and '<html lang="fr">' in page.body
    assert "Identifiant" in page.body and 'autocomplete="one-time-code"' in page.body
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp
    assert "'unsafe-inline'" not in csp and "frame-ancestors 'none'" in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "<script" not in page.body and " style=" not in page.body  # nothing inline
    english = browser.request("GET", "/console/?lang=en")
    assert '<html lang="en">' in english.body and "Operator name" in english.body

    done = browser.login("s.chef")
    assert done.status == 303, done.body
    [cookie] = [c for c in browser.set_cookie_lines if c.startswith("__Host-edge-console=")]
    attributes = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"secure", "httponly", "samesite=strict", "path=/"} <= attributes
    assert not any(a.startswith("domain") for a in attributes)
    home = browser.request("GET", "/console/")  # the language chosen last is kept
    assert 'id="operator">s.chef<' in home.body and "supervisor" in home.body
    # every camera of the fleet on the wall, each tile with a picker of all of them
    picks = re.findall(
        r'<select data-pick aria-label="Camera of tile (\d)">(.*?)</select>', home.body
    )
    assert [n for n, _ in picks] == ["1", "2"], picks
    for n, options in picks:
        values = re.findall(r'<option value="([^"]+)"( selected)?>', options)
        chosen = ["unit-a/street", "unit-b/street"][int(n) - 1]
        assert values == [
            (v, " selected" if v == chosen else "") for v in ("unit-a/street", "unit-b/street")
        ], values
    assert "superviseur" in browser.request("GET", "/console/?lang=fr").body
    me = json.loads(browser.request("GET", "/console/api/me").body)
    assert me["role"] == "supervisor" and "audit" in me["permissions"] and me["via"] == "session"
    assert "export" in me["permissions"] and "manage" not in me["permissions"]
    logins = [e for e in console.audit() if e["action"] == "login"]
    assert logins[-1]["who"] == "s.chef" and logins[-1]["remote"] == "127.0.0.1"


def test_a_viewer_scoped_to_one_camera_gets_neither_page_nor_api_of_another(
    console: Console,
) -> None:
    browser = Browser(console)
    assert browser.login("a.viewer").status == 303
    cams = json.loads(browser.request("GET", "/console/api/cameras").body)
    assert cams == [{"unit": "unit-a", "camera": "street"}]
    home = browser.request("GET", "/console/").body
    assert "unit-a" in home and "unit-b" not in home
    # the wall's camera picker offers the scope and nothing else (one tile, one camera)
    picks = re.findall(r'<select data-pick aria-label="([^"]+)">(.*?)</select>', home)
    assert picks == [
        (
            "Caméra de la vignette 1",
            '<option value="unit-a/street" selected>unit-a / street</option>',
        )
    ], picks
    # the video API: in scope it gets as far as the archive (nothing stored: 404), out of
    # scope it is refused before anything is read, and the refusal is audited
    assert browser.request("GET", "/v1/view/unit-a/street/live.m3u8").status == 404
    assert browser.request("GET", "/v1/view/unit-b/street/live.m3u8").status == 403
    export = "/v1/export/unit-a/street.mp4?from=0&to=10&case=X"
    assert browser.request("GET", export).status == 403  # a viewer may not export
    assert browser.request("GET", "/console/evidence").status == 403
    # the pages: camera B is neither offered nor shown when asked for by hand
    assert "unit-b" not in browser.request("GET", "/console/playback").body
    assert browser.request("GET", "/console/playback?cam=unit-b/street").status == 403
    # a bearer token with the same scope, for a display script: the same answers
    bearer = {"Authorization": f"Bearer {SCRIPT_TOKEN}"}
    script = Browser(console)
    assert script.request("GET", "/v1/view/unit-b/street/live.m3u8", headers=bearer).status == 403
    assert script.request("GET", "/v1/view/unit-a/street/live.m3u8", headers=bearer).status == 404
    refused = [e for e in console.audit() if e["action"] == "refused" and e["who"] != "-"]
    reasons = {(e["who"], e["path"], e["reason"]) for e in refused}
    assert (
        "a.viewer",
        "/v1/view/unit-b/street/live.m3u8",
        "unit-b/street outside the scope unit-a/street",
    ) in reasons
    assert ("a.viewer", "/v1/export/unit-a/street.mp4", "role viewer may not export") in reasons
    assert any(who == "wall-script" and "unit-b" in path for who, path, _ in reasons)


def test_a_forged_csrf_token_or_a_foreign_origin_is_refused_and_logout_ends_the_session(
    console: Console,
) -> None:
    browser = Browser(console)
    assert browser.login("s.chef", code_ahead=1).status == 303
    real = browser.csrf()
    assert browser.request("POST", "/console/logout", {"csrf": "forged"}).status == 403
    foreign = {"Origin": "https://evil.example"}
    assert browser.request("POST", "/console/logout", {"csrf": real}, foreign).status == 403
    assert browser.request("POST", "/console/logout", {}).status == 403
    assert browser.request("GET", "/console/api/me").status == 200  # still logged in
    stolen = dict(browser.cookies)
    assert browser.request("POST", "/console/logout", {"csrf": real}).status == 303
    assert "__Host-edge-console" not in browser.cookies
    replay = Browser(console, cookies=stolen)  # the old cookie is worth nothing now
    assert replay.request("GET", "/console/api/me").status == 401
    actions = [(e["who"], e["action"], e.get("reason")) for e in console.audit()]
    assert ("s.chef", "csrf-refused", "missing or wrong CSRF token") in actions
    assert ("s.chef", "csrf-refused", "cross-origin request from https://evil.example") in actions
    assert ("s.chef", "logout", None) in actions
    # a log-in posted from another site is refused too (log-in CSRF)
    other = Browser(console)
    evil = other.request(
        "POST", "/console/login", {"name": "s.chef", "password": PASSWORD, "code": "1"}, foreign
    )
    assert evil.status == 403 and "__Host-edge-console" not in other.cookies


def test_an_expired_session_is_refused_and_said_so_in_the_audit_log(console: Console) -> None:
    browser = Browser(console)
    assert browser.login("a.viewer", code_ahead=1).status == 303
    assert browser.request("GET", "/console/api/me").status == 200
    # the fault: thirteen hours pass (the maximum is one twelve-hour shift)
    with sqlite3.connect(console.csu.directory / "operators.db") as db:
        db.execute("UPDATE sessions SET created = created - 13 * 3600 WHERE name='a.viewer'")
    assert browser.request("GET", "/v1/view/unit-a/street/live.m3u8").status == 401
    assert browser.request("GET", "/console/api/me").status == 401
    page = browser.request("GET", "/console/")
    assert "Identifiant" in page.body  # back to the log-in form
    reasons = [str(e.get("reason")) for e in console.audit() if "refused" in str(e["action"])]
    assert "session reached its maximum length (a.viewer)" in reasons


def test_repeated_failures_lock_the_account_and_each_refusal_is_audited(
    console: Console,
) -> None:
    operator_cmd(
        console.csu, "add", "--name", "n.guess", "--role", "viewer", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    browser = Browser(console)
    for _ in range(5):
        refused = browser.login("n.guess", password="not-the-password-at-all")
        assert refused.status == 401 and "Connexion refusée" in refused.body
    # the right password, but the account is locked (and the page says nothing more)
    assert (
        browser.request(
            "POST", "/console/login", {"name": "n.guess", "password": PASSWORD, "code": "000000"}
        ).status
        == 401
    )
    assert "__Host-edge-console" not in browser.cookies
    listing = operator_cmd(console.csu, "list")
    assert re.search(r"n\.guess\s+viewer\s+totp\s+\*\s+LOCKED until", listing), listing
    entries = [e for e in console.audit() if e["action"] == "login-refused"]
    mine = [str(e["reason"]) for e in entries if e["who"] == "n.guess"]
    assert len(mine) == 6 and "account locked for 900 s" in mine[4]
    assert mine[5].startswith("account n.guess locked until")
    assert PASSWORD not in (console.csu.directory / "audit.jsonl").read_text()
    operator_cmd(console.csu, "unlock", "--name", "n.guess")
    operator_cmd(console.csu, "disable", "--name", "n.guess")
    assert "disabled" in operator_cmd(console.csu, "list")
    admin_actions = {(e["action"], e.get("operator")) for e in console.audit()}
    assert {("operator-unlock", "n.guess"), ("operator-disable", "n.guess")} <= admin_actions


def test_an_export_for_a_case_goes_through_the_audited_export_route(console: Console) -> None:
    browser = Browser(console)
    assert browser.login("i.enquete").status == 303
    assert browser.request("GET", "/console/audit").status == 403  # supervisors only
    page = browser.request("GET", "/console/evidence")
    assert page.status == 200 and "30 jours" in page.body and "unit-b / street" in page.body
    bad = browser.request("GET", "/console/evidence/export?cam=unit-a/street&case=%3Cx%3E")
    assert bad.status == 400
    done = browser.request(
        "GET",
        "/console/evidence/export?cam=unit-a/street&from=2026-11-28T14:00:00"
        "&to=2026-11-28T14:10:00&case=PV-2026/0042",
    )
    assert done.status == 303
    target = urllib.parse.urlsplit(done.headers["Location"])
    assert target.path == "/v1/export/unit-a/street.mp4"
    assert urllib.parse.parse_qs(target.query) == {
        "from": ["1795874400.000"],
        "to": ["1795875000.000"],
        "case": ["PV-2026/0042"],
    }
    # the export route itself: in scope and allowed, it reaches the archive (nothing stored)
    assert browser.request("GET", done.headers["Location"]).status == 404


def test_a_broken_audit_chain_is_shown_as_such_to_a_supervisor(console: Console) -> None:
    browser = Browser(console)
    assert browser.login("s.nuit").status == 303
    whole = browser.request("GET", "/console/audit?q=login")
    assert whole.status == 200 and "s.nuit" in whole.body
    path = console.csu.directory / "audit.jsonl"
    original = path.read_bytes()
    lines = original.splitlines(keepends=True)
    broken = b"".join(lines[:1] + lines[2:])  # the fault: one line removed
    try:
        path.write_bytes(broken)
        page = browser.request("GET", "/console/audit")
        assert page.status == 409 and "audit chain broken" in page.body
    finally:  # put the line back, keeping what was appended meanwhile
        path.write_bytes(original + path.read_bytes()[len(broken) :])
    assert browser.request("GET", "/console/audit").status == 200


def test_a_console_decision_is_signed_and_edge_csu_audit_verify_checks_it(
    console: Console,
) -> None:
    event_id = "5f1e2d3c-0000-4000-8000-00000000a1e7"
    events = console.csu.directory / "storage" / "unit-a" / "events"
    events.mkdir(parents=True, exist_ok=True)
    body = {
        "id": event_id, "unit": "unit-a", "camera": "street", "category": "alarm",
        "kind": "intrusion", "rule": "quai", "wall_ns": time.time_ns(),
        "details": {"message": "personne sur le quai"},
    }  # fmt: skip
    (events / f"{event_id}.json").write_text(json.dumps({"event": body}))
    browser = Browser(console)  # codes one step ahead: earlier tests used this step's
    assert browser.login("i.enquete", code_ahead=1).status == 303
    form = {"decision": "confirm", "unit": "unit-a", "id": event_id, "comment": "vu",
            "csrf": browser.csrf()}  # fmt: skip
    assert browser.request("POST", "/console/alerts/decide", form).status == 303

    [decision] = [e for e in console.audit() if e["action"] == "alert-decision"]
    assert decision["who"] == "i.enquete" and decision["event"] == event_id
    assert "time_to_decide_s" in decision and "sig" in decision
    # the operators were added before the first start: their records are signed too
    assert all("sig" in e for e in console.audit())
    run = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "audit", "verify", "--json",
         "--config", str(console.csu.config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    result = json.loads(run.stdout)
    assert run.returncode == 0 and result["ok"], run.stdout + run.stderr
    assert result["signed"] == result["count"] >= 6 and not result["unsigned_lines"]
    browser = Browser(console)
    assert browser.login("s.nuit", code_ahead=1).status == 303
    page = browser.request("GET", "/console/audit?q=alert-decision")
    assert page.status == 200 and "signé" in page.body and "NON SIGNÉ" not in page.body


def test_cabinet_outputs_and_waiting_requests_are_shown_in_scope_with_the_command_to_sign(
    console: Console,
) -> None:
    """Events as units with cabinet outputs send them (signed, category ``output``) in the
    receiver's store; the pages show each output's state and each waiting request with the
    exact ``edge-csu command confirm`` line, which queues a command once the agent puts their
    own operator key in it. A viewer of one camera sees neither another unit nor a request
    about another camera."""
    now = time.time_ns()
    signers = {
        u: EventSigner(ed25519.Ed25519PrivateKey.generate(), u) for u in ("unit-a", "unit-b")
    }

    def put(unit: str, camera: str, category: str, kind: str, at: int, **details: Any) -> str:
        event = signers[unit].sign(
            camera=camera, category=category, kind=kind, rule="outputs", wall_ns=at,
            frame_index=-1, details={"agent": "edged", "reason": kind, **details},
        )  # fmt: skip
        directory = console.csu.directory / "storage" / unit / "events"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"{event.body['id']}.json").write_bytes(event.wire())
        return str(event.body["id"])

    s = 10**9
    street = put("unit-a", "street", "alert", "gathering", now - 5 * s)
    park = put("unit-a", "park", "alert", "gathering", now - 5 * s)
    put("unit-a", "unit", "output", "output-safe", now - 60 * s, output="relay-barrier")
    put("unit-a", "unit", "output", "output-confirmation-requested", now - 4 * s,
        output="relay-barrier", playbook="lane-closure", event=street, confirm_within_s=300.0,
        reason="gathering on street: waits for an agent's confirmation")  # fmt: skip
    put("unit-a", "unit", "output", "output-confirmation-requested", now - 4 * s,
        output="speaker", playbook="disperse-park", event=park, confirm_within_s=300.0)  # fmt: skip
    old = put("unit-a", "street", "alert", "gathering", now - 900 * s)
    put("unit-a", "unit", "output", "output-confirmation-requested", now - 899 * s,
        output="relay-barrier", playbook="lane-closure", event=old,
        confirm_within_s=300.0)  # fmt: skip
    put("unit-a", "unit", "output", "output-driven", now - 3 * s, output="sign-north",
        state="wrong-way", playbook="wrong-way-warning", event=street, duration_s=60.0)  # fmt: skip
    put("unit-a", "unit", "output", "output-safe", now - 2 * s, output="speaker",
        error="speaker: aplay exited 1")  # fmt: skip
    b_event = put("unit-b", "street", "alert", "gathering", now - 5 * s)
    put("unit-b", "unit", "output", "output-confirmation-requested", now - 4 * s,
        output="sign-b", playbook="closure-b", event=b_event, confirm_within_s=300.0)  # fmt: skip

    for name, role, scope in (("o.salle", "supervisor", ""), ("o.rue", "viewer", "unit-a/street")):
        out = operator_cmd(console.csu, "add", "--name", name, "--role", role, "--scope", scope,
                           "--password-stdin", stdin=PASSWORD + "\n")  # fmt: skip
        match = re.search(r"secret=([A-Z2-7]+)", out)
        assert match, out
        console.secrets[name] = match.group(1)

    chef = Browser(console)
    assert chef.login("o.salle").status == 303
    units = chef.request("GET", "/console/units?lang=en")
    assert units.status == 200 and "Cabinet outputs" in units.body
    outputs_of = dict(re.findall(r'<span data-output="([^"]+)">(.*?)</span>(?:<br>|</td>)',
                                 units.body))  # fmt: skip
    assert "<strong>WRONG-WAY</strong> since" in outputs_of["sign-north"]
    assert "wrong-way-warning, edged" in outputs_of["sign-north"]
    assert outputs_of["relay-barrier"].startswith("relay-barrier: safe since")
    assert 'class="bad">STATE UNKNOWN: speaker: aplay exited 1' in outputs_of["speaker"]
    assert "2 request(s) waiting" in units.body and "1 request(s) waiting" in units.body
    assert "sign-b" in units.body

    page = chef.request("GET", "/console/alerts?lang=fr")
    assert page.status == 200 and "Demandes de confirmation" in page.body
    assert "<script" in page.body and "onclick" not in page.body and " style=" not in page.body
    commands = [html.unescape(c) for c in re.findall(r'<code class="command">(.*?)</code>',
                                                     page.body)]  # fmt: skip
    assert len(commands) == 3 and "EXPIRÉE" in page.body  # the one of 15 minutes ago: lapsed
    [line] = [c for c in commands if "lane-closure" in c]
    argv = shlex.split(line)
    assert argv[:3] == ["edge-csu", "command", "confirm"]
    assert argv[argv.index("--config") + 1] == str(console.csu.config.resolve())
    assert argv[argv.index("--event") + 1] == street
    # the agent's own key and certificate in place of the placeholders: it queues the command
    crt, key, _ = console.csu.pki.issue("agent-salle", console.csu.directory / "agent",
                                        profile=Profile.OPERATOR)  # fmt: skip
    argv = [str(key) if a == "AGENT.key" else str(crt) if a == "AGENT.crt" else a for a in argv]
    run = subprocess.run([sys.executable, "-m", "edge.csu.main", *argv[1:]],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    [queued] = (console.csu.directory / "commands" / "unit-a").glob("*.json")
    envelope = json.loads(queued.read_bytes())
    body = json.loads(base64.b64decode(envelope["body"]))
    assert (body["type"], body["unit"], body["outputs"], body["playbook"], body["event"]) == (
        "confirm", "unit-a", ["relay-barrier"], "lane-closure", street
    )  # fmt: skip
    # the drill-down from the units page: that unit's requests only; the refresh fragment too
    drill = chef.request("GET", "/console/alerts?unit=unit-b&fragment=requests")
    assert drill.status == 200 and "closure-b" in drill.body and "lane-closure" not in drill.body

    viewer = Browser(console)
    assert viewer.login("o.rue").status == 303
    mine = viewer.request("GET", "/console/alerts?lang=en")
    assert "Confirmation requests" in mine.body and "lane-closure" in mine.body
    assert "disperse-park" not in mine.body  # about the park camera: out of the scope
    assert "closure-b" not in mine.body and "unit-b" not in mine.body
    units = viewer.request("GET", "/console/units?lang=fr")
    assert "sign-north" in units.body and "unit-b" not in units.body
    assert "1 demande(s) en attente" in units.body
