"use strict";
// Live wall of the CSU console. Each visible tile plays its camera's live HLS playlist (fMP4
// segments decrypted by the receiver) through Media Source Extensions, written here: no
// third-party player. Requests carry the session cookie; every segment fetched is audited by
// the receiver. Nothing here is inline: the page's Content-Security-Policy forbids it.

const POLL_MS = 1000;
const MAX_BEHIND_S = 3; // further behind the live edge than this: jump forward

function parsePlaylist(text) {
  // [{seq, init, wallMs, duration}] from an EXT-X-MAP / PROGRAM-DATE-TIME / EXTINF playlist
  const out = [];
  let init = null;
  let wallMs = null;
  let duration = 0;
  for (const line of text.split("\n")) {
    let m = line.match(/^#EXT-X-MAP:URI="init\/(\d+)\.mp4"/);
    if (m) init = m[1];
    m = line.match(/^#EXT-X-PROGRAM-DATE-TIME:(.+)$/);
    if (m) wallMs = Date.parse(m[1]);
    m = line.match(/^#EXTINF:([0-9.]+),/);
    if (m) duration = Number(m[1]);
    m = line.match(/^media\/(\d+)\.m4s$/);
    if (m) {
      out.push({ seq: Number(m[1]), init, wallMs, duration });
      if (wallMs !== null) wallMs += duration * 1000;
    }
  }
  return out;
}

function codecOf(init) {
  // "avc1.PPCCLL" from the avcC box of an init segment
  const b = new Uint8Array(init);
  const hex = (x) => x.toString(16).padStart(2, "0");
  for (let i = 4; i + 8 < b.length; i++) {
    if (b[i] === 0x61 && b[i + 1] === 0x76 && b[i + 2] === 0x63 && b[i + 3] === 0x43) {
      return "avc1." + hex(b[i + 5]) + hex(b[i + 6]) + hex(b[i + 7]);
    }
  }
  return "avc1.42e01e";
}

function appended(sb, data) {
  return new Promise((resolve, reject) => {
    sb.addEventListener("updateend", resolve, { once: true });
    sb.addEventListener("error", reject, { once: true });
    sb.appendBuffer(data);
  });
}

async function fetchBytes(url) {
  const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) throw new Error(r.status + " " + url);
  return r.arrayBuffer();
}

class LivePlayer {
  constructor(tile) {
    this.tile = tile;
    this.video = tile.querySelector("video");
    this.state = tile.querySelector(".state");
    this.base = "/v1/view/" + tile.dataset.unit + "/" + tile.dataset.camera + "/";
    this.next = null;
    this.initSeq = null;
    this.sb = null;
    this.spans = []; // [{bufStart, wallMs}] for the latency estimate
    this.stopped = false;
  }

  start() {
    this.ms = new MediaSource();
    this.video.src = URL.createObjectURL(this.ms);
    this.ms.addEventListener("sourceopen", () => this.poll(), { once: true });
  }

  stop() {
    this.stopped = true;
    this.video.removeAttribute("src");
    this.video.load();
  }

  say(key) {
    if (this.stopped) return; // the tile shows another camera now
    this.state.textContent = this.tile.dataset[key] || key;
  }

  async poll() {
    if (this.stopped) return;
    try {
      const r = await fetch(this.base + "live.m3u8", { credentials: "same-origin", cache: "no-store" });
      if (r.status === 404) {
        this.say("waiting");
      } else if (!r.ok) {
        this.say("refused");
        return; // 401/403: the session ended or the camera left the scope
      } else {
        const entries = parsePlaylist(await r.text());
        if (this.stopped) return;
        await this.feed(entries);
      }
    } catch (err) {
      this.say("error");
    }
    if (this.stopped) return;
    setTimeout(() => this.poll(), POLL_MS);
  }

  async feed(entries) {
    if (entries.length === 0) return;
    if (this.next === null) this.next = entries[Math.max(0, entries.length - 2)].seq;
    for (const e of entries) {
      if (this.stopped) return; // the tile's video belongs to another player now
      if (e.seq < this.next) continue;
      if (e.init !== this.initSeq) {
        const init = await fetchBytes(this.base + "init/" + e.init + ".mp4");
        if (this.sb === null) {
          this.sb = this.ms.addSourceBuffer('video/mp4; codecs="' + codecOf(init) + '"');
          this.sb.mode = "sequence"; // runs with a discontinuity play one after the other
        }
        await appended(this.sb, init);
        this.initSeq = e.init;
      }
      const media = await fetchBytes(this.base + "media/" + e.seq + ".m4s");
      const b = this.sb.buffered;
      const bufStart = b.length ? b.end(b.length - 1) : 0;
      await appended(this.sb, media);
      if (e.wallMs !== null) this.spans.push({ bufStart, wallMs: e.wallMs });
      this.spans = this.spans.slice(-20);
      this.next = e.seq + 1;
    }
    if (this.stopped) return;
    const b = this.sb.buffered;
    if (b.length) {
      const end = b.end(b.length - 1);
      if (end - this.video.currentTime > MAX_BEHIND_S || this.video.currentTime < b.start(0)) {
        this.video.currentTime = Math.max(b.start(b.length - 1), end - 1);
      }
    }
    if (this.video.paused) this.video.play().catch(() => {});
    this.say("live");
    this.estimateLatency();
  }

  estimateLatency() {
    // Glass-to-glass estimate: the unit stamps each segment with the wall time of its first
    // frame; the frame on screen is that time plus its offset in the segment.
    const t = this.video.currentTime;
    let span = null;
    for (const s of this.spans) if (s.bufStart <= t) span = s;
    if (span === null) return;
    const shownWallMs = span.wallMs + (t - span.bufStart) * 1000;
    this.tile.dataset.latencyMs = String(Math.round(Date.now() - shownWallMs));
  }
}

const WALL_KEY = "edge-console-wall/"; // + operator name: one wall per agent and browser
const SVG_NS = "http://www.w3.org/2000/svg";
const MASKS_POLL_MS = 10000;

async function drawMasks(tile) {
  // The outlines of the mask set the camera's newest segment commits to (signed by the unit),
  // as an SVG over the video: the viewBox is the masked frame and "meet" letterboxes it as
  // the video's object-fit: contain does, so the outlines scale with the picture.
  const name = tile.dataset.unit + "/" + tile.dataset.camera;
  const old = tile.querySelector("svg.masks");
  if (tile.dataset.masks !== "on") {
    if (old) old.remove();
    delete tile.dataset.masksDigest;
    return;
  }
  let m = null;
  try {
    const r = await fetch("/console/api/masks/" + name, { credentials: "same-origin", cache: "no-store" });
    if (r.ok) m = await r.json();
  } catch (err) {
    m = null;
  }
  // toggled off, or another camera on the tile, while the answer was on its way
  if (tile.dataset.masks !== "on" || tile.dataset.unit + "/" + tile.dataset.camera !== name) return;
  const button = tile.querySelector("[data-masks]");
  if (m === null || !m.held) {
    if (old) old.remove();
    tile.dataset.masksDigest = "";
    button.title = button.dataset.none;
    return;
  }
  button.title = "";
  if (old && tile.dataset.masksDigest === m.digest) return; // unchanged: no redraw
  const svg = document.createElementNS(SVG_NS, "svg");
  svg.setAttribute("class", "masks");
  svg.setAttribute("viewBox", "0 0 " + m.width + " " + m.height);
  svg.setAttribute("preserveAspectRatio", "xMidYMid meet");
  svg.setAttribute("aria-hidden", "true");
  for (const mask of m.masks) {
    const poly = document.createElementNS(SVG_NS, "polygon");
    poly.setAttribute("points", mask.points.map(([x, y]) => x * m.width + "," + y * m.height).join(" "));
    const title = document.createElementNS(SVG_NS, "title");
    title.textContent = mask.name;
    poly.appendChild(title);
    svg.appendChild(poly);
  }
  if (old) old.remove();
  tile.insertBefore(svg, tile.querySelector(".label"));
  tile.dataset.masksDigest = m.digest;
}

function setupWall(wall) {
  const tiles = Array.from(wall.querySelectorAll(".tile"));
  const players = new Map();
  const buttons = Array.from(document.querySelectorAll("[data-layout-button]"));
  const operator = document.getElementById("operator");
  const key = WALL_KEY + (operator ? operator.textContent : "");
  const nameOf = (tile) => tile.dataset.unit + "/" + tile.dataset.camera;

  function play(tile) {
    const p = new LivePlayer(tile);
    players.set(tile, p);
    p.start();
  }

  function save() {
    const state = { layout: Number(wall.dataset.layout), tiles: tiles.map(nameOf) };
    try {
      localStorage.setItem(key, JSON.stringify(state));
    } catch (err) {
      // storage full or disabled: the wall still works, it is only not remembered
    }
  }

  function show(tile, name) {
    // The camera ``name`` (UNIT/CAMERA, one of the picker's options) on ``tile``; the tile that
    // showed it gets this tile's camera instead, so no camera is on the wall twice.
    const before = nameOf(tile);
    if (before === name) return;
    const other = tiles.find((t) => t !== tile && nameOf(t) === name);
    for (const [t, n] of other ? [[tile, name], [other, before]] : [[tile, name]]) {
      const cut = n.indexOf("/");
      t.dataset.unit = n.slice(0, cut);
      t.dataset.camera = n.slice(cut + 1);
      t.setAttribute("aria-label", n.replace("/", " / "));
      t.querySelector("[data-pick]").value = n;
      if (t.dataset.masks === "on") {
        delete t.dataset.masksDigest;
        drawMasks(t);
      }
      if (players.has(t)) {
        players.get(t).stop();
        play(t);
      }
    }
  }

  function layout(n) {
    wall.dataset.layout = String(n);
    tiles.forEach((tile, i) => {
      const visible = i < n;
      tile.hidden = !visible;
      if (visible && !players.has(tile)) {
        play(tile);
      } else if (!visible && players.has(tile)) {
        players.get(tile).stop();
        players.delete(tile);
      }
    });
    buttons.forEach((b) => b.setAttribute("aria-pressed", String(Number(b.dataset.layoutButton) === n)));
  }

  function restore() {
    // The wall this agent left in this browser; a camera no longer offered (out of the scope
    // now, or gone) is dropped and its tile keeps the camera the page gave it.
    let saved = null;
    try {
      saved = JSON.parse(localStorage.getItem(key) || "null");
    } catch (err) {
      saved = null;
    }
    if (saved === null || typeof saved !== "object") return;
    const offered = new Set(Array.from(tiles[0].querySelectorAll("[data-pick] option"), (o) => o.value));
    const names = Array.isArray(saved.tiles) ? saved.tiles : [];
    names.slice(0, tiles.length).forEach((name, i) => {
      if (typeof name === "string" && offered.has(name)) show(tiles[i], name);
    });
    if ([1, 4, 9].includes(saved.layout)) wall.dataset.layout = String(saved.layout);
  }

  buttons.forEach((b) =>
    b.addEventListener("click", () => {
      layout(Number(b.dataset.layoutButton));
      save();
    })
  );
  // Keyboard: 1, 4, 9 choose the layout; Enter on a tile shows it alone; the picker is a
  // plain list box (Tab to it, arrows or the first letters to choose).
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    if (["1", "4", "9"].includes(ev.key)) {
      layout(Number(ev.key));
      save();
    }
  });
  tiles.forEach((tile) => {
    tile.addEventListener("keydown", (ev) => {
      if (ev.key !== "Enter" || ev.target !== tile) return;
      tiles.unshift(tiles.splice(tiles.indexOf(tile), 1)[0]);
      tiles.forEach((t) => wall.appendChild(t));
      layout(1);
      save();
    });
    tile.querySelector("[data-pick]").addEventListener("change", (ev) => {
      show(tile, ev.target.value);
      save();
    });
    // The mask outlines, per tile, on demand.
    const masks = tile.querySelector("[data-masks]");
    masks.addEventListener("click", () => {
      const on = tile.dataset.masks !== "on";
      tile.dataset.masks = on ? "on" : "off";
      masks.setAttribute("aria-pressed", String(on));
      drawMasks(tile);
    });
  });
  // A new mask set shows within MASKS_POLL_MS (redrawn only when its digest changes).
  setInterval(() => {
    tiles.filter((t) => t.dataset.masks === "on" && !t.hidden).forEach((t) => drawMasks(t));
  }, MASKS_POLL_MS);
  restore();
  layout(Number(wall.dataset.layout) || 4);
  save(); // what was dropped on restore stays dropped
  wall.dataset.restored = "1"; // for the browser tests
}

