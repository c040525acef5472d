"""The cluster lab of issue 15: 50 simulated units (real signed segments, mutual TLS, each
retrying what was in flight, as ``edged`` does) for 60 s through HAProxy to two receivers on
one PostgreSQL and one Swift. Meanwhile: one receiver killed with SIGKILL, PostgreSQL stopped
for 10 s, the object store stopped for 10 s. Afterwards nothing is lost, nothing is stored
twice, every chain link holds, and the outages were answered 503 (not refused)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.csu import lab
from edge.csu.bench_cmd import _setup
from edge.csu.simfleet import SimFleet

from .pg_util import postgres_server
from .s3_util import swift_s3

# Swift, two receivers and 60 s of traffic with its drain: about 2-3 minutes.
pytestmark = pytest.mark.slow

UNITS = 50
SECONDS = 60.0
SEGMENT_S = 2.0
# Small segments (32 KiB): the test judges correctness; capacity is edge-csu bench --cluster's.
SEGMENT_BYTES = 32 * 1024


def test_fifty_units_through_a_receiver_kill_a_database_outage_and_a_store_outage(
    tmp_path: Path,
) -> None:
    work = tmp_path / "fleet"
    work.mkdir()
    _, units, tls = _setup(work, UNITS, SEGMENT_BYTES)
    with postgres_server() as pg, swift_s3() as s3:
        lab.ensure_bucket(s3)
        shared = lab.ClusterShared(
            tls.cert_file, tls.key_file, tls.client_ca_file, work / "units", pg.conninfo, s3
        )
        with lab.cluster_front(tmp_path / "lab", shared, 2) as front:
            victim = front.receivers[0]

            def outage(stop: Callable[[], None], start: Callable[[], None]) -> None:
                stop()
                time.sleep(10)
                start()

            actions: list[tuple[float, str, Callable[[], object]]] = [
                (12, "kill r1", victim.kill),
                (22, "database down 10 s", lambda: outage(pg.stop, pg.start)),
                (40, "object store down 10 s", lambda: outage(s3.stop_proxy, s3.start_proxy)),
            ]

            fleet = SimFleet(units, front.port, segment_s=SEGMENT_S)
            report = asyncio.run(
                fleet.run(
                    SECONDS,
                    actions=actions,
                    drain_s=90,
                )
            )
            survivor_log = front.receivers[1].log()
        audit = lab.audit_cluster(
            pg.conninfo,
            s3,
            {u.unit_id: (u.sequence, u.key.public_key()) for u in units},
        )
    figures = report.figures()
    assert [name for name, _ in report.actions] == [
        "kill r1", "database down 10 s", "object store down 10 s",
    ], report.actions  # fmt: skip
    # every unit produced its segments and the cluster acknowledged them all
    assert report.produced >= UNITS * (SECONDS / SEGMENT_S - 1), figures
    assert report.waiting == 0 and report.refused == 0, figures
    assert report.acknowledged == report.produced, figures
    # the outages were answered "retry later", never a refusal; the kill broke connections
    assert report.statuses.get("503", 0) > 0, figures
    assert report.reconnects >= 1 and report.failover_s, figures
    assert "503 for PUT" in survivor_log
    # 0 lost, 0 stored twice, chains whole, bytes read back and verified
    assert audit["segments_stored"] == report.produced, audit
    assert audit["lost"] == 0 and audit["stored_twice"] == 0, audit
    assert audit["chain_breaks"] == 0 and audit["read_back_failures"] == 0, audit
    assert audit["rows_without_object"] == 0, audit
    assert set(audit["by_receiver"]) == {"r1", "r2"}, audit
