"""Signed events, snapshots and FIWARE count payloads."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from PIL import Image

from edge.analytics.fiware import count_entities
from edge.errors import IntegrityError
from edge.events import EventSigner, jpeg_snapshot, verify_snapshot, verify_wire

KEY = ed25519.Ed25519PrivateKey.generate()


def test_event_signature_binds_body_key_and_snapshot() -> None:
    rgb = np.zeros((90, 160, 3), dtype=np.uint8)
    rgb[20:70, 40:120] = (200, 40, 40)
    jpeg = jpeg_snapshot(rgb)
    assert Image.open(io.BytesIO(jpeg)).size == (160, 90)  # PIL reads back what we wrote
    e = EventSigner(KEY, "unit-7").sign(
        camera="cam1",
        category="tamper",
        kind="covered",
        rule="tamper",
        state="raised",
        wall_ns=1_700_000_000_123_000_000,
        frame_index=42,
        details={"contrast_ratio": 0.1},
        snapshot=jpeg,
    )
    body = verify_wire(e.wire(), KEY.public_key())
    assert body["time"] == "2023-11-14T22:13:20.123Z"
    assert body["state"] == "raised" and body["snapshot"]["size"] == len(jpeg)
    verify_snapshot(body, jpeg)
    with pytest.raises(IntegrityError, match="snapshot"):
        verify_snapshot(body, jpeg + b"\0")
    other = ed25519.Ed25519PrivateKey.generate()
    with pytest.raises(IntegrityError, match="not by this unit"):
        verify_wire(e.wire(), other.public_key())
    doc = json.loads(e.wire())
    doc["event"]["frame_index"] = 43
    with pytest.raises(IntegrityError, match="altered"):
        verify_wire(json.dumps(doc).encode(), KEY.public_key())
    with pytest.raises(IntegrityError, match="not a signed event"):
        verify_wire(b"{}", KEY.public_key())


def test_fiware_count_entities() -> None:
    start = 1_700_000_000_000_000_000
    entities = count_entities(
        unit="unit-7",
        camera="cam1",
        line="kerb",
        start_wall_ns=start,
        end_wall_ns=start + 60 * 10**9,
        counts={
            ("person", "forward"): 12,
            ("car", "backward"): 30,
            ("truck", "forward"): 2,
            ("bicycle", "forward"): 0,
        },
    )
    by_type = {(e["type"], e.get("vehicleType")): e for e in entities}
    assert set(by_type) == {
        ("CrowdFlowObserved", None),
        ("TrafficFlowObserved", "car"),
        ("TrafficFlowObserved", "lorry"),
    }
    crowd = by_type[("CrowdFlowObserved", None)]
    assert crowd["peopleCount"] == 12 and crowd["direction"] == "inbound"
    assert crowd["dateObserved"] == "2023-11-14T22:13:20.000Z/2023-11-14T22:14:20.000Z"
    cars = by_type[("TrafficFlowObserved", "car")]
    assert cars["intensity"] == 30 and cars["laneDirection"] == "backward"
    assert cars["averageHeadwayTime"] == 2.0
    assert cars["id"].startswith("urn:ngsi-ld:TrafficFlowObserved:unit-7:cam1:kerb:")
    assert len({e["id"] for e in entities}) == len(entities)


def test_motion_only_counts_are_not_dropped_from_the_fiware_list() -> None:
    """Motion blobs are labelled `object`: neither a person nor a vehicle. They used to
    produce no entity at all (an empty list for every interval); they are an item flow."""
    start = 1_700_000_000_000_000_000
    entities = count_entities(
        unit="unit-7",
        camera="cam1",
        line="kerb",
        start_wall_ns=start,
        end_wall_ns=start + 60 * 10**9,
        counts={("object", "forward"): 6, ("object", "backward"): 3},
    )
    assert [(e["type"], e["laneDirection"], e["intensity"]) for e in entities] == [
        ("ItemFlowObserved", "backward", 3),
        ("ItemFlowObserved", "forward", 6),
    ]
    assert all("itemType" not in e and "vehicleType" not in e for e in entities)
    assert len({e["id"] for e in entities}) == 2