class Playback {
  // Plays a recorded range: every segment of the recorded playlist appended in order
  // ("sequence" mode: a gap in the recording does not leave a hole in the video's own time),
  // with the wall time of each segment kept so that the timeline and the clock show true times.
  constructor(section) {
    this.section = section;
    this.video = section.querySelector("video");
    this.clock = document.getElementById("playback-time");
    this.base = "/v1/view/" + section.dataset.unit + "/" + section.dataset.camera + "/";
    this.spans = []; // [{bufStart, wallMs, duration}]
  }

  async start() {
    const ms = new MediaSource();
    this.video.src = URL.createObjectURL(ms);
    await new Promise((resolve) => ms.addEventListener("sourceopen", resolve, { once: true }));
    const q = "recorded.m3u8?from=" + this.section.dataset.from + "&to=" + this.section.dataset.to;
    const r = await fetch(this.base + q, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) throw new Error(r.status + " " + q);
    let sb = null;
    let initSeq = null;
    for (const e of parsePlaylist(await r.text())) {
      if (e.init !== initSeq) {
        const init = await fetchBytes(this.base + "init/" + e.init + ".mp4");
        if (sb === null) {
          sb = ms.addSourceBuffer('video/mp4; codecs="' + codecOf(init) + '"');
          sb.mode = "sequence";
        }
        await appended(sb, init);
        initSeq = e.init;
      }
      const b = sb.buffered;
      const bufStart = b.length ? b.end(b.length - 1) : 0;
      await appended(sb, await fetchBytes(this.base + "media/" + e.seq + ".m4s"));
      this.spans.push({ bufStart, wallMs: e.wallMs, duration: e.duration });
    }
    ms.endOfStream();
    this.video.addEventListener("timeupdate", () => this.showTime());
    this.video.addEventListener("seeked", () => this.showTime());
    this.section.dataset.ready = "1";
  }

