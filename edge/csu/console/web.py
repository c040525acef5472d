"""The console on the operators' listener: log-in, sessions, CSRF, security headers, and the one
authentication step every operator request goes through (console cookie or bearer token).

Routes (operator listener, beside the HLS routes of :mod:`edge.csu.receiver.hls`)::

    GET  /console/                 log-in form, or the live wall (1, 4, 9 tiles; MSE player)
    GET  /console/units            units in scope: last contact, backlog, door, tamper, cabinet
                                   outputs, certificate, chain
    GET  /console/playback?cam=UNIT/CAMERA&from=&to=   timeline (spans, gaps, alerts), player
    GET  /console/alerts           outputs' confirmation requests (with the command to sign),
                                   alerts inbox (false-alarm rates per rule for supervisors)
    POST /console/alerts/decide    confirm / dismiss / escalate + comment (CSRF) → audit log
    GET  /console/snapshots/UNIT/EVENT.jpg   an alert's snapshot, checked and opened (scoped,
                                   audited ``view-snapshot``, never cached)
    GET  /console/api/masks/UNIT/CAMERA   the polygons of the mask set the camera's newest
                                   segment commits to (scoped), for the live tiles' overlay
    GET  /console/audit?q=TEXT     the audit log, newest first, searchable (supervisors)
    GET  /console/evidence         export form with case number, what expires when
    GET  /console/evidence/export  checks the form → /v1/export/….tar (format=bundle: the
                                   signed bundle) or ….mp4, audited with the case there
    POST /console/login            name, password, one-time code (or the connection's console
                                   client certificate: :mod:`.certlogin`) → session cookie
    POST /console/logout           (CSRF token) → session ended
    GET  /console/api/me           who is logged in, role, scope, CSRF token (JSON)
    GET  /console/api/cameras      the cameras in the operator's scope (JSON)
    GET  /console/static/{file}    style sheet and player script (package data, written here)

The cookie is ``__Host-`` prefixed, Secure, HttpOnly and SameSite=Strict; it carries a random
token whose SHA-256 alone is stored. Every state-changing request must carry the session's CSRF
token (``X-CSRF-Token`` header or ``csrf`` form field) and, from a browser, an ``Origin`` equal
to the listener's own. Pages are sent with a strict Content-Security-Policy (nothing inline,
nothing from another origin).
"""

from __future__ import annotations

import datetime as dt
import hmac
import html
import json
import re
import time
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ...errors import ConfigError, IntegrityError
from ..receiver import access_log
from ..receiver.archive import Refusal
from ..receiver.pgaudit import PgAuditLog
from ..receiver.trust import utcnow
from . import certlogin, i18n, outputs, pages, playback
from .accounts import OperatorStore, PresentedCertificate, Session
from .alerts import (
    AlertBook,
    Decision,
    DecisionRecord,
    UnitConditions,
    false_alarm_rates,
    in_scope,
    unit_conditions,
)
from .roles import SCOPE_ITEM, Permission, Role, Scope, allows

if TYPE_CHECKING:
    from ..receiver.server import Handler, Receiver

