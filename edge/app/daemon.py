"""``edged``: wiring and supervision of the unit's pipelines.

The main thread owns the daemon: it starts one :class:`edge.app.pipeline.CameraPipeline` per
camera, tells systemd when recording runs (``READY=1``), pets the watchdog only while every
recording thread is alive and making progress, publishes ``STATUS=``, and handles signals:

- SIGTERM / SIGINT: stop capture, finish the segment being written, exit 0;
- a recording thread that ends on its own (whatever the cause): a signed "recording-stopped"
  alarm and an audit record, then the same orderly stop and exit status 70, so that systemd
  restarts edged rather than leaving capture to drop frames unrecorded;
- SIGHUP: re-read the configuration; an invalid one is logged and the old one kept; new privacy
  masks apply from the next frame; a changed camera is restarted; changes that need a restart
  of the daemon (unit identity, data directory) are logged and not applied. All or nothing: a
  camera that cannot start with the new settings leaves every camera on the running ones, and
  the failure shows in the status (``last_reload``) and systemd's status line.

A unit without an identity (a freshly flashed image: no ``unit.id`` in the baseline nor in
the per-unit file) runs *unprovisioned*: nothing is recorded or sent, the status says so and
the control socket takes ``edgectl provision`` (``edge/app/provision.py``); once provisioned,
edged starts again under the new identity, in the same process.

Signal handlers only set flags; the work happens in the main loop.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime as dt
import functools
import hashlib
import io
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from pydantic import ValidationError

from edge import __version__, clihelp, configschema, signedconfig, slots, updates
from edge import config as config_mod
from edge.analytics.bridge import AnalyticsBridge
from edge.analytics.mqtt_publisher import MqttPublisher
from edge.app import control, datadir, metrics, provision, selftest
from edge.app.alerts import AlertHub
from edge.app.pipeline import CameraPipeline
from edge.app.process import setup_process
from edge.config import CameraConfig, EdgeConfig, PrivacyMaskConfig
from edge.errors import ConfigError, DataDirError, EdgeError
from edge.events import EventSigner, SignedEvent
from edge.framepool import MIB, FramePool
from edge.frames import Frame
from edge.health import system as system_health
from edge.health.door import DoorMonitor
from edge.health.hotplug import HotplugEvent, HotplugMonitor
from edge.identity import enrolment, evidence, revocation, unitkeys
from edge.outputs import commands
from edge.outputs.commands import CommandInbox
from edge.outputs.engine import OutputEngine
from edge.privacy.commitment import MASK_SET_ACTION, config_version
from edge.privacy.faceblur import FaceBlurrer
from edge.snapshot import (
    AnalyticsStatus,
    CertificateStatus,
    DaemonStatus,
    FleetReport,
    FrameMemoryStatus,
    ReloadOutcome,
    SignedConfigStatus,
    StatusReport,
    VaultStatus,
)
from edge.unitfile import unit_file_of
from edge.uplink import tls as uplink_tls
from edge.uplink.client import UplinkClient
from edge.uplink.dot1x.port_state import PortState
from edge.uplink.dot1x.supervisor import Dot1xAlert, Dot1xSupervisor
from edge.uplink.gate import make_gate
from edge.uplink.spool import EventSpool
from edge.vault import layout
from edge.vault.audit import AuditLog
from edge.vault.base import Outbox
from edge.vault.store import Vault
from edge.vault.verify import self_check
from edge.video.base import SegmentSink
from edge.video.mediasigning import ED25519_OID, SigningIdentity

log = logging.getLogger("edged")

#: Exit status (sysexits.h) when the data directory cannot be used or is held by another edged.
EX_CANTCREAT = 73
#: Exit status (sysexits.h) for a configuration edged cannot run: systemd shows it as
#: "configuration error".
EX_CONFIG = 78
#: Exit status (sysexits.h) when a recording thread died: systemd restarts edged.
EX_SOFTWARE = 70


def make_sink(cfg: EdgeConfig) -> SegmentSink:
    """Where recorded segments go: the sealed evidence vault (it runs retention itself)."""
    return Vault.from_config(cfg)


def _notify(message: str) -> None:
    """sd_notify through systemd-python; a no-op outside systemd (no NOTIFY_SOCKET)."""
    if not os.environ.get("NOTIFY_SOCKET"):
        return
    from systemd import daemon as sd_daemon

    sd_daemon.notify(message)


def _watchdog_interval() -> float | None:
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and int(pid) != os.getpid()):
        return None
    return int(usec) / 2e6  # pet twice per period


class Daemon:
    def __init__(self, cfg: EdgeConfig, origin: str, config_path: Path | None) -> None:
        self.cfg = cfg
        self.origin = origin
        self.config_path = config_path
        self.data_dir_override: Path | None = None
        #: Started with --demo: a reload reads the embedded demo again, never a file.
        self.demo = False
        self.started_wall = time.time()
        self.started_mono = time.monotonic()
        self.pipelines: dict[str, CameraPipeline] = {}
        #: Every raw frame of every camera, and the analytics shared memory, within one budget.
        self.frame_pool = FramePool.of_mib(cfg.memory.frame_budget_mib)
        self.sink: SegmentSink | None = None
        self.control: control.ControlServer | None = None
        #: Further checks subsystems (vault, uplink) add to ``edgectl selftest``.
        self.extra_selftests: list[selftest.Check] = []
        #: The CSU client (``uplink.enabled``); reads the vault's outbox in its own thread.
        self.uplink: UplinkClient | None = None
        #: The city's CRL as the CSU last served it (uplink), checked against every operator
        #: command and configuration signer; None before the uplink starts.
        self.city_crl: revocation.CityCrl | None = None
        #: The 802.1X supervisor, when 802.1X is enabled (its gate guards the uplink).
        self.dot1x_supervisor: Dot1xSupervisor | None = None
        #: Alarms of the unit itself and analytics events, signed, for status and listeners.
        self.alerts: AlertHub | None = None
        #: Who signs the video stream (ONVIF Media Signing): the unit key and its certificates.
        self.media_signing: SigningIdentity | None = None
        self.door: DoorMonitor | None = None
        self.analytics: dict[str, AnalyticsBridge] = {}
        self.mqtt: MqttPublisher | None = None
        self.event_spool: EventSpool | None = None
        self.hotplug: HotplugMonitor | None = None
        #: Cabinet outputs and playbooks, when the configuration names outputs.
        self.outputs: OutputEngine | None = None
        self._uplink_connected = False
        #: The data directory's lock: this process is its one writer while it holds it.
        self.data_lock: datadir.HeldLock | None = None
        self._stop = threading.Event()
        self._reload = threading.Event()
        # Set with either of the two above so the main loop acts at once rather than at its next
        # 0.2 s tick: new masks must apply from the next frame, not a dozen frames later.
        self._wake = threading.Event()
        self._reload_requested_mono: float | None = None
        #: Outcome of the latest SIGHUP (ok, at, origin, error), None before the first.
        self.last_reload: ReloadOutcome | None = None
        # The outcome of the last vault self-check of this run (None: none ran yet).
        self.vault_check: tuple[bool, str | None] | None = None
        #: No unit id yet: nothing is recorded until ``edgectl provision`` gives one.
        self.unprovisioned = not config_mod.is_provisioned(cfg)
        #: Set once ``edgectl provision`` wrote a new identity: edged starts again under it.
        self.provisioned_again = threading.Event()
        #: The city's signed configuration documents in effect (groups first, then the unit's).
        self.signed: list[signedconfig.Verified] = []
        self.signed_store = signedconfig.SignedStore(cfg.unit.data_dir)
        #: Outcome of the latest signed document offered (CSU or edgectl config apply).
        self.signed_last: ReloadOutcome | None = None
        # One configuration change at a time: SIGHUP (main thread), a signed document from the
        # CSU (uplink thread) or from edgectl (control thread). Re-entrant: applying a document
        # reloads the files under it.
        self._reload_lock = threading.RLock()
        #: The root slot this system booted from ("A", "B"; None off a unit).
        self.slot = slots.read_running_slot()

    # --- signals -----------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s: stopping after the current segment", signal.Signals(signum).name)
            self._stop.set()
            self._wake.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self._reload_requested_mono = time.monotonic()
            self._reload.set()
            self._wake.set()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def request_stop(self) -> None:
        self._stop.set()
        self._wake.set()

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        data = self.cfg.unit.data_dir
        # The lock comes first: nothing in the data directory (keys, vault, spool) and not the
        # control socket may be touched by a second instance.
        self.data_lock = datadir.lock_data_dir(data)
        self._migrate_unit_file()
        if self.unprovisioned:
            self._start_unprovisioned()
            return
        self._load_signed()
        try:
            signing_key = unitkeys.load_or_create_signing_key(unitkeys.keys_dir_of(data))
            self.alerts = AlertHub(EventSigner(signing_key, self.cfg.unit.id))
            self.media_signing = SigningIdentity(
                signing_key.sign,
                ED25519_OID,
                evidence.stream_chain(unitkeys.keys_dir_of(data), signing_key.public_key()),
                __version__,
                self.cfg.unit.id,
                "edge firmware (city video PKI)",
            )
            if self.cfg.uplink.enabled:
                # Events wait in a durable spool and go to the CSU before any video; the spool
                # listens from the start so no alarm raised before the uplink is up is lost.
                self.event_spool = EventSpool(data / "uplink" / "events")
                self.alerts.add_listener(functools.partial(_spool_event, self.event_spool))
            self.sink = make_sink(self.cfg)
        except OSError as exc:
            # A full or unwritable file system under a lock file that could still be written.
            if isinstance(exc, DataDirError):
                raise
            raise datadir.unusable(data, exc) from None
        if self.cfg.analytics.mqtt.enabled:
            self.mqtt = MqttPublisher.from_config(self.cfg)
            self.mqtt.start()
            self.alerts.add_listener(self.mqtt.publish)
        if isinstance(self.sink, Vault):
            # Events and their snapshots are evidence: sealed and retained beside the video.
            self.alerts.add_listener(self.sink.record_event)
            self.extra_selftests.append(
                ("vault", functools.partial(self._check_vault, self.sink), 30.0)
            )
        self._start_outputs()
        self._start_health()
        for cam in self.cfg.cameras:
            self._start_camera(cam)
        self._start_dot1x()
        self._start_uplink()
        self._start_control()

    def _start_outputs(self) -> None:
        if not self.cfg.outputs:
            return
        assert self.alerts is not None
        # Before the sources of events (door, cameras, analytics): no event is missed, and
        # every output is made safe before anything may drive one.
        hub = self.alerts
        engine = OutputEngine(
            self.cfg,
            self.audit,
            notify=lambda kind, details: hub.notice("output", kind, "outputs", details),
        )
        try:
            engine.start()
        except (EdgeError, OSError, ImportError) as exc:
            # Recording goes on without outputs rather than not at all.
            log.error("cabinet outputs not started, no playbook will run: %s", exc)
            return
        self.outputs = engine
        self.alerts.add_listener(engine.on_event)

    def _watch_uplink(self) -> None:
        """Tell the outputs engine when the CSU link is lost (``safe_on_uplink_loss``)."""
        if self.outputs is None or self.uplink is None:
            return
        connected = self.uplink.snapshot()["state"] in ("syncing", "streaming")
        if connected != self._uplink_connected:
            self._uplink_connected = connected
            self.outputs.uplink_state(connected)

    def _migrate_unit_file(self) -> None:
        """The per-unit file of an older schema rewritten in this release's, under the data
        directory's lock (:mod:`edge.configschema`); it was read migrated in memory already.

        Not while the update that brought this release waits for confirmation: should the
        boot loader roll back, the previous release must find its file as it left it."""
        data = self.cfg.unit.data_dir
        last = slots.last_update(data) or {}
        if last.get("result") == "installed" and updates.version_key(
            str(last.get("version", ""))
        ) == updates.version_key(__version__):
            log.info("per-unit file left in its schema until this release is confirmed")
            return
        try:
            done = configschema.migrate_unit_file(unit_file_of(data), version=__version__)
        except (EdgeError, OSError) as exc:
            # Read migrated in memory, the unit runs; the file is migrated at a later start.
            log.error("per-unit file not migrated (read migrated in memory): %s", exc)
            return
        if done is None:
            return
        log.warning(
            "per-unit file %s migrated from schema %d to %d; the previous one is kept as %s",
            done.unit_file,
            done.from_schema,
            done.to_schema,
            done.kept_as,
        )
        device = self.cfg.unit.id if not self.unprovisioned else "unprovisioned"
        try:
            key = unitkeys.load_or_create_signing_key(unitkeys.keys_dir_of(data))
            AuditLog(layout.vault_dir(data) / "audit.log", device, key).append(
                "config-schema-migrated", done.as_dict(), actor=f"edged {__version__}"
            )
        except (EdgeError, OSError) as exc:
            log.error("audit record config-schema-migrated not written: %s", exc)

    def _start_unprovisioned(self) -> None:
        """No identity: no camera, vault or uplink; the status and ``provision`` only."""
        data = self.cfg.unit.data_dir
        log.warning(
            "unit not provisioned (no unit.id in %s): recording nothing until an installer "
            "runs edgectl provision",
            self.origin,
        )
        try:
            # Made on the unit now (never in the image), so that the provisioning is signed.
            unitkeys.load_or_create_signing_key(unitkeys.keys_dir_of(data))
        except OSError as exc:
            if isinstance(exc, DataDirError):
                raise
            raise datadir.unusable(data, exc) from None
        self._start_control()

    # --- signed configuration (edge/signedconfig.py) ----------------------------------------------

    def _ca_certs(self) -> list[Any]:
        from cryptography import x509

        path = unitkeys.keys_dir_of(self.cfg.unit.data_dir) / unitkeys.CA_CHAIN_NAME
        try:
            return x509.load_pem_x509_certificates(path.read_bytes())
        except (OSError, ValueError) as exc:
            raise signedconfig.SignedConfigError(
                f"no city CA to check the signer against ({path}: {exc}): enrol the unit first"
            ) from None

    def _load_signed(self) -> None:
        """The documents applied before, checked again (at the time they were issued: a signer
        certificate that expired since must not take the masks it set away), laid over the
        files. One that no longer verifies is left out, loudly."""
        envelopes = self.signed_store.envelopes()
        if not envelopes:
            return
        layers = []
        unverified: list[dict[str, Any]] = []
        for scope, envelope in envelopes.items():
            try:
                issued = json.loads(base64.b64decode(json.loads(envelope)["document"]))["issued_at"]
                at = dt.datetime.strptime(issued, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
                layers.append(
                    signedconfig.open_envelope(
                        envelope,
                        ca_certs=self._ca_certs(),
                        unit_id=self.cfg.unit.id,
                        groups=list(self.cfg.unit.groups),
                        floors={},
                        now=at,
                        crl=self.city_crl,
                    )
                )
            except (EdgeError, ValueError, KeyError, TypeError) as exc:
                masks = signedconfig.masks_only(envelope)
                if masks is not None:
                    unverified.append(masks)
                log.error(
                    "signed configuration for %s no longer verifies (%s): %s",
                    scope,
                    "its masks stay on, nothing else of it applies" if masks else "left out",
                    exc,
                )
                self.signed_last = {
                    "ok": False,
                    "at": time.time(),
                    "origin": scope,
                    "error": str(exc),
                }
        try:
            self.cfg = self._with_signed(self.cfg, signedconfig.ordered(layers))
            self.signed = signedconfig.ordered(layers)
            if unverified:
                raw: dict[str, Any] = self.cfg.model_dump(mode="json", exclude_unset=True)
                for masks in unverified:
                    raw = signedconfig.lay_over(raw, masks)
                self.cfg = EdgeConfig.model_validate(raw)
        except (EdgeError, ValidationError) as exc:
            log.error("signed configuration left out: %s", exc)

    def _with_signed(self, cfg: EdgeConfig, layers: list[signedconfig.Verified]) -> EdgeConfig:
        """``cfg`` (from the files) with the signed documents laid over it."""
        if not layers:
            return cfg
        raw: dict[str, Any] = cfg.model_dump(mode="json", exclude_unset=True)
        for layer in layers:
            raw = signedconfig.lay_over(raw, layer.settings)
        try:
            return EdgeConfig.model_validate(raw)
        except ValidationError as exc:
            err = exc.errors(include_url=False)[0]
            where = ".".join(str(p) for p in err["loc"])
            raise signedconfig.SignedConfigError(
                f"the configuration it makes is invalid: {where}: {err['msg']}"
            ) from None

    def apply_signed(self, envelope: bytes, origin: str) -> dict[str, Any]:
        """Check a signed document and apply it like a SIGHUP; refused, nothing changes.

        Either way the audit log says so: ``config-signed-applied`` with the old and new
        digests and the signer, or ``config-signed-refused`` with the reason."""
        with self._reload_lock:
            if self.signed_store.is_applied(envelope):
                return {"applied": False, "reason": "already in effect"}
            old_digest = signedconfig.config_digest(self.cfg)
            try:
                if self.unprovisioned:
                    raise signedconfig.SignedConfigError(
                        "the unit is not provisioned: no identity to check the scope against"
                    )
                verified = signedconfig.open_envelope(
                    envelope,
                    ca_certs=self._ca_certs(),
                    unit_id=self.cfg.unit.id,
                    groups=list(self.cfg.unit.groups),
                    floors=self.signed_store.floors(),
                    now=dt.datetime.now(dt.UTC),
                    crl=self.city_crl,
                )
                layers = [s for s in self.signed if s.scope != verified.scope] + [verified]
                layers = signedconfig.ordered(layers)
                what = f"{verified.scope.key} version {verified.version} by {verified.signer}"
                if not self._apply_files(layers, allow_shrink=True, origin=f"signed {what}"):
                    last = self.last_reload
                    error = last["error"] if last is not None else None
                    raise signedconfig.SignedConfigError(error or "not applied")
            except signedconfig.SignedConfigError as exc:
                self._signed_refused(envelope, str(exc), origin)
                raise
            self.signed_store.save(verified)
            self.signed = layers
            details = {
                "scope": verified.scope.key,
                "version": verified.version,
                "issued_at": verified.issued_at,
                "signer": verified.signer,
                "old_digest": old_digest,
                "new_digest": signedconfig.config_digest(self.cfg),
                "document_sha256": hashlib.sha256(envelope).hexdigest(),
                "from": origin,
            }
            self.audit("config-signed-applied", details, actor=verified.signer)
            self.signed_last = {"ok": True, "at": time.time(), "origin": what, "error": None}
            log.info("signed configuration %s applied (from %s)", what, origin)
            return {"applied": True, **details}

    def _signed_refused(self, envelope: bytes, reason: str, origin: str) -> None:
        claimed = signedconfig.peek_scope(envelope)
        details = {
            "reason": reason,
            "from": origin,
            "claimed_scope": claimed.key if claimed else None,
            "document_sha256": hashlib.sha256(envelope).hexdigest(),
        }
        log.error("signed configuration refused (from %s): %s", origin, reason)
        self.audit("config-signed-refused", details)
        self.signed_last = {"ok": False, "at": time.time(), "origin": origin, "error": reason}

    def _apply_config(self, caller: control.Caller, params: dict[str, Any]) -> dict[str, Any]:
        """``edgectl config apply FILE``: a document brought by hand, checked like the CSU's."""
        envelope = params.get("envelope")
        if not isinstance(envelope, str):
            raise signedconfig.SignedConfigError("give the signed document's text")
        return self.apply_signed(envelope.encode(), f"edgectl ({caller.describe()})")

    def _crl_from_csu(self, data: bytes) -> None:
        """Keep the CRL the CSU serves when the city's CA signed it and it is newer (uplink
        thread); a refusal is logged and audited, the CRL in force stays."""
        assert self.city_crl is not None
        try:
            taken = self.city_crl.offer(data, dt.datetime.now(dt.UTC))
        except (EdgeError, OSError) as exc:  # OSError: not written (full disk): not in force
            log.warning("city CRL from the CSU refused: %s", exc)
            self.audit(
                "crl-refused", {"reason": str(exc), "sha256": hashlib.sha256(data).hexdigest()}
            )
            return
        if taken is not None:
            log.info("city CRL updated: %s", taken)
            self.audit("crl-updated", {"crl": taken, "sha256": hashlib.sha256(data).hexdigest()})

    def _config_from_csu(self, envelope: bytes) -> None:
        with contextlib.suppress(EdgeError):  # logged and audited; the uplink goes on
            self.apply_signed(envelope, "CSU")

    def fleet_report(self) -> FleetReport:
        """For the CSU's fleet view (uplink thread): version, slot, update, configuration."""
        return {
            "version": __version__,
            "slot": self.slot,
            "last_update": slots.last_update(self.cfg.unit.data_dir),
            "config_digest": signedconfig.config_digest(self.cfg),
            "config_documents": {s.scope.key: s.version for s in self.signed},
            "groups": list(self.cfg.unit.groups),
            "config_refused": None
            if self.signed_last is None or self.signed_last["ok"]
            else self.signed_last["error"],
        }

    def _signed_status(self) -> SignedConfigStatus | None:
        if self.unprovisioned:
            return None
        return {
            "documents": [
                {
                    "scope": s.scope.key,
                    "version": s.version,
                    "signer": s.signer,
                    "issued_at": s.issued_at,
                }
                for s in self.signed
            ],
            "digest": signedconfig.config_digest(self.cfg),
            "last": self.signed_last,
        }

    def _provision(self, caller: control.Caller, params: dict[str, Any]) -> dict[str, Any]:
        """``edgectl provision`` (installer role): see :mod:`edge.app.provision`."""
        requested = params.get("unit_id")
        try:
            request = provision.ProvisionRequest.from_params(params)
            done = provision.provision(
                request,
                running=self.cfg,
                baseline=self.config_path or config_mod.DEFAULT_CONFIG_PATH,
            )
        except EdgeError as exc:
            self._audit_provisioning(
                "provision-refused",
                {"unit_id": str(requested), "reason": str(exc)},
                caller,
                self.cfg.unit.id if not self.unprovisioned else "unprovisioned",
            )
            raise
        details = done.as_dict() | {"site": request.site, "cameras": _camera_ids(request)}
        self._audit_provisioning("provisioned", details, caller, done.unit_id)
        _notify(f"STATUS=provisioned as {done.unit_id}: starting again under that identity")
        self.provisioned_again.set()
        self.request_stop()
        return details

    def _audit_provisioning(
        self,
        action: str,
        details: dict[str, Any],
        caller: control.Caller,
        device: str,
        *,
        create_key: bool = True,
    ) -> None:
        """Written to the unit's signed audit log whether or not a vault is open yet.

        ``create_key``: make the signing key when missing (provisioning signs with it); not
        for other calls, whose record must not hide a key that disappeared."""
        actor = caller.describe()
        details = details | {"pid": caller.pid}
        if isinstance(self.sink, Vault):
            self.audit(action, details, actor)
            return
        data = self.cfg.unit.data_dir
        try:
            keys = unitkeys.keys_dir_of(data)
            if create_key:
                key = unitkeys.load_or_create_signing_key(keys)
            else:
                key = unitkeys.load_signing_key(keys)
            AuditLog(layout.vault_dir(data) / "audit.log", device, key).append(
                action, details, actor=actor
            )
        except (EdgeError, OSError) as exc:
            log.error("audit record %s by %s not written: %s", action, actor, exc)

    def _watch_dot1x(self) -> None:
        sup = self.dot1x_supervisor
        if sup is not None and self.alerts is not None and sup.state is PortState.AUTHENTICATED:
            self.alerts.clear_alert("dot1x-port-blocked", "unit", "802.1X authenticated again")

    def _start_health(self) -> None:
        """Cabinet door switch (when wired) and camera/storage hot-plug."""
        hub = self.alerts
        assert hub is not None
        if self.cfg.control.door:

            def on_door(is_open: bool) -> None:
                if is_open:
                    hub.raise_alert("cabinet-door-open", "unit", "cabinet door opened")
                else:
                    hub.clear_alert("cabinet-door-open", "unit", "cabinet door closed")

            self.door = DoorMonitor(self.cfg.control.door, on_door)
            self.door.start()
        self.hotplug = HotplugMonitor(self._on_hotplug)
        self.hotplug.start()

    def _on_hotplug(self, event: HotplugEvent) -> None:
        hub = self.alerts
        assert hub is not None
        if event.kind == "camera":
            cams = [c for c in self.cfg.cameras if c.source == f"v4l2:{event.devnode}"]
            for cam in cams:
                if event.action == "remove":
                    hub.raise_alert("camera-unplugged", cam.id, f"{event.description} unplugged")
                else:
                    hub.clear_alert("camera-unplugged", cam.id, f"{event.description} plugged in")
        elif event.kind == "storage" and event.action == "remove":
            hub.raise_alert("storage-removed", "unit", f"{event.description} removed")

    def _watch_cameras(self) -> None:
        """Raise "camera-lost" when a camera gives no frame for 5 s; clear it when frames return."""
        hub = self.alerts
        if hub is None:
            return
        now = time.monotonic()
        for cam_id, pipeline in self.pipelines.items():
            last = pipeline.last_frame_mono
            silent = now - (last if last is not None else pipeline.started_mono)
            if silent > 5.0:
                state = pipeline.capture_state()
                hub.raise_alert("camera-lost", cam_id, f"no frame for {silent:.0f} s ({state})")
            elif last is not None:
                hub.clear_alert("camera-lost", cam_id, "frames are flowing again")

    def _start_dot1x(self) -> None:
        if not self.cfg.dot1x.enabled:
            return
        hub = self.alerts
        assert hub is not None

        def on_alert(alert: Dot1xAlert) -> None:
            hub.raise_alert("dot1x-port-blocked", "unit", f"802.1X {alert.state}: {alert.reason}")

        try:
            self.dot1x_supervisor = Dot1xSupervisor.from_config(self.cfg, on_alert=on_alert)
        except EdgeError as exc:
            # The uplink stays closed (make_gate refuses 802.1X without a supervisor).
            log.error("802.1X supervision not started, the uplink stays closed: %s", exc)
            return
        self.dot1x_supervisor.start()

    def _start_uplink(self) -> None:
        if not self.cfg.uplink.enabled:
            return
        outbox: object = self.sink  # the vault is both the sink and the outbox
        if not isinstance(outbox, Outbox):
            log.error("uplink enabled but recordings are not sealed in the vault: nothing to send")
            return
        try:
            # make_gate refuses 802.1X without its supervisor: never a fallback to "open".
            gate = make_gate(self.cfg, self.dot1x_supervisor)
        except EdgeError as exc:
            log.error("uplink not started: %s", exc)
            return
        assert self.event_spool is not None
        ca_file, _, _ = uplink_tls.key_paths(self.cfg)
        ca_certs = commands.load_ca_certs(ca_file)
        self.city_crl = revocation.CityCrl(revocation.path_in(self.cfg.unit.data_dir), ca_certs)
        if self.city_crl.damaged is not None:
            self.audit("crl-damaged", {"reason": self.city_crl.damaged})
            log.error("city CRL kept on disk not loaded: %s", self.city_crl.damaged)
        inbox = None
        if self.outputs is not None:
            # Commands from the CSU come back over this same connection: no listener here.
            inbox = CommandInbox(self.cfg, self.outputs, self.audit, ca_certs, crl=self.city_crl)
        self.uplink = UplinkClient(
            self.cfg,
            outbox,
            gate,
            events=self.event_spool,
            commands=inbox.handle if inbox is not None else None,
            on_config=self._config_from_csu,
            on_crl=self._crl_from_csu,
            fleet_report=self.fleet_report,
        )
        self.extra_selftests.append(("csu", selftest.csu_check(self.cfg, gate), 20.0))
        self.uplink.start()

    def _start_control(self) -> None:
        ctl = self.cfg.control
        methods = {
            "status": control.Method(control.Role.MAINT, lambda _c, _p: self.snapshot()),
            "preview": control.Method(control.Role.INSTALL, self._preview, audited=True),
            "selftest": control.Method(control.Role.MAINT, self._selftest, audited=True),
            # Audited by the method itself: done or refused, with what was decided.
            "provision": control.Method(control.Role.INSTALL, self._provision),
            "apply-config": control.Method(control.Role.INSTALL, self._apply_config),
        }
        if self.unprovisioned:
            # The self-test too: an update installed before provisioning is confirmed by it.
            kept = ("status", "provision", "selftest")
            methods = {k: v for k, v in methods.items() if k in kept}
        try:
            self.control = control.ControlServer(
                ctl.socket,
                methods,
                maint_group=ctl.maint_group,
                install_group=ctl.install_group,
                audit=self._audit,
            )
        except OSError as exc:
            log.error(
                "control socket %s unavailable, edgectl cannot reach edged: %s", ctl.socket, exc
            )
            return
        self.control.start()

    def _audit(self, caller: control.Caller, method: str, params: dict[str, Any]) -> None:
        """Privileged control calls go to the vault's signed audit log (who, what, when)."""
        if self.unprovisioned:  # no vault open: the log is written as provisioning writes it
            action, details = f"control:{method}", {"params": params}
            self._audit_provisioning(action, details, caller, "unprovisioned", create_key=False)
            return
        self.audit(f"control:{method}", {"params": params, "pid": caller.pid}, caller.describe())

    def audit(self, action: str, details: dict[str, Any], actor: str = "edged") -> None:
        log_ = getattr(self.sink, "audit", None)
        if log_ is None:
            log.warning("audit (no vault): %s by %s: %s", action, actor, json.dumps(details))
            return
        try:
            log_.append(action, details, actor=actor)
        except (EdgeError, OSError) as exc:
            log.error("audit record %s by %s not written: %s", action, actor, exc)

    def _selftest(self, _caller: control.Caller, _params: dict[str, Any]) -> dict[str, Any]:
        data = self.cfg.unit.data_dir
        checks: list[selftest.Check] = [("storage", selftest.storage_check(data), 10.0)]
        if self.unprovisioned:
            # What an unprovisioned unit has: its data partition and the key it signs with.
            keys = unitkeys.keys_dir_of(data)
            checks.append(("signing key", selftest.signing_key_check(keys), 10.0))
        for cam_id, pipeline in self.pipelines.items():
            latest = functools.partial(_last_frame, pipeline)
            frame_check = selftest.frame_check(latest, pipeline.cam.width, pipeline.cam.height)
            checks.append((f"camera {cam_id}", frame_check, 5.0))
            checks.append((f"encoder {cam_id}", selftest.encoder_check(pipeline.cam), 20.0))
        checks.extend(self.extra_selftests)
        return {"checks": selftest.as_dicts(selftest.run_checks(checks))}

    def _preview(self, _caller: control.Caller, params: dict[str, Any]) -> dict[str, Any]:
        """The latest *masked* frame of a camera as PNG with mask outlines (installers only).

        ``params["masks"]`` may carry candidate masks the installer is drawing: they are applied
        on top of the running ones (the frame here is already masked, so nothing the running
        masks hide can ever be revealed) and their outlines drawn.
        """
        from edge.privacy.masker import PrivacyMasker
        from edge.privacy.preview import render_preview

        cam_id = params.get("camera") or next(iter(self.pipelines))
        pipeline = self.pipelines.get(str(cam_id))
        if pipeline is None:
            raise EdgeError(f"no camera {cam_id!r}")
        frame = pipeline.preview_frame()  # a copy: the pool may reuse the buffer at once
        if frame is None:
            raise EdgeError(f"camera {cam_id} has delivered no frame yet")
        masks = list(pipeline.cam.privacy_masks)
        if params.get("masks") is not None:
            try:
                masks = [PrivacyMaskConfig.model_validate(m) for m in params["masks"]]
            except ValidationError as exc:
                raise ConfigError(f"candidate masks: {exc.errors()[0]['msg']}") from None
            PrivacyMasker(masks, frame.width, frame.height).apply(frame)
        image = render_preview(frame, masks)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        coverage = PrivacyMasker(masks, frame.width, frame.height).coverage
        return {
            "camera": cam_id,
            "png_base64": base64.b64encode(buf.getvalue()).decode(),
            "coverage_percent": round(100.0 * coverage, 2),
        }

    def _start_camera(self, cam: CameraConfig, cfg: EdgeConfig | None = None) -> None:
        self._launch_camera(self._prepare_camera(cam, cfg or self.cfg), cfg or self.cfg)

    def _prepare_camera(self, cam: CameraConfig, cfg: EdgeConfig) -> CameraPipeline:
        """Build (not start) a camera's pipeline: everything that can refuse a setting."""
        assert self.sink is not None
        return CameraPipeline(
            cam,
            self.sink,
            face_blur=FaceBlurrer.for_camera(cfg, cam.id),
            config_version=config_version(cfg),
            media_signing=self.media_signing,
            pool=self.frame_pool,
            budget_share=1.0 / len(cfg.cameras),
        )

    def _launch_camera(self, pipeline: CameraPipeline, cfg: EdgeConfig) -> None:
        cam = pipeline.cam
        # Signed, polygons included, before any segment commits to it (docs/PRIVACY.md).
        self.audit(MASK_SET_ACTION, pipeline.mask_set().record(config_version(cfg)))
        self.pipelines[cam.id] = pipeline
        self._start_analytics(pipeline, cfg)
        pipeline.start()

    def _start_analytics(self, pipeline: CameraPipeline, cfg: EdgeConfig) -> None:
        if cfg.analytics.enabled and self.alerts is not None:
            # Its own process, fed masked frames from the capture thread; never blocks it.
            bridge = AnalyticsBridge(
                cfg, pipeline.cam, listeners=[self.alerts.publish], mqtt=False, pool=self.frame_pool
            )
            pipeline.add_observer(bridge.offer)
            bridge.start()
            self.analytics[pipeline.cam.id] = bridge

    def _restart_analytics(self, cam_id: str, cfg: EdgeConfig) -> None:
        """New analytics settings for a camera whose pipeline goes on: its analytics process
        is replaced (a few seconds without analysis; recording never stops)."""
        pipeline = self.pipelines[cam_id]
        old = self.analytics.pop(cam_id, None)
        if old is not None:
            pipeline.remove_observer(old.offer)
            old.stop()
        self._start_analytics(pipeline, cfg)
        log.info("[%s] analytics settings changed: its analytics process restarted", cam_id)

    def _stop_camera(self, cam_id: str) -> None:
        self.pipelines.pop(cam_id).stop()
        bridge = self.analytics.pop(cam_id, None)
        if bridge is not None:
            bridge.stop()
        self.frame_pool.trim()  # its buffers back to the system; the others refill lazily

    def run(self, run_for: float | None = None) -> int:
        deadline = None if run_for is None else time.monotonic() + run_for
        try:
            self.start()
        except BaseException:
            # Stop whatever had started (threads, the analytics children) and free the locks,
            # so the process can exit with the error.
            with contextlib.suppress(Exception):
                self.shutdown()
            raise
        _notify("READY=1")
        if self.unprovisioned:
            _notify("STATUS=unprovisioned: recording nothing; run edgectl provision")
        log.info(
            "edged %s recording %d camera(s) into %s (config: %s)",
            __version__,
            len(self.pipelines),
            self.cfg.unit.data_dir,
            self.origin,
        )
        watchdog = _watchdog_interval()
        next_pet = time.monotonic()
        next_status = time.monotonic()
        next_metrics = time.monotonic()
        next_watch = time.monotonic() + 1.0
        status = 0
        while not self._stop.is_set():
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                log.info("--run-for elapsed: stopping")
                break
            if self._reload.is_set():
                self._reload.clear()
                self.reload()
            failed = {
                cam_id: p.recorder_failure
                for cam_id, p in self.pipelines.items()
                if p.recorder_failure is not None
            }
            if failed:
                self._recording_failed(failed)
                status = EX_SOFTWARE
                break
            if not self.unprovisioned and all(p.finished() for p in self.pipelines.values()):
                log.info("every source has ended: stopping")
                break
            if watchdog is not None and now >= next_pet:
                if all(p.alive() or p.finished() for p in self.pipelines.values()):
                    _notify("WATCHDOG=1")
                else:
                    log.error("a recording thread is stuck or dead: not petting the watchdog")
                next_pet = now + watchdog
            if now >= next_watch:
                self._watch_cameras()
                self._watch_dot1x()
                self._watch_uplink()
                next_watch = now + 1.0
            if now >= next_status:
                _notify("STATUS=" + self.status_line())
                next_status = now + 5.0
            if self.cfg.control.metrics_file is not None and now >= next_metrics:
                self._write_metrics(self.cfg.control.metrics_file)
                next_metrics = now + self.cfg.control.metrics_interval_s
            self._wake.wait(0.2)
            self._wake.clear()
        return self.shutdown() or status

    def _recording_failed(self, failed: dict[str, str]) -> None:
        """A recording thread ended on its own: say so, signed and audited, before exiting."""
        for cam_id, reason in failed.items():
            log.error("[%s] recording stopped: %s; exiting to be restarted", cam_id, reason)
            if self.alerts is not None:
                self.alerts.raise_alert(
                    "recording-stopped", cam_id, f"recording stopped, edged restarts: {reason}"
                )
            self.audit("recording-stopped", {"camera": cam_id, "reason": reason})

    def shutdown(self) -> int:
        _notify("STOPPING=1")
        if self.control is not None:
            self.control.close()
        if self.outputs is not None:
            self.outputs.stop()  # first: every output safe (and audited) without waiting
        if self.dot1x_supervisor is not None:
            self.dot1x_supervisor.stop()
        if self.door is not None:
            self.door.stop()
        if self.hotplug is not None:
            self.hotplug.stop()
        for pipeline in self.pipelines.values():
            pipeline.stop()
        for bridge in self.analytics.values():
            bridge.stop()
        if self.mqtt is not None:
            self.mqtt.stop()
        if self.uplink is not None:
            self.uplink.stop()  # before the vault closes: it reads the outbox
        if self.sink is not None:
            self.sink.close()
        if self.data_lock is not None:
            self.data_lock.release()  # last: the vault is closed
            self.data_lock = None
        total = sum(p.segments_written for p in self.pipelines.values())
        log.info("stopped: %d segment(s) written", total)
        return 0

    # --- reload ------------------------------------------------------------------------------

    def reload(self) -> bool:
        """SIGHUP: the files again, under the signed documents in effect; a change that would
        uncover any masked pixel is refused (it takes a document signed by the city)."""
        with self._reload_lock:
            return self._apply_files(self.signed, allow_shrink=False)

    def _apply_files(
        self,
        layers: list[signedconfig.Verified],
        *,
        allow_shrink: bool,
        origin: str | None = None,
    ) -> bool:
        """Apply a new configuration; keep the old one if the new one is invalid.

        All or nothing: every new or changed camera's pipeline is built before any running
        one is stopped, so a setting refused at that point (a face model that does not load)
        leaves the unit recording as before. Should starting a rebuilt pipeline still fail,
        the cameras touched so far go back to their running settings. The outcome is logged,
        audited, shown in the status (``last_reload``) and returned.
        """
        try:
            new, files = config_mod.load(
                self.config_path, demo=self.demo, data_dir=self.data_dir_override
            )
            origin = origin or files
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the running one: %s", exc)
            self._reload_outcome(False, str(exc), str(self.config_path or self.origin))
            return False
        if self.data_dir_override is not None:
            new = config_mod.with_data_dir(new, self.data_dir_override)
        if self.unprovisioned:
            # An identity written by hand: start again under it, as after edgectl provision.
            if config_mod.is_provisioned(new):
                log.info("configuration names unit %s now: starting again", new.unit.id)
                self.provisioned_again.set()
                self.request_stop()
            self._reload_outcome(True, None, origin)
            return True
        if new.unit != self.cfg.unit:
            log.warning(
                "unit identity or data directory changed in %s: restart edged to apply", origin
            )
            new = new.model_copy(update={"unit": self.cfg.unit})
        fixed = ("outputs", "playbooks", "outputs_heartbeat_s")
        if any(getattr(new, k) != getattr(self.cfg, k) for k in fixed):
            # An output never changes meaning under a running action or its guard.
            log.warning(
                "cabinet outputs or playbooks changed in %s: restart edged to apply", origin
            )
            new = new.model_copy(update={k: getattr(self.cfg, k) for k in fixed})
        try:
            new = self._with_signed(new, layers)
        except EdgeError as exc:
            log.error("configuration not reloaded, keeping the running one: %s", exc)
            self._reload_outcome(False, str(exc), origin)
            return False
        shrunk = [] if allow_shrink else signedconfig.mask_shrinkage(self.cfg, new)
        if shrunk:
            error = (
                f"removing or shrinking a privacy mask ({', '.join(shrunk)}) needs a "
                "configuration document signed by the city: the masks stay as they are"
            )
            log.error("configuration not reloaded, keeping the running one: %s", error)
            self._reload_outcome(False, error, origin)
            return False
        old_cams = {c.id: c for c in self.cfg.cameras}
        new_cams = {c.id: c for c in new.cameras}
        restart = [
            cam
            for cam_id, cam in new_cams.items()
            if cam_id not in old_cams
            or _without_masks(old_cams[cam_id]) != _without_masks(cam)
            or _face_blur_settings(self.cfg, cam_id) != _face_blur_settings(new, cam_id)
        ]
        try:
            prepared = [self._prepare_camera(cam, new) for cam in restart]
        except Exception as exc:  # noqa: BLE001 - any refusal keeps the running configuration
            log.error("configuration not reloaded, keeping the running one: %s", exc)
            self._reload_outcome(False, f"{type(exc).__name__}: {exc}", origin)
            return False
        touched: list[str] = []
        try:
            for cam_id in old_cams.keys() - new_cams.keys():
                log.info("[%s] camera removed from the configuration: stopping it", cam_id)
                touched.append(cam_id)
                self._stop_camera(cam_id)
            for pipeline in prepared:
                cam_id = pipeline.cam.id
                if cam_id in self.pipelines:
                    log.info("[%s] camera settings changed: restarting its pipeline", cam_id)
                    self._stop_camera(cam_id)
                else:
                    log.info("[%s] camera added to the configuration: starting it", cam_id)
                touched.append(cam_id)
                self._launch_camera(pipeline, new)
        except Exception as exc:  # put the running cameras back, then report
            log.exception("configuration not reloaded: starting the new pipelines failed")
            self._restore_cameras(touched, old_cams)
            self._reload_outcome(False, f"{type(exc).__name__}: {exc}", origin)
            return False
        version = config_version(new)
        for cam_id in new_cams.keys() - set(touched):
            if _analytics_settings(self.cfg, cam_id) != _analytics_settings(new, cam_id):
                try:
                    self._restart_analytics(cam_id, new)
                except Exception:  # recording goes on; the status shows analytics is down
                    log.exception("[%s] analytics could not restart with its new settings", cam_id)
        for cam_id, cam in new_cams.items():
            old = old_cams.get(cam_id)
            if old is None or cam_id in touched:
                continue
            if old.privacy_masks == cam.privacy_masks:
                self.pipelines[cam_id].set_config_version(version)
            else:
                pipeline = self.pipelines[cam_id]
                # Masks first, the record a few ms later: hiding pixels waits for nothing. A
                # crash in between leaves segments committing to a set without its record,
                # which verification reports (never proves more than it holds).
                pipeline.set_masks(cam.privacy_masks, version)
                self.audit(MASK_SET_ACTION, pipeline.mask_set().record(version))
                if self._reload_requested_mono is not None:
                    log.info(
                        "[%s] new privacy masks apply from the next frame, %.0f ms after SIGHUP",
                        cam_id,
                        1000.0 * (time.monotonic() - self._reload_requested_mono),
                    )
                self.audit(
                    "masks-changed",
                    {"camera": cam_id, "masks": [m.name for m in cam.privacy_masks]},
                )
        logging.getLogger().setLevel(new.logging.level.upper())
        if isinstance(self.sink, Vault) and new.vault != self.cfg.vault:
            self.sink.apply_config(new.vault)  # retention changes apply at once
        # Frames beyond a smaller budget are refused from now on; queue lengths follow when a
        # camera's pipeline next starts.
        self.frame_pool.set_budget(new.memory.frame_budget_mib * MIB)
        changed = sorted(
            k for k in type(new).model_fields if getattr(new, k) != getattr(self.cfg, k)
        )
        self.cfg = new
        self.audit(
            "config-reloaded",
            {"origin": origin, "sections_changed": changed, "config_version": version.hex()},
        )
        log.info("configuration reloaded from %s", origin)
        self._reload_outcome(True, None, origin)
        return True

    def _restore_cameras(self, touched: list[str], old_cams: dict[str, CameraConfig]) -> None:
        """After a failed reload: the touched cameras run their previous settings again."""
        for cam_id in touched:
            if cam_id in self.pipelines:
                self._stop_camera(cam_id)
            if cam_id in old_cams:
                try:
                    self._start_camera(old_cams[cam_id])
                except Exception:  # the other cameras must still be restored
                    log.exception("[%s] could not restart with its previous settings", cam_id)

    def _reload_outcome(self, ok: bool, error: str | None, origin: str) -> None:
        self.last_reload = {"ok": ok, "at": time.time(), "origin": origin, "error": error}
        if not ok:
            self.audit("config-reload-failed", {"origin": origin, "error": error})
            _notify(f"STATUS=configuration reload failed, running the previous one: {error}")

    # --- diagnostics -------------------------------------------------------------------------

    def _write_metrics(self, path: Path) -> None:
        status: StatusReport = {
            "daemon": self.snapshot(),
            "system": system_health.snapshot(self.cfg.unit.data_dir),
        }
        try:
            metrics.write_textfile(path, status)
        except OSError as exc:
            log.warning("cannot write metrics to %s: %s", path, exc)

    def status_line(self) -> str:
        if self.unprovisioned:
            return "unprovisioned: recording nothing; run edgectl provision"
        parts = []
        for cam_id, p in self.pipelines.items():
            parts.append(
                f"{cam_id}: {p.frames_in} frames, {p.frames_dropped} dropped, "
                f"{p.segments_written} segments"
            )
        if self.last_reload is not None and not self.last_reload["ok"]:
            parts.append(f"configuration reload failed: {self.last_reload['error']}")
        return "; ".join(parts)

    def _certificates(self) -> dict[str, CertificateStatus]:
        keys = unitkeys.keys_dir_of(self.cfg.unit.data_dir)
        days = self.cfg.dot1x.expiry_warning_days
        return {
            "tls": enrolment.read_certificate_status(
                keys / unitkeys.TLS_CERT_NAME,
                warning_days=days,
                ca_path=keys / unitkeys.CA_CHAIN_NAME,
            ),
            "evidence": enrolment.signing_certificate_status(keys, warning_days=days),
        }

    def _check_vault(self, vault: Vault) -> str:
        """The vault self-check, its verdict kept for the status (diagnostics' chain finding)."""
        try:
            summary = self_check(vault)
        except EdgeError as exc:
            self.vault_check = (False, str(exc))
            raise
        self.vault_check = (True, None)
        return summary

    def _vault_status(self) -> VaultStatus | None:
        if not isinstance(self.sink, Vault):
            return None
        checked = self.vault_check
        return {
            "bytes_used": self.sink.usage().vault_bytes,
            "retention_days": self.sink.policy.retention_days,
            "chain_ok": None if checked is None else checked[0],
            "chain_error": None if checked is None else checked[1],
        }

    def snapshot(self) -> DaemonStatus:
        return {
            "unit_id": "" if self.unprovisioned else self.cfg.unit.id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self.started_mono, 1),
            "config_origin": self.origin,
            "data_dir": str(self.cfg.unit.data_dir),
            "cameras": [p.snapshot() for p in self.pipelines.values()],
            "vault": self._vault_status(),
            "uplink": self.uplink.snapshot() if self.uplink is not None else None,
            "dot1x": self.dot1x_supervisor.snapshot()
            if self.dot1x_supervisor is not None
            else None,
            "analytics": _analytics_summary([b.stats() for b in self.analytics.values()]),
            "certificates": self._certificates(),
            "alerts": self.alerts.snapshot() if self.alerts is not None else None,
            "tamper": {"active": self.alerts.active("tamper")} if self.alerts is not None else None,
            "door": self.door.snapshot() if self.door is not None else None,
            "last_reload": self.last_reload,
            "outputs": self.outputs.snapshot() if self.outputs is not None else None,
            "provisioned": not self.unprovisioned,
            "signed_config": self._signed_status(),
            "city_crl": (
                status.as_dict()
                if self.city_crl is not None
                and (status := self.city_crl.status(dt.datetime.now(dt.UTC))) is not None
                else None
            ),
            "last_update": slots.last_update(self.cfg.unit.data_dir),
            "frame_memory": self._frame_memory(),
        }

    def _frame_memory(self) -> FrameMemoryStatus:
        pool = self.frame_pool.stats()
        return {
            "budget_bytes": pool.budget,
            "reserved_bytes": pool.reserved,
            "allocated_bytes": pool.allocated,
            "in_use_bytes": pool.in_use,
            "peak_bytes": pool.peak_allocated,
            "refused": pool.refused,
        }