  wallAt(t) {
    let span = null;
    for (const s of this.spans) if (s.bufStart <= t + 1e-6) span = s;
    return span === null ? null : span.wallMs + (t - span.bufStart) * 1000;
  }

  seekWall(ms) {
    // The segment holding that instant; in a gap, the first recorded instant after it.
    for (const s of this.spans) {
      if (ms < s.wallMs + s.duration * 1000) {
        this.video.currentTime = s.bufStart + Math.max(0, ms - s.wallMs) / 1000;
        return true;
      }
    }
    return false;
  }

  showTime() {
    const wall = this.wallAt(this.video.currentTime);
    if (wall === null) return;
    this.section.dataset.wallMs = String(Math.round(wall));
    this.clock.textContent = new Date(wall).toISOString().replace("T", " ").slice(0, 23) + " UTC";
  }

  act(action) {
    const v = this.video;
    if (action === "play") v.paused ? v.play() : v.pause();
    if (action === "back") v.currentTime = Math.max(0, v.currentTime - 10);
    if (action === "forward") v.currentTime = v.currentTime + 10;
    if (action === "step") {
      v.pause();
      v.currentTime = v.currentTime + 0.1; // one frame at 10 fps; a frame or less otherwise
    }
  }
}

function setupPlayback(section) {
  const player = new Playback(section);
  window.edgePlayback = player; // for the browser tests and the keyboard handler
  player.start().catch(() => (section.dataset.error = "1"));
  section.querySelectorAll("[data-action]").forEach((b) =>
    b.addEventListener("click", () => player.act(b.dataset.action))
  );
  document.addEventListener("keydown", (ev) => {
    if (ev.target instanceof HTMLInputElement || ev.target instanceof HTMLSelectElement) return;
    const keys = { " ": "play", ArrowLeft: "back", ArrowRight: "forward", ".": "step" };
    if (keys[ev.key]) {
      ev.preventDefault();
      player.act(keys[ev.key]);
    }
  });
  const timeline = document.getElementById("timeline");
  timeline.addEventListener("click", (ev) => {
    const box = timeline.getBoundingClientRect();
    const from = Number(timeline.dataset.fromMs);
    const to = Number(timeline.dataset.toMs);
    player.seekWall(from + ((ev.clientX - box.left) / box.width) * (to - from));
  });
}