PREFIX = "/console"
COOKIE = "__Host-edge-console"
LANG_COOKIE = "edge-console-lang"
STORE_KEY: web.AppKey[OperatorStore] = web.AppKey("operator_store", OperatorStore)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    # same-origin, not no-referrer: with no-referrer Chromium posts forms with "Origin: null",
    # and the Origin check is the log-in form's CSRF defence.
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_CURRENT = ' aria-current="page"'
_STATIC = {"console.css": "text/css", "console.js": "text/javascript"}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who makes a request, whichever way they proved it."""

    name: str
    role: Role
    scope: Scope
    via: str
    """``session`` or ``token``."""
    session: Session | None = None

    def may(self, permission: Permission) -> bool:
        return allows(self.role, permission)


def remote_of(request: web.Request) -> str | None:
    peer = request.transport.get_extra_info("peername") if request.transport else None
    return str(peer[0]) if peer else None


def _bearer(request: web.Request) -> str | None:
    auth = request.headers.get("Authorization", "")
    return auth[7:].strip() if auth.startswith("Bearer ") else None


def authenticate(
    receiver: Receiver, store: OperatorStore, request: web.Request
) -> tuple[Principal | None, str]:
    """The principal of ``request`` or the reason it has none. Blocking (SQLite, scrypt never:
    sessions are looked up by hash): call from the worker pool."""
    token = _bearer(request)
    if token is not None or COOKIE not in request.cookies:
        verdict = receiver.cfg.operator_for_token(token, utcnow())
        if verdict.operator is None or verdict.entry is None:
            return None, verdict.refusal or "refused"
        entry = verdict.entry
        return Principal(entry.name, Role(entry.role), Scope.parse(entry.scope), "token"), ""
    session, why = store.session(request.cookies.get(COOKIE))
    if session is None:
        return None, why or "no session"
    op = session.operator
    if session.cert_sha256 is not None:
        unbound = _certificate_binding_refusal(receiver, request, session)
        if unbound is not None:
            return None, unbound
    return Principal(op.name, op.role, op.scope, "session", session), ""


def _certificate_binding_refusal(
    receiver: Receiver, request: web.Request, session: Session
) -> str | None:
    """Why a session opened with a certificate may not serve ``request`` (audited here as
    ``session-refused``: a cookie replayed without its certificate), or None."""
    assert session.cert_sha256 is not None
    problem = certlogin.binding_problem(receiver, request, session.cert_sha256)
    if problem is None:
        return None
    name = session.operator.name
    receiver.audit.record(
        name, "session-refused", remote=remote_of(request), path=request.path[:512], reason=problem
    )
    return f"{problem} ({name})"


def _login_body(lang: str, presented: PresentedCertificate | None, *, refused: bool = False) -> str:
    """The log-in form: the certificate one when the connection presents a console
    certificate that passes, else the password and one-time code one."""
    if presented is not None and presented.problem is None:
        return certlogin.login_form(lang, presented, refused=refused)
    return _login_form(lang, refused=refused)


def check_scope(principal: Principal, unit: str | None, camera: str | None) -> str | None:
    """Why ``principal`` may not see ``unit``/``camera`` (None: it may)."""
    if unit is None:
        return None
    if camera is None:
        ok = principal.scope.allows_unit(unit)
    else:
        ok = principal.scope.allows_camera(unit, camera)
    return None if ok else f"{unit}/{camera or '*'} outside the scope {principal.scope}"


def check_csrf(request: web.Request, principal: Principal, form_token: str | None) -> str | None:
    """Why a state-changing request is refused (None: it passes). Bearer-token scripts are not
    browsers and carry no ambient credential: only sessions need the token."""
    if principal.session is None:
        return None
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"https://{request.host}":
        return f"cross-origin request from {origin[:200]}"
    given = request.headers.get("X-CSRF-Token") or form_token or ""
    if not hmac.compare_digest(given.encode(), principal.session.csrf.encode()):
        return "missing or wrong CSRF token"
    return None


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        response = exc
    if request.path.startswith(PREFIX):
        response.headers.update(SECURITY_HEADERS)
    if isinstance(response, web.HTTPException) and response.status >= 400:
        raise response
    return response


def _lang(request: web.Request) -> str:
    return i18n.pick(request.query.get("lang") or request.cookies.get(LANG_COOKIE))


def _page(lang: str, body: str, *, status: int = 200) -> web.Response:
    t = i18n.text
    doc = (
        f'<!doctype html><html lang="{lang}"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{t('title', lang)}</title>"
        '<link rel="icon" href="data:,">'  # no /favicon.ico request: it would be audited
        f'<link rel="stylesheet" href="{PREFIX}/static/console.css"></head><body>{body}</body>'
        "</html>"
    )
    response = web.Response(text=doc, content_type="text/html", status=status)
    response.set_cookie(LANG_COOKIE, lang, secure=True, samesite="Strict", path="/")
    return response


def _login_form(lang: str, *, refused: bool = False) -> str:
    t = i18n.text
    other = "en" if lang == "fr" else "fr"
    error = f'<p class="error" role="alert">{t("refused", lang)}</p>' if refused else ""
    return (
        f'<main><form class="login" method="post" action="{PREFIX}/login">'
        f"<h1>{t('title', lang)}</h1>{error}"
        f'<label>{t("name", lang)}<input name="name" autocomplete="username" required autofocus>'
        "</label>"
        f'<label>{t("password", lang)}<input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        f'<label>{t("code", lang)}<input name="code" inputmode="numeric" '
        'autocomplete="one-time-code" pattern="[0-9]{6}" required></label>'
        f'<input type="hidden" name="lang" value="{lang}">'
        f'<button type="submit">{t("login", lang)}</button>'
        f'<a href="{PREFIX}/?lang={other}" lang="{other}">{t("other_language", lang)}</a>'
        "</form></main>"
    )


def _shell(lang: str, principal: Principal, active: str, content: str) -> str:
    """The page around every view: title, navigation, who is logged in, logout."""
    t = i18n.text
    assert principal.session is not None
    esc = html.escape
    scope = t("whole_fleet", lang) if principal.scope.everything else esc(str(principal.scope))
    links = "".join(
        f'<a href="{PREFIX}/{path}"{_CURRENT if key == active else ""}>{t(key, lang)}</a>'
        for key, path in (
            ("live", ""),
            ("playback", "playback"),
            ("alerts", "alerts"),
            ("units", "units"),
        )
        + ((("evidence", "evidence"),) if principal.may(Permission.EXPORT) else ())
        + ((("audit", "audit"),) if principal.may(Permission.AUDIT) else ())
    )
    return (
        f"<header><h1>{t('title', lang)}</h1>"
        f'<nav aria-label="{t("nav", lang)}">{links}</nav>'
        f'<p>{t("logged_in_as", lang)} <strong id="operator">{esc(principal.name)}'
        f"</strong> — {t('role_' + principal.role.value, lang)} — {t('scope', lang)}: {scope}</p>"
        f'<form method="post" action="{PREFIX}/logout">'
        f'<input type="hidden" name="csrf" value="{esc(principal.session.csrf)}">'
        f'<button type="submit">{t("logout", lang)}</button></form></header>'
        f"<main>{content}<p>{t('session_note', lang)}</p></main>"
    )


def _wall(lang: str, cameras: list[tuple[str, str]]) -> str:
    t = i18n.text
    esc = html.escape
    if not cameras:
        return f"<p>{t('no_camera', lang)}</p>"
    states = " ".join(
        f'data-{k}="{esc(t("state_" + k, lang))}"' for k in ("waiting", "live", "refused", "error")
    )
    buttons = "".join(
        f'<button type="button" data-layout-button="{n}" aria-pressed="false">'
        f"{n} {t('tile' if n == 1 else 'tiles', lang)}</button>"
        for n in (1, 4, 9)
    )
    names = [f"{u}/{c}" for u, c in cameras]
    tiles = "".join(
        f'<figure class="tile" tabindex="0" data-unit="{esc(u)}" data-camera="{esc(c)}" {states}'
        f' aria-label="{esc(u)} / {esc(c)}"><video muted playsinline></video>'
        f'<figcaption class="label"><select data-pick aria-label="'
        f'{esc(t("tile_camera", lang).format(i + 1))}">{_camera_options(names, f"{u}/{c}")}'
        f'</select><button type="button" data-masks aria-pressed="false" '
        f'data-none="{esc(t("masks_none", lang))}">{t("masks_overlay", lang)}</button>'
        "</figcaption>"
        f'<span class="state" role="status">{t("state_waiting", lang)}</span></figure>'
        for i, (u, c) in enumerate(cameras[:9])
    )
    return (
        f'<h2 id="live-title">{t("live", lang)}</h2>'
        f'<div class="toolbar" role="group" aria-label="{t("layout", lang)}">{buttons}</div>'
        f"<p>{t('wall_help', lang)}</p>"
        f'<section id="wall" class="wall" data-layout="4" aria-labelledby="live-title">{tiles}'
        "</section>"
        f'<script src="{PREFIX}/static/console.js"></script>'
    )


def _camera_options(names: list[str], chosen: str) -> str:
    """The picker of a wall tile: every camera in the operator's scope (and only those; the
    video routes refuse any other all the same), the tile's own selected."""
    esc = html.escape
    return "".join(
        f'<option value="{esc(n)}"{" selected" if n == chosen else ""}>'
        f"{esc(n.replace('/', ' / ', 1))}</option>"
        for n in names
    )