def _analytics_summary(stats: list[dict[str, Any]]) -> AnalyticsStatus | None:
    """The figures of every camera's analytics process, summed for the status screen."""
    if not stats:
        return None
    return {
        "alive": all(s["running"] for s in stats),
        "mode": "/".join(sorted({str(s.get("mode", "?")) for s in stats})),
        "fps": sum(s["fps"] for s in stats),
        "inference_ms": max(s["inference_ms"] for s in stats),
        "drops": sum(s["dropped_busy"] + s["dropped_late"] for s in stats),
        "recent_alerts": [a for s in stats for a in s["recent_alerts"]][-10:],
        "cameras": stats,
    }


def _camera_ids(request: provision.ProvisionRequest) -> list[str]:
    return [str(c.get("id", "cam1")) for c in request.cameras]


def _spool_event(spool: EventSpool, event: SignedEvent) -> None:
    try:
        spool.put(event.wire())
    except (OSError, EdgeError) as exc:
        log.error("event %s not queued for the CSU: %s", event.kind, exc)


def _last_frame(pipeline: CameraPipeline) -> Frame | None:
    return pipeline.preview_frame()


def _face_blur_settings(cfg: EdgeConfig, cam_id: str) -> tuple[object, ...]:
    """What the pipeline's face blurrer is built from: a change restarts the camera."""
    an = cfg.analytics
    if not an.for_camera(cam_id).face_blur:
        return ()
    return (an.face_model_path, an.face_model_sha256)


