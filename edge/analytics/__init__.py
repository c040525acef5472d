"""Public API of :mod:`edge.analytics` (see ``__all__``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.analytics.base import Box as Box
    from edge.analytics.base import Detection as Detection
    from edge.analytics.base import Detector as Detector
    from edge.analytics.base import Track as Track
    from edge.analytics.bridge import AnalyticsBridge as AnalyticsBridge
    from edge.analytics.engine import AnalyticsEngine as AnalyticsEngine
    from edge.analytics.fire import FireRule as FireRule
    from edge.analytics.ground import homography as homography
    from edge.analytics.litert import LiteRTDetector as LiteRTDetector
    from edge.analytics.mqtt_publisher import MqttPublisher as MqttPublisher
    from edge.analytics.rules import Alert as Alert
    from edge.analytics.schedule import Schedule as Schedule
    from edge.analytics.static import AbandonedObjectRule as AbandonedObjectRule
    from edge.analytics.tamper import TamperDetector as TamperDetector
    from edge.analytics.tracker import Tracker as Tracker
    from edge.analytics.zone_rules import DensityRule as DensityRule
    from edge.analytics.zone_rules import FallenPersonRule as FallenPersonRule
    from edge.analytics.zone_rules import IntrusionRule as IntrusionRule

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "AbandonedObjectRule": "static",
    "DensityRule": "zone_rules",
    "FallenPersonRule": "zone_rules",
    "FireRule": "fire",
    "IntrusionRule": "zone_rules",
    "Schedule": "schedule",
    "homography": "ground",
    "Alert": "rules",
    "AnalyticsBridge": "bridge",
    "AnalyticsEngine": "engine",
    "Box": "base",
    "Detection": "base",
    "Detector": "base",
    "LiteRTDetector": "litert",
    "MqttPublisher": "mqtt_publisher",
    "TamperDetector": "tamper",
    "Track": "base",
    "Tracker": "tracker",
}
__all__ = [
    "AbandonedObjectRule",
    "Alert",
    "AnalyticsBridge",
    "AnalyticsEngine",
    "Box",
    "DensityRule",
    "Detection",
    "Detector",
    "FallenPersonRule",
    "FireRule",
    "IntrusionRule",
    "LiteRTDetector",
    "MqttPublisher",
    "Schedule",
    "TamperDetector",
    "Track",
    "Tracker",
    "homography",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
