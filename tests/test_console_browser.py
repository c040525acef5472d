"""The console in a real headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
by Selenium; no browser download): an operator logs in, a live tile fed by a real ``edged``
plays through the console's own MSE player, and the masked area of a frame drawn from the
video element equals the solid fill. Each test saves a screenshot under ``test-artifacts/``
(``EDGE_TEST_ARTIFACTS`` to change it); the live latency and page weight go beside it."""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import edge
from edge.csu.console.credentials import totp_at, totp_step
from edge.csu.receiver import SegmentStore
from edge.csu.receiver import access_log as csu_audit
from edge.events import EventSigner, jpeg_snapshot
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.uplink.spool import EventSpool
from edge.vault import eventlog, layout

from .conftest import REPO, require_module, tool
from .test_uplink_e2e import unit_config
from .uplink_util import Csu, free_port, make_csu, unit_files, wait_until

PASSWORD = "vigie-du-quai-2026"
#: The mask drawn on the test camera: the top-left quarter of the picture.
MASK = "[[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]"
SOLID_RGB = 28  # luma 40, no chroma (docs/PRIVACY.md), in full-range RGB: (40-16)*255/219
#: The masked frame of the snapshot alert: 64 x 48.
SNAPSHOT = jpeg_snapshot(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3)))


def artifacts() -> Path:
    path = Path(os.environ.get("EDGE_TEST_ARTIFACTS", REPO / "test-artifacts"))
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class Site:
    csu: Csu
    secrets: dict[str, str]
    url: str
    alarm_id: str
    shot_id: str
    """An alert of cam1 whose sealed snapshot edged's uplink delivers after the event."""
    logins: list[str] = field(default_factory=list)

    def audit(self) -> list[dict[str, Any]]:
        return csu_audit.read(self.csu.directory / "audit.jsonl")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp("console-browser")
    csu = make_csu(tmp)
    port = free_port()
    csu.write_config(port=port)
    data_dir = tmp / "unit"
    unit_files(csu, "test-unit", data_dir)
    csu.enroll("test-unit", load_or_create_signing_key(keys_dir_of(data_dir)))
    (csu.directory / "storage" / "test-unit" / "cam2").mkdir(parents=True)  # out of scope
    secrets = {}
    # one account per test: a one-time code serves once, and one is valid each 30 s (±1)
    accounts = [
        (f"v.{n}", "viewer", "test-unit/cam1") for n in ("quai", "alertes", "relecture", "image")
    ]
    accounts.append(("i.requisition", "investigator", "test-unit/cam1"))
    accounts.append(("v.mur", "viewer", "test-unit/cam1,test-unit/cam2"))
    for name, role, scope in [*accounts, ("s.chef", "supervisor", "")]:
        out = subprocess.run(
            [sys.executable, "-m", "edge.csu.main", "operator", "add", "--config",
             str(csu.config), "--name", name, "--role", role, "--scope", scope,
             "--password-stdin"],
            input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        secret = re.search(r"secret=([A-Z2-7]+)", out)
        assert secret, out
        secrets[name] = secret.group(1)
    # a cabinet alarm waiting in the unit's spool: edged signs nothing new, it delivers it
    signing = load_or_create_signing_key(keys_dir_of(data_dir))
    alarm = EventSigner(signing, "test-unit").sign(
        camera="unit", category="alert", kind="cabinet-door-open", rule="door",
        wall_ns=time.time_ns(), frame_index=-1, details={"message": "door opened"},
    )  # fmt: skip
    EventSpool(data_dir / "uplink" / "events").put(alarm.wire())
    config = unit_config(
        tmp / "edge.toml", data_dir, csu, port,
        uplink=f'ca_file = "{data_dir / "keys" / "ca.pem"}"\n'
        "backoff_initial_s = 0.2\nbackoff_max_s = 1.0",
    )  # fmt: skip
    text = config.read_text().replace(
        "[vault]", f'[[cameras.privacy_masks]]\nname = "flats"\npoints = {MASK}\n\n[vault]'
    )
    config.write_text(text)
    csu.start()
    edged = subprocess.Popen(
        [sys.executable, "-m", "edge.app.daemon", "--config", str(config), "--run-for", "120"],
        stdout=subprocess.DEVNULL, stderr=(tmp / "edged.log").open("wb"), cwd=REPO,
    )  # fmt: skip
    try:
        wait_until(lambda: len(csu.stored("test-unit", "cam1")) >= 2, 30, "segments at the CSU")
        # an alert with its masked snapshot, kept in the running unit's vault as edged keeps
        # one (sealed to the CSU), then queued: the uplink sends the event, then the snapshot
        shot = EventSigner(signing, "test-unit").sign(
            camera="cam1", category="alert", kind="intrusion", rule="cour",
            wall_ns=time.time_ns(), frame_index=0, details={"message": "zone interdite"},
            snapshot=SNAPSHOT,
        )  # fmt: skip
        for path, data in eventlog.files_of(
            layout.vault_dir(data_dir), shot, device_id="test-unit",
            recipients=[csu.authority.public], signing_key=signing,
        ):  # fmt: skip
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        EventSpool(data_dir / "uplink" / "events").put(shot.wire())
        url = f"https://127.0.0.1:{csu.ports['operators']}"
        yield Site(csu, secrets, url, str(alarm.body["id"]), str(shot.body["id"]))
    finally:
        edged.send_signal(signal.SIGTERM)
        try:
            edged.wait(15)
        except subprocess.TimeoutExpired:
            edged.kill()
            edged.wait()
        csu.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    webdriver = require_module("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = tool("chromium")
    for arg in (
        "--headless=new",
        "--no-sandbox",  # tests run as root
        "--ignore-certificate-errors",  # the receiver's TLS is judged by openssl elsewhere
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,800",
        "--disable-gpu",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(tool("chromedriver")))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def log_in(browser: Any, site: Site, name: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{site.url}/console/")
    browser.find_element(By.NAME, "name").send_keys(name)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD)
    # one code per step and account: a second log-in in the same 30 s uses the next one
    step = totp_step(time.time()) + site.logins.count(name)
    site.logins.append(name)
    browser.find_element(By.NAME, "code").send_keys(totp_at(site.secrets[name], step))
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    # The form is shown at /console/ itself: wait for the page that names the operator, or a
    # navigation started now would race the log-in's own redirect (and lose to it).
    wait_until(
        lambda: (
            browser.execute_script(
                "const o = document.getElementById('operator'); return o && o.textContent"
            )
            == name
        ),
        10,
        f"the console page of {name} after log-in",
    )


def test_live_tile_plays_and_the_masked_area_is_the_fill(browser: Any, site: Site) -> None:
    log_in(browser, site, "v.quai")
    try:
        wait_until(lambda: 'id="wall"' in browser.page_source, 10, "the live wall")
    except AssertionError:  # say why: the page shown and the audit log's last words
        audit = (site.csu.directory / "audit.jsonl").read_text()
        raise AssertionError(browser.page_source[:1500] + audit[-1500:]) from None
    assert browser.execute_script(
        "return MediaSource.isTypeSupported('video/mp4; codecs=\"avc1.42e01e\"')"
    ), "this Chromium has no H.264 in MSE"
    video = "document.querySelector('#wall .tile video')"

    def playing() -> float:
        return float(browser.execute_script(f"return {video}.currentTime"))

    wait_until(lambda: playing() > 0.5, 30, "the live tile to play")
    first = playing()
    wait_until(lambda: playing() > first + 1.0, 15, "the live tile's time to advance")
    # the masked quarter, drawn from the video element into a canvas
    pixels = browser.execute_script(
        f"""const v = {video};
        const c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        const out = [];
        for (const [fx, fy] of [[0.05, 0.05], [0.25, 0.25], [0.45, 0.1], [0.1, 0.45]]) {{
          out.push(Array.from(g.getImageData(Math.floor(fx * c.width),
                                             Math.floor(fy * c.height), 1, 1).data));
        }}
        const outside = Array.from(g.getImageData(0, 0, c.width, c.height).data);
        return {{masked: out, size: [c.width, c.height], sample: outside.slice(
          (Math.floor(0.75 * c.height) * c.width + Math.floor(0.75 * c.width)) * 4,
          (Math.floor(0.75 * c.height) * c.width + Math.floor(0.75 * c.width)) * 4 + 3)}};"""
    )
    assert pixels["size"] == [320, 240]
    for r, g, b, _ in pixels["masked"]:
        assert max(abs(r - SOLID_RGB), abs(g - SOLID_RGB), abs(b - SOLID_RGB)) <= 6, pixels
    # the mask outlines on demand (the set edged's newest segment commits to, as edged sent
    # its record): the polygon lies on the masked quarter of the picture as shown, letterbox
    # and all
    browser.execute_script("document.querySelector('#wall .tile [data-masks]').click()")
    outline = f"""const v = {video}; const r = v.getBoundingClientRect();
        const p = document.querySelector('#wall .tile svg.masks polygon');
        if (!p || !v.videoWidth) return null;
        const k = Math.min(r.width / v.videoWidth, r.height / v.videoHeight);
        const w = v.videoWidth * k, h = v.videoHeight * k;
        const x0 = r.left + (r.width - w) / 2, y0 = r.top + (r.height - h) / 2;
        const b = p.getBoundingClientRect();
        return [(b.left - x0) / w, (b.top - y0) / h, (b.right - x0) / w, (b.bottom - y0) / h];"""
    wait_until(lambda: browser.execute_script(outline), 20, "the mask outline on the tile")
    box = browser.execute_script(outline)
    assert all(abs(a - b) < 0.02 for a, b in zip(box, [0, 0, 0.5, 0.5], strict=True)), box
    wait_until(
        lambda: browser.execute_script(
            "return document.querySelector('#wall .tile').dataset.latencyMs"
        ),
        10,
        "a latency estimate",
    )
    time.sleep(2)  # a few more segments: the estimate settles
    figures = browser.execute_script(
        """const nav = performance.getEntriesByType('navigation')[0];
        const res = performance.getEntriesByType('resource');
        const page = res.filter(r => r.name.includes('/console/static/'));
        return {latency_ms: Number(document.querySelector('#wall .tile').dataset.latencyMs),
                html_bytes: nav.decodedBodySize,
                static_bytes: page.reduce((n, r) => n + r.decodedBodySize, 0),
                state: document.querySelector('#wall .tile .state').textContent};"""
    )
    assert figures["state"] == "direct"
    assert 0 < figures["latency_ms"] < 15_000, figures
    browser.save_screenshot(str(artifacts() / "console-live.png"))
    (artifacts() / "console-live.json").write_text(json.dumps(figures, indent=1))
    entries = [
        json.loads(line) for line in (site.csu.directory / "audit.jsonl").read_text().splitlines()
    ]
    views = {(e["who"], e["action"]) for e in entries}
    assert {("v.quai", "login"), ("v.quai", "view-live"), ("v.quai", "view-media")} <= views


def test_the_wall_picker_puts_a_chosen_camera_in_a_tile_and_restores_it(
    browser: Any, site: Site
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.delete_all_cookies()
    log_in(browser, site, "v.mur")
    restored = "return document.getElementById('wall').dataset.restored"
    wait_until(lambda: browser.execute_script(restored), 10, "the wall set up")
    names = (
        "return Array.from(document.querySelectorAll('#wall .tile'),"
        " t => t.dataset.unit + '/' + t.dataset.camera)"
    )
    saved = "return JSON.parse(localStorage.getItem('edge-console-wall/v.mur')).tiles"
    assert browser.execute_script(names) == ["test-unit/cam1", "test-unit/cam2"]
    # only the cameras of the scope are offered
    options = browser.execute_script(
        "return Array.from(document.querySelectorAll('#wall .tile [data-pick] option'),"
        " o => o.value)"
    )
    assert sorted(set(options)) == ["test-unit/cam1", "test-unit/cam2"], options
    # by keyboard: Tab from the first tile to its picker, the next camera; the two swap
    first = browser.find_element(By.CSS_SELECTOR, "#wall .tile")
    first.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("data-pick") is not None
    browser.switch_to.active_element.send_keys(Keys.ARROW_DOWN)
    wait_until(
        lambda: browser.execute_script(names) == ["test-unit/cam2", "test-unit/cam1"],
        10,
        "the tiles to swap",
    )
    assert browser.execute_script(saved) == ["test-unit/cam2", "test-unit/cam1"]
    # the camera that moved plays again in its new tile
    cam1_state = "return document.querySelector('#wall .tile[data-camera=cam1] .state').textContent"
    wait_until(lambda: browser.execute_script(cam1_state) == "direct", 30, "cam1 live again")
    # remembered: a new page shows the same wall
    browser.get(f"{site.url}/console/")
    wait_until(lambda: browser.execute_script(restored), 10, "the wall restored")
    assert browser.execute_script(names) == ["test-unit/cam2", "test-unit/cam1"]
    wait_until(lambda: browser.execute_script(cam1_state) == "direct", 30, "cam1 restored live")
    browser.save_screenshot(str(artifacts() / "console-wall-picker.png"))
    # a remembered camera no longer in the scope is dropped, and forgotten
    browser.execute_script(
        "localStorage.setItem('edge-console-wall/v.mur', JSON.stringify("
        "{layout: 4, tiles: ['test-unit/cam9', 'test-unit/cam1']}))"
    )
    browser.get(f"{site.url}/console/")
    wait_until(lambda: browser.execute_script(restored), 10, "the wall restored")
    assert browser.execute_script(names) == ["test-unit/cam2", "test-unit/cam1"]
    assert browser.execute_script(saved) == ["test-unit/cam2", "test-unit/cam1"]
    # a picker altered in the page cannot reach beyond the scope: the video routes refuse it
    browser.execute_script(
        """const pick = document.querySelector('#wall .tile [data-pick]');
        pick.add(new Option('test-unit / cam9', 'test-unit/cam9'));
        pick.value = 'test-unit/cam9';
        pick.dispatchEvent(new Event('change'));"""
    )
    cam9_state = "return document.querySelector('#wall .tile[data-camera=cam9] .state').textContent"
    wait_until(lambda: browser.execute_script(cam9_state) == "refusé", 10, "the refusal")
    refused = [e for e in site.audit() if e["action"] == "refused" and e["who"] == "v.mur"]
    assert any(e["path"] == "/v1/view/test-unit/cam9/live.m3u8" for e in refused), refused


def test_an_alert_from_edged_is_dismissed_and_the_decision_is_audited(
    browser: Any, site: Site
) -> None:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    log_in(browser, site, "v.alertes")
    browser.get(f"{site.url}/console/alerts")
    row = f'tr[data-alert="{site.alarm_id}"]'
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, row), 20, "the alarm in the inbox")

    def row_text() -> str:  # read at once: the inbox refreshes its rows every 3 s
        return str(browser.execute_script(f"return document.querySelector('{row}').innerText"))

    def act(selector: str, *keys: str) -> None:
        """Type or click in the row, again if a refresh replaced it under the finger."""
        for _ in range(5):
            try:
                element = browser.find_element(By.CSS_SELECTOR, f"{row} {selector}")
                element.send_keys(*keys) if keys else element.click()
                return
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"{selector} kept being replaced")

    assert "cabinet-door-open" in row_text()
    act("input[name=comment]", "porte ouverte par la maintenance (ticket 4711)")
    act("button[value=dismiss]")
    wait_until(
        lambda: "rejetée par v.alertes" in row_text(),
        10,
        "the decision on the page",
    )
    browser.save_screenshot(str(artifacts() / "console-alerts.png"))
    [decision] = [e for e in site.audit() if e["action"] == "alert-decision"]
    assert decision["who"] == "v.alertes" and decision["decision"] == "dismiss"
    assert decision["event"] == site.alarm_id and decision["rule"] == "door"
    assert decision["comment"] == "porte ouverte par la maintenance (ticket 4711)"
    assert 0 <= decision["time_to_decide_s"] < 120
    # a viewer has no audit view, and nothing of the camera outside the scope
    browser.get(f"{site.url}/console/audit")
    assert "supervisors" in browser.page_source
    assert "cam2" not in browser.execute_script(
        "return fetch('/console/api/cameras').then(r => r.text())"
    )
    status = browser.execute_script(
        "return fetch('/v1/view/test-unit/cam2/live.m3u8').then(r => r.status)"
    )
    assert status == 403
    # a supervisor sees the decision in the audit log and the rule's false-alarm rate
    browser.delete_all_cookies()
    log_in(browser, site, "s.chef")
    browser.get(f"{site.url}/console/alerts")
    rates = browser.find_element(By.ID, "rates").text
    assert "door 1 1 100" in rates.replace("\n", " ").replace("%", ""), rates
    # fleet health, and from a unit to its recent alarms
    browser.get(f"{site.url}/console/units")
    units = browser.find_element(By.TAG_NAME, "table").text
    assert "test-unit" in units and "complete" in units, units
    assert f"{edge.__version__} (" in units, units  # the version the unit reports, and its slot
    assert not browser.find_elements(By.CSS_SELECTOR, "table .bad")  # nothing flagged
    browser.find_element(By.LINK_TEXT, "test-unit").click()
    wait_until(lambda: "unit=test-unit" in browser.current_url, 10, "the unit's alerts")
    assert browser.find_elements(By.CSS_SELECTOR, row)
    browser.save_screenshot(str(artifacts() / "console-unit-alerts.png"))
    browser.get(f"{site.url}/console/audit?q=alert-decision")
    table = browser.find_element(By.ID, "audit").text
    assert "v.alertes" in table and "ticket 4711" in table
    browser.save_screenshot(str(artifacts() / "console-audit.png"))


