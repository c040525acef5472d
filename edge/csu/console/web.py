"""The console on the operators' listener: log-in, sessions, CSRF, security headers, and the one
authentication step every operator request goes through (console cookie or bearer token).

Routes (operator listener, beside the HLS routes of :mod:`edge.csu.receiver.hls`)::

    GET  /console/                 log-in form, or the operator's home page
    POST /console/login            name, password, one-time code → session cookie
    POST /console/logout           (CSRF token) → session ended
    GET  /console/api/me           who is logged in, role, scope, CSRF token (JSON)
    GET  /console/api/cameras      the cameras in the operator's scope (JSON)
    GET  /console/static/{file}    style sheet (package data; no third-party code)

The cookie is ``__Host-`` prefixed, Secure, HttpOnly and SameSite=Strict; it carries a random
token whose SHA-256 alone is stored. Every state-changing request must carry the session's CSRF
token (``X-CSRF-Token`` header or ``csrf`` form field) and, from a browser, an ``Origin`` equal
to the listener's own. Pages are sent with a strict Content-Security-Policy (nothing inline,
nothing from another origin).
"""

from __future__ import annotations

import hmac
import html
import json
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from aiohttp import web

from ..receiver.trust import utcnow
from . import i18n
from .accounts import OperatorStore, Session
from .roles import Permission, Role, Scope, allows

if TYPE_CHECKING:
    from ..receiver.server import Handler, Receiver

PREFIX = "/console"
COOKIE = "__Host-edge-console"
LANG_COOKIE = "edge-console-lang"
STORE_KEY: web.AppKey[OperatorStore] = web.AppKey("operator_store", OperatorStore)
RECEIVER_KEY: web.AppKey[Any] = web.AppKey("receiver", object)

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
    "base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
    "Strict-Transport-Security": "max-age=31536000",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
_STATIC = {"console.css": "text/css"}


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
    return Principal(op.name, op.role, op.scope, "session", session), ""


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


def _home(lang: str, principal: Principal, cameras: list[tuple[str, str]]) -> str:
    t = i18n.text
    assert principal.session is not None
    esc = html.escape
    scope = t("whole_fleet", lang) if principal.scope.everything else esc(str(principal.scope))
    rows = "".join(f"<tr><td>{esc(u)}</td><td>{esc(c)}</td></tr>" for u, c in cameras)
    listing = f"<table>{rows}</table>" if rows else f"<p>{t('no_camera', lang)}</p>"
    return (
        f"<header><h1>{t('title', lang)}</h1>"
        f'<form method="post" action="{PREFIX}/logout">'
        f'<input type="hidden" name="csrf" value="{esc(principal.session.csrf)}">'
        f'<button type="submit">{t("logout", lang)}</button></form></header>'
        f'<main><p>{t("logged_in_as", lang)} <strong id="operator">{esc(principal.name)}'
        f"</strong> — {t('role', lang)}: {t('role_' + principal.role.value, lang)} — "
        f"{t('scope', lang)}: {scope}</p>"
        f'<section aria-labelledby="cams"><h2 id="cams">{t("cameras", lang)}</h2>{listing}'
        f"</section><p>{t('session_note', lang)}</p></main>"
    )


def cameras_in_scope(receiver: Receiver, scope: Scope) -> list[tuple[str, str]]:
    root = receiver.cfg.storage_dir
    units = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    return [
        (unit, cam)
        for unit in units
        if scope.allows_unit(unit)
        for cam in sorted(receiver.store.cameras_of(unit))
        if scope.allows_camera(unit, cam)
    ]


def mount(app: web.Application, receiver: Receiver) -> None:
    """Add the console's routes and its store to the operators' application."""
    store = OperatorStore(receiver.cfg.operators_db)
    app[STORE_KEY] = store
    app[RECEIVER_KEY] = receiver
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
            response = _page(lang, _login_form(lang))
            if COOKIE in request.cookies:  # a session that ended: say so once in the log
                await record("-", "session-refused", request, reason=why)
                response.del_cookie(COOKIE, path="/", secure=True, samesite="Strict")
            return response
        cams = await receiver.run_blocking(cameras_in_scope, receiver, principal.scope)
        return _page(lang, _home(lang, principal, cams))

    async def login(request: web.Request) -> web.Response:
        form = await request.post()
        lang = i18n.pick(str(form.get("lang", "")))
        origin = request.headers.get("Origin")
        name = str(form.get("name", ""))[:64]
        if origin is not None and origin != f"https://{request.host}":
            await record(name or "-", "login-refused", request, reason=f"origin {origin[:200]}")
            return _page(lang, _login_form(lang, refused=True), status=403)
        result = await receiver.run_blocking(
            store.login, name, str(form.get("password", "")), str(form.get("code", ""))
        )
        if result.session_token is None:
            await record(name or "-", "login-refused", request, reason=result.refusal)
            return _page(lang, _login_form(lang, refused=True), status=401)
        await record(name, "login", request)
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

    async def static(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in _STATIC:
            raise web.HTTPNotFound()
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        return web.Response(body=data, content_type=_STATIC[name])

    app.router.add_get(f"{PREFIX}", lambda r: _redirect_home())
    app.router.add_get(f"{PREFIX}/", home)
    app.router.add_post(f"{PREFIX}/login", login)
    app.router.add_post(f"{PREFIX}/logout", logout)
    app.router.add_get(f"{PREFIX}/api/me", me)
    app.router.add_get(f"{PREFIX}/api/cameras", cameras)
    app.router.add_get(f"{PREFIX}/static/{{name}}", static)


async def _redirect_home() -> web.Response:
    raise web.HTTPFound(f"{PREFIX}/")
