"""The CSU's signed evidence bundle, end to end: a real ``edge-csu serve`` receives real H.264
segments from a unit certified by the city's CA (with a loss the unit recorded and a segment
still in its backlog), an investigator downloads the bundle through the console, and the real
``edge-csu verify`` / ``edge-csu open`` judge it, then judge it again after each way of
tampering with it. The retention path (a deletion record in the bundle) is built in-process."""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import re
import shutil
import socket
import ssl
import subprocess
import tarfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.config import PrivacyMaskConfig
from edge.csu import bundlefile
from edge.csu.ca import cert_pem
from edge.csu.main import main as edge_csu
from edge.csu.receiver import access_log as csu_audit
from edge.csu.receiver import evidence
from edge.csu.receiver import receipts as csu_receipts
from edge.csu.receiver.archive import Refusal, SegmentStore
from edge.csu.receiver.deletions import DeletionLedger
from edge.csu.receiver.evidence import BundleRequest, UnitTrust, build
from edge.csu.receiver.trust import parse_chain
from edge.errors import IntegrityError
from edge.events import EventSigner, jpeg_snapshot
from edge.identity.unitkeys import public_pem
from edge.privacy.commitment import MASK_SET_ACTION, Committed, MaskCommitment, MaskSet
from edge.uplink.protocol import (
    CERTIFICATE_CONTENT_TYPE,
    ENVELOPE_CONTENT_TYPE,
    EVENT_CONTENT_TYPE,
    GAP_CONTENT_TYPE,
    MASK_SET_CONTENT_TYPE,
    SNAPSHOT_CONTENT_TYPE,
    envelope_path,
    events_path,
    gap_path,
    mask_set_path,
    segment_path,
    signing_certificate_path,
    snapshot_path,
)
from edge.vault import format as fmt
from edge.vault import receipt as rcpt
from edge.vault.audit import AuditLog
from edge.vault.recipient_keys import RecipientPublic
from edge.vault.snapshots import seal_snapshot

from .conftest import tool
from .test_console_web import PASSWORD, Browser, Console, operator_cmd
from .uplink_util import CSU_NAME, Csu, Sealer, encoded_segments, make_csu

SEC = 1_000_000_000
UNIT, CAMERA, CASE = "unit-a", "street", "PV-2026/0042"
#: What the unit does, sequence by sequence: sent, lost (its signed gap record sent), kept back.
SENT = (0, 1, 2, 5, 6, 8, 9)
LOST = (3, 4)
BACKLOG = (7,)
#: The masks: the window alone, then (from 6.5 s, in segment 6) the window and the door.
WINDOW = PrivacyMaskConfig(name="window 2nd floor", points=[(0.1, 0.1), (0.4, 0.1), (0.4, 0.4)])
DOOR = PrivacyMaskConfig(name="door no. 7", points=[(0.6, 0.5), (0.9, 0.5), (0.9, 0.95)])
BEFORE = MaskSet.of(CAMERA, [WINDOW], 320, 240)
AFTER = MaskSet.of(CAMERA, [WINDOW, DOOR], 320, 240)
VERSION = bytes([0x5E]) * 32
CHANGE_AT = 6.5  # seconds after t0
#: The masked frame of the street's alert (a real JPEG: the console shows it).
SNAPSHOT = jpeg_snapshot(np.tile(np.arange(64, dtype=np.uint8)[None, :, None] * 4, (48, 1, 3)))


@dataclass
class Lab:
    console: Console
    t0: int
    """Start of segment 0, whole seconds (each segment lasts one second)."""
    frames: dict[int, int]
    tmp: Path
    mask_records: dict[bytes, bytes]
    """The unit's signed ``mask-set`` audit lines, by digest (as it sent them)."""
    events: dict[str, str]
    """Ids of the events the unit sent: street, street-snapshot, street-unsent, side, unit,
    street-late."""
    signing: ed25519.Ed25519PrivateKey

    @property
    def csu(self) -> Csu:
        return self.console.csu

    @property
    def csu_key(self) -> Path:
        return self.csu.directory / "audit-key.pub.pem"

    @property
    def receipt_key(self) -> Path:
        return self.csu.directory / "keys" / "receipt-key.pub.pem"

    def receipt_file(self, seq: int) -> Path:
        return self.csu.directory / "storage" / UNIT / CAMERA / "receipts" / f"{seq:012d}.rct"


def _unit_conn(csu: Csu, crt: Path, key: Path) -> http.client.HTTPSConnection:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(csu.pki.chain)
    ctx.load_cert_chain(crt, key)
    conn = http.client.HTTPSConnection(CSU_NAME, csu.ports["units"], timeout=10)
    conn.sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", csu.ports["units"]), timeout=10),
        server_hostname=CSU_NAME,
    )
    return conn


