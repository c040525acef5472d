"""Viewing in cluster mode, end to end: two ``edge-csu serve`` on one PostgreSQL and one S3
store (Swift). A unit's real H.264 segments, its epoch envelope and its evidence certificate go
to the first receiver; an operator watches and exports through the second, which never saw the
unit: the HLS playlist and its segments decrypt and ffprobe cleanly over TLS, the MP4 export
decodes, the evidence bundle verifies with ``edge-csu verify``, and the cluster's one audit
chain records each view, naming the receiver that served it. An object altered in the store is
refused, never served. An account made with ``edge-csu operator`` on the cluster's database
logs in to the console through the first receiver; its session cookie is valid through the
second."""

from __future__ import annotations

import base64
import hashlib
import html
import http.client
import json
import socket
import ssl
import subprocess
import sys
import tarfile
import time
import urllib.parse
from pathlib import Path

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu import lab
from edge.csu.ca import cert_pem
from edge.csu.console.credentials import totp_at, totp_step
from edge.csu.main import main as edge_csu
from edge.csu.receiver import receipts as csu_receipts
from edge.csu.receiver.objstore import ObjectStore, segment_key
from edge.csu.receiver.pgindex import PgSegmentIndex
from edge.uplink.protocol import (
    CERTIFICATE_CONTENT_TYPE,
    ENVELOPE_CONTENT_TYPE,
    SEGMENT_CONTENT_TYPE,
    envelope_path,
    segment_path,
    signing_certificate_path,
)
from edge.vault import format as fmt
from edge.vault import receipt as rcpt

from .conftest import tool
from .pg_util import postgres_server
from .s3_util import swift_s3
from .uplink_util import CSU_NAME, Csu, Sealer, encoded_segments, make_csu

# Swift's four servers and two receivers take 10-30 s to start on a loaded machine.
pytestmark = pytest.mark.slow

SEC = 1_000_000_000
UNIT, CAMERA, CASE = "unit-view", "street", "PV-2026/0077"
COUNT = 4


