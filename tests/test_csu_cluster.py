"""Cluster mode's segment path on real servers: PostgreSQL (the judge) and OpenStack Swift's
S3 API (the bytes), two receivers racing on one unit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.csu.receiver import SegmentStore
from edge.csu.receiver.archive import Refusal, Verdict
from edge.csu.receiver.base import SegmentArchive
from edge.csu.receiver.cluster import ClusterArchive
from edge.csu.receiver.objstore import ObjectStore, ObjectStoreError, segment_key
from edge.csu.receiver.pgindex import PgSegmentIndex
from edge.vault import format as sealed

from .pg_util import postgres
from .s3_util import S3Lab, swift_s3
from .test_csu_pgindex import Forking, _seal
from .test_csu_retention import _authority
from .uplink_util import free_port

UNIT = "unit-cl"

# Starting Swift's four servers takes 10-30 s on a loaded build machine: slow tier.
pytestmark = pytest.mark.slow


@dataclass
class Lab:
    conninfo: str
    s3: S3Lab

    def objects(self) -> ObjectStore:
        return ObjectStore(
            self.s3.endpoint, "segments", self.s3.access_key, self.s3.secret_file, timeout_s=10
        )

    def receiver(self, name: str) -> ClusterArchive:
        return ClusterArchive(PgSegmentIndex(self.conninfo, name), self.objects())


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with postgres() as conninfo, swift_s3() as s3:
        index = PgSegmentIndex(conninfo, "setup")
        index.migrate()
        index.close()
        lab = Lab(conninfo, s3)
        deadline = time.monotonic() + 30
        while True:  # the proxy listens before its backends answer
            try:
                lab.objects().ensure_bucket()
                break
            except ObjectStoreError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield lab


def _race(
    receivers: list[ClusterArchive], camera: str, key: ed25519.Ed25519PublicKey, *raws: bytes
) -> list[object]:
    """Each receiver uploads its own version of #1 at the same instant; both verdicts."""
    barrier = threading.Barrier(len(receivers))
    verdicts: list[object] = [None] * len(receivers)

    def upload(slot: int, raw: bytes) -> None:
        barrier.wait()
        try:
            verdicts[slot] = receivers[slot].accept_segment(UNIT, camera, 1, raw, key)[0]
        except Refusal as exc:
            verdicts[slot] = exc.status

    threads = [threading.Thread(target=upload, args=(i, r)) for i, r in enumerate(raws)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return verdicts


def test_two_receivers_racing_store_one_history_and_only_its_bytes(lab: Lab) -> None:
    receivers = [lab.receiver("receiver-a"), lab.receiver("receiver-b")]
    objects = lab.objects()
    for n in range(8):
        camera = f"cam{n}"
        sealer = Forking(UNIT, camera, _authority())
        key = sealer.signing_key.public_key()
        base = _seal(sealer, b"b" * 500)
        assert receivers[0].accept_segment(UNIT, camera, 0, base, key)[0] is Verdict.STORED
        x1 = _seal(sealer, b"x" * 500)
        sealer.fork(1, sealed.sha256(base))
        y1 = _seal(sealer, b"y" * 500)
        verdicts = _race(receivers, camera, key, x1, y1)
        assert sorted(map(str, verdicts)) == ["409", "Verdict.STORED"], verdicts
        winner = x1 if verdicts[0] is Verdict.STORED else y1
        # the store holds the winner's exact bytes, and nothing of the loser's
        assert receivers[1].read_segment(UNIT, camera, 1) == winner
        assert sorted(objects.keys(f"{UNIT}/{camera}/")) == sorted(
            segment_key(UNIT, camera, s, sealed.sha256(raw).hex())
            for s, raw in ((0, base), (1, winner))
        )
        # a unit retrying the winner through the other receiver: a duplicate, stored once
        loser = 1 if winner is x1 else 0
        again = receivers[loser].accept_segment(UNIT, camera, 1, winner, key)
        assert again[0] is Verdict.DUPLICATE
        assert len(objects.keys(f"{UNIT}/{camera}/")) == 2
    for r in receivers:
        r.index.close()


def test_an_unreachable_object_store_records_nothing(lab: Lab) -> None:
    dead = ObjectStore(
        f"http://127.0.0.1:{free_port()}",
        "segments",
        lab.s3.access_key,
        lab.s3.secret_file,
        timeout_s=2,
    )
    index = PgSegmentIndex(lab.conninfo, "receiver-c")
    receiver = ClusterArchive(index, dead)
    sealer = Forking(UNIT, "cam-down", _authority())
    raw = _seal(sealer, b"d" * 500)
    with pytest.raises(ObjectStoreError):
        receiver.accept_segment(UNIT, "cam-down", 0, raw, sealer.signing_key.public_key())
    assert index.segment(UNIT, "cam-down", 0) is None  # the unit will retry; nothing half-kept
    # once the store answers again, the retry is stored
    healthy = ClusterArchive(index, lab.objects())
    verdict, _ = healthy.accept_segment(UNIT, "cam-down", 0, raw, sealer.signing_key.public_key())
    assert verdict is Verdict.STORED
    index.close()


def test_both_sides_of_the_storage_seam_give_the_same_answers(lab: Lab, tmp_path: Path) -> None:
    """One script of arrivals (in order, out of order, retries, a fork, a bad signature)
    against the embedded store and the cluster archive: same verdicts, same bytes back."""
    sealer = Forking(UNIT, "cam-seam", _authority())
    key = sealer.signing_key.public_key()
    main = [_seal(sealer, b"m%d" % i * 300) for i in range(5)]
    sealer.fork(2, sealed.sha256(main[1]))
    fork = _seal(sealer, b"f" * 300)
    stranger = ed25519.Ed25519PrivateKey.generate().public_key()
    script = [(main[0], key), (main[2], key), (main[1], key), (main[1], key), (fork, key)]
    script += [(main[4], key), (main[3], key), (main[3], stranger)]
    cluster = lab.receiver("receiver-seam")
    archives: list[SegmentArchive] = [SegmentStore(tmp_path / "storage"), cluster]
    answers: list[list[object]] = []
    for archive in archives:
        got: list[object] = []
        for raw, signer in script:
            seq = sealed.parse_segment(raw).header.sequence
            try:
                got.append(archive.accept_segment(UNIT, "cam-seam", seq, raw, signer)[0])
            except Refusal as exc:
                got.append((exc.status, exc.reason))
        answers.append(got)
        assert [archive.read_segment(UNIT, "cam-seam", s) for s in range(5)] == main
        with pytest.raises(FileNotFoundError):
            archive.read_segment(UNIT, "cam-seam", 9)
    assert answers[0] == answers[1]
    assert answers[0][3] is Verdict.DUPLICATE and answers[0][4][0] == 409  # type: ignore[index]
    assert answers[0][7][0] == 422  # type: ignore[index]
    cluster.index.close()


def test_the_sweep_deletes_old_objects_no_row_names_and_nothing_else(
    lab: Lab, tmp_path: Path
) -> None:
    """A receiver killed between its upload and the database's decision leaves bytes no row
    names: the sweep deletes them once older than its threshold, never a stored segment's,
    never a young one (its decision may be coming); the command refuses a short threshold."""
    import json
    import subprocess
    import sys

    from edge.csu.receiver.cluster import ClusterStore
    from edge.csu.receiver.settings import ClusterConfig

    from .conftest import REPO

    sealer = Forking("unit-sweep", "cam1", _authority())
    key = sealer.signing_key.public_key()
    kept, orphan = _seal(sealer, b"kept" * 50), _seal(sealer, b"orphan" * 50)
    assert lab.receiver("r-sweep").accept_segment("unit-sweep", "cam1", 0, kept, key)[0] is (
        Verdict.STORED
    )
    objects = lab.objects()
    orphan_key = segment_key("unit-sweep", "cam1", 1, sealed.sha256(orphan).hex())
    objects.put(orphan_key, orphan)  # the upload; the receiver died before the decision
    config = tmp_path / "csu.toml"
    config.write_text(
        f'storage = "cluster"\n[cluster]\nreceiver_id = "r1"\n[cluster.database]\n'
        f'conninfo = "{lab.conninfo}"\n[cluster.object_store]\nendpoint = "{lab.s3.endpoint}"\n'
        f'bucket = "segments"\naccess_key = "{lab.s3.access_key}"\n'
        f'secret_file = "{lab.s3.secret_file}"\n'
    )

    def sweep(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge.csu.main", "retention", "sweep", "--config",
             str(config), *extra],
            capture_output=True, text=True, timeout=60, cwd=REPO,
        )  # fmt: skip

    young = sweep()
    assert young.returncode == 0, young.stderr
    counts = json.loads(young.stdout)
    assert counts["orphans_deleted"] == 0 and counts["orphans_too_young"] >= 1, counts
    assert orphan_key in objects.keys("unit-sweep/")
    refused = sweep("--older-than-s", "5")
    assert refused.returncode != 0 and "at least 600" in refused.stderr
    # two hours later (the clock is the sweep's argument): the orphan goes, the segment stays
    cfg = ClusterConfig.model_validate(
        {"receiver_id": "r1", "database": {"conninfo": lab.conninfo},
         "object_store": {"endpoint": lab.s3.endpoint, "bucket": "segments",
                          "access_key": lab.s3.access_key, "secret_file": lab.s3.secret_file}}
    )  # fmt: skip
    store = ClusterStore(cfg)
    counts = store.sweep(older_than_s=3600, now=time.time() + 7200)
    assert counts["orphans_deleted"] >= 1, counts
    assert objects.keys("unit-sweep/") == [
        segment_key("unit-sweep", "cam1", 0, sealed.sha256(kept).hex())
    ]
    assert store.read_segment("unit-sweep", "cam1", 0) == kept
    # run twice: nothing more to do
    assert store.sweep(older_than_s=3600, now=time.time() + 7200)["orphans_deleted"] == 0
    store.close()