def _units_table(lang: str, rows: list[dict[str, Any]], now_ns: int) -> str:
    t = i18n.text
    esc = html.escape
    body = []
    for row in rows:
        last = row["last_contact_ns"]
        contact = t("ago", lang).format(round((now_ns - last) / 1e9)) if last else t("never", lang)
        backlog = row["backlog"] or {}
        key = row["signing_key"]
        if not key["trusted"]:
            cert = f'<span class="bad">{t("untrusted", lang)}</span>'
        elif key["source"] == "certificate":
            cert = esc(str(key["not_after"])[:10])
        else:
            cert = t("pinned", lang)
        chains = "<br>".join(
            f"{esc(cam)}: {st['count']} seg. #{st['first']}..#{st['last']}, "
            + (
                esc(str(st["chain"]))
                if st["chain"] in ("complete", "empty")
                else f'<span class="bad">{esc(str(st["chain"]))}</span>'
            )
            for cam, st in row["cameras"].items()
        )
        items = backlog.get("items", "-") if backlog else "-"
        fleet = row.get("fleet") or {}
        software = "-"
        if fleet:
            software = esc(f"{fleet.get('version', '?')} ({fleet.get('slot') or '?'})")
            update = fleet.get("last_update") or {}
            if update.get("result") == "rolled-back":
                why = esc(str(update.get("reason") or ""))
                software += f'<br><span class="bad">{t("rolled_back", lang)}: {why}</span>'
        conditions: UnitConditions = row["conditions"]
        door = "-"
        if conditions.door == "open":
            door = f'<span class="bad">{t("door_open", lang)}</span>'
        elif conditions.door == "closed":
            door = t("door_closed", lang)
        tamper = "<br>".join(f'<span class="bad">{esc(c)}</span>' for c in conditions.tamper) or t(
            "none_raised", lang
        )
        cabinet = _outputs_cell(lang, row["outputs"], now_ns)
        if row["waiting"]:
            cabinet += (
                f'<br><a class="notice" href="{PREFIX}/alerts?unit={esc(row["unit"])}#requests">'
                f"{t('waiting_n', lang).format(row['waiting'])}</a>"
            )
        body.append(
            f'<tr><th scope="row"><a href="{PREFIX}/alerts?unit={esc(row["unit"])}">'
            f"{esc(row['unit'])}</a></th><td>{contact}</td>"
            f"<td>{esc(str(items))}</td><td>{software}</td><td>{door}</td><td>{tamper}</td>"
            f"<td>{cabinet}</td><td>{cert}</td><td>{chains}</td></tr>"
        )
    head = "".join(
        f'<th scope="col">{t(k, lang)}</th>'
        for k in (
            "unit", "last_contact", "backlog", "software", "door", "tamper", "outputs",
            "certificate", "chain",
        )
    )  # fmt: skip
    return (
        f"<h2>{t('units', lang)}</h2><table><thead><tr>{head}</tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def _outputs_cell(lang: str, states: list[outputs.OutputState], now_ns: int) -> str:
    """Each cabinet output of a unit in its last known state: since when, until when, the
    playbook and the agent behind it; a failed write or an overdue end in red."""
    t = i18n.text
    esc = html.escape
    if not states:
        return t("no_output", lang)
    lines = []
    for st in states:
        if st.state is None or st.since_ns is None:
            lines.append(f"{esc(st.output)}: {t('output_never', lang)}")
            continue
        when = f"{t('since', lang)} {pages.clock(st.since_ns / 1e9)}"
        if st.error is not None:
            state = f'<span class="bad">{t("output_unknown", lang)}: {esc(st.error)}</span>'
        elif st.state == "safe":
            state = t("output_safe", lang)
        else:
            state = f"<strong>{esc(st.state.upper())}</strong>"
            if st.until_ns is not None:
                when += f", {t('until', lang)} {pages.clock(st.until_ns / 1e9)}"
            if st.overdue(now_ns):
                when += f' <span class="bad">({t("overdue", lang)})</span>'
        who = ", ".join(esc(x) for x in (st.playbook, st.agent) if x)
        lines.append(
            f'<span data-output="{esc(st.output)}">{esc(st.output)}: {state} {when}'
            + (f" — {who}" if who else "")
            + "</span>"
        )
    return "<br>".join(lines)


def cameras_in_scope(receiver: Receiver, scope: Scope) -> list[tuple[str, str]]:
    units = receiver.store.units()
    return [
        (unit, cam)
        for unit in units
        if scope.allows_unit(unit)
        for cam in sorted(receiver.store.cameras_of(unit))
        if scope.allows_camera(unit, cam)
    ]


def mount(app: web.Application, receiver: Receiver) -> None:
    """Add the console's routes and its store to the operators' application."""
    from .stores import decision_log, operator_store

    store = operator_store(receiver.cfg, receiver.intake)
    app[STORE_KEY] = store
    audit = receiver.audit

    async def record(who: str, action: str, request: web.Request, **what: Any) -> None:
        remote = remote_of(request)
        await receiver.run_blocking(
            lambda: audit.record(who, action, remote=remote, path=request.path[:512], **what)
        )

    async def principal_or_none(request: web.Request) -> tuple[Principal | None, str]:
        return await receiver.run_blocking(authenticate, receiver, store, request)

    async def home(request: web.Request) -> web.Response:
        lang = _lang(request)
        principal, why = await principal_or_none(request)
        if principal is None or principal.session is None:
            presented = await receiver.run_blocking(certlogin.presented, receiver, request)
            response = _page(lang, _login_body(lang, presented))
            if COOKIE in request.cookies:  # a session that ended: say so once in the log
                await record("-", "session-refused", request, reason=why)
                response.del_cookie(COOKIE, path="/", secure=True, samesite="Strict")
            return response
        cams = await receiver.run_blocking(cameras_in_scope, receiver, principal.scope)
        return _page(lang, _shell(lang, principal, "live", _wall(lang, cams)))

    async def units(request: web.Request) -> web.Response:
        lang = _lang(request)
        principal = await page_principal(request)
        from ..serve_cmd import unit_rows

        now_ns = time.time_ns()

        def rows() -> list[dict[str, Any]]:
            storage = receiver.store
            out = []
            for r in unit_rows(receiver.cfg):
                if not principal.scope.allows_unit(r["unit"]):
                    continue
                events, cams = outputs.read_unit(storage, r["unit"])
                waiting = [
                    q
                    for q in outputs.waiting_requests(events, cams, now_ns)
                    if not q.lapsed and in_scope(principal.scope, q.unit, q.camera or "unit")
                ]
                out.append(
                    {
                        **r,
                        "conditions": unit_conditions(storage, r["unit"]),
                        "outputs": outputs.output_states(events),
                        "waiting": len(waiting),
                    }
                )
            return out

        table = _units_table(lang, await receiver.run_blocking(rows), now_ns)
        return _page(lang, _shell(lang, principal, "units", table))

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        lang = i18n.pick(str(form.get("lang", "")))
        origin = request.headers.get("Origin")
        name = str(form.get("name", ""))[:64]
        if origin is not None and origin != f"https://{request.host}":
            await record(name or "-", "login-refused", request, reason=f"origin {origin[:200]}")
            return _page(lang, _login_form(lang, refused=True), status=403)
        presented = await receiver.run_blocking(certlogin.presented, receiver, request)
        result = await receiver.run_blocking(
            store.login, name, str(form.get("password", "")), str(form.get("code", "")), presented
        )
        if result.session_token is None:
            await record(name or "-", "login-refused", request, reason=result.refusal)
            return _page(lang, _login_body(lang, presented, refused=True), status=401)
        bound = result.session.cert_sha256 if result.session is not None else None
        await record(name, "login", request, **({"certificate": bound} if bound else {}))
        response = web.HTTPSeeOther(f"{PREFIX}/?lang={lang}")
        response.set_cookie(
            COOKIE, result.session_token, secure=True, httponly=True, samesite="Strict", path="/"
        )
        raise response

    async def logout(request: web.Request) -> web.Response:
        principal, why = await principal_or_none(request)
        if principal is None or principal.session is None:
            await record("-", "session-refused", request, reason=why)
            raise web.HTTPUnauthorized(text="no session")
        form = await request.post()
        bad = check_csrf(request, principal, str(form.get("csrf", "")) or None)
        if bad is not None:
            await record(principal.name, "csrf-refused", request, reason=bad)
            raise web.HTTPForbidden(text="request refused (CSRF)")
        await receiver.run_blocking(store.logout, principal.session.token_sha256)
        await record(principal.name, "logout", request)
        response = web.HTTPSeeOther(f"{PREFIX}/")
        response.del_cookie(COOKIE, path="/", secure=True, samesite="Strict")
        raise response

    book = AlertBook(receiver.store, decision_log(receiver.cfg, receiver.intake))

    async def page_principal(request: web.Request) -> Principal:
        """The logged-in operator of a page, or a redirect to the log-in form."""
        principal, _ = await principal_or_none(request)
        if principal is None or principal.session is None:
            raise web.HTTPSeeOther(f"{PREFIX}/")
        return principal

    async def playback_view(request: web.Request) -> web.Response:
        lang = _lang(request)
        p = await page_principal(request)
        cams = await receiver.run_blocking(cameras_in_scope, receiver, p.scope)
        now_ns = time.time_ns()
        from_ns = _form_time(request.query.get("from"), now_ns - playback.DEFAULT_RANGE_S * 10**9)
        to_ns = _form_time(request.query.get("to"), now_ns)
        if not 0 < to_ns - from_ns <= playback.MAX_RANGE_S * 10**9:
            raise web.HTTPBadRequest(text=f"give a range of at most {playback.MAX_RANGE_S} s")
        unit, _, camera = request.query.get("cam", "").partition("/")
        if not unit and cams:
            unit, camera = cams[0]
        if unit and (unit, camera) not in cams:
            why = check_scope(p, unit, camera) or f"{unit}/{camera} not stored"
            await record(p.name, "refused", request, reason=why)
            raise web.HTTPForbidden(text="camera outside your scope")

        def timeline() -> tuple[str, bool]:
            segs = receiver.store.in_range(unit, camera, from_ns, to_ns) if unit else []
            spans = playback.spans_of(segs)
            marks = [
                a
                for a in book.alerts(p.scope)
                if a.unit == unit and a.camera in (camera, "unit") and from_ns <= a.wall_ns < to_ns
            ]
            svg = playback.timeline_svg(
                spans, playback.gaps_of(spans, from_ns, to_ns), marks, from_ns, to_ns
            )
            return svg, bool(spans)

        svg, recorded = await receiver.run_blocking(timeline)
        body = playback.playback_page(lang, cams, unit, camera, from_ns, to_ns, svg, recorded)
        return _page(lang, _shell(lang, p, "playback", body))

    async def alerts_view(request: web.Request) -> web.Response:
        lang = _lang(request)
        p = await page_principal(request)
        assert p.session is not None
        found = await receiver.run_blocking(book.alerts, p.scope)
        only = request.query.get("unit")  # drill-down from the units page
        if only:
            found = [a for a in found if a.unit == only]
        may_decide = p.may(Permission.DECIDE)
        fragment = request.query.get("fragment")
        if fragment == "rows":  # the page's own refresh (console.js)
            return web.Response(
                text=pages.alert_rows(lang, found, p.session.csrf, may_decide),
                content_type="text/html",
            )
        now_ns = time.time_ns()
        waiting = await receiver.run_blocking(
            outputs.requests_in_scope, receiver.store, p.scope, now_ns
        )
        if only:
            waiting = [r for r in waiting if r.unit == only]
        config = str(receiver.config_path or "csu.toml")
        requests = pages.request_rows(lang, waiting, config, now_ns)
        if fragment == "requests":
            return web.Response(text=requests, content_type="text/html")
        rates = None
        if p.may(Permission.AUDIT):
            rates = false_alarm_rates(await receiver.run_blocking(book.settled))
        body = pages.alerts_page(lang, found, p.session.csrf, may_decide, rates, requests)
        return _page(lang, _shell(lang, p, "alerts", body))

    async def decide(request: web.Request) -> web.Response:
        p = await page_principal(request)
        form = await request.post()
        bad = check_csrf(request, p, str(form.get("csrf", "")) or None)
        if bad is not None:
            await record(p.name, "csrf-refused", request, reason=bad)
            raise web.HTTPForbidden(text="request refused (CSRF)")
        if not p.may(Permission.DECIDE):
            raise web.HTTPForbidden(text="your role may not decide on alerts")
        try:
            decision = Decision(str(form.get("decision", "")))
        except ValueError:
            raise web.HTTPBadRequest(text="decision: confirm, dismiss or escalate") from None
        unit, event_id = str(form.get("unit", "")), str(form.get("id", ""))
        if not SCOPE_ITEM.match(unit) or not re.fullmatch(r"[0-9a-f-]{8,64}", event_id):
            raise web.HTTPBadRequest(text="unit and alert id required")
        alert = await receiver.run_blocking(book.find, p.scope, unit, event_id)
        if alert is None:  # not stored, or outside the scope: the same answer
            await record(p.name, "refused", request, reason=f"alert {event_id} of {unit}")
            raise web.HTTPNotFound(text="no such alert in your scope")
        comment = str(form.get("comment", ""))

        def settle() -> DecisionRecord:
            done = book.decide(alert, decision, comment, p.name)
            # The decision is evidence: in the hash-chained audit log with who and how fast.
            audit.record(
                p.name, "alert-decision", remote=remote_of(request), event=alert.id,
                unit=alert.unit, camera=alert.camera, rule=alert.rule, kind=alert.kind,
                decision=decision.value, comment=done.comment,
                time_to_decide_s=round(done.time_to_decide_s, 3),
            )  # fmt: skip
            return done

        try:
            await receiver.run_blocking(settle)
        except ConfigError as exc:
            raise web.HTTPConflict(text=str(exc)) from None
        raise web.HTTPSeeOther(f"{PREFIX}/alerts")

    async def snapshot_view(request: web.Request) -> web.Response:
        p = await api_principal(request)
        unit, event_id = request.match_info["unit"], request.match_info["event"]
        if not p.may(Permission.VIEW):
            await record(p.name, "refused", request, reason=f"role {p.role} may not view")
            raise web.HTTPForbidden(text="your role may not view")
        alert = await receiver.run_blocking(book.find, p.scope, unit, event_id)
        if alert is None or not alert.snapshot_held:  # outside the scope or not held: alike
            await record(p.name, "refused", request, reason=f"snapshot of {event_id} of {unit}")
            raise web.HTTPNotFound(text="no such snapshot in your scope")
        private, key = receiver.authority, receiver.registry.signing_key(unit)
        if private is None or key is None:
            raise web.HTTPServiceUnavailable(text="no authority key or unit key to open it")

        def work() -> bytes:
            _, jpeg = receiver.store.open_snapshot(unit, event_id, key, private)
            audit.record(
                p.name, "view-snapshot", remote=remote_of(request), unit=unit,
                camera=alert.camera, event=event_id, rule=alert.rule,
            )  # fmt: skip
            return jpeg

        try:
            jpeg = await receiver.run_blocking(work)
        except Refusal as exc:  # altered since it arrived: said, never shown
            await record(p.name, "refused", request, reason=exc.reason[:300])
            raise web.HTTPUnprocessableEntity(text=exc.reason) from None
        return web.Response(
            body=jpeg, content_type="image/jpeg", headers={"Cache-Control": "no-store"}
        )

    async def exporter(request: web.Request) -> Principal:
        p = await page_principal(request)
        if not p.may(Permission.EXPORT):
            await record(p.name, "refused", request, reason=f"role {p.role} may not export")
            raise web.HTTPForbidden(text="evidence exports are for investigators")
        return p

    async def evidence_view(request: web.Request) -> web.Response:
        lang = _lang(request)
        p = await exporter(request)

        def oldest() -> list[tuple[str, str, int | None]]:
            out = []
            for unit, cam in cameras_in_scope(receiver, p.scope):
                span = receiver.store.span(unit, cam)
                out.append((unit, cam, None if span is None else span[0]))
            return out

        held = await receiver.run_blocking(oldest)
        body = pages.evidence_page(lang, held, time.time_ns())
        return _page(lang, _shell(lang, p, "evidence", body))

    async def evidence_export(request: web.Request) -> web.Response:
        """Checks the form, then hands over to the export route (which checks the scope and
        role again, audits the export with its case number and sends the signed bundle with
        ``format=bundle``, or the MP4)."""
        await exporter(request)
        case = request.query.get("case", "")
        if not re.fullmatch(pages.CASE_PATTERN, case):
            raise web.HTTPBadRequest(text="case number: 3-64 letters, digits, / _ . -")
        unit, _, camera = request.query.get("cam", "").partition("/")
        if not SCOPE_ITEM.match(f"{unit}/{camera}"):
            raise web.HTTPBadRequest(text="camera: UNIT/CAMERA")
        start = _form_time(request.query.get("from"), 0) / 1e9
        end = _form_time(request.query.get("to"), 0) / 1e9
        query = urllib.parse.urlencode({"from": f"{start:.3f}", "to": f"{end:.3f}", "case": case})
        kind = "tar" if request.query.get("format") == "bundle" else "mp4"
        raise web.HTTPSeeOther(f"/v1/export/{unit}/{camera}.{kind}?{query}")

    async def audit_view(request: web.Request) -> web.Response:
        lang = _lang(request)
        p = await page_principal(request)
        if not p.may(Permission.AUDIT):
            await record(p.name, "refused", request, reason=f"role {p.role} may not audit")
            raise web.HTTPForbidden(text="the audit log is for supervisors")
        query = request.query.get("q", "")[:200]

        def entries() -> list[tuple[dict[str, Any], bool]]:
            # Signatures checked with the receiver's own audit key (cluster mode: the shared
            # chain, each record with the key its receiver registered), so "signed" means
            # verified.
            audit = receiver.audit
            if isinstance(audit, PgAuditLog):
                report, _ = audit.verify()
                if report.problem is not None:
                    raise ValueError(f"shared audit chain: {report.problem}")
                checked = True
            else:
                report = access_log.verify(receiver.cfg.audit_log, audit.public_key)
                if report.problem is not None:
                    where = report.problem.removeprefix("line ")
                    raise ValueError(f"{receiver.cfg.audit_log}:{where}")
                checked = audit.public_key is not None
            found = [
                (e, "sig" in e and checked)
                for e in report.records
                if not query or query.lower() in json.dumps(e, ensure_ascii=False).lower()
            ]
            return found[-500:][::-1]

        try:
            shown = await receiver.run_blocking(entries)
        except ValueError as exc:  # a line removed or edited: say so, loudly, not a 500
            await record(p.name, "view-audit", request, query=query, problem=str(exc))
            body = (
                f"<h2>{i18n.text('audit', lang)}</h2>"
                f'<p class="bad" role="alert">{html.escape(str(exc))}</p>'
            )
            return _page(lang, _shell(lang, p, "audit", body), status=409)
        await record(p.name, "view-audit", request, query=query)
        return _page(lang, _shell(lang, p, "audit", pages.audit_page(lang, shown, query)))

    async def api_principal(request: web.Request) -> Principal:
        principal, why = await principal_or_none(request)
        if principal is None:
            await record("-", "refused", request, reason=why, method=request.method)
            raise web.HTTPUnauthorized(text="log in first")
        return principal

    async def me(request: web.Request) -> web.Response:
        p = await api_principal(request)
        body = {
            "name": p.name,
            "role": p.role.value,
            "scope": list(p.scope.items),
            "via": p.via,
            "permissions": sorted(x.value for x in Permission if p.may(x)),
            "csrf": p.session.csrf if p.session is not None else None,
        }
        return web.json_response(body, dumps=json.dumps)

    async def cameras(request: web.Request) -> web.Response:
        p = await api_principal(request)
        cams = await receiver.run_blocking(cameras_in_scope, receiver, p.scope)
        return web.json_response([{"unit": u, "camera": c} for u, c in cams])

    async def masks(request: web.Request) -> web.Response:
        p = await api_principal(request)
        unit, camera = request.match_info["unit"], request.match_info["camera"]
        refusal = check_scope(p, unit, camera) or (
            None if p.may(Permission.VIEW) else f"role {p.role} may not view"
        )
        if refusal is not None:
            await record(p.name, "refused", request, reason=refusal)
            raise web.HTTPForbidden(text="outside your scope or role")
        key = receiver.registry.signing_key(unit)
        if key is None:
            raise web.HTTPNotFound(text="unit not enrolled")
        try:
            found = await receiver.run_blocking(receiver.store.masks_in_force, unit, camera, key)
        except IntegrityError as exc:
            raise web.HTTPUnprocessableEntity(text=str(exc)) from None
        if found is None:
            raise web.HTTPNotFound(text="no segment of this camera stored yet")
        return web.json_response({"unit": unit, "camera": camera, **found})

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        return web.Response(body=data, content_type=_STATIC[name])

    app.router.add_get(f"{PREFIX}", _redirect_home)
    app.router.add_get(f"{PREFIX}/", home)
    app.router.add_post(f"{PREFIX}/login", login)
    app.router.add_post(f"{PREFIX}/logout", logout)
    app.router.add_get(f"{PREFIX}/units", units)
    app.router.add_get(f"{PREFIX}/playback", playback_view)
    app.router.add_get(f"{PREFIX}/alerts", alerts_view)
    app.router.add_post(f"{PREFIX}/alerts/decide", decide)
    app.router.add_get(
        f"{PREFIX}/snapshots/{{unit:[a-z0-9][a-z0-9-]{{0,62}}}}/{{event:[0-9A-Za-z-]{{1,64}}}}.jpg",
        snapshot_view,
    )
    app.router.add_get(f"{PREFIX}/audit", audit_view)
    app.router.add_get(f"{PREFIX}/evidence", evidence_view)
    app.router.add_get(f"{PREFIX}/evidence/export", evidence_export)
    app.router.add_get(f"{PREFIX}/api/me", me)
    app.router.add_get(f"{PREFIX}/api/cameras", cameras)
    app.router.add_get(
        f"{PREFIX}/api/masks/{{unit:[a-z0-9][a-z0-9-]{{0,62}}}}/{{camera:[a-z0-9][a-z0-9-]{{0,62}}}}",
        masks,
    )
    app.router.add_get(f"{PREFIX}/static/{{name}}", static)


def _form_time(value: str | None, default_ns: int) -> int:
    """A ``datetime-local`` field (read as UTC) or Unix seconds, in nanoseconds."""
    if not value:
        return default_ns
    try:
        return int(float(value) * 1e9)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    except ValueError:
        raise web.HTTPBadRequest(text=f"not a time: {value[:40]!r}") from None
    return int(when.timestamp() * 1e9)


async def _redirect_home(_request: web.Request) -> web.Response:
    raise web.HTTPFound(f"{PREFIX}/")