def _proxied_unit_conn(csu: Csu, port: int, crt: Path, key: Path) -> http.client.HTTPSConnection:
    """A unit's mutual-TLS connection straight to one receiver, as HAProxy would hand it over
    (the receivers trust 127.0.0.1 as their proxy: a PROXY v2 header names the unit)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(csu.pki.chain)
    ctx.load_cert_chain(crt, key)
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    addresses = bytes([192, 0, 2, 10, 127, 0, 0, 1]) + (40000).to_bytes(2, "big")
    raw.sendall(lab_proxy_header(addresses + port.to_bytes(2, "big")))
    conn = http.client.HTTPSConnection(CSU_NAME, port, timeout=10)
    conn.sock = ctx.wrap_socket(raw, server_hostname=CSU_NAME)
    return conn


def lab_proxy_header(body: bytes) -> bytes:
    """PROXY protocol v2, PROXY command, TCP over IPv4."""
    return b"\r\n\r\n\x00\r\nQUIT\n" + bytes([0x21, 0x11]) + len(body).to_bytes(2, "big") + body


def _put(conn: http.client.HTTPSConnection, path: str, body: bytes, ctype: str) -> int:
    conn.request("PUT", path, body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    resp.read()
    return resp.status


def _get(port: int, path: str, token: str, ctx: ssl.SSLContext) -> tuple[int, bytes]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {token}"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _console(
    port: int, ctx: ssl.SSLContext, method: str, path: str, *, cookie: str = "", form: str = ""
) -> tuple[int, http.client.HTTPMessage, str]:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=30)
    headers = {"Cookie": cookie} if cookie else {}
    if form:
        headers["Content-Type"] = "application/x-www-form-urlencoded"
        headers["Origin"] = f"https://127.0.0.1:{port}"
    try:
        conn.request(method, path, body=form or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode(errors="replace")
    finally:
        conn.close()


def _probe(path: str, *extra: str) -> dict[str, object]:
    done = subprocess.run(
        [tool("ffprobe"), "-v", "error", *extra, "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=codec_name,width,height,nb_read_frames", "-of", "json", path],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr[-2000:]
    stream: dict[str, object] = json.loads(done.stdout)["streams"][0]
    return stream


def test_any_receiver_serves_any_camera_from_the_shared_stores(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    csu = make_csu(tmp_path)
    keys = csu.directory / "keys"
    signing = ed25519.Ed25519PrivateKey.generate()
    crt, key, _ = csu.pki.issue(UNIT, tmp_path / "unit")
    token_hash = hashlib.sha256(csu.operator_token.encode()).hexdigest()
    # One receipt key for the cluster, made before the receivers start (they share it).
    receipt_key = keys / "receipt-key.pem"
    csu_receipts.load_or_create(receipt_key)
    top = (
        f'authority_key_file = "{keys / "authority.key.json"}"\n'
        f'receipt_key_file = "{receipt_key}"\n'
    )
    extra = (
        f'[[operators]]\nname = "alice"\ntoken_sha256 = "{token_hash}"\n'
        "expires = 2100-01-01T00:00:00Z\n"
    )
    with postgres_server() as pg, swift_s3() as s3:
        lab.ensure_bucket(s3)
        shared = lab.ClusterShared(
            cert_file=keys / f"{CSU_NAME}.crt", key_file=keys / f"{CSU_NAME}.key",
            client_ca_file=csu.pki.chain, registry_dir=csu.directory / "units",
            conninfo=pg.conninfo, s3=s3,
        )  # fmt: skip
        with lab.cluster_front(tmp_path / "lab", shared, 2, extra, top) as front:
            first, second = front.receivers
            assert second.operators_port is not None
            # --- the unit talks to the first receiver only
            conn = _proxied_unit_conn(csu, first.port, crt, key)
            evidence = csu.pki.ca.certify(UNIT, signing.public_key())
            status = _put(
                conn, signing_certificate_path(UNIT), cert_pem(evidence) + csu.pki.ca.chain_pem,
                CERTIFICATE_CONTENT_TYPE,
            )  # fmt: skip
            assert status == 201, status
            sealer = Sealer(UNIT, CAMERA, csu.authority.public, signing)
            epoch = envelope_path(UNIT, CAMERA, sealer.epoch.epoch_id.hex())
            assert _put(conn, epoch, sealer.envelope, ENVELOPE_CONTENT_TYPE) == 201
            t0 = (time.time_ns() // SEC - 60) * SEC
            frames = []
            answered = []
            for seq, seg in enumerate(encoded_segments(COUNT)):
                raw = sealer.seal(
                    seg.init, seg.media, start_ns=t0 + seq * SEC, end_ns=t0 + (seq + 1) * SEC,
                    frames=seg.frame_count,
                )  # fmt: skip
                frames.append(seg.frame_count)
                conn.request(
                    "PUT", segment_path(UNIT, CAMERA, seq), body=raw,
                    headers={"Content-Type": SEGMENT_CONTENT_TYPE},
                )  # fmt: skip
                resp = conn.getresponse()
                answer = json.loads(resp.read())
                assert resp.status == 201, (seq, resp.status, answer)
                answered.append(base64.b64decode(answer["receipt"]))
            conn.close()
            index = PgSegmentIndex(pg.conninfo, "check")
            rows = index.segments(UNIT, CAMERA)
            index.close()
            assert sorted(rows) == list(range(COUNT))
            with psycopg.connect(pg.conninfo) as db:
                takers = db.execute("SELECT DISTINCT receiver FROM segments").fetchall()
            assert takers == [(first.name,)]

            # --- the operator watches through the second receiver, over verified TLS
            ctx = ssl.create_default_context(cafile=str(csu.pki.chain))
            ctx.check_hostname = False  # the certificate names csu.test, we dial 127.0.0.1
            port, token = second.operators_port, csu.operator_token
            view = f"/v1/view/{UNIT}/{CAMERA}"
            span = f"from={t0 / SEC}&to={t0 / SEC + COUNT}"
            status, playlist = _get(port, f"{view}/recorded.m3u8?{span}", token, ctx)
            assert status == 200, playlist
            lines = playlist.decode().splitlines()
            media = [line for line in lines if line.startswith("media/")]
            assert media == [f"media/{s}.m4s" for s in range(COUNT)], lines
            assert '#EXT-X-MAP:URI="init/0.mp4"' in lines and "#EXT-X-ENDLIST" in lines
            status, init = _get(port, f"{view}/init/1.mp4", token, ctx)
            assert status == 200
            status, part = _get(port, f"{view}/media/1.m4s", token, ctx)
            assert status == 200
            clip = tmp_path / "segment1.mp4"
            clip.write_bytes(init + part)
            stream = _probe(str(clip))
            assert (stream["codec_name"], stream["width"], stream["height"]) == ("h264", 320, 180)
            assert int(str(stream["nb_read_frames"])) == frames[1]
            # the whole recorded playlist, as a player reads it (ffprobe fetches every part)
            headers = f"Authorization: Bearer {token}\r\n"
            url = f"https://127.0.0.1:{port}{view}/recorded.m3u8?{span}"
            stream = _probe(url, "-tls_verify", "0", "-headers", headers)
            assert int(str(stream["nb_read_frames"])) == sum(frames)
            status, live = _get(port, f"{view}/live.m3u8", token, ctx)
            assert status == 200 and b"media/3.m4s" in live and b"ENDLIST" not in live
            status, mp4 = _get(
                port, f"/v1/export/{UNIT}/{CAMERA}.mp4?{span}&case=PV-2026-0077", token, ctx
            )
            assert status == 200
            (tmp_path / "export.mp4").write_bytes(mp4)
            assert int(str(_probe(str(tmp_path / "export.mp4"))["nb_read_frames"])) == sum(frames)

            # --- the evidence bundle from the second receiver verifies
            query = urllib.parse.urlencode({"from": t0 / SEC, "to": t0 / SEC + COUNT, "case": CASE})
            status, bundle = _get(port, f"/v1/export/{UNIT}/{CAMERA}.tar?{query}", token, ctx)
            assert status == 200, bundle[:300]
            (tmp_path / "bundle.tar").write_bytes(bundle)
            capsys.readouterr()
            code = edge_csu([
                "verify", str(tmp_path / "bundle.tar"), "--ca", str(csu.pki.chain),
                "--csu-key", str(second.directory / "audit-key.pub.pem"),
                "--receipt-key", str(csu_receipts.public_path(receipt_key)), "--json",
            ])  # fmt: skip
            report = json.loads(capsys.readouterr().out)
            assert code == 0 and report["verdict"] == "authentic", report["reasons"]
            assert {s["state"] for s in report["seconds"]} == {"authentic"}, report["seconds"]
            # the receipts the first receiver signed and kept in the database travel in the
            # second one's bundle, each the very one the unit was answered with
            facts = "\n".join(report["facts"])
            assert f"receipts {CAMERA}: {COUNT} of {COUNT} segment(s) held by the CSU" in facts
            with tarfile.open(tmp_path / "bundle.tar") as tar:
                member = tar.extractfile(f"receipts/{CAMERA}.rcl")
                assert member is not None
                assert rcpt.split_records(member.read()) == answered

            # --- an object altered in the store: refused by any receiver, never served
            objects = ObjectStore(
                s3.endpoint, lab.BUCKET, s3.access_key, s3.secret_file, timeout_s=10
            )
            altered = segment_key(UNIT, CAMERA, 2, rows[2].hash)
            original = objects.get(altered)
            assert fmt.sha256(original).hex() == rows[2].hash
            objects.put(altered, original[:-1] + bytes([original[-1] ^ 1]))
            status, body = _get(port, f"{view}/media/2.m4s", token, ctx)
            assert status == 422 and b"do not match their digest" in body, body
            status, _ = _get(first.operators_port or 0, f"{view}/media/3.m4s", token, ctx)
            assert status == 200  # the first receiver serves the camera as well

            # --- the console: one account, one session, whichever receiver
            added = subprocess.run(
                [sys.executable, "-m", "edge.csu.main", "operator", "add", "--config",
                 str(first.config), "--name", "v.agent", "--role", "supervisor",
                 "--password-stdin"],
                input="correct horse battery\n", capture_output=True, text=True, timeout=60,
                check=False,
            )  # fmt: skip
            assert added.returncode == 0, added.stderr[-2000:]
            secret = added.stdout.split("shown only now):\n", 1)[1].split()[0]
            form = urllib.parse.urlencode(
                {"name": "v.agent", "password": "correct horse battery",
                 "code": totp_at(secret, totp_step(time.time()))}
            )  # fmt: skip
            assert first.operators_port is not None
            status, answer, page = _console(
                first.operators_port, ctx, "POST", "/console/login", form=form
            )
            assert status == 303, page[:500]
            cookie = (answer.get("Set-Cookie") or "").split(";", 1)[0]
            assert cookie.startswith("__Host-edge-console="), answer
            status, _, me = _console(port, ctx, "GET", "/console/api/me", cookie=cookie)
            assert status == 200 and json.loads(me)["name"] == "v.agent", me[:500]
            # the Journal, through the second receiver, is the cluster's one chain: the log-in
            # through the first is there, next to the views served by the second
            status, _, journal = _console(port, ctx, "GET", "/console/audit", cookie=cookie)
            assert status == 200, journal[:500]
            shown = html.unescape(journal)
            assert f'"receiver": "{first.name}"' in shown, shown[-3000:]
            assert f'"receiver": "{second.name}"' in shown and "view-media" in shown

        # --- one audit chain in the database, shared by both receivers, each record naming
        # the receiver that served it and signed with that one's key
        assert not (second.directory / "audit.jsonl").exists()
        with psycopg.connect(pg.conninfo) as db:
            chain = db.execute("SELECT receiver, line FROM audit_chain ORDER BY seq").fetchall()
        records = [json.loads(str(line)) for _, line in chain]
        assert [e["receiver"] for e in records] == [str(r) for r, _ in chain]
        served = [e for e in records if e["receiver"] == second.name]
        actions = {e["action"] for e in served if e["who"] == "alice"}
        assert {"view-recorded", "view-init", "view-media", "view-live", "export"} <= actions
        assert {e["receiver"] for e in records} == {first.name, second.name}
        capsys.readouterr()
        code = edge_csu(["audit", "verify", "--config", str(second.config), "--json"])
        checked = json.loads(capsys.readouterr().out)
        assert code == 0 and checked["ok"], checked
        assert checked["signed"] == checked["count"] == len(records)
    print(f"cluster view end to end: {time.monotonic() - started:.1f} s")
