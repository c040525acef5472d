"""Events are evidence: the vault keeps every signed event and seals the snapshot of an alert
like footage (encrypted to the CSU, signed), retains them like segments, exports them in the
evidence bundle, and ``edgectl events`` reads them back on the unit, verified."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge import config
from edge.analytics import decree
from edge.analytics.bridge import seal_draft
from edge.cli.main import main as edgectl
from edge.config import CameraAnalyticsConfig, LineRuleConfig, RecipientKem
from edge.csu.main import main as edge_csu
from edge.events import EventDraft, EventSigner, SignedEvent, jpeg_snapshot
from edge.identity.unitkeys import keys_dir_of, load_signing_key, load_signing_public_key
from edge.vault import layout
from edge.vault.bundle import verify_bundle
from edge.vault.eventlog import read_events
from edge.vault.retention import RetentionPolicy
from edge.vault.snapshots import open_snapshot, parse_snapshot, verify_snapshot_file
from edge.vault.store import Vault

from .vault_support import SEG_NS, Csu, encoded_segments, fake_segment, make_csu, open_vault
from .video_support import WALL0

SEC = 1_000_000_000


def _picture() -> bytes:
    """A JPEG with structure (gradient and a block), as the analytics process makes them."""
    rgb = np.zeros((90, 160, 3), dtype=np.uint8)
    rgb[..., 0] = np.arange(160, dtype=np.uint8)[None, :]
    rgb[30:60, 40:90] = (200, 180, 20)
    return jpeg_snapshot(rgb)


def _alert(signer: EventSigner, t: int, *, snapshot: bytes | None = None) -> SignedEvent:
    return signer.sign(
        camera="cam1",
        category="alert",
        kind="gathering",
        rule="square",
        wall_ns=t,
        frame_index=12,
        details={"persons": 6, "seconds": 30.2},
        snapshot=snapshot,
    )


def _count(signer: EventSigner, t: int, counts: dict[str, int], rule: str = "kerb") -> SignedEvent:
    return signer.sign(
        camera="cam1",
        category="count",
        kind="line_crossing",
        rule=rule,
        wall_ns=t,
        frame_index=40,
        details={"counts": counts, "interval_seconds": 60.0},
    )


def _signer(data: Path, unit: str = "unit-1") -> EventSigner:
    return EventSigner(load_signing_key(keys_dir_of(data)), unit)


def test_an_alert_and_its_snapshot_are_sealed_and_read_back_verified(tmp_path: Path) -> None:
    csu = make_csu(tmp_path / "csu", RecipientKem.MLKEM768_X25519)
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    signer = _signer(data)
    jpeg = _picture()
    event = _alert(signer, WALL0 + 5 * SEC, snapshot=jpeg)
    vault.record_event(event)
    vault.record_event(_count(signer, WALL0 + 60 * SEC, {"person/forward": 3}))
    vault.close()

    root = layout.vault_dir(data)
    evt = sorted(root.glob("events/cam1/*/*/*.evt"))[0]
    snp = evt.with_suffix(".snp")
    assert evt.read_bytes() == event.wire()  # exactly what the CSU and MQTT receive
    sealed = snp.read_bytes()
    # Never in clear on the unit: not the JPEG, not even a recognisable stretch of it.
    assert jpeg[:2] == b"\xff\xd8" and jpeg[200:264] not in sealed and b"\xff\xd8\xff" not in sealed
    public = load_signing_public_key(keys_dir_of(data))
    snap = verify_snapshot_file(sealed, public)
    assert (snap.device_id, snap.camera_id, snap.event_id) == ("unit-1", "cam1", event.body["id"])
    assert open_snapshot(snap, csu.private()) == jpeg  # the CSU opens it, bit for bit

    stored = read_events(root, public, device_id="unit-1")
    assert [e.body["kind"] if e.body else None for e in stored] == ["gathering", "line_crossing"]
    assert stored[0].snapshot == snp and stored[1].snapshot is None
    assert all(e.problem is None and e.snapshot_problem is None for e in stored)


def test_altered_or_missing_files_are_reported_never_hidden(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    signer = _signer(data)
    vault.record_event(_alert(signer, WALL0 + 5 * SEC, snapshot=_picture()))
    vault.record_event(_alert(signer, WALL0 + 9 * SEC, snapshot=_picture()))
    vault.record_event(_count(signer, WALL0 + 60 * SEC, {"person/forward": 3}))
    vault.close()
    root = layout.vault_dir(data)
    first, second, count = sorted(root.glob("events/cam1/*/*/*.evt"))
    # a count raised after the fact, a snapshot swapped for another event's, one deleted
    count.write_bytes(count.read_bytes().replace(b'"person/forward":3', b'"person/forward":9'))
    first.with_suffix(".snp").write_bytes(second.with_suffix(".snp").read_bytes())
    second.with_suffix(".snp").unlink()

    public = load_signing_public_key(keys_dir_of(data))
    stored = read_events(root, public)
    assert stored[0].snapshot_problem == "snapshot of another event"
    assert stored[1].snapshot_problem == "snapshot missing"
    assert stored[2].body is None and "altered" in str(stored[2].problem)

    cfg = _config(tmp_path, data, csu, unit="unit-1")
    capsys.readouterr()
    assert edgectl(["events", "--config", str(cfg), "--from", "@0", "--to", "@4000000000"]) == 1
    out = capsys.readouterr().out
    assert "DAMAGED" in out and "snapshot of another event" in out and "snapshot missing" in out
    assert "3 event(s) DAMAGED" in out
    # edgectl verify counts them as integrity problems too
    assert edgectl(["verify", "--config", str(cfg)]) == 1
    out = capsys.readouterr().out
    assert "event: cam1: snapshot missing" in out and "FAILED: 3 integrity problem(s)" in out


def _config(tmp_path: Path, data: Path, csu: Csu, *, unit: str = "unit-7") -> Path:
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[unit]\nid = "{unit}"\ndata_dir = "{data}"\n\n'
        f'[vault]\nkem = "x25519"\ncsu_public_key = "{csu.pub}"\n'
    )
    return cfg


def test_edgectl_events_lists_filters_and_sums_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    cfg = _config(tmp_path, data, csu)
    vault = Vault.from_config(config.load(cfg)[0], background=False)
    signer = _signer(data, "unit-7")
    vault.record_event(_count(signer, WALL0 + 60 * SEC, {"person/forward": 3, "car/backward": 1}))
    vault.record_event(_count(signer, WALL0 + 120 * SEC, {"person/forward": 2}))
    vault.record_event(_count(signer, WALL0 + 120 * SEC, {"person/backward": 4}, rule="gate"))
    vault.record_event(_alert(signer, WALL0 + 130 * SEC, snapshot=_picture()))
    vault.close()
    span = ["--config", str(cfg), "--from", f"@{WALL0 // SEC}", "--to", f"@{WALL0 // SEC + 600}"]

    capsys.readouterr()
    assert edgectl(["events", *span]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:6] == ["TIME", "CAMERA", "CATEGORY", "KIND", "RULE", "STATE"]
    assert len(table) == 5
    assert "car/backward=1 person/forward=3 in 60.0 s" in table[1]
    assert "persons=6 seconds=30.2 [snapshot sealed]" in table[4]

    assert edgectl(["events", *span, "--json", "--category", "alert"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(x["event"]["kind"], x["snapshot"], x["verified"]) for x in lines] == [
        ("gathering", "sealed", True)
    ]

    assert edgectl(["events", *span, "--counts", "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["counts"]
    assert [(r["line"], r["class"], r["direction"], r["count"]) for r in totals] == [
        ("gate", "person", "backward", 4),
        ("kerb", "car", "backward", 1),
        ("kerb", "person", "forward", 5),
    ]
    # the range bounds what is summed: the second interval of "kerb" ended after --to
    early = ["--from", f"@{WALL0 // SEC}", "--to", f"@{WALL0 // SEC + 100}"]
    assert edgectl(["events", "--config", str(cfg), *early, "--counts"]) == 0
    out = capsys.readouterr().out
    assert "kerb" in out and out.split()[-1] == "3" and "gate" not in out


def test_edgectl_events_counts_say_which_model_and_configuration_made_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Counts sealed by edged with the provenance of two configurations (a line changed in
    between) are kept with it and summed apart: each total says what produced it."""
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    cfg_path = _config(tmp_path, data, csu)
    edge_cfg = config.load(cfg_path)[0]
    kerb = LineRuleConfig(name="kerb", points=((0.5, 0.0), (0.5, 1.0)), interval_seconds=60)
    before = edge_cfg.model_copy(
        update={
            "analytics": edge_cfg.analytics.model_copy(
                update={"cameras": [CameraAnalyticsConfig(camera="cam1", lines=[kerb])]}
            )
        }
    )
    moved = kerb.model_copy(update={"points": ((0.4, 0.0), (0.4, 1.0))})
    after = before.model_copy(
        update={
            "analytics": before.analytics.model_copy(
                update={"cameras": [CameraAnalyticsConfig(camera="cam1", lines=[moved])]}
            )
        }
    )
    vault = Vault.from_config(edge_cfg, background=False)
    signer = _signer(data, "unit-7")
    for n, cfg in ((1, before), (2, before), (3, after)):
        draft = EventDraft(
            category="count",
            kind="line_crossing",
            rule="kerb",
            wall_ns=WALL0 + n * 60 * SEC,
            frame_index=40 * n,
            details={"counts": {"person/forward": n}, "interval_seconds": 60.0},
            interval_start_ns=WALL0 + (n - 1) * 60 * SEC,
        )
        vault.record_event(seal_draft(signer, "cam1", draft, decree.provenance(cfg, "cam1")))
    vault.close()
    span = ["--config", str(cfg_path), "--from", f"@{WALL0 // SEC}"]
    span += ["--to", f"@{WALL0 // SEC + 600}"]

    capsys.readouterr()
    assert edgectl(["events", *span, "--json", "--category", "count"]) == 0
    kept = [json.loads(x)["event"] for x in capsys.readouterr().out.splitlines()]
    assert [e["provenance"] for e in kept] == [
        decree.provenance(before, "cam1"),
        decree.provenance(before, "cam1"),
        decree.provenance(after, "cam1"),
    ]
    assert edgectl(["events", *span, "--counts", "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)["counts"]
    assert sorted((r["count"], r["provenance"]["config_sha256"]) for r in totals) == [
        (3, decree.config_version(before, "cam1")),
        (3, decree.config_version(after, "cam1")),
    ]
    assert {r["provenance"]["model_sha256"] for r in totals} == {"motion-only"}
    assert edgectl(["events", *span, "--counts"]) == 0
    table = capsys.readouterr().out
    assert decree.config_version(after, "cam1")[:12] in table and "MODEL" in table


def test_retention_removes_events_with_the_recordings_of_their_time(tmp_path: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    now = [WALL0 + 3600 * SEC]
    vault = open_vault(data, csu, retention_days=1, clock=lambda: now[0])
    signer = _signer(data)
    for n in range(10):
        vault.write(fake_segment("cam1", n))
    # events during segments 1 and 7, and a cabinet alarm of the unit
    vault.record_event(_alert(signer, WALL0 + 1 * SEG_NS + SEC // 2, snapshot=_picture()))
    vault.record_event(_alert(signer, WALL0 + 7 * SEG_NS + SEC // 2))
    vault.record_event(
        signer.sign(
            camera="unit",
            category="alert",
            kind="cabinet-door-open",
            rule="unit",
            wall_ns=WALL0 + 2 * SEG_NS,
            frame_index=-1,
            details={"message": "cabinet door opened"},
            state="raised",
        )
    )
    root = layout.vault_dir(data)
    public = load_signing_public_key(keys_dir_of(data))

    # space: the oldest segments go, and the cam1 event of their time with its snapshot
    vault.policy = RetentionPolicy(1, vault.usage().vault_bytes // 2, 0.0)
    plan = vault.purge(reason="space")
    assert 1 <= plan.cutoffs["cam1"] < 7
    kept = [(e.camera, e.wall_ns) for e in read_events(root, public)]
    assert kept == [("unit", WALL0 + 2 * SEG_NS), ("cam1", WALL0 + 7 * SEG_NS + SEC // 2)]
    assert list(root.glob("events/cam1/*/*/*.snp")) == []

    # age: a day and a second later every event is gone, the unit's alarm too
    now[0] = WALL0 + 20 * SEG_NS + 86400 * SEC + SEC
    vault.purge()
    assert read_events(root, public) == []
    assert [p for p in (root / "events").rglob("*") if p.is_file()] == []
    vault.close()


def test_an_export_carries_the_events_and_the_csu_opens_their_snapshots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    cfg = _config(tmp_path, data, csu)
    vault = Vault.from_config(config.load(cfg)[0], background=False)
    segments = encoded_segments(seconds=3.0)
    for seg in segments:
        vault.write(seg)
    signer = _signer(data, "unit-7")
    jpeg = _picture()
    t0, t1 = segments[0].start_wall_ns, segments[-1].end_wall_ns
    inside = _alert(signer, t0 + SEC, snapshot=jpeg)
    vault.record_event(inside)
    vault.record_event(_count(signer, t0 + 2 * SEC, {"person/forward": 1}))
    vault.record_event(_alert(signer, t1 + 3600 * SEC, snapshot=_picture()))  # outside
    vault.close()

    out = tmp_path / "bundle"
    span = ["--from", f"@{t0 / SEC}", "--to", f"@{t1 / SEC}"]
    capsys.readouterr()
    code = edgectl(["export", "--config", str(cfg), *span, "--case", "PV-1", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "events: 2 signed event(s), 1 sealed snapshot(s)" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert [(e["kind"], "snapshot" in e) for e in manifest["events"]] == [
        ("gathering", True),
        ("line_crossing", False),
    ]
    public = load_signing_public_key(keys_dir_of(data))
    verified = verify_bundle(out, unit_public_key=public)
    assert verified.events[0].body["id"] == inside.body["id"]

    clip = tmp_path / "clip.mp4"
    pin = ["--unit-key", str(keys_dir_of(data) / "unit-signing.pub.pem")]
    assert edge_csu(["open", str(out), "--key", str(csu.key), "--out", str(clip), *pin]) == 0
    opened = capsys.readouterr().out
    assert "2 signed event(s) in events.jsonl, 1 snapshot(s)" in opened
    shots = tmp_path / "clip-events"
    assert (shots / f"{inside.body['id']}.jpg").read_bytes() == jpeg
    lines = (shots / "events.jsonl").read_text().splitlines()
    assert [json.loads(x)["event"]["kind"] for x in lines] == ["gathering", "line_crossing"]

    # a snapshot swapped in the bundle, even for a validly sealed one, is refused
    snp = out / manifest["events"][0]["snapshot"]["file"]
    raw = bytearray(snp.read_bytes())
    raw[-100] ^= 1
    snp.write_bytes(bytes(raw))
    assert edge_csu(["open", str(out), "--key", str(csu.key), "--out", str(clip), *pin]) == 1
    assert "REFUSED" in capsys.readouterr().out


def test_sealed_snapshot_parser_refuses_truncation_and_garbage(tmp_path: Path) -> None:
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    vault.record_event(_alert(_signer(data), WALL0, snapshot=_picture()))
    vault.close()
    raw = next(layout.vault_dir(data).glob("events/cam1/*/*/*.snp")).read_bytes()
    parse_snapshot(raw)
    from edge.errors import IntegrityError

    for bad in (raw[:-1], raw + b"\0", b"ESNX" + raw[4:], raw[:20]):
        with pytest.raises(IntegrityError):
            parse_snapshot(bad)


def test_an_analytics_alert_reaches_the_vault_with_its_masked_snapshot_sealed(
    tmp_path: Path, data_dir: Path
) -> None:
    """As edged wires it: the analytics process (real LiteRT face detector, a privacy mask)
    drafts an alert with a snapshot, the bridge signs it, the hub hands it to the vault, which
    seals the snapshot; the CSU opens a JPEG of the *masked* frame, bound to the signed event."""
    import io

    from PIL import Image

    from edge.app.alerts import AlertHub
    from edge.config import IntrusionRuleConfig

    from .test_analytics_e2e import config as e2e_config
    from .test_analytics_e2e import run_bridge, scene

    cfg = e2e_config(data_dir, masks=True)
    rules = cfg.analytics.cameras[0].model_copy(
        update={"intrusions": [IntrusionRuleConfig(name="square", min_seconds=0.5)]}
    )
    cfg = cfg.model_copy(
        update={"analytics": cfg.analytics.model_copy(update={"cameras": [rules]})}
    )
    csu = make_csu(tmp_path / "csu")
    vault = open_vault(data_dir, csu, device_id="e2e-unit")
    hub = AlertHub(EventSigner(load_signing_key(keys_dir_of(data_dir)), "e2e-unit"))
    hub.add_listener(vault.record_event)
    _bridge, events = run_bridge(cfg, scene(masked=True), mask=True)
    for event in events:  # edged: bridge listeners = [hub.publish]
        hub.publish(event)
    vault.close()

    public = load_signing_public_key(keys_dir_of(data_dir))
    stored = read_events(layout.vault_dir(data_dir), public, device_id="e2e-unit")
    alerts = [e for e in stored if e.body and e.body["category"] == "alert"]
    assert alerts and all(e.snapshot is not None and e.problem is None for e in alerts)
    body = alerts[0].body
    assert body is not None and body["kind"] == "intrusion"
    assert alerts[0].snapshot is not None
    jpeg = open_snapshot(parse_snapshot(alerts[0].snapshot.read_bytes()), csu.private())
    from edge.events import verify_snapshot

    verify_snapshot(body, jpeg)  # the signed event names exactly this picture
    with Image.open(io.BytesIO(jpeg)) as img:
        assert img.size == (480, 270)
        luma = np.asarray(img.convert("L"), dtype=np.float32)
    # The mask (top-left 12 % of the frame) is one flat colour in the snapshot, whatever moved
    # behind it; the street around it is not.
    assert luma[3:28, 3:54].std() < 3.0 and luma[100:200, 100:400].std() > 10.0


def test_an_event_the_vault_cannot_keep_is_logged_and_recording_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file where the event directory should be (a damaged or meddled-with card): the event
    is not kept, edged says so, and nothing raises into the analytics or alarm thread."""
    csu = make_csu(tmp_path / "csu")
    data = tmp_path / "data"
    vault = open_vault(data, csu)
    (layout.vault_dir(data) / "events").write_bytes(b"not a directory")
    vault.record_event(_alert(_signer(data), WALL0 + SEC, snapshot=_picture()))
    vault.write(fake_segment("cam1", 0))  # recording is unaffected
    assert [row.sequence for row in vault.find(0, 2**62)] == [0]
    vault.close()
    assert "event gathering (cam1) not kept in the vault" in caplog.text
