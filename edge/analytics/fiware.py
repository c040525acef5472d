"""Count payloads shaped as FIWARE Smart Data Models.

Vehicles and cycles become ``TrafficFlowObserved`` (dataModel.Transportation), persons
``CrowdFlowObserved`` (dataModel.Transportation): one entity per line, class and direction and
interval, in NGSI-LD key-values form, ready for the city's context broker. ``laneDirection``
is "forward"/"backward" relative to the counting line; ``direction`` of crowds is
"inbound"/"outbound" (forward = inbound).

Labels that are neither (``object``: motion blobs when no detector model is configured) become
``ItemFlowObserved`` (dataModel.Transportation, the generic flow of TrafficFlowObserved and
CrowdFlowObserved merged) with ``intensity`` and ``laneDirection``; no ``itemType`` is given,
since a motion blob may be a person or a vehicle.
"""

from __future__ import annotations

from typing import Any

from edge.events import iso_time

from .base import CYCLE, PERSON, VEHICLE, category_of
from .rules import FORWARD

#: Our labels -> the ``vehicleType`` enumeration of TrafficFlowObserved.
_VEHICLE_TYPE = {
    "bicycle": "bicycle",
    "cycle": "bicycle",
    "bus": "bus",
    "car": "car",
    "truck": "lorry",
    "motorcycle": "motorcycle",
    "van": "van",
}


def _entity_id(kind: str, unit: str, camera: str, line: str, label: str, way: str, t: str) -> str:
    return f"urn:ngsi-ld:{kind}:{unit}:{camera}:{line}:{label}:{way}:{t}"


def count_entities(
    *,
    unit: str,
    camera: str,
    line: str,
    start_wall_ns: int,
    end_wall_ns: int,
    counts: dict[tuple[str, str], int],
) -> list[dict[str, Any]]:
    """Entities for one interval of one line; zero counts are omitted."""
    start, end = iso_time(start_wall_ns), iso_time(end_wall_ns)
    seconds = max((end_wall_ns - start_wall_ns) / 1e9, 1e-9)
    out: list[dict[str, Any]] = []
    for (label, way), n in sorted(counts.items()):
        if n <= 0:
            continue
        category = category_of(label)
        common = {
            "dateObserved": f"{start}/{end}",
            "dateObservedFrom": start,
            "dateObservedTo": end,
            "name": line,
            "refDevice": f"urn:ngsi-ld:Device:{unit}:{camera}",
        }
        if category == PERSON:
            out.append(
                {
                    "id": _entity_id("CrowdFlowObserved", unit, camera, line, label, way, start),
                    "type": "CrowdFlowObserved",
                    "peopleCount": n,
                    "direction": "inbound" if way == FORWARD else "outbound",
                    **common,
                }
            )
        elif category in (VEHICLE, CYCLE):
            out.append(
                {
                    "id": _entity_id("TrafficFlowObserved", unit, camera, line, label, way, start),
                    "type": "TrafficFlowObserved",
                    "intensity": n,
                    "vehicleType": _VEHICLE_TYPE.get(label.lower(), "anyVehicle"),
                    "laneDirection": way,
                    "averageHeadwayTime": round(seconds / n, 2),
                    **common,
                }
            )
        else:
            out.append(
                {
                    "id": _entity_id("ItemFlowObserved", unit, camera, line, label, way, start),
                    "type": "ItemFlowObserved",
                    "intensity": n,
                    "laneDirection": way,
                    "averageHeadwayTime": round(seconds / n, 2),
                    **common,
                }
            )
    return out
