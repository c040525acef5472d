"""The unit's CSU client against the real receiver: delivery, impostor CSU, gate, outage."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.config import EdgeConfig, UnitConfig, UplinkConfig
from edge.csu.ca import Profile
from edge.diagnostics import Level, uplink_findings
from edge.uplink.client import UplinkClient, UplinkState
from edge.vault.base import OutboxItem

from .uplink_util import (
    CSU_NAME,
    Csu,
    MemoryOutbox,
    Pki,
    Sealer,
    free_port,
    make_csu,
    unit_files,
    wait_until,
)

SEC = 1_000_000_000
UNIT = "unit-7"


class Gate:
    def __init__(self, open_: bool = True) -> None:
        self.open = open_

    def is_open(self) -> bool:
        return self.open

    def reason(self) -> str:
        return "port authorised" if self.open else "802.1X port not authorised"


@dataclass
class Rig:
    csu: Csu
    port: int
    data_dir: Path
    outbox: MemoryOutbox
    sealer: Sealer

    def config(self, **uplink: object) -> EdgeConfig:
        settings: dict[str, object] = {
            "enabled": True,
            "csu_url": f"https://127.0.0.1:{self.port}",
            "server_name": CSU_NAME,
            "backoff_initial_s": 0.2,
            "backoff_max_s": 1.0,
            "connect_timeout_s": 3.0,
            "request_timeout_s": 5.0,
        }
        settings.update(uplink)
        return EdgeConfig(
            unit=UnitConfig(id=UNIT, data_dir=self.data_dir),
            uplink=UplinkConfig.model_validate(settings),
        )

    def record(self, count: int = 1, size: int = 2000, duration_s: float = 0.25) -> None:
        for _ in range(count):
            end = time.time_ns()
            self.outbox.add_segment(
                self.sealer.seal(
                    b"init", b"\x42" * size, start_ns=end - int(duration_s * SEC), end_ns=end
                )
            )


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    signing = ed25519.Ed25519PrivateKey.generate()
    csu.enroll(UNIT, signing)
    data_dir = tmp_path / "unit"
    unit_files(csu, UNIT, data_dir)
    outbox = MemoryOutbox(tmp_path / "outbox")
    sealer = Sealer(UNIT, "cam1", csu.authority.public, signing)
    outbox.add_envelope("cam1", sealer.epoch.epoch_id, sealer.envelope)
    csu.start()
    try:
        yield Rig(csu, port, data_dir, outbox, sealer)
    finally:
        csu.stop()


def stored_index(csu: Csu) -> list[dict[str, int]]:
    path = csu.directory / "storage" / UNIT / "cam1" / "index.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_delivers_byte_identical_segments_and_marks_them_delivered(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edge.uplink.client")
    rig.record(5)
    sent = {p.name: p.read_bytes() for p in rig.outbox.directory.glob("*.seg")}
    client = UplinkClient(rig.config(), rig.outbox, Gate())
    client.start()
    try:
        wait_until(lambda: rig.outbox.pending_count() == 0, 20, "the outbox to drain")
        snap = client.snapshot()
    finally:
        client.stop()
    stored = rig.csu.stored(UNIT, "cam1")
    assert sorted(stored) == [0, 1, 2, 3, 4]
    assert {f"cam1-{seq:08d}.seg": raw for seq, raw in stored.items()} == sent
    assert sorted(rig.outbox.delivered) == [("cam1", i) for i in range(5)]
    envelope = rig.csu.directory / "storage" / UNIT / "cam1" / "epochs"
    assert (envelope / f"{rig.sealer.epoch.epoch_id.hex()}.env").read_bytes() == rig.sealer.envelope
    assert snap["state"] == "streaming" and snap["counters"]["sent"] == 6
    assert snap["last_ack_age_s"] is not None and snap["backlog_s"] == 0
    # what edgectl status makes of it
    [finding] = uplink_findings({"uplink": snap})
    assert finding.level is Level.OK and finding.summary.startswith("STREAMING")
    assert snap["backlog"]["items"] == 0
    transitions = [r.getMessage() for r in caplog.records if "->" in r.getMessage()]
    assert any("connecting -> syncing" in t for t in transitions)
    assert any("syncing -> streaming" in t for t in transitions)
    assert client.state is UplinkState.STOPPED


def test_a_crash_before_the_acknowledgement_is_harmless(rig: Rig) -> None:
    """The CSU holds a segment the unit never marked delivered: resending stores nothing twice."""
    rig.record(3)
    client = UplinkClient(rig.config(), rig.outbox, Gate())
    client.start()
    wait_until(lambda: rig.outbox.pending_count() == 0, 20, "first delivery")
    client.stop()
    # the unit forgets the acknowledgements (as after kill -9 before its index was written)
    for path in sorted(rig.outbox.directory.glob("*.seg")):
        rig.outbox.add_segment(path.read_bytes())
    client = UplinkClient(rig.config(), rig.outbox, Gate())
    client.start()
    try:
        wait_until(lambda: rig.outbox.pending_count() == 0, 20, "redelivery")
        assert client.snapshot()["counters"]["duplicates"] == 3
    finally:
        client.stop()
    assert [row["sequence"] for row in stored_index(rig.csu)] == [0, 1, 2]


def test_the_unit_refuses_an_impostor_csu(rig: Rig, tmp_path: Path) -> None:
    rig.csu.stop()
    impostor = Pki.create(tmp_path / "impostor-pki")
    keys = rig.csu.directory / "keys"
    impostor.issue(CSU_NAME, keys, profile=Profile.SERVER)  # same name, another CA
    rig.csu.start()
    rig.record(2)
    client = UplinkClient(rig.config(), rig.outbox, Gate())
    client.start()
    try:
        wait_until(lambda: client.snapshot()["counters"]["failures"] >= 2, 20, "refusals")
        snap = client.snapshot()
    finally:
        client.stop()
    assert "certificate" in snap["reason"].lower() or "verify" in snap["reason"].lower()
    assert rig.outbox.pending_count() == 3  # envelope + 2 segments, nothing marked delivered
    assert rig.csu.stored(UNIT, "cam1") == {}


def test_a_closed_gate_sends_nothing(rig: Rig) -> None:
    rig.record(2)
    gate = Gate(open_=False)
    client = UplinkClient(rig.config(), rig.outbox, gate)
    client.start()
    try:
        wait_until(lambda: client.state is UplinkState.WAITING_GATE, 10, "waiting for the gate")
        time.sleep(1.0)
        assert rig.csu.stored(UNIT, "cam1") == {}
        assert client.snapshot()["backlog"]["items"] == 2
        gate.open = True
        wait_until(lambda: rig.outbox.pending_count() == 0, 20, "delivery once open")
        gate.open = False
        wait_until(lambda: client.state is UplinkState.WAITING_GATE, 10, "gate closing again")
    finally:
        client.stop()


def run_outage(rig: Rig, outage_s: float, *, live_latency_s: float | None = None) -> None:
    """Record at 4 segments/s; stop the receiver ``outage_s``; restart; check the properties.

    ``live_latency_s`` also bounds how late live segments arrive while the backlog drains: a
    wall-clock figure that a loaded machine can miss, so only the slow tier asks for it.
    """
    budget_kbps = 1200  # 150 kB/s; live needs 4 x 8 kB/s, the backlog gets half the budget
    client = UplinkClient(
        rig.config(bandwidth_kbps=budget_kbps, backfill_share=0.5, live_window_s=1.5),
        rig.outbox,
        Gate(),
    )
    stop = threading.Event()

    def recorder() -> None:
        while not stop.is_set():
            rig.record(1, size=8000)
            time.sleep(0.25)

    thread = threading.Thread(target=recorder)
    thread.start()
    client.start()
    try:
        wait_until(lambda: len(rig.csu.stored(UNIT, "cam1")) >= 4, 20, "live flow")
        rig.csu.stop()
        outage_start = time.time_ns()
        time.sleep(outage_s)
        assert client.state in (UplinkState.BACKOFF, UplinkState.CONNECTING)
        restart = time.time_ns()
        rig.csu.start()
        wait_until(
            lambda: client.snapshot()["backlog"]["items"] <= 2,
            outage_s + 30,
            "the backlog to drain",
        )
        stop.set()
        thread.join()
        wait_until(lambda: rig.outbox.pending_count() == 0, 20, "the last segments")
    finally:
        stop.set()
        thread.join()
        client.stop()
    rows = stored_index(rig.csu)
    seqs = [r["sequence"] for r in rows]
    assert len(seqs) == len(set(seqs)), "a segment was stored twice"
    assert sorted(seqs) == list(range(rig.sealer.sequence)), "a segment is missing"
    during = [r for r in rows if outage_start <= r["end_wall_ns"] <= restart]
    assert len(during) >= outage_s * 4 * 0.8
    last_backfill = max(r["received_ns"] for r in during)
    live_meanwhile = [
        r for r in rows if r["end_wall_ns"] > restart and r["received_ns"] < last_backfill
    ]
    assert live_meanwhile, "live segments waited for the backlog"
    if live_latency_s is not None:
        # while the backlog drained, live segments still arrived within a couple of seconds
        worst = max(r["received_ns"] - r["end_wall_ns"] for r in live_meanwhile) / SEC
        assert worst < live_latency_s, worst


def test_outage_backlog_arrives_once_while_live_keeps_flowing(rig: Rig) -> None:
    run_outage(rig, outage_s=8.0)


@pytest.mark.slow
def test_sixty_second_outage(rig: Rig) -> None:
    run_outage(rig, outage_s=60.0, live_latency_s=3.0)


def test_events_are_spooled_durably_and_sent_before_video(rig: Rig, tmp_path: Path) -> None:
    from edge.analytics.events import EventSigner, SignedEvent
    from edge.uplink.spool import EventSpool

    spool = EventSpool(tmp_path / "spool")

    def intrusion(key: ed25519.Ed25519PrivateKey, event_id: str) -> SignedEvent:
        return EventSigner(key, UNIT).sign(
            camera="cam1",
            category="alert",
            kind="intrusion",
            rule="zone-a",
            wall_ns=time.time_ns(),
            frame_index=5,
            details={},
            extra={"id": event_id},
        )

    good = intrusion(rig.sealer.signing_key, "e1")
    forged = intrusion(ed25519.Ed25519PrivateKey.generate(), "e2")
    spool.put(good.wire())
    spool.put(forged.wire())
    rig.record(2)
    client = UplinkClient(rig.config(), rig.outbox, Gate(), events=spool)
    client.start()
    try:
        wait_until(lambda: rig.outbox.pending_count() == 0 and not spool.pending(), 20, "delivery")
        snap = client.snapshot()
    finally:
        client.stop()
    assert snap["counters"]["events"] == 1 and snap["counters"]["refused"] == 1
    assert (rig.csu.directory / "storage" / UNIT / "events" / "e1.json").exists()
    assert [p.name.split("-", 1)[1] for p in (spool.directory / "rejected").iterdir()] == [
        "e2.json"
    ]
    first_segment = min(r["received_ns"] for r in stored_index(rig.csu))
    event_file = rig.csu.directory / "storage" / UNIT / "events" / "e1.json"
    assert event_file.stat().st_mtime_ns <= first_segment


def test_the_uplink_thread_survives_an_unexpected_failure(rig: Rig) -> None:
    """A fault in the outbox (here: a database error once) costs a backoff, not the thread."""

    class FlakyOutbox(MemoryOutbox):
        failures = 1

        def outbox(self, limit: int = 100) -> list[OutboxItem]:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("database is locked")
            return super().outbox(limit)

    flaky = FlakyOutbox(rig.outbox.directory)
    for path in sorted(rig.outbox.directory.glob("*.env")):
        flaky.add_envelope("cam1", rig.sealer.epoch.epoch_id, path.read_bytes())
    rig.outbox = flaky
    rig.record(2)
    client = UplinkClient(rig.config(), flaky, Gate())
    client.start()
    try:
        wait_until(lambda: flaky.pending_count() == 0, 20, "delivery after the fault")
        assert client.snapshot()["counters"]["failures"] == 1
    finally:
        client.stop()


def test_edgectl_uplink_check_says_what_is_wrong(rig: Rig, tmp_path: Path) -> None:
    def config_file(enabled: str = "true", server_name: str = CSU_NAME) -> Path:
        path = tmp_path / "edge.toml"
        path.write_text(
            f'[unit]\nid = "{UNIT}"\ndata_dir = "{rig.data_dir}"\n\n[uplink]\n'
            f'enabled = {enabled}\ncsu_url = "https://127.0.0.1:{rig.port}"\n'
            f'server_name = "{server_name}"\n'
        )
        return path

    def run(path: Path) -> tuple[int, dict[str, object]]:
        out = subprocess.run(
            [sys.executable, "-m", "edge.cli.main", "uplink", "check", "--config", str(path),
             "--json"],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert out.stdout.startswith("{"), out.stderr[-2000:]
        return out.returncode, json.loads(out.stdout)

    rig.record(1)
    client = UplinkClient(rig.config(), rig.outbox, Gate())
    client.start()
    wait_until(lambda: rig.outbox.pending_count() == 0, 20, "a first segment at the CSU")
    client.stop()
    code, report = run(config_file())
    assert code == 0 and report["result"] == "ok"
    assert report["csu_holds"] == {"cam1": {"first": 0, "last": 0, "count": 1, "gaps": []}}
    assert report["tls"]["version"] == "TLSv1.3"  # type: ignore[index]
    code, report = run(config_file(server_name="elsewhere.test"))
    assert code == 2 and "certificate is refused" in str(report["result"])
    # the unit's certificate is revoked: the CSU hangs up, and the tool says what to do
    serial = x509.load_pem_x509_certificate(
        (rig.data_dir / "keys" / "unit-tls.crt").read_bytes()
    ).serial_number
    rig.csu.pki.ca.revoke(serial)
    code, report = run(config_file())
    assert code == 2 and "renew" in str(report["action"])
    code, report = run(config_file(enabled="false"))
    assert code == 1


def test_a_loss_at_the_unit_reaches_the_csu_which_flags_the_originals_it_holds(
    tmp_path: Path,
) -> None:
    """The unit delivered #0..#5, then lost #4..#5 (files and index gone) and restarted: its
    gap record goes to the CSU first, the chain goes on through it at the CSU (#6 is accepted,
    not refused as a chain break), and the CSU, which holds the originals of #4..#5, shows the
    conflict in `edge-csu units` and its audit log instead of hiding it."""
    from edge.csu.receiver import audit as csu_audit
    from edge.csu.receiver import config as serve_config
    from edge.csu.serve_cmd import unit_rows
    from edge.vault import layout
    from edge.vault.retention import RetentionPolicy
    from edge.vault.store import Vault

    from .vault_support import fake_segment

    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    signing = ed25519.Ed25519PrivateKey.generate()
    csu.enroll(UNIT, signing)
    data_dir = tmp_path / "unit"
    unit_files(csu, UNIT, data_dir)
    root = layout.vault_dir(data_dir)
    t0 = time.time_ns() - 120 * SEC

    def vault() -> Vault:
        return Vault(
            root,
            device_id=UNIT,
            signing_key=signing,
            recipients=[csu.authority.public],
            policy=RetentionPolicy(30, 0, 0.0),
        )

    def deliver(v: Vault, through: int) -> None:
        cfg = EdgeConfig(
            unit=UnitConfig(id=UNIT, data_dir=data_dir),
            uplink=UplinkConfig.model_validate(
                {
                    "enabled": True,
                    "csu_url": f"https://127.0.0.1:{port}",
                    "server_name": CSU_NAME,
                    "backoff_initial_s": 0.2,
                    "backoff_max_s": 1.0,
                }
            ),
        )
        client = UplinkClient(cfg, v, Gate())
        client.start()
        try:
            wait_until(
                lambda: set(range(through + 1)) <= set(csu.stored(UNIT, "cam1")), 30, "delivery"
            )
        finally:
            client.stop()

    csu.start()
    try:
        v = vault()
        for n in range(6):
            v.write(fake_segment("cam1", n, t0=t0))
        deliver(v, 5)
        v.close()
        originals = csu.stored(UNIT, "cam1")
        for path in sorted(root.glob("segments/cam1/*/*/*.seg"))[-2:]:
            path.unlink()
        for name in ("index.sqlite", "index.sqlite-wal", "index.sqlite-shm"):
            (root / name).unlink(missing_ok=True)
        v = vault()
        assert [(g.first, g.last) for g in v.recovery.gaps] == [(4, 5)]
        for n in (6, 7):
            v.write(fake_segment("cam1", n, t0=t0))
        deliver(v, 7)
        v.close()
        stored = csu.stored(UNIT, "cam1")
        assert stored[4] == originals[4] and stored[5] == originals[5]  # kept, not replaced
        cfg = serve_config.load(csu.config)
        cam = {r["unit"]: r for r in unit_rows(cfg)}[UNIT]["cameras"]["cam1"]
        assert cam["lost_at_unit"] == [[4, 5]]
        assert cam["conflicts"] == [{"first": 4, "last": 5, "held": [4, 5]}]
        assert cam["chain"] == "conflict"
        table = subprocess.run(
            [sys.executable, "-m", "edge.csu.main", "units", "--config", str(csu.config)],
            capture_output=True, text=True, timeout=60, check=True,
        ).stdout  # fmt: skip
        assert "CONFLICT: the unit declared #4..#5 lost" in table
        records = csu_audit.read(csu.directory / "audit.jsonl")
        conflict = [r for r in records if r["action"] == "unit-gap-conflict"]
        assert [(r["first"], r["last"], r["held_here"]) for r in conflict] == [(4, 5, [4, 5])]
    finally:
        csu.stop()