def test_an_alerts_snapshot_opens_on_click_under_the_csp_and_is_audited(
    browser: Any, site: Site
) -> None:
    """The snapshot edged's uplink delivered after its alert: a button in the inbox, the
    picture loaded on click as an <img> of the console's own route, no CSP violation."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    log_in(browser, site, "v.image")
    browser.get(f"{site.url}/console/alerts")
    browser.execute_script(
        "window.cspViolations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.cspViolations.push(e.violatedDirective));"
    )
    button = f'tr[data-alert="{site.shot_id}"] [data-snapshot]'
    # the inbox refreshes its rows every 3 s: the button comes once the CSU holds the picture
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, button), 60, "the snapshot button")
    assert not [e for e in site.audit() if e["action"] == "view-snapshot"]  # not before a click
    for _ in range(5):
        try:
            browser.find_element(By.CSS_SELECTOR, button).click()
            break
        except StaleElementReferenceException:
            continue
    size = (
        f"const i = document.querySelector('tr[data-alert=\"{site.shot_id}\"] img.snapshot');"
        "return i && i.complete && i.naturalWidth ? [i.naturalWidth, i.naturalHeight] : null"
    )
    wait_until(lambda: browser.execute_script(size), 10, "the picture drawn")
    assert browser.execute_script(size) == [64, 48]
    assert browser.execute_script("return window.cspViolations") == []
    browser.save_screenshot(str(artifacts() / "console-snapshot.png"))
    [seen] = [e for e in site.audit() if e["action"] == "view-snapshot"]
    assert (seen["who"], seen["event"], seen["camera"]) == ("v.image", site.shot_id, "cam1")


def test_playback_shows_the_gap_and_seeks_to_the_frame_ffmpeg_finds_there(
    browser: Any, site: Site
) -> None:
    from selenium.webdriver.common.by import By

    segments = sorted(
        SegmentStore(site.csu.directory / "storage").camera("test-unit", "cam1").segments.values(),
        key=lambda seg: seg.sequence,
    )
    first = segments[0]
    # from 5 s before the unit started (a gap: nothing recorded) to 4 s after
    start_s, end_s = first.start_wall_ns / 1e9 - 5, first.start_wall_ns / 1e9 + 4
    browser.delete_all_cookies()
    log_in(browser, site, "v.relecture")
    browser.get(f"{site.url}/console/playback?cam=test-unit/cam1&from={start_s:.3f}&to={end_s:.3f}")
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline rect.gap")
    assert browser.find_elements(By.CSS_SELECTOR, "#timeline rect.span")
    section = "document.getElementById('playback')"
    wait_until(
        lambda: browser.execute_script(
            f"return {section}.dataset.ready || {section}.dataset.error"
        ),
        20,
        "the recorded range to load",
    )
    assert browser.execute_script(f"return {section}.dataset.ready") == "1"
    target_ms = first.start_wall_ns / 1e6 + 2350  # frame 23 of the range, mid-frame
    assert browser.execute_script(f"return window.edgePlayback.seekWall({target_ms})")
    video = f"{section}.querySelector('video')"
    wait_until(
        lambda: browser.execute_script(f"return !{video}.seeking && {video}.readyState >= 2"),
        10,
        "the seek",
    )
    shown_ms = float(browser.execute_script(f"return {section}.dataset.wallMs"))
    assert abs(shown_ms - target_ms) < 1, (shown_ms, target_ms)
    rgb = browser.execute_script(
        f"""const v = {video}; const c = document.createElement('canvas');
        c.width = v.videoWidth; c.height = v.videoHeight;
        const g = c.getContext('2d'); g.drawImage(v, 0, 0);
        return Array.from(g.getImageData(0, 0, c.width, c.height).data);"""
    )
    shown = np.array(rgb, dtype=np.int16).reshape(240, 320, 4)[:, :, :3]
    browser.save_screenshot(str(artifacts() / "console-playback.png"))
    # the judge: ffmpeg decodes the same recorded playlist; the frame shown must be the one at
    # 2.3 s, not one a second or two away
    url = f"{site.url}/v1/view/test-unit/cam1/recorded.m3u8?from={start_s:.3f}&to={end_s:.3f}"

    def ffmpeg_frame(n: int) -> Any:
        raw = subprocess.run(
            [tool("ffmpeg"), "-v", "error", "-tls_verify", "0",
             "-headers", f"Authorization: Bearer {site.csu.operator_token}\r\n",
             "-i", url, "-vf", f"select=eq(n\\,{n})", "-fps_mode", "passthrough",
             "-frames:v", "1", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
            capture_output=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        return np.frombuffer(raw, dtype=np.uint8).reshape(240, 320, 3).astype(np.int16)

    distance = {n: float(np.abs(shown - ffmpeg_frame(n)).mean()) for n in (8, 23, 38)}
    (artifacts() / "console-playback.json").write_text(json.dumps(distance))
    assert min(distance, key=lambda n: distance[n]) == 23, distance
    views = [
        e for e in site.audit() if e["action"] == "view-recorded" and e["who"] == "v.relecture"
    ]
    assert views and views[-1]["camera"] == "cam1"


def test_a_forged_csrf_token_and_an_expired_session_are_refused(browser: Any, site: Site) -> None:
    from selenium.webdriver.common.by import By

    browser.delete_all_cookies()
    log_in(browser, site, "s.chef")
    # a forged token in the logout form: refused, still logged in
    browser.get(f"{site.url}/console/")
    browser.execute_script(
        "document.querySelector('header form input[name=csrf]').value = 'forged'"
    )
    browser.find_element(By.CSS_SELECTOR, "header form button").click()
    wait_until(lambda: "CSRF" in browser.page_source, 10, "the refusal page")
    browser.get(f"{site.url}/console/")
    assert 'id="operator">s.chef<' in browser.page_source
    # thirteen hours later (the fault injected in the session table): back to the log-in form
    with sqlite3.connect(site.csu.directory / "operators.db") as db:
        db.execute("UPDATE sessions SET created = created - 13 * 3600")
    browser.get(f"{site.url}/console/")
    assert browser.find_elements(By.NAME, "password")
    browser.save_screenshot(str(artifacts() / "console-expired.png"))
    reasons = [e.get("reason") for e in site.audit()]
    assert "missing or wrong CSRF token" in reasons
    assert "session reached its maximum length (s.chef)" in reasons


def test_an_investigator_downloads_the_signed_bundle_of_edged_recordings(
    browser: Any, site: Site, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    browser.delete_all_cookies()
    log_in(browser, site, "i.requisition")
    browser.get(f"{site.url}/console/evidence")
    # the form's range is the last ten minutes: everything edged recorded in this run
    browser.find_element(By.NAME, "case").send_keys("PV-2026/0042")
    browser.find_element(By.CSS_SELECTOR, "button[value=bundle]").click()
    try:
        wait_until(
            lambda: "Préparation" in browser.find_element(By.ID, "export-status").text,
            5,
            "the building notice",
        )
    except AssertionError:
        raise AssertionError(
            browser.current_url
            + browser.page_source[-3000:]
            + str(list(downloads.iterdir()))
            + str(site.audit()[-3:])
        ) from None
    browser.save_screenshot(str(artifacts() / "console-evidence.png"))
    wanted = downloads / "PV-2026_0042-test-unit-cam1.tar"
    wait_until(wanted.exists, 30, "the downloaded bundle")
    bundle = wanted.read_bytes()
    [entry] = [e for e in site.audit() if e["action"] == "export" and e.get("kind") == "bundle"]
    assert (entry["who"], entry["case"], entry["camera"]) == (
        "i.requisition",
        "PV-2026/0042",
        "cam1",
    )
    assert entry["bundle_sha256"] == hashlib.sha256(bundle).hexdigest()
    # the unit is enrolled with a pinned key here (no evidence certificate): --unit-key
    run = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "verify", str(wanted), "--json",
         "--unit-key", str(site.csu.directory / "units" / "test-unit.pem"),
         "--csu-key", str(site.csu.directory / "audit-key.pub.pem")],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    report = json.loads(run.stdout)
    assert run.returncode in (0, 3) and report["verdict"] in ("authentic", "partial"), report
    authentic = [s for s in report["seconds"] if s["state"] == "authentic"]
    assert len(authentic) >= entry["segments"] >= 2


def test_a_waiting_output_request_shows_the_command_to_sign_and_copies_it(
    browser: Any, site: Site
) -> None:
    """A playbook waiting for an agent (its event as the unit's outputs engine sends it): the
    inbox shows the time left, refreshed, and the ``edge-csu command confirm`` line, which the
    copy button puts on the clipboard (or selects, where the clipboard is refused)."""
    from selenium.webdriver.common.by import By

    out = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "operator", "add", "--config",
         str(site.csu.config), "--name", "v.sorties", "--role", "viewer",
         "--scope", "test-unit/cam1", "--password-stdin"],
        input=PASSWORD + "\n", capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    secret = re.search(r"secret=([A-Z2-7]+)", out)
    assert secret, out
    site.secrets["v.sorties"] = secret.group(1)
    from cryptography.hazmat.primitives.asymmetric import ed25519

    signer = EventSigner(ed25519.Ed25519PrivateKey.generate(), "test-unit")
    events = site.csu.directory / "storage" / "test-unit" / "events"
    now = time.time_ns()

    def put(camera: str, category: str, kind: str, **details: Any) -> str:
        event = signer.sign(
            camera=camera, category=category, kind=kind, rule="outputs", wall_ns=now,
            frame_index=-1, details=details,
        )  # fmt: skip
        (events / f"{event.body['id']}.json").write_bytes(event.wire())
        return str(event.body["id"])

    trigger = put("cam1", "count", "gathering", message="12 people")
    put("unit", "output", "output-confirmation-requested", output="relay-barrier",
        playbook="lane-closure", event=trigger, confirm_within_s=600.0, agent="edged",
        reason="gathering on cam1: waits for an agent's confirmation")  # fmt: skip

    browser.delete_all_cookies()
    log_in(browser, site, "v.sorties")
    browser.get(f"{site.url}/console/alerts")
    row = "#request-rows tr.waiting"
    wait_until(lambda: browser.find_elements(By.CSS_SELECTOR, row), 10, "the request")
    code = browser.execute_script(f"return document.querySelector('{row} code').textContent")
    assert code.startswith("edge-csu command confirm --config ") and code.endswith(
        f"--unit test-unit --output relay-barrier --playbook lane-closure --event {trigger} "
        "--key AGENT.key --cert AGENT.crt"
    ), code
    left = f"return document.querySelector('{row} td:nth-child(4) strong').textContent"
    first = browser.execute_script(left)
    assert re.fullmatch(r"reste (9|10) min \d\d s", first), first
    wait_until(lambda: browser.execute_script(left) != first, 15, "the time left refreshed")
    browser.execute_cdp_cmd(
        "Browser.grantPermissions",
        {"origin": site.url, "permissions": ["clipboardReadWrite", "clipboardSanitizedWrite"]},
    )
    button = f"return document.querySelector('{row} [data-copy]')"
    browser.execute_script(button + ".click()")
    label = button + ".textContent"
    wait_until(lambda: browser.execute_script(label) != "Copier", 10, "the copy")
    if browser.execute_script(label) == "Copiée":
        copied = browser.execute_async_script(
            "navigator.clipboard.readText().then(arguments[0], e => arguments[0](String(e)))"
        )
    else:
        assert browser.execute_script(label) == "Sélectionnée : Ctrl+C"
        copied = browser.execute_script("return document.getSelection().toString()")
    assert copied == code
    browser.save_screenshot(str(artifacts() / "console-output-request.png"))
    # the unit's page points at it
    browser.get(f"{site.url}/console/units")
    assert "1 demande(s) en attente" in browser.find_element(By.TAG_NAME, "table").text
