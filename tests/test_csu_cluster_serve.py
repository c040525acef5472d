"""``edge-csu serve`` in cluster mode, end to end: a real ``edged`` unit → HAProxy in TCP mode
(the shipped configuration, mutual TLS end to end) → two receivers on one PostgreSQL and one
S3 store (Swift). The receiver serving the unit is killed with SIGKILL mid-run: the unit
reconnects through HAProxy to the other and resumes; nothing is lost or stored twice, the
chain verifies, the unit's alarm is published to MQTT once."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.csu import lab
from edge.csu.receiver.objstore import ObjectStore, segment_key
from edge.csu.receiver.pgindex import PgSegmentIndex
from edge.events import EventSigner
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.uplink.spool import EventSpool
from edge.vault import format as fmt

from .conftest import REPO, tool
from .pg_util import postgres_server
from .s3_util import swift_s3
from .test_uplink_e2e import unit_config, vault_segments
from .uplink_util import CSU_NAME, free_port, make_csu, unit_files, wait_until

# Swift's four servers and two receivers take 10-30 s to start on a loaded machine.
pytestmark = pytest.mark.slow

UNIT = "test-unit"


class Subscriber:
    """Every message on ``city/#`` of the broker, as received."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self.client = paho.Client(CallbackAPIVersion.VERSION2)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("city/#", qos=1)
        self.client.loop_start()

    def _on_message(self, _c: object, _u: object, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((message.topic, bytes(message.payload)))

    def stop(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def broker() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [tool("mosquitto"), "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        lab.wait_port(port, None, "mosquitto", 10)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)


def _rows(conninfo: str) -> list[tuple[int, str, str, str]]:
    with psycopg.connect(conninfo) as conn:
        return [
            (int(s), str(h), str(p), str(r))
            for s, h, p, r in conn.execute(
                "SELECT sequence, hash, prev_hash, receiver FROM segments "
                "WHERE unit = %s AND camera = 'cam1' ORDER BY sequence",
                (UNIT,),
            ).fetchall()
        ]


def test_a_unit_survives_the_kill_of_its_receiver_behind_haproxy(
    tmp_path: Path, broker: int
) -> None:
    csu = make_csu(tmp_path)
    data_dir = tmp_path / "unit"
    unit_files(csu, UNIT, data_dir)
    signing = load_or_create_signing_key(keys_dir_of(data_dir))
    csu.enroll(UNIT, signing)
    alarm = EventSigner(signing, UNIT).sign(
        camera="unit", category="alert", kind="cabinet-door-open", rule="unit",
        wall_ns=time.time_ns(), frame_index=-1, details={"message": "door opened"},
    )  # fmt: skip
    EventSpool(data_dir / "uplink" / "events").put(alarm.wire())
    subscriber = Subscriber(broker)
    keys = csu.directory / "keys"
    with postgres_server() as pg, swift_s3() as s3:
        lab.ensure_bucket(s3)
        shared = lab.ClusterShared(
            cert_file=keys / f"{CSU_NAME}.crt",
            key_file=keys / f"{CSU_NAME}.key",
            client_ca_file=csu.pki.chain,
            registry_dir=csu.directory / "units",
            conninfo=pg.conninfo,
            s3=s3,
            mqtt_port=broker,
        )
        with lab.cluster_front(tmp_path / "lab", shared, 2) as front:
            config = unit_config(
                tmp_path / "edge.toml", data_dir, csu, front.port,
                uplink=f'ca_file = "{data_dir / "keys" / "ca.pem"}"\n'
                "backoff_initial_s = 0.2\nbackoff_max_s = 1.0",
            )  # fmt: skip
            edged = subprocess.Popen(
                [sys.executable, "-m", "edge.app.daemon", "--config", str(config),
                 "--run-for", "22"],
                stderr=subprocess.PIPE, text=True, cwd=REPO,
            )  # fmt: skip
            try:
                wait_until(lambda: len(_rows(pg.conninfo)) >= 4, 60, "segments through HAProxy")
                serving = _rows(pg.conninfo)[-1][3]
                victim = next(r for r in front.receivers if r.name == serving)
                other = next(r for r in front.receivers if r.name != serving)
                before = len(_rows(pg.conninfo))
                victim.kill()
                wait_until(
                    lambda: any(r[3] == other.name for r in _rows(pg.conninfo)[before:]),
                    30,
                    f"the unit's segments accepted by {other.name}",
                )
                _, stderr = edged.communicate(timeout=120)
                assert edged.returncode == 0, stderr[-3000:]
            finally:
                if edged.poll() is None:
                    edged.kill()
                    edged.wait()
            recorded_first = set(vault_segments(data_dir))
            # what the first run left in the outbox goes on the next run, through the survivor
            second = subprocess.run(
                [sys.executable, "-m", "edge.app.daemon", "--config", str(config),
                 "--run-for", "5"],
                capture_output=True, text=True, timeout=120, cwd=REPO,
            )  # fmt: skip
            assert second.returncode == 0, second.stderr[-3000:]
            assert victim.proc is not None and victim.proc.returncode == -9
            units = subprocess.run(
                [sys.executable, "-m", "edge.csu.main", "units", "--config", str(other.config),
                 "--json"],
                capture_output=True, text=True, timeout=60, cwd=REPO,
            )  # fmt: skip
            assert units.returncode == 0, units.stderr
        recorded = vault_segments(data_dir)
        rows = _rows(pg.conninfo)
        stored = {s for s, _, _, _ in rows}
        # 0 lost: everything the unit recorded in the run that saw the kill is at the CSU
        assert len(recorded_first) >= 10
        assert recorded_first <= stored, sorted(recorded_first - stored)
        # both receivers stored some of this unit's segments: the failover really happened
        assert {r[3] for r in rows} == {victim.name, other.name}
        # 0 stored twice: one row per sequence (the primary key) and one object per sequence
        objects = ObjectStore(s3.endpoint, lab.BUCKET, s3.access_key, s3.secret_file, timeout_s=10)
        keys_held = objects.keys(f"{UNIT}/cam1/")
        assert sorted(int(k.rsplit("/", 1)[1].split("-")[0]) for k in keys_held) == sorted(stored)
        # the chain verifies: exact vault bytes, each signed and continuing its predecessor
        key = signing.public_key()
        for seq, digest, prev, _ in rows:
            raw = objects.get(segment_key(UNIT, "cam1", seq, digest))
            assert raw == recorded[seq]
            fmt.verify_segment(raw, key)
            if seq - 1 in stored:
                assert prev == fmt.sha256(recorded[seq - 1]).hex()
        row = json.loads(units.stdout)[0]
        assert row["unit"] == UNIT and row["enrolled"]
        assert row["cameras"]["cam1"]["chain"] == "complete", row["cameras"]["cam1"]
        assert row["cameras"]["cam1"]["count"] == len(stored)
        index = PgSegmentIndex(pg.conninfo, "check")
        assert index.cursor(UNIT, "cam1") == max(stored)
        index.close()
        # the alarm: stored once, published once (receivers share the decision)
        wait_until(lambda: subscriber.messages, 10, "the alarm published")
        time.sleep(1)
        subscriber.stop()
        published = [p for _, p in subscriber.messages if p == alarm.wire()]
        assert len(published) == 1, subscriber.messages