function setupAlerts(rows) {
  // A snapshot loads only when asked for (each viewing is audited), as an <img> of the
  // console's own route; a second click hides it again.
  rows.addEventListener("click", (ev) => {
    const button = ev.target.closest("[data-snapshot]");
    if (!button) return;
    const slot = button.nextElementSibling;
    const shown = slot.querySelector("img");
    if (shown) {
      shown.remove();
      button.setAttribute("aria-expanded", "false");
      return;
    }
    const img = document.createElement("img");
    img.className = "snapshot";
    img.alt = button.dataset.alt;
    img.src = button.dataset.snapshot;
    slot.appendChild(img);
    button.setAttribute("aria-expanded", "true");
  });
  // New alerts appear without a reload; never while the agent is typing a comment. Pictures
  // already opened move into the new rows (not fetched, nor audited, again).
  setInterval(async () => {
    if (rows.contains(document.activeElement)) return;
    const url = "/console/alerts" + (location.search ? location.search + "&" : "?") + "fragment=rows";
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) return;
    const open = Array.from(rows.querySelectorAll("img.snapshot"));
    rows.innerHTML = await r.text();
    for (const img of open) {
      const button = Array.from(rows.querySelectorAll("[data-snapshot]")).find(
        (b) => b.dataset.snapshot === img.getAttribute("src")
      );
      if (!button) continue;
      button.nextElementSibling.appendChild(img);
      button.setAttribute("aria-expanded", "true");
    }
  }, 3000);
}