def _analytics_settings(cfg: EdgeConfig, cam_id: str) -> tuple[object, ...]:
    """What a camera's analytics process is built from: the analytics section less the other
    cameras' rules, and this camera's rules. A change restarts that process only."""
    an = cfg.analytics
    return (an.model_copy(update={"cameras": []}), an.for_camera(cam_id))


def _without_masks(cam: CameraConfig) -> CameraConfig:
    return cam.model_copy(update={"privacy_masks": []})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edged",
        description="Video-protection edge daemon: masked capture and recording. Run by "
        "systemd (edged.service): SIGHUP re-reads the configuration (an invalid one is logged "
        "and the running one kept), SIGTERM finishes the segment being written and stops. A "
        "second edged on the same data directory is refused (exit 73).",
        epilog=clihelp.examples(
            ("systemctl reload edged", "re-read /etc/edge/edge.toml (check it first)"),
            (
                "edged --config demo.toml --data-dir /tmp/edge --run-for 30",
                "record for 30 s by hand, e.g. to try a configuration",
            ),
        ),
        formatter_class=clihelp.HelpFormatter,
    )
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="configuration file (default /etc/edge/edge.toml)",
    )
    parser.add_argument(
        "--demo",
        action="store_true",
        help="run the embedded demo configuration (never on a real unit: it can read itself)",
    )
    parser.add_argument("--data-dir", type=Path, default=None, help="override unit.data_dir")
    parser.add_argument(
        "--run-for", type=float, default=None, metavar="SECONDS", help="stop after SECONDS"
    )
    parser.add_argument("--version", action="version", version=f"edged {__version__}")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_process("edged")
    while True:
        daemon = _configured_daemon(args)
        if isinstance(daemon, int):
            return daemon
        daemon.install_signal_handlers()
        try:
            status = daemon.run(args.run_for)
        except DataDirError as exc:
            log.error("cannot start: %s", exc)
            return EX_CANTCREAT
        except EdgeError as exc:
            log.error("fatal: %s", exc)
            return 1
        if not daemon.provisioned_again.is_set():
            return status
        # Provisioned: the same process starts again with the new identity's configuration.


