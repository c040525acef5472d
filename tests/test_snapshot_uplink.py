"""Alert snapshots reach the CSU: the real uplink sends the vault's sealed snapshot of an alert
once the CSU accepted the event (again after a restart, when it had not yet), and the real
receiver keeps it only when it is the picture that unit's stored, signed event names."""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import ssl
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.config import EdgeConfig, RecipientKem, UnitConfig, UplinkConfig
from edge.events import EventSigner, SignedEvent, jpeg_snapshot
from edge.identity.unitkeys import keys_dir_of, load_signing_key
from edge.uplink.client import UplinkClient
from edge.uplink.protocol import EVENT_CONTENT_TYPE, SNAPSHOT_CONTENT_TYPE, events_path
from edge.uplink.protocol import snapshot_path as put_path
from edge.uplink.spool import EventSpool
from edge.vault import eventlog
from edge.vault.recipient_keys import load_private, write_keypair
from edge.vault.snapshots import seal_snapshot
from edge.vault.store import Vault

from . import vault_support
from .test_receipts import UNIT, Gate, Rig, running_rig
from .uplink_util import CSU_NAME, wait_until
from .video_support import WALL0

SEC = 1_000_000_000


def _client(rig: Rig, vault: Vault, spool: EventSpool) -> UplinkClient:
    cfg = EdgeConfig(
        unit=UnitConfig(id=UNIT, data_dir=rig.data),
        uplink=UplinkConfig(
            enabled=True,
            csu_url=f"https://127.0.0.1:{rig.port}",
            server_name=CSU_NAME,
            backoff_initial_s=0.2,
            backoff_max_s=1.0,
        ),
    )
    return UplinkClient(cfg, vault, Gate(), events=spool)


def _picture(shade: int) -> bytes:
    frame = np.zeros((48, 64, 3), np.uint8)
    frame[8:40, 10:50] = shade
    return jpeg_snapshot(frame)


def _signer(rig: Rig) -> EventSigner:
    return EventSigner(load_signing_key(keys_dir_of(rig.data)), UNIT)


def _alert(signer: EventSigner, at_s: float, snapshot: bytes | None) -> SignedEvent:
    return signer.sign(
        camera="cam1", category="alert", kind="intrusion", rule="yard",
        wall_ns=WALL0 + int(at_s * SEC), frame_index=0, details={}, snapshot=snapshot,
    )  # fmt: skip


def _held(rig: Rig, event_id: str, ext: str) -> Path:
    return rig.csu.directory / "storage" / UNIT / "events" / f"{event_id}.{ext}"


def test_the_uplink_sends_an_alerts_snapshot_after_its_event_and_again_after_a_restart(
    tmp_path: Path,
) -> None:
    with running_rig(tmp_path) as rig:
        vault = rig.vault()
        spool = EventSpool(rig.data / "uplink" / "events")
        signer = _signer(rig)
        shot, plain = _alert(signer, 1.0, _picture(200)), _alert(signer, 2.0, None)
        # As in edged: the spool hears the event first, the vault seals the snapshot after;
        # here the unit stops before the vault wrote it.
        spool.put(shot.wire())
        spool.put(plain.wire())
        vault.write(vault_support.fake_segment("cam1", 0))  # video waits on no snapshot
        client = _client(rig, vault, spool)
        client.start()
        try:
            wait_until(
                lambda: (
                    _held(rig, plain.body["id"], "json").exists()
                    and len(spool) == 0
                    and vault.backlog().segments == 0
                ),
                30,
                "the CSU to accept both events and the segment",
            )
            # only the alert that names a picture waits for it
            owed = [p.name.split("-", 1)[1] for p in spool.snapshots_pending()]
            assert owed == [f"{shot.body['id']}.json"]
        finally:
            client.stop()
        assert not _held(rig, shot.body["id"], "snp").exists()
        vault.record_event(shot)
        vault.record_event(plain)
        sealed = eventlog.event_path(
            vault.root, "cam1", shot.body["wall_ns"], shot.body["id"], "snp"
        ).read_bytes()
        # A restart: the spool (on disk) still says the snapshot is owed.
        client = _client(rig, vault, EventSpool(rig.data / "uplink" / "events"))
        client.start()
        try:
            wait_until(lambda: not spool.snapshots_pending(), 30, "the snapshot to be delivered")
        finally:
            client.stop()
            vault.close()
        assert _held(rig, shot.body["id"], "snp").read_bytes() == sealed
        assert not _held(rig, plain.body["id"], "snp").exists()
        assert not list((spool.directory / "rejected").iterdir())


def _conn(rig: Rig) -> http.client.HTTPSConnection:
    keys = rig.data / "keys"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(keys / "ca.pem")
    ctx.load_cert_chain(keys / "unit-tls.crt", keys / "unit-tls.key")
    conn = http.client.HTTPSConnection(CSU_NAME, rig.port, timeout=10)
    conn.sock = ctx.wrap_socket(
        socket.create_connection(("127.0.0.1", rig.port), timeout=10), server_hostname=CSU_NAME
    )
    return conn