def _put(conn: http.client.HTTPSConnection, path: str, body: bytes, ctype: str) -> int:
    conn.request("PUT", path, body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    resp.read()
    return resp.status


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    tmp = tmp_path_factory.mktemp("csu-bundle")
    csu = make_csu(tmp)
    # The receiver signs a receipt of every segment it accepts, and keeps it (a top-level
    # setting: before the first table of the file).
    csu.config.write_text('receipt_key_file = "keys/receipt-key.pem"\n' + csu.config.read_text())
    secrets = {}
    for name, role, scope in (
        ("i.enquete", "investigator", ""),
        ("a.viewer", "viewer", ""),
        ("c.agent", "viewer", f"{UNIT}/{CAMERA}"),
        ("v.side", "viewer", f"{UNIT}/side"),
        ("m.street", "viewer", f"{UNIT}/{CAMERA}"),
        ("m.side", "viewer", f"{UNIT}/side"),
    ):
        out = operator_cmd(
            csu, "add", "--name", name, "--role", role, "--scope", scope, "--password-stdin",
            stdin=PASSWORD + "\n",
        )  # fmt: skip
        match = re.search(r"secret=([A-Z2-7]+)", out)
        assert match, out
        secrets[name] = match.group(1)
    csu.start()
    ctx = ssl.create_default_context(cafile=str(csu.pki.chain))
    ctx.check_hostname = False  # the certificate names csu.test, we dial 127.0.0.1
    try:
        signing = ed25519.Ed25519PrivateKey.generate()
        crt, key, _ = csu.pki.issue(UNIT, tmp / "unit")
        conn = _unit_conn(csu, crt, key)
        # The unit presents its evidence certificate itself: no key copied by hand.
        evidence = csu.pki.ca.certify(UNIT, signing.public_key())
        status = _put(
            conn, signing_certificate_path(UNIT), cert_pem(evidence) + csu.pki.ca.chain_pem,
            CERTIFICATE_CONTENT_TYPE,
        )  # fmt: skip
        assert status == 201, status
        sealer = Sealer(UNIT, CAMERA, csu.authority.public, signing)
        epoch = envelope_path(UNIT, CAMERA, sealer.epoch.epoch_id.hex())
        assert _put(conn, epoch, sealer.envelope, ENVELOPE_CONTENT_TYPE) == 201
        t0 = (time.time_ns() // SEC - 40) * SEC
        # The unit's signed log announces each mask set with its polygons; it sends the CSU
        # each record before the first segment that commits to it.
        log = AuditLog(tmp / "unit-audit.log", UNIT, signing)
        mask_records = {}
        for masks in (BEFORE, AFTER):
            log.append(MASK_SET_ACTION, masks.record(VERSION))
            mask_records[masks.digest] = log.path.read_bytes().splitlines(keepends=True)[-1]
            status = _put(
                conn, mask_set_path(UNIT, CAMERA, masks.digest.hex()),
                mask_records[masks.digest], MASK_SET_CONTENT_TYPE,
            )  # fmt: skip
            assert status == 201, status
        events = _send_events(conn, signing, t0, csu.authority.public)
        frames = {}
        media = encoded_segments(10)
        for seq in range(10):
            if seq in LOST:
                if seq == LOST[0]:  # the unit's recovery: a signed record takes their place
                    gap = fmt.GapRecord(
                        UNIT, CAMERA, t0 + 6 * SEC, LOST[0], LOST[-1],
                        after_wall_ns=t0 + 3 * SEC, prev_hash=sealer.prev_hash,
                        reason="power cut: segments lost at start-up",
                    )  # fmt: skip
                    raw_gap = fmt.sign_gap(gap, signing)
                    status = _put(
                        conn, gap_path(UNIT, CAMERA, LOST[0], LOST[-1]), raw_gap, GAP_CONTENT_TYPE
                    )
                    assert status == 201, status
                    sealer.prev_hash = fmt.parse_gap(raw_gap).chain_hash
                sealer.sequence += 1
                continue
            seg = media[seq]
            raw = sealer.seal(
                seg.init, seg.media, start_ns=t0 + seq * SEC, end_ns=t0 + (seq + 1) * SEC,
                frames=seg.frame_count, masks=_commitments(t0, seq),
            )  # fmt: skip
            frames[seq] = seg.frame_count
            if seq in SENT:
                status = _put(
                    conn,
                    segment_path(UNIT, CAMERA, seq),
                    raw,
                    "application/vnd.edge.sealed-segment",
                )
                assert status == 201, (seq, status)
        conn.close()
        yield Lab(Console(csu, secrets, ctx), t0, frames, tmp, mask_records, events, signing)
    finally:
        csu.stop()


def _commitments(t0: int, seq: int) -> tuple[MaskCommitment, ...]:
    """What segment ``seq`` commits to: the mask set before, after, or both (in segment 6)."""
    start, change = t0 + seq * SEC, t0 + int(CHANGE_AT * SEC)
    if start + SEC <= change:
        return (MaskCommitment(start, Committed(BEFORE.digest, VERSION)),)
    if start >= change:
        return (MaskCommitment(start, Committed(AFTER.digest, VERSION)),)
    return (
        MaskCommitment(start, Committed(BEFORE.digest, VERSION)),
        MaskCommitment(change, Committed(AFTER.digest, VERSION)),
    )


def _send_events(
    conn: http.client.HTTPSConnection,
    signing: ed25519.Ed25519PrivateKey,
    t0: int,
    authority: RecipientPublic,
) -> dict[str, str]:
    """The unit's signed events, as its uplink posts them: four of the street camera (one
    with a snapshot the unit then sends, sealed as its vault seals it, one with a snapshot it
    has not sent), one of another camera, a cabinet alarm, and one of the street long after
    the recording."""
    signer = EventSigner(signing, UNIT)
    sent = {}
    for name, camera, at, snapshot in (
        ("street", CAMERA, 1.5, None),
        ("street-snapshot", CAMERA, 2.5, SNAPSHOT),
        ("street-unsent", CAMERA, 3.5, SNAPSHOT[:-2] + b"\x00\xff\xd9"),
        ("side", "side", 1.2, None),
        ("unit", "unit", 0.5, None),
        ("street-late", CAMERA, 30.0, None),
    ):
        event = signer.sign(
            camera=camera, category="alert", kind="line-crossing", rule=name,
            wall_ns=t0 + int(at * SEC), frame_index=0, details={}, snapshot=snapshot,
        )  # fmt: skip
        conn.request(
            "POST", events_path(UNIT), body=event.wire(),
            headers={"Content-Type": EVENT_CONTENT_TYPE},
        )  # fmt: skip
        resp = conn.getresponse()
        assert resp.status == 201, resp.read()
        resp.read()
        sent[name] = str(event.body["id"])
        if name == "street-snapshot":
            assert snapshot is not None
            sealed = seal_snapshot(
                snapshot, device_id=UNIT, camera_id=camera, event_id=sent[name],
                wall_ns=event.body["wall_ns"], recipients=[authority], signing_key=signing,
            )  # fmt: skip
            status = _put(conn, snapshot_path(UNIT, sent[name]), sealed, SNAPSHOT_CONTENT_TYPE)
            assert status == 201, status
    return sent


def _download(browser: Browser, path: str) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPSConnection(
        "127.0.0.1", browser.console.port, context=browser.console.ctx, timeout=60
    )
    cookie = "; ".join(f"{k}={v}" for k, v in browser.cookies.items())
    conn.request("GET", path, headers={"Cookie": cookie})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, dict(resp.getheaders()), body


def _export(lab: Lab, browser: Browser, first: int, end: int, name: str) -> Path:
    """The investigator's path: the Evidence form, then the bundle it leads to."""
    query = urllib.parse.urlencode({
        "cam": f"{UNIT}/{CAMERA}", "case": CASE, "format": "bundle",
        "from": str(lab.t0 / SEC + first), "to": str(lab.t0 / SEC + end),
    })  # fmt: skip
    form = browser.request("GET", f"/console/evidence/export?{query}")
    assert form.status == 303, form.body
    target = form.headers["Location"]
    assert urllib.parse.urlsplit(target).path == f"/v1/export/{UNIT}/{CAMERA}.tar"
    status, headers, body = _download(browser, target)
    assert status == 200, body[:300]
    assert headers["Content-Type"] == "application/x-tar"
    assert 'filename="PV-2026_0042-unit-a-street.tar"' in headers["Content-Disposition"]
    assert headers["X-Bundle-SHA256"] == hashlib.sha256(body).hexdigest()
    path = lab.tmp / name
    path.write_bytes(body)
    return path


def _verify(
    capsys: pytest.CaptureFixture[str], lab: Lab, bundle: Path, *extra: str
) -> tuple[int, dict[str, object]]:
    code = edge_csu(["verify", str(bundle), "--ca", str(lab.csu.pki.chain), *extra, "--json"])
    return code, json.loads(capsys.readouterr().out)


def _states(lab: Lab, report: dict[str, object]) -> dict[int, str]:
    seconds = report["seconds"]
    assert isinstance(seconds, list)
    return {s["t"] - lab.t0 // SEC: s["state"] for s in seconds}


@pytest.fixture(scope="module")
def investigator(lab: Lab) -> Browser:
    browser = Browser(lab.console)
    assert browser.login("i.enquete").status == 303
    return browser


def test_an_investigator_downloads_a_signed_bundle_that_verifies_and_opens(
    lab: Lab, investigator: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    page = investigator.request("GET", "/console/evidence")
    assert page.status == 200 and 'value="bundle"' in page.body and "dossier" in page.body
    bundle = _export(lab, investigator, 0, 3, "complete.tar")
    code, report = _verify(capsys, lab, bundle, "--csu-key", str(lab.csu_key))
    assert code == 0 and report["verdict"] == "authentic", report["reasons"]
    assert _states(lab, report) == {0: "authentic", 1: "authentic", 2: "authentic"}
    assert "fleet CA (evidence certificate" in str(report["trust"])
    facts = "\n".join(report["facts"])  # type: ignore[arg-type]
    assert "signed by CSU key" in facts and "i.enquete" in facts and CASE in facts
    # the video comes out with the authority key, every frame the unit signed
    clip = lab.tmp / "complete.mp4"
    key = lab.csu.directory / "keys" / "authority.key.json"
    code = edge_csu([
        "open", str(bundle), "--key", str(key), "--ca", str(lab.csu.pki.chain),
        "--csu-key", str(lab.csu_key), "--out", str(clip),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    # the alert's snapshot the unit sent comes out beside the clip, checked against its event
    assert "1 with their sealed snapshot" in facts
    assert "1 snapshot(s) as <event id>.jpg" in out
    shot = lab.tmp / "complete-events" / f"{lab.events['street-snapshot']}.jpg"
    assert shot.read_bytes() == SNAPSHOT
    probe = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,nb_read_frames", "-of", "json", str(clip)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "h264"
    assert int(stream["nb_read_frames"]) == sum(lab.frames[s] for s in (0, 1, 2))
    # the export is in the audit log, with the case and the digest of the very file
    [entry] = [
        e for e in csu_audit.read(lab.csu.directory / "audit.jsonl")
        if e["action"] == "export" and e.get("kind") == "bundle"
    ]  # fmt: skip
    assert (entry["who"], entry["case"], entry["unit"], entry["camera"]) == (
        "i.enquete", CASE, UNIT, CAMERA,
    )  # fmt: skip
    assert entry["bundle_sha256"] == hashlib.sha256(bundle.read_bytes()).hexdigest()
    assert (entry["first"], entry["last"], entry["partial"]) == (0, 2, False)


def test_what_the_range_lacks_is_declared_with_its_reason(
    lab: Lab, investigator: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _export(lab, investigator, 0, 10, "partial.tar")
    code, report = _verify(capsys, lab, bundle, "--csu-key", str(lab.csu_key))
    assert code == 3 and report["verdict"] == "partial", report["reasons"]
    states = _states(lab, report)
    assert {s for s, v in states.items() if v == "authentic"} == set(SENT)
    assert {s for s, v in states.items() if v == "missing"} == {*LOST, *BACKLOG}
    reasons = "\n".join(report["reasons"])  # type: ignore[arg-type]
    assert "loss recorded by the unit: street: sequences 3..4 lost" in reasons
    assert "street #7: missing (not in the bundle): not received from the unit" in reasons
    clip = lab.tmp / "partial.mp4"
    key = lab.csu.directory / "keys" / "authority.key.json"
    code = edge_csu([
        "open", str(bundle), "--key", str(key), "--ca", str(lab.csu.pki.chain),
        "--csu-key", str(lab.csu_key), "--out", str(clip),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 3 and "PARTIAL: the CSU could not export 1 part(s)" in out, out
    assert "LOSS RECORDED by the unit (signed gap record): street: sequences 3..4" in out
    assert f"{clip}: {sum(lab.frames[s] for s in SENT)} frame(s)" in out
    with tarfile.open(bundle) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert manifest["operator"] == "i.enquete" and manifest["case"] == CASE
    assert [(g["first_sequence"], g["last_sequence"]) for g in manifest["gaps"]] == [LOST]


def test_the_segment_after_the_range_travels_as_the_tail(
    lab: Lab, investigator: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CSU's bundle carries, beside the range, the next segment the CSU holds chained to
    its last (its first access unit signs the range's last GOP: ONVIF Media Signing), checked
    like every segment; none after the newest segment. The clip still holds only the range."""
    bundle = _export(lab, investigator, 8, 9, "with-tail.tar")
    manifest = json.loads(_member(bundle, bundlefile.MANIFEST))
    assert [e["sequence"] for e in manifest["segments"]] == [8]
    assert [(e["sequence"], e["file"]) for e in manifest["tail"]] == [
        (9, f"tail/{CAMERA}/{9:010d}.seg")
    ]
    code, report = _verify(capsys, lab, bundle, "--csu-key", str(lab.csu_key))
    assert code == 0 and _states(lab, report) == {8: "authentic"}, report["reasons"]
    clip = lab.tmp / "with-tail.mp4"
    key = lab.csu.directory / "keys" / "authority.key.json"
    code = edge_csu([
        "open", str(bundle), "--key", str(key), "--ca", str(lab.csu.pki.chain),
        "--csu-key", str(lab.csu_key), "--out", str(clip),
    ])  # fmt: skip
    assert code == 0 and "taken from the next segment (#9)" in capsys.readouterr().out
    # Its tail swapped for another segment of the unit: refused, the CSU seal covers it.
    swapped = _repack(
        bundle, lab.tmp / "tail-swapped.tar",
        {f"tail/{CAMERA}/{9:010d}.seg": _member(bundle, f"segments/{CAMERA}/{8:010d}.seg")},
    )  # fmt: skip
    code, report = _verify(capsys, lab, swapped, "--csu-key", str(lab.csu_key))
    assert code == 1 and "digest differs" in str(report["reasons"])
    newest = _export(lab, investigator, 9, 10, "newest.tar")
    assert json.loads(_member(newest, bundlefile.MANIFEST))["tail"] == []


def test_an_agent_opens_an_alerts_snapshot_from_the_inbox_scoped_and_audited(lab: Lab) -> None:
    """The unit sent the street alert's sealed snapshot: the inbox offers it behind a button,
    the console's route opens it (checked again) for an agent whose scope covers the camera,
    never cached, each viewing in the audit log; anyone else gets nothing, audited too."""
    eid = lab.events["street-snapshot"]
    src = f"/console/snapshots/{UNIT}/{eid}.jpg"
    agent = Browser(lab.console)
    assert agent.login("c.agent").status == 303
    page = agent.request("GET", "/console/alerts")
    assert page.status == 200
    assert f'data-snapshot="{src}"' in page.body and "voir l'image" in page.body
    # only the alert whose snapshot is held has the button
    assert page.body.count("data-snapshot=") == 1
    status, headers, body = _download(agent, src)
    assert status == 200 and body == SNAPSHOT
    assert headers["Content-Type"] == "image/jpeg" and headers["Cache-Control"] == "no-store"
    assert "img-src 'self'" in headers["Content-Security-Policy"]
    [seen] = [e for e in lab.console.audit() if e["action"] == "view-snapshot"]
    assert (seen["who"], seen["unit"], seen["camera"], seen["event"]) == (
        "c.agent", UNIT, CAMERA, eid,
    )  # fmt: skip
    # an agent who watches the side camera only: no button, no picture, the attempt audited
    other = Browser(lab.console)
    assert other.login("v.side").status == 303
    assert "data-snapshot=" not in other.request("GET", "/console/alerts").body
    assert _download(other, src)[0] == 404
    assert _download(Browser(lab.console), src)[0] == 401  # no session at all
    refused = [e for e in lab.console.audit() if e["action"] == "refused"]
    assert any(e["who"] == "v.side" and eid in e["reason"] for e in refused)
    assert any(e["who"] == "-" and e["path"] == src for e in refused)
    assert [e["who"] for e in lab.console.audit() if e["action"] == "view-snapshot"] == ["c.agent"]


def test_the_live_tiles_get_the_outlines_of_the_masks_the_newest_segment_commits_to(
    lab: Lab,
) -> None:
    """The console's overlay route: the polygons of the set the camera's newest stored
    segment (#9, after the change) commits to, from the unit's signed record; scoped."""
    agent = Browser(lab.console)
    assert agent.login("m.street").status == 303
    page = agent.request("GET", "/console/")
    assert 'data-masks aria-pressed="false"' in page.body and ">Masques</button>" in page.body
    answer = agent.request("GET", f"/console/api/masks/{UNIT}/{CAMERA}")
    assert answer.status == 200, answer.body
    assert answer.headers["Cache-Control"] == "no-store"
    found = json.loads(answer.body)
    assert (found["sequence"], found["digest"], found["held"]) == (9, AFTER.digest.hex(), True)
    assert (found["width"], found["height"]) == (320, 240)
    assert found["masks"] == [
        {"name": m.name, "points": [[x, y] for x, y in m.points]} for m in (WINDOW, DOOR)
    ]
    # another camera's agent gets nothing of it, and the attempt is audited
    other = Browser(lab.console)
    assert other.login("m.side").status == 303
    assert other.request("GET", f"/console/api/masks/{UNIT}/{CAMERA}").status == 403
    assert Browser(lab.console).request("GET", f"/console/api/masks/{UNIT}/{CAMERA}").status == 401
    assert any(
        e["action"] == "refused" and e["who"] == "m.side"
        and e["path"] == f"/console/api/masks/{UNIT}/{CAMERA}"
        for e in lab.console.audit()
    )  # fmt: skip


def test_a_viewer_gets_no_bundle_and_the_refusal_is_audited(lab: Lab) -> None:
    browser = Browser(lab.console)
    assert browser.login("a.viewer").status == 303
    status, _, _ = _download(browser, f"/v1/export/{UNIT}/{CAMERA}.tar?from=0&to=10&case=PV-1")
    assert status == 403
    refused = [
        e for e in csu_audit.read(lab.csu.directory / "audit.jsonl")
        if e["action"] == "refused" and e["who"] == "a.viewer"
    ]  # fmt: skip
    assert any(
        e["path"] == f"/v1/export/{UNIT}/{CAMERA}.tar"
        and e["reason"] == "role viewer may not export"
        for e in refused
    )


def _repack(src: Path, dest: Path, change: dict[str, bytes | None]) -> Path:
    """A copy of the bundle with members replaced (bytes) or removed (None)."""
    with tarfile.open(src) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    for name, data in change.items():
        if data is None:
            members.pop(name)
        else:
            members[name] = data
    with tarfile.open(dest, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def _member(bundle: Path, name: str) -> bytes:
    with tarfile.open(bundle) as tar:
        return tar.extractfile(name).read()  # type: ignore[union-attr]


def test_every_kind_of_tampering_is_refused_with_a_clear_message(
    lab: Lab, investigator: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    good = lab.tmp / "complete.tar"
    if not good.exists():
        good = _export(lab, investigator, 0, 3, "complete.tar")
    seg1 = f"segments/{CAMERA}/{1:010d}.seg"
    flipped = bytearray(_member(good, seg1))
    flipped[len(flipped) // 2] ^= 0x01
    manifest = json.loads(_member(good, "manifest.json"))
    edited = dict(manifest, case="PV-2026/9999")
    forger = ed25519.Ed25519PrivateKey.generate()

    def forged(body: dict[str, object]) -> dict[str, bytes | None]:
        text = bundlefile.dumps(body)
        return {"manifest.json": text, "manifest.sig": bundlefile.seal(text, forger)}

    # a forger who re-lists the flipped segment's digest and seals with their own key
    relisted = json.loads(json.dumps(manifest))
    relisted["csu_public_key"] = public_pem(forger.public_key()).decode()
    for entry in relisted["segments"]:
        if entry["file"] == seg1:
            entry["sha256"] = hashlib.sha256(bytes(flipped)).hexdigest()
    cases: dict[str, tuple[dict[str, bytes | None], tuple[str, ...], str]] = {
        "flipped": (
            {seg1: bytes(flipped)}, (),
            f"{seg1}: digest differs from the manifest (altered or swapped)",
        ),
        "removed": ({seg1: None}, (), f"{seg1}: listed in the manifest but missing (deleted)"),
        "edited manifest": (
            {"manifest.json": bundlefile.dumps(edited)}, (),
            "manifest.sig: bad signature (manifest altered)",
        ),
        "sealed by another key": (
            forged(dict(manifest, csu_public_key=public_pem(forger.public_key()).decode())),
            ("--csu-key", str(lab.csu_key)),
            "not by the key given",
        ),
        "re-sealed over a flipped segment": (
            {seg1: bytes(flipped), **forged(relisted)}, (), "signature",
        ),
    }  # fmt: skip
    for what, (change, extra, message) in cases.items():
        bad = _repack(good, lab.tmp / f"{what.replace(' ', '-')}.tar", change)
        code, report = _verify(capsys, lab, bad, *extra)
        assert code == 1 and report["verdict"] == "not-authentic", (what, report)
        assert message in report["reasons"][0], (what, report["reasons"])  # type: ignore[index]
        assert report["source"] == str(bad)
        # and the authority key gets no video out of it
        key = lab.csu.directory / "keys" / "authority.key.json"
        clip = lab.tmp / f"{what.replace(' ', '-')}.mp4"
        code = edge_csu([
            "open", str(bad), "--key", str(key), "--ca", str(lab.csu.pki.chain), *extra,
            "--out", str(clip),
        ])  # fmt: skip
        out = capsys.readouterr().out
        assert code == 1 and "REFUSED" in out and message in out, (what, out)
        assert not clip.exists()
    # the flipped segment alone fails in the per-second map: the seal held, the CA vouches
    code, report = _verify(capsys, lab, lab.tmp / "flipped.tar")
    assert _states(lab, report) == {0: "authentic", 1: "not-authentic", 2: "authentic"}


def test_a_retention_deletion_in_the_range_travels_signed_and_is_checked(
    lab: Lab, tmp_path: Path
) -> None:
    """In-process, on a copy of the receiver's storage: retention deletes #0 (with its signed
    record) before the bundle is built."""
    storage = tmp_path / "storage"
    shutil.copytree(lab.csu.directory / "storage", storage)
    store = SegmentStore(storage)
    index = store.camera(UNIT, CAMERA)
    ledger_key = ed25519.Ed25519PrivateKey.generate()
    ledger = DeletionLedger(tmp_path / "deletions.jsonl", ledger_key)
    ledger.record(UNIT, CAMERA, [index.segments[0]], deleted_ns=time.time_ns(), retention_days=30)
    assert index.receipt_path(0).is_file()
    index.delete([0])
    assert not index.receipt_path(0).exists()  # the receipt goes with its segment
    chain = (lab.csu.directory / "units" / f"{UNIT}.crt").read_bytes()  # as the unit sent it
    unit_key = parse_chain(chain, "crt")[0].public_key()
    assert isinstance(unit_key, ed25519.Ed25519PublicKey)
    csu_key = ed25519.Ed25519PrivateKey.generate()
    out = tmp_path / "bundle.tar"
    with out.open("w+b") as fh:
        built = build(
            store,
            BundleRequest(UNIT, CAMERA, lab.t0 - 5 * SEC, lab.t0 + 3 * SEC, CASE, "i.enquete"),
            UnitTrust(unit_key, "certificate", chain),
            csu_key,
            fh,
            ledger=ledger.path,
            deletion_public_pem=public_pem(ledger_key.public_key()),
        )
    assert (built.segments, built.first, built.deletions) == (2, 1, 1)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    bundlefile.unpack(out, unpacked)
    roots = x509.load_pem_x509_certificates(lab.csu.pki.chain.read_bytes())
    found = bundlefile.verify_csu_bundle(unpacked, fleet_ca=roots, csu_key=csu_key.public_key())
    [record] = found.deletions
    assert record["sequences"] == [[0, 0]]
    assert any("deleted by the CSU on" in line for line in found.facts())
    # a deletion record edited in the bundle (and re-listed by a forger) does not pass
    manifest = json.loads((unpacked / "manifest.json").read_bytes())
    line = (
        (unpacked / "deletions.jsonl")
        .read_bytes()
        .replace(b'"retention_days": 30', b'"retention_days": 3')
    )
    (unpacked / "deletions.jsonl").write_bytes(line)
    manifest["deletions"]["sha256"] = hashlib.sha256(line).hexdigest()
    manifest["deletions"]["size"] = len(line)
    body = bundlefile.dumps(manifest)
    (unpacked / "manifest.json").write_bytes(body)
    (unpacked / "manifest.sig").write_bytes(bundlefile.seal(body, csu_key))
    with pytest.raises(IntegrityError, match=r"deletions\.jsonl:1: signature does not verify"):
        bundlefile.verify_csu_bundle(unpacked, fleet_ca=roots, csu_key=csu_key.public_key())


def test_the_bundle_carries_the_mask_history_and_the_events_and_says_what_it_lacks(
    lab: Lab, investigator: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = lab.tmp / "partial.tar"
    if not bundle.exists():
        bundle = _export(lab, investigator, 0, 10, "partial.tar")
    code, report = _verify(capsys, lab, bundle, "--csu-key", str(lab.csu_key))
    assert code == 3 and report["verdict"] == "partial", report["reasons"]
    # which masks were in force, second by second: the change at 6.5 s shows in second 6 only
    before, after = BEFORE.digest.hex(), AFTER.digest.hex()
    seconds = report["seconds"]
    assert isinstance(seconds, list)
    masks = {s["t"] - lab.t0 // SEC: s["masks"] for s in seconds}
    assert masks == {
        0: [before], 1: [before], 2: [before], 3: [], 4: [], 5: [before],
        6: [before, after], 7: [], 8: [after], 9: [after],
    }  # fmt: skip
    mask_sets = report["mask_sets"]
    assert isinstance(mask_sets, dict) and set(mask_sets) == {before, after}
    assert [m["name"] for m in mask_sets[after]["masks"]] == ["window 2nd floor", "door no. 7"]
    facts = "\n".join(report["facts"])  # type: ignore[arg-type]
    assert "masks street" in facts and "door no. 7" in facts
    # the unit's events of the camera and the cabinet, each checked; the snapshot the unit
    # sent is carried, the one it did not is declared
    assert (
        "events: 4 signed event(s) of the range, each checked with the unit key; 1 with their "
        "sealed snapshot; 1 without their snapshot (not held at the CSU)"
    ) in facts
    assert "not held at the CSU: receipts" not in facts  # the CSU kept each one it signed
    manifest = json.loads(_member(bundle, "manifest.json"))
    assert {e["id"] for e in manifest["events"]} == {
        lab.events[n] for n in ("street", "street-snapshot", "street-unsent", "unit")
    }
    [lacking] = [e for e in manifest["events"] if "snapshot_not_held" in e]
    assert lacking["id"] == lab.events["street-unsent"]
    assert lacking["snapshot_not_held"] == evidence.SNAPSHOT_NOT_HELD
    [carried] = [e for e in manifest["events"] if "snapshot" in e]
    assert carried["id"] == lab.events["street-snapshot"]
    held = lab.csu.directory / "storage" / UNIT / "events" / f"{carried['id']}.snp"
    assert _member(bundle, carried["snapshot"]["file"]) == held.read_bytes()
    assert [i["what"] for i in manifest["not_held"]] == []
    # the records travel exactly as the unit signed them
    for digest, line in lab.mask_records.items():
        assert _member(bundle, f"masks/{CAMERA}/{digest.hex()}.json") == line
    # the receipts the CSU kept of the segments, one file in the unit's export layout
    [entry] = manifest["receipts"]
    assert (entry["file"], entry["count"]) == (f"receipts/{CAMERA}.rcl", len(SENT))
    assert rcpt.split_records(_member(bundle, entry["file"])) == [
        lab.receipt_file(seq).read_bytes() for seq in SENT
    ]


def test_the_receipts_the_csu_kept_travel_in_its_bundle_and_are_checked(
    lab: Lab, investigator: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CSU's bundle carries the receipts the receiver signed and kept; ``edge-csu verify
    --receipt-key`` checks them with the unit export's code, and refuses one altered, removed
    or re-sealed over."""
    good = lab.tmp / "complete.tar"
    if not good.exists():
        good = _export(lab, investigator, 0, 3, "complete.tar")
    receipts = ("--receipt-key", str(lab.receipt_key))
    code, report = _verify(capsys, lab, good, "--csu-key", str(lab.csu_key), *receipts)
    assert code == 0 and report["verdict"] == "authentic", report["reasons"]
    facts = "\n".join(report["facts"])  # type: ignore[arg-type]
    assert f"receipts {CAMERA}: 3 of 3 segment(s) held by the CSU (3 receipted" in facts
    seconds = report["seconds"]
    assert isinstance(seconds, list) and all(s["receipt_ns"] for s in seconds)
    # another key than the CSU's receipt key: refused
    other = lab.tmp / "other-receipt.pub.pem"
    other.write_bytes(public_pem(ed25519.Ed25519PrivateKey.generate().public_key()))
    code, report = _verify(capsys, lab, good, "--receipt-key", str(other))
    assert code == 1, report
    assert "signed by another key than the CSU's receipt key" in report["reasons"][0]  # type: ignore[index]
    name = f"receipts/{CAMERA}.rcl"
    kept = rcpt.split_records(_member(good, name))
    altered = bytearray(kept[1])
    altered[8] ^= 0x01  # the CSU time
    altered_file = b"".join(rcpt.frame_record(bytes(r)) for r in (kept[0], altered, kept[2]))
    # whoever holds the CSU's audit key re-lists the altered file and seals again: the seal
    # holds, the receipt does not
    audit_key = csu_receipts.load_or_create(lab.csu.directory / "audit-key.pem", "audit key")
    manifest = json.loads(_member(good, "manifest.json"))
    for entry in manifest["receipts"]:
        entry["sha256"] = hashlib.sha256(altered_file).hexdigest()
    resealed = bundlefile.dumps(manifest)
    cases: dict[str, tuple[dict[str, bytes | None], str]] = {
        "receipt removed": ({name: None}, f"{name}: listed in the manifest but missing (deleted)"),
        "receipt altered": (
            {name: altered_file}, f"{name}: digest differs from the manifest (altered or swapped)"
        ),
        "receipt altered and re-sealed": (
            {
                name: altered_file,
                "manifest.json": resealed,
                "manifest.sig": bundlefile.seal(resealed, audit_key),
            },
            f"receipt {CAMERA}#1: bad signature (forged or altered)",
        ),
    }  # fmt: skip
    key = lab.csu.directory / "keys" / "authority.key.json"
    for what, (change, message) in cases.items():
        bad = _repack(good, lab.tmp / f"{what.replace(' ', '-')}.tar", change)
        code, report = _verify(capsys, lab, bad, "--csu-key", str(lab.csu_key), *receipts)
        assert code == 1 and report["verdict"] == "not-authentic", (what, report)
        assert message in report["reasons"][0], (what, report["reasons"])  # type: ignore[index]
        # edge-csu open refuses it too, and writes no clip
        clip = lab.tmp / f"{what.replace(' ', '-')}.mp4"
        code = edge_csu([
            "open", str(bad), "--key", str(key), "--ca", str(lab.csu.pki.chain), *receipts,
            "--out", str(clip),
        ])  # fmt: skip
        out = capsys.readouterr().out
        assert code == 1 and "REFUSED" in out and message in out, (what, out)
        assert not clip.exists()
    # the intact bundle opens, with its receipts checked
    clip = lab.tmp / "receipted.mp4"
    code = edge_csu([
        "open", str(good), "--key", str(key), "--ca", str(lab.csu.pki.chain), *receipts,
        "--out", str(clip),
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and clip.is_file(), out
    assert f"receipts {CAMERA}: 3 of 3 segment(s) held by the CSU (3 receipted" in out


def test_a_segment_delivered_again_is_answered_with_the_first_receipt_kept(lab: Lab) -> None:
    """A unit that sends a segment again (its answer lost) gets the receipt the CSU kept the
    first time, and the CSU keeps that one, not a second."""
    first = lab.receipt_file(0).read_bytes()
    raw = (lab.csu.directory / "storage" / UNIT / CAMERA / f"{0:012d}.seg").read_bytes()
    crt, key = lab.tmp / "unit" / f"{UNIT}.crt", lab.tmp / "unit" / f"{UNIT}.key"
    conn = _unit_conn(lab.csu, crt, key)
    try:
        conn.request(
            "PUT", segment_path(UNIT, CAMERA, 0), body=raw,
            headers={"Content-Type": "application/vnd.edge.sealed-segment"},
        )  # fmt: skip
        resp = conn.getresponse()
        answer = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200 and answer["status"] == "duplicate", answer
    assert base64.b64decode(answer["receipt"]) == first
    assert lab.receipt_file(0).read_bytes() == first
    assert sorted(p.name for p in lab.receipt_file(0).parent.iterdir()) == [
        f"{seq:012d}.rct" for seq in SENT
    ]


def test_the_first_receipt_kept_stays_across_a_restart_and_a_missing_one_is_declared(
    lab: Lab, tmp_path: Path
) -> None:
    """In-process, on a copy of the receiver's storage: a receipt kept is never replaced (a
    new store, as after a restart); a segment whose receipt the CSU does not hold is declared
    in ``not_held``, the others still carried and checked."""
    storage = tmp_path / "storage"
    shutil.copytree(lab.csu.directory / "storage", storage)
    kept = (storage / UNIT / CAMERA / "receipts" / f"{5:012d}.rct").read_bytes()
    receipt_key = csu_receipts.load_or_create(lab.csu.directory / "keys" / "receipt-key.pem")
    later = csu_receipts.Receipter(receipt_key).sign(UNIT, CAMERA, 5, "00" * 32)
    assert SegmentStore(storage).keep_receipt(UNIT, CAMERA, 5, later) == kept
    (storage / UNIT / CAMERA / "receipts" / f"{6:012d}.rct").unlink()
    out = tmp_path / "bundle.tar"
    csu_key = ed25519.Ed25519PrivateKey.generate()
    _build(lab, storage, out, csu_key)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    bundlefile.unpack(out, unpacked)
    roots = x509.load_pem_x509_certificates(lab.csu.pki.chain.read_bytes())
    found = bundlefile.verify_csu_bundle(
        unpacked, fleet_ca=roots, csu_key=csu_key.public_key(),
        receipt_key=receipt_key.public_key(),
    )  # fmt: skip
    verified = found.verified
    assert verified.receipts_checked
    assert sorted(r.sequence for r in verified.receipts) == [5, 8, 9]
    assert verified.receipts[0].raw == kept
    [lacking] = [i for i in found.not_held if i["what"] == "receipts"]
    assert lacking["reason"].startswith("the CSU holds no receipt of 1 of the 4 segment(s)")
    assert any(line.startswith("not held at the CSU: receipts: ") for line in found.facts())


def test_the_reviewing_officer_sees_the_masks_in_force_drawn_from_a_csu_bundle(
    lab: Lab, investigator: Browser, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = _export(lab, investigator, 5, 10, "overlay.tar")
    clip = lab.tmp / "overlay.mp4"
    key = lab.csu.directory / "keys" / "authority.key.json"
    code = edge_csu([
        "open", str(bundle), "--key", str(key), "--ca", str(lab.csu.pki.chain),
        "--csu-key", str(lab.csu_key), "--out", str(clip), "--overlay-masks",
    ])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 3, out  # #7 is still in the unit's backlog
    before, after = BEFORE.digest.hex()[:16], AFTER.digest.hex()[:16]
    assert (
        f"mask set {before}… (1: window 2nd floor) then mask set {after}… "
        "(2: window 2nd floor, door no. 7)"
    ) in out
    review = lab.tmp / "overlay.masks.mp4"
    probe = subprocess.run(
        [tool("ffprobe"), "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames", "-of", "json", str(review)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    frames = int(json.loads(probe.stdout)["streams"][0]["nb_read_frames"])
    assert frames == sum(lab.frames[s] for s in (5, 6, 8, 9))


def test_a_tampered_mask_set_in_the_bundle_is_refused_naming_it(
    lab: Lab, investigator: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = lab.tmp / "complete.tar"
    if not good.exists():
        good = _export(lab, investigator, 0, 3, "complete.tar")
    name = f"masks/{CAMERA}/{BEFORE.digest.hex()}.json"
    # the window mask made smaller: what a CSU hiding a visible dwelling would need
    smaller = _member(good, name).replace(b"[0.4,0.4]", b"[0.2,0.2]")
    assert smaller != _member(good, name)
    bad = _repack(good, tmp_path / "mask-edited.tar", {name: smaller})
    code, report = _verify(capsys, lab, bad, "--csu-key", str(lab.csu_key))
    assert code == 1 and report["verdict"] == "not-authentic", report
    assert report["reasons"] == [f"{name}: digest differs from the manifest (altered or swapped)"]
    # even re-listed under a seal that holds, the unit's signature gives it away
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    bundlefile.unpack(good, unpacked)
    csu_key = ed25519.Ed25519PrivateKey.generate()
    manifest = json.loads((unpacked / "manifest.json").read_bytes())
    manifest["csu_public_key"] = public_pem(csu_key.public_key()).decode()
    [entry] = [e for e in manifest["mask_sets"] if e["file"] == name]
    entry.update(sha256=hashlib.sha256(smaller).hexdigest(), size=len(smaller))
    (unpacked / name).write_bytes(smaller)
    body = bundlefile.dumps(manifest)
    (unpacked / "manifest.json").write_bytes(body)
    (unpacked / "manifest.sig").write_bytes(bundlefile.seal(body, csu_key))
    roots = x509.load_pem_x509_certificates(lab.csu.pki.chain.read_bytes())
    with pytest.raises(IntegrityError, match=rf"{re.escape(name)}: bad signature \(altered\)"):
        bundlefile.verify_csu_bundle(unpacked, fleet_ca=roots, csu_key=csu_key.public_key())


def test_a_tampered_snapshot_in_the_bundle_is_refused_naming_it(
    lab: Lab, investigator: Browser, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = lab.tmp / "complete.tar"
    if not good.exists():
        good = _export(lab, investigator, 0, 3, "complete.tar")
    manifest = json.loads(_member(good, "manifest.json"))
    [entry] = [e for e in manifest["events"] if "snapshot" in e]
    name = entry["snapshot"]["file"]
    sealed = _member(good, name)
    altered = sealed[:-100] + bytes([sealed[-100] ^ 1]) + sealed[-99:]
    bad = _repack(good, tmp_path / "snapshot-edited.tar", {name: altered})
    code, report = _verify(capsys, lab, bad, "--csu-key", str(lab.csu_key))
    assert code == 1 and report["verdict"] == "not-authentic", report
    assert report["reasons"] == [f"{name}: digest differs from the manifest (altered or swapped)"]
    # left out, yet still listed: refused as missing, never passed over
    gone = _repack(good, tmp_path / "snapshot-gone.tar", {name: None})
    code, report = _verify(capsys, lab, gone, "--csu-key", str(lab.csu_key))
    assert code == 1 and name in str(report["reasons"]), report
    # even re-listed under a seal that holds, the unit's signature gives it away
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    bundlefile.unpack(good, unpacked)
    csu_key = ed25519.Ed25519PrivateKey.generate()
    manifest["csu_public_key"] = public_pem(csu_key.public_key()).decode()
    [entry] = [e for e in manifest["events"] if "snapshot" in e]
    entry["snapshot"].update(sha256=hashlib.sha256(altered).hexdigest(), size=len(altered))
    (unpacked / name).write_bytes(altered)
    body = bundlefile.dumps(manifest)
    (unpacked / "manifest.json").write_bytes(body)
    (unpacked / "manifest.sig").write_bytes(bundlefile.seal(body, csu_key))
    roots = x509.load_pem_x509_certificates(lab.csu.pki.chain.read_bytes())
    with pytest.raises(IntegrityError, match=rf"snapshot of event {entry['id']}: bad signature"):
        bundlefile.verify_csu_bundle(unpacked, fleet_ca=roots, csu_key=csu_key.public_key())


def _build(lab: Lab, storage: Path, out: Path, csu_key: ed25519.Ed25519PrivateKey) -> None:
    chain = (lab.csu.directory / "units" / f"{UNIT}.crt").read_bytes()
    unit_key = parse_chain(chain, "crt")[0].public_key()
    assert isinstance(unit_key, ed25519.Ed25519PublicKey)
    request = BundleRequest(UNIT, CAMERA, lab.t0 + 5 * SEC, lab.t0 + 10 * SEC, CASE, "i.enquete")
    with out.open("w+b") as fh:
        build(
            SegmentStore(storage), request, UnitTrust(unit_key, "certificate", chain), csu_key, fh
        )


def test_a_mask_set_the_csu_does_not_hold_is_declared_and_never_left_out_in_silence(
    lab: Lab, tmp_path: Path
) -> None:
    """In-process, on a copy of the receiver's storage without the record of the second set."""
    storage = tmp_path / "storage"
    shutil.copytree(lab.csu.directory / "storage", storage)
    (storage / UNIT / CAMERA / "masks" / f"{AFTER.digest.hex()}.json").unlink()
    # and an event in the range signed by another key (stored directly: the route refuses it)
    stranger = EventSigner(ed25519.Ed25519PrivateKey.generate(), UNIT).sign(
        camera=CAMERA, category="alert", kind="line-crossing", rule="stranger",
        wall_ns=lab.t0 + 6 * SEC, frame_index=0, details={},
    )  # fmt: skip
    SegmentStore(storage).store_event(UNIT, str(stranger.body["id"]), stranger.wire())
    csu_key = ed25519.Ed25519PrivateKey.generate()
    _build(lab, storage, tmp_path / "b.tar", csu_key)
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    bundlefile.unpack(tmp_path / "b.tar", unpacked)
    manifest = json.loads((unpacked / "manifest.json").read_bytes())
    assert [e["digest"] for e in manifest["mask_sets"]] == [BEFORE.digest.hex()]
    assert {"what": "mask-set", "camera": CAMERA, "digest": AFTER.digest.hex(),
            "reason": evidence.MASK_SET_NOT_HELD} in manifest["not_held"]  # fmt: skip
    roots = x509.load_pem_x509_certificates(lab.csu.pki.chain.read_bytes())
    found = bundlefile.verify_csu_bundle(unpacked, fleet_ca=roots, csu_key=csu_key.public_key())
    facts = "\n".join(found.facts())
    assert (
        f"not held at the CSU: the signed record (polygons) of mask set "
        f"{AFTER.digest.hex()[:16]}… of {CAMERA}: {evidence.MASK_SET_NOT_HELD}"
    ) in facts
    assert (
        f"event left out: events/{stranger.body['id']}.json (held at the CSU, but event signed "
        "by key"
    ) in facts
    assert manifest["events"] == []  # the unit's own events are before this range
    spans = [s for s in found.verified.mask_timeline() if s.from_ns >= lab.t0 + 8 * SEC]
    assert spans and all(s.state == "polygons unknown" for s in spans)
    # a CSU that drops the declaration too is caught, though its seal holds
    manifest["not_held"] = [i for i in manifest["not_held"] if i["what"] != "mask-set"]
    body = bundlefile.dumps(manifest)
    (unpacked / "manifest.json").write_bytes(body)
    (unpacked / "manifest.sig").write_bytes(bundlefile.seal(body, csu_key))
    with pytest.raises(IntegrityError, match="neither in the bundle nor declared not held"):
        bundlefile.verify_csu_bundle(unpacked, fleet_ca=roots, csu_key=csu_key.public_key())


def test_the_receiver_keeps_the_units_signed_mask_set_and_refuses_any_other(lab: Lab) -> None:
    crt, key = lab.tmp / "unit" / f"{UNIT}.crt", lab.tmp / "unit" / f"{UNIT}.key"
    conn = _unit_conn(lab.csu, crt, key)
    before, after = BEFORE.digest.hex(), AFTER.digest.hex()
    stored = lab.csu.directory / "storage" / UNIT / CAMERA / "masks" / f"{before}.json"
    assert stored.read_bytes() == lab.mask_records[BEFORE.digest]
    forger = AuditLog(lab.tmp / "forged-audit.log", UNIT, ed25519.Ed25519PrivateKey.generate())
    forger.append(MASK_SET_ACTION, BEFORE.record(VERSION))
    forged = forger.path.read_bytes()
    other = AuditLog(lab.tmp / "other-audit.log", UNIT, lab.signing)
    other.append("purge", {"camera": CAMERA, "digest": before})
    cases = {
        "again": (before, lab.mask_records[BEFORE.digest], MASK_SET_CONTENT_TYPE, 200),
        "signed by another key": (before, forged, MASK_SET_CONTENT_TYPE, 422),
        "under another digest": (after, lab.mask_records[BEFORE.digest], MASK_SET_CONTENT_TYPE,
                                 400),
        "not a mask-set record": (before, other.path.read_bytes(), MASK_SET_CONTENT_TYPE, 400),
        "wrong content type": (before, lab.mask_records[BEFORE.digest], "text/plain", 415),
    }  # fmt: skip
    try:
        for what, (digest, body, ctype, want) in cases.items():
            status = _put(conn, mask_set_path(UNIT, CAMERA, digest), body, ctype)
            assert status == want, (what, status)
    finally:
        conn.close()
    # what it holds is still the unit's own record, each under its digest
    assert stored.read_bytes() == lab.mask_records[BEFORE.digest]
    assert stored.with_name(f"{after}.json").read_bytes() == lab.mask_records[AFTER.digest]


def test_a_bad_case_or_an_overlong_range_is_refused_and_audited(
    lab: Lab, investigator: Browser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    status, _, body = _download(
        investigator, f"/v1/export/{UNIT}/{CAMERA}.tar?from=0&to=10&case=%3Cx%3E"
    )
    assert status == 400 and b"case=REF required" in body
    [refusal] = [
        e for e in csu_audit.read(lab.csu.directory / "audit.jsonl")
        if e["action"] == "export-refused"
    ]  # fmt: skip
    assert refusal["who"] == "i.enquete" and refusal["case"] == "<x>"
    # over the bound, the range is refused whole, never cut short
    monkeypatch.setattr(evidence, "MAX_BUNDLE_SEGMENTS", 2)
    chain = (lab.csu.directory / "units" / f"{UNIT}.crt").read_bytes()
    unit_key = parse_chain(chain, "crt")[0].public_key()
    assert isinstance(unit_key, ed25519.Ed25519PublicKey)
    request = BundleRequest(UNIT, CAMERA, lab.t0, lab.t0 + 3 * SEC, CASE, "i.enquete")
    with (tmp_path / "b.tar").open("w+b") as fh, pytest.raises(Refusal) as refused:
        build(
            SegmentStore(lab.csu.directory / "storage"),
            request,
            UnitTrust(unit_key, "certificate", chain),
            ed25519.Ed25519PrivateKey.generate(),
            fh,
        )
    assert refused.value.status == 413 and "export it in parts" in refused.value.reason


def test_an_archive_with_links_or_a_name_twice_is_not_unpacked(tmp_path: Path) -> None:
    for what in ("link", "twice"):
        archive = tmp_path / f"{what}.tar"
        with tarfile.open(archive, "w") as tar:
            info = tarfile.TarInfo("manifest.json")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"{}"))
            if what == "link":
                link = tarfile.TarInfo("segments/street/0000000000.seg")
                link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(link)
            else:
                tar.addfile(info, io.BytesIO(b"{}"))
        dest = tmp_path / what
        dest.mkdir()
        with pytest.raises(IntegrityError, match=r"not a plain file|in the archive twice"):
            bundlefile.unpack(archive, dest)
        assert not any(dest.iterdir())