def _configured_daemon(args: argparse.Namespace) -> Daemon | int:
    """The daemon for the configuration as it is now, or the exit status that refuses it."""
    try:
        cfg, origin = config_mod.load(args.config, demo=args.demo, data_dir=args.data_dir)
    except ConfigError as exc:
        log.error("cannot start: %s", exc)
        return EX_CONFIG
    if args.data_dir is not None:
        cfg = config_mod.with_data_dir(cfg, args.data_dir)
    # The checks `edgectl config check` makes, made by the same function: what it passes,
    # edged starts with; what edged would refuse, it names first.
    try:  # for the line numbers of the problems, as the check prints them
        text: str | None = (
            config_mod.DEMO_CONFIG_TOML if args.demo else Path(origin).read_text(encoding="utf-8")
        )
    except (OSError, UnicodeDecodeError):
        text = None
    problems = config_mod.startup_problems(cfg, path=origin, text=text)
    if problems:
        for problem in problems:
            log.error("cannot start: %s", problem)
        # Only the data directory wrong: the status edged has always given it (sysexits).
        data_only = all(p.key == "unit.data_dir" for p in problems)
        return EX_CANTCREAT if data_only else EX_CONFIG
    logging.getLogger().setLevel(cfg.logging.level.upper())
    daemon = Daemon(cfg, origin, args.config)
    daemon.data_dir_override = args.data_dir
    daemon.demo = args.demo
    return daemon


if __name__ == "__main__":
    sys.exit(main())