def _send(
    conn: http.client.HTTPSConnection, method: str, path: str, body: bytes, ctype: str
) -> tuple[int, str]:
    conn.request(method, path, body=body, headers={"Content-Type": ctype})
    resp = conn.getresponse()
    return resp.status, resp.read().decode(errors="replace")


def test_the_csu_keeps_only_the_snapshot_its_stored_event_names(tmp_path: Path) -> None:
    with running_rig(tmp_path) as rig:
        signer = _signer(rig)
        key = load_signing_key(keys_dir_of(rig.data))
        picture = _picture(120)
        event = _alert(signer, 3.0, picture)
        other = _alert(signer, 4.0, _picture(60))
        never_sent = _alert(signer, 5.0, picture)
        eid = str(event.body["id"])
        recipients = [rig.csu.authority.public]

        def seal(
            jpeg: bytes,
            *,
            device: str = UNIT,
            camera: str = "cam1",
            event_id: str = eid,
            signing: ed25519.Ed25519PrivateKey = key,
        ) -> bytes:
            return seal_snapshot(
                jpeg, device_id=device, camera_id=camera, event_id=event_id,
                wall_ns=event.body["wall_ns"], recipients=recipients, signing_key=signing,
            )  # fmt: skip

        conn = _conn(rig)
        for e in (event, other):
            status, body = _send(conn, "POST", events_path(UNIT), e.wire(), EVENT_CONTENT_TYPE)
            assert status == 201, body
        url = put_path(UNIT, eid)
        good = seal(picture)
        forged = bytearray(good)
        forged[-80] ^= 1  # in the ciphertext: the unit's signature no longer holds
        _, stranger_key = write_keypair(tmp_path / "stranger", RecipientKem.X25519, "x")
        stranger = load_private(stranger_key)
        cases = {
            "wrong content type": (url, good, "image/jpeg", 415, "content type"),
            "not a snapshot": (url, b"\xff\xd8 plain jpeg", SNAPSHOT_CONTENT_TYPE, 400, "snapshot"),
            "forged": (url, bytes(forged), SNAPSHOT_CONTENT_TYPE, 422, "signature"),
            "signed by another key": (
                url,
                seal(picture, signing=ed25519.Ed25519PrivateKey.generate()),
                SNAPSHOT_CONTENT_TYPE,
                422,
                "signature",
            ),
            "sealed for another unit": (
                url,
                seal(picture, device="unit-2"),
                SNAPSHOT_CONTENT_TYPE,
                400,
                "unit-2",
            ),
            "sealed for another camera": (
                url,
                seal(picture, camera="cam2"),
                SNAPSHOT_CONTENT_TYPE,
                400,
                "cam2",
            ),
            "sealed for another event": (
                url,
                seal(picture, event_id=str(other.body["id"])),
                SNAPSHOT_CONTENT_TYPE,
                400,
                "not this event",
            ),
            "another picture": (url, seal(_picture(60)), SNAPSHOT_CONTENT_TYPE, 422, "SHA-256"),
            "not sealed to the CSU": (
                url,
                seal_snapshot(
                    picture,
                    device_id=UNIT,
                    camera_id="cam1",
                    event_id=eid,
                    wall_ns=event.body["wall_ns"],
                    recipients=[stranger.public],
                    signing_key=key,
                ),
                SNAPSHOT_CONTENT_TYPE,
                422,
                "not sealed to this key",
            ),
            "event never stored": (
                put_path(UNIT, str(never_sent.body["id"])),
                seal(picture, event_id=str(never_sent.body["id"])),
                SNAPSHOT_CONTENT_TYPE,
                404,
                "not stored",
            ),
            "another unit's URL": (
                put_path("unit-2", eid),
                good,
                SNAPSHOT_CONTENT_TYPE,
                403,
                "unit-2",
            ),
        }
        for name, (path, raw, ctype, want, says) in cases.items():
            status, answer = _send(conn, "PUT", path, raw, ctype)
            assert (status, says in answer) == (want, True), (name, status, answer)
            assert not list((rig.csu.directory / "storage" / UNIT / "events").glob("*.snp")), name
        assert _send(conn, "PUT", url, good, SNAPSHOT_CONTENT_TYPE)[0] == 201
        assert _send(conn, "PUT", url, good, SNAPSHOT_CONTENT_TYPE)[0] == 200
        status, answer = _send(conn, "PUT", url, seal(picture), SNAPSHOT_CONTENT_TYPE)
        assert status == 409, answer  # the same picture sealed again: other bytes
        assert _held(rig, eid, "snp").read_bytes() == good
        assert hashlib.sha256(picture).hexdigest() == event.body["snapshot"]["sha256"]
        assert json.loads(_held(rig, eid, "json").read_bytes())["event"]["id"] == eid