function setupRequests(rows) {
  // Time left and new requests without a reload; not while the agent selects a command by
  // hand (the new rows would drop the selection), and the copy button keeps the focus.
  setInterval(async () => {
    const sel = document.getSelection();
    if (sel && !sel.isCollapsed && rows.contains(sel.anchorNode)) return;
    const focused = rows.contains(document.activeElement) ? document.activeElement.closest("tr") : null;
    const key = focused ? focused.dataset.request : null;
    const url = "/console/alerts" + (location.search ? location.search + "&" : "?") + "fragment=requests";
    const r = await fetch(url, { credentials: "same-origin", cache: "no-store" });
    if (!r.ok) return;
    rows.innerHTML = await r.text();
    if (key) {
      const row = Array.from(rows.querySelectorAll("tr[data-request]")).find((tr) => tr.dataset.request === key);
      const button = row ? row.querySelector("[data-copy]") : null;
      if (button) button.focus();
    }
  }, 3000);
}

function setupCopy() {
  // The confirmation command to the clipboard; where the clipboard is refused, the command is
  // selected for Ctrl+C. The agent completes it with their own key: the console signs nothing.
  document.addEventListener("click", async (ev) => {
    const button = ev.target.closest("[data-copy]");
    if (!button) return;
    const code = button.parentElement.querySelector("code");
    if (!code) return;
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = button.dataset.copied;
    } catch (e) {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = document.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      button.textContent = button.dataset.selected;
    }
  });
}

function setupEvidence(form) {
  // A bundle is sealed before its first byte is sent (an hour of video takes a while):
  // say so, rather than leave the agent wondering whether the click was taken.
  const status = document.getElementById("export-status");
  form.addEventListener("submit", (e) => {
    if (status && e.submitter && e.submitter.value === "bundle") {
      status.textContent = form.dataset.building;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const wall = document.getElementById("wall");
  if (wall) setupWall(wall);
  const rows = document.getElementById("alert-rows");
  if (rows) setupAlerts(rows);
  const requests = document.getElementById("request-rows");
  if (requests) setupRequests(requests);
  setupCopy();
  const playback = document.getElementById("playback");
  if (playback) setupPlayback(playback);
  const evidence = document.getElementById("evidence-form");
  if (evidence) setupEvidence(evidence);
});
