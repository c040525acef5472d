"""HTML of the alerts inbox and the audit view (the live wall and units are in :mod:`.web`).

Server-rendered, escaped, no inline script or style (the CSP forbids them); every form posts
the session's CSRF token. The words come from :mod:`.i18n`.
"""

from __future__ import annotations

import datetime as dt
import html
import json
from typing import Any

from . import i18n
from .alerts import Alert, Decision, RuleRate
from .outputs import WaitingRequest, confirm_command

PREFIX = "/console"


def _time(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


clock = _time
"""Unix seconds as the console writes times (UTC, to the second)."""


def alert_rows(lang: str, alerts: list[Alert], csrf: str, may_decide: bool) -> str:
    t = i18n.text
    esc = html.escape
    if not alerts:
        return f'<tr><td colspan="4">{t("no_alert", lang)}</td></tr>'
    rows = []
    for a in alerts:
        what = esc(a.kind) + (f"<br>{esc(a.message)}" if a.message else "")
        if a.snapshot_held:
            # Loaded on click only (each viewing is audited), from the console's own origin.
            src = f"{PREFIX}/snapshots/{esc(a.unit)}/{esc(a.id)}.jpg"
            what += (
                f'<br><button type="button" data-snapshot="{src}" '
                f'data-alt="{esc(t("snapshot_of", lang).format(a.rule))}" aria-expanded="false">'
                f'{t("view_snapshot", lang)}</button><span class="snapshot-slot"></span>'
            )
        elif a.has_snapshot:
            what += f" ({t('snapshot', lang)})"
        done = "<br>".join(
            f"{t('decided_' + d.decision.value, lang)} {t('by', lang)} {esc(d.who)} "
            f"{t('in_s', lang).format(round(d.time_to_decide_s))}"
            + (f" — {esc(d.comment)}" if d.comment else "")
            for d in a.decisions
        )
        form = ""
        if a.open and may_decide:
            buttons = "".join(
                f'<button type="submit" name="decision" value="{d.value}">{t(d.value, lang)}'
                "</button>"
                for d in Decision
            )
            form = (
                f'<form method="post" action="{PREFIX}/alerts/decide" class="decide">'
                f'<input type="hidden" name="csrf" value="{esc(csrf)}">'
                f'<input type="hidden" name="unit" value="{esc(a.unit)}">'
                f'<input type="hidden" name="id" value="{esc(a.id)}">'
                f'<label>{t("comment", lang)}<input name="comment" maxlength="500"></label>'
                f"{buttons}</form>"
            )
        rows.append(
            f'<tr data-alert="{esc(a.id)}" class="{"open" if a.open else "done"}">'
            f"<td>{_time(a.wall_ns / 1e9)}</td><td>{esc(a.unit)} / {esc(a.camera)}</td>"
            f"<td>{esc(a.rule)}: {what}</td><td>{done}{form}</td></tr>"
        )
    return "".join(rows)


def _left(seconds: float, lang: str) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return i18n.text("left", lang).format(f"{minutes} min {secs:02d} s" if minutes else f"{secs} s")


def request_rows(lang: str, requests: list[WaitingRequest], config: str, now_ns: int) -> str:
    """Playbooks waiting for an agent: the time left by the unit's signed clock and the exact
    command that confirms each (the agent signs it with their own key; the console cannot)."""
    t = i18n.text
    esc = html.escape
    if not requests:
        return f'<tr><td colspan="5">{t("no_request", lang)}</td></tr>'
    rows = []
    for r in requests:
        where = f"{esc(r.unit)} / {esc(r.output)}"
        if r.camera is not None:
            where += f" ({esc(r.camera)})"
        what = f"{esc(r.playbook)}<br>{esc(r.reason)}<br>{t('event', lang)} {esc(r.event)}"
        if r.lapsed:
            left = f'<strong class="bad">{t("lapsed", lang)}</strong>'
            command = f"{t('lapsed_note', lang)} {_time(r.deadline_ns / 1e9)}"
        else:
            left = (
                f"<strong>{_left(r.left_s(now_ns), lang)}</strong><br>"
                f"{t('before', lang)} {_time(r.deadline_ns / 1e9)}"
            )
            command = (
                f'<code class="command">{esc(confirm_command(r, config))}</code>'
                f'<button type="button" data-copy data-copied="{esc(t("copied", lang))}" '
                f'data-selected="{esc(t("selected", lang))}">{t("copy", lang)}</button>'
            )
        rows.append(
            f'<tr data-request="{esc(r.unit)}/{esc(r.playbook)}/{esc(r.event)}" '
            f'class="{"lapsed" if r.lapsed else "waiting"}">'
            f"<td>{_time(r.requested_ns / 1e9)}</td><td>{where}</td><td>{what}</td>"
            f"<td>{left}</td><td>{command}</td></tr>"
        )
    return "".join(rows)


def alerts_page(
    lang: str,
    alerts: list[Alert],
    csrf: str,
    may_decide: bool,
    rates: list[RuleRate] | None,
    requests: str,
) -> str:
    """``requests``: the rows of :func:`request_rows`."""
    t = i18n.text
    esc = html.escape
    head = "".join(
        f'<th scope="col">{t(k, lang)}</th>' for k in ("when", "camera", "what", "decision")
    )
    cols = "".join(
        f'<th scope="col">{t(k, lang)}</th>'
        for k in ("when", "unit_output", "playbook_col", "time_left", "confirm_command")
    )
    out = (
        f'<h2 id="requests-title">{t("requests", lang)}</h2><p>{t("requests_help", lang)}</p>'
        f'<table id="requests" aria-labelledby="requests-title"><thead><tr>{cols}</tr></thead>'
        f'<tbody id="request-rows">{requests}</tbody></table>'
        f'<h2>{t("alerts", lang)}</h2><table id="alerts"><thead><tr>{head}</tr></thead>'
        f'<tbody id="alert-rows">{alert_rows(lang, alerts, csrf, may_decide)}</tbody></table>'
    )
    if rates is not None:
        cells = "".join(
            f'<tr><th scope="row">{esc(r.rule)}</th><td>{r.decided}</td><td>{r.dismissed}</td>'
            f"<td>{r.false_alarm_rate:.0%}</td></tr>"
            for r in rates
        )
        cols = "".join(
            f'<th scope="col">{t(k, lang)}</th>'
            for k in ("rule", "decided_n", "dismissed_n", "rate")
        )
        out += (
            f'<h2 id="rates-title">{t("rates", lang)}</h2>'
            f'<table id="rates" aria-labelledby="rates-title"><thead><tr>{cols}</tr></thead>'
            f"<tbody>{cells}</tbody></table>"
        )
    return out + f'<script src="{PREFIX}/static/console.js"></script>'


def audit_page(lang: str, entries: list[tuple[dict[str, Any], bool]], query: str) -> str:
    """``entries``: each record with whether its signature was verified."""
    t = i18n.text
    esc = html.escape
    rows = "".join(
        f"<tr><td>{_time(int(e.get('time_ns', 0)) / 1e9)}</td><td>{esc(str(e.get('who')))}</td>"
        f"<td>{esc(str(e.get('action')))}</td><td>{esc(_details(e))}</td>"
        f'<td class="{"ok" if signed else "bad"}">{t("signed" if signed else "unsigned", lang)}'
        "</td></tr>"
        for e, signed in entries
    )
    head = "".join(
        f'<th scope="col">{t(k, lang)}</th>'
        for k in ("when", "who", "action", "details", "signature")
    )
    return (
        f"<h2>{t('audit', lang)}</h2>"
        f'<form method="get" action="{PREFIX}/audit" role="search">'
        f'<label>{t("search", lang)}<input name="q" value="{esc(query)}" type="search"></label>'
        f'<button type="submit">{t("search", lang)}</button></form>'
        f"<p>{t('chain_ok', lang)}</p>"
        f'<table id="audit"><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>'
    )


def _details(entry: dict[str, Any]) -> str:
    hidden = ("time_ns", "who", "action", "prev", "sig", "key_id")
    rest = {k: v for k, v in entry.items() if k not in hidden}
    return json.dumps(rest, ensure_ascii=False, sort_keys=True)


RETENTION_DAYS = 30
CASE_PATTERN = r"[A-Za-z0-9][A-Za-z0-9\/_.\-]{2,63}"  # valid as HTML pattern ("v" flag) too
"""A case number (procès-verbal, réquisition): what the audit log files the export under."""


def evidence_page(lang: str, oldest: list[tuple[str, str, int | None]], now_ns: int) -> str:
    """The export form and, per camera in scope, what is held and when it goes."""
    t = i18n.text
    esc = html.escape
    options = "".join(
        f'<option value="{esc(u)}/{esc(c)}">{esc(u)} / {esc(c)}</option>' for u, c, _ in oldest
    )
    start = _time((now_ns / 1e9) - 600).replace(" UTC", "").replace(" ", "T")
    end = _time(now_ns / 1e9).replace(" UTC", "").replace(" ", "T")
    rows = "".join(
        f'<tr><th scope="row">{esc(u)} / {esc(c)}</th>'
        f"<td>{_time(first / 1e9) if first else '-'}</td>"
        f"<td>{_time(first / 1e9 + RETENTION_DAYS * 86400) if first else '-'}</td></tr>"
        for u, c, first in oldest
    )
    return (
        f"<h2>{t('evidence', lang)}</h2><p>{t('retention', lang)}</p>"
        f'<form method="get" action="{PREFIX}/evidence/export" class="toolbar" '
        f'id="evidence-form" data-building="{esc(t("bundle_building", lang))}">'
        f'<label>{t("camera", lang)}<select name="cam">{options}</select></label>'
        f'<label>{t("from_utc", lang)}<input name="from" type="datetime-local" step="1" '
        f'value="{start}" required></label>'
        f'<label>{t("to_utc", lang)}<input name="to" type="datetime-local" step="1" '
        f'value="{end}" required></label>'
        f'<label>{t("case", lang)}<input name="case" required pattern="{CASE_PATTERN}">'
        "</label>"
        f'<button type="submit" name="format" value="bundle">{t("export_bundle", lang)}</button>'
        f'<button type="submit" name="format" value="mp4">{t("export", lang)}</button></form>'
        '<p id="export-status" role="status" aria-live="polite"></p>'
        f"<p>{t('bundle_note', lang)}</p><p>{t('export_note', lang)}</p>"
        f'<table id="retention"><thead><tr><th scope="col">{t("camera", lang)}</th>'
        f'<th scope="col">{t("oldest", lang)}</th><th scope="col">{t("expires", lang)}</th>'
        f"</tr></thead><tbody>{rows}</tbody></table>"
        f'<script src="{PREFIX}/static/console.js"></script>'
    )
