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

Signal handlers only set flags; the work happens in the main loop.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
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

from edge import __version__, clihelp
from edge import config as config_mod
from edge.analytics.bridge import AnalyticsBridge
from edge.analytics.mqtt_publisher import MqttPublisher
from edge.app import control, datadir, metrics, selftest
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
from edge.identity import enrolment, unitkeys
from edge.privacy.faceblur import FaceBlurrer
from edge.snapshot import (
    AnalyticsStatus,
    CertificateStatus,
    DaemonStatus,
    FrameMemoryStatus,
    ReloadOutcome,
    StatusReport,
    VaultStatus,
)
from edge.uplink.client import UplinkClient
from edge.uplink.dot1x.port_state import PortState
from edge.uplink.dot1x.supervisor import Dot1xAlert, Dot1xSupervisor
from edge.uplink.gate import make_gate
from edge.uplink.spool import EventSpool
from edge.vault.base import Outbox
from edge.vault.store import Vault
from edge.vault.verify import self_check
from edge.video.base import SegmentSink

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
        #: The 802.1X supervisor, when 802.1X is enabled (its gate guards the uplink).
        self.dot1x_supervisor: Dot1xSupervisor | None = None
        #: Alarms of the unit itself and analytics events, signed, for status and listeners.
        self.alerts: AlertHub | None = None
        self.door: DoorMonitor | None = None
        self.analytics: dict[str, AnalyticsBridge] = {}
        self.mqtt: MqttPublisher | None = None
        self.event_spool: EventSpool | None = None
        self.hotplug: HotplugMonitor | None = None
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
        try:
            signing_key = unitkeys.load_or_create_signing_key(unitkeys.keys_dir_of(data))
            self.alerts = AlertHub(EventSigner(signing_key, self.cfg.unit.id))
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
            self.extra_selftests.append(
                ("vault", functools.partial(self._check_vault, self.sink), 30.0)
            )
        self._start_health()
        for cam in self.cfg.cameras:
            self._start_camera(cam)
        self._start_dot1x()
        self._start_uplink()
        self._start_control()

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
        self.uplink = UplinkClient(self.cfg, outbox, gate, events=self.event_spool)
        self.extra_selftests.append(("csu", selftest.csu_check(self.cfg, gate), 20.0))
        self.uplink.start()

    def _start_control(self) -> None:
        ctl = self.cfg.control
        methods = {
            "status": control.Method(control.Role.MAINT, lambda _c, _p: self.snapshot()),
            "preview": control.Method(control.Role.INSTALL, self._preview, audited=True),
            "selftest": control.Method(control.Role.MAINT, self._selftest, audited=True),
        }
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
        checks: list[selftest.Check] = [
            ("storage", selftest.storage_check(self.cfg.unit.data_dir), 10.0)
        ]
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
            pool=self.frame_pool,
            budget_share=1.0 / len(cfg.cameras),
        )

    def _launch_camera(self, pipeline: CameraPipeline, cfg: EdgeConfig) -> None:
        cam = pipeline.cam
        self.pipelines[cam.id] = pipeline
        if cfg.analytics.enabled and self.alerts is not None:
            # Its own process, fed masked frames from the capture thread; never blocks it.
            bridge = AnalyticsBridge(
                cfg, cam, listeners=[self.alerts.publish], mqtt=False, pool=self.frame_pool
            )
            pipeline.add_observer(bridge.offer)
            bridge.start()
            self.analytics[cam.id] = bridge
        pipeline.start()

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
            if all(p.finished() for p in self.pipelines.values()):
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
        """Apply a new configuration (SIGHUP); keep the old one if the new one is invalid.

        All or nothing: every new or changed camera's pipeline is built before any running
        one is stopped, so a setting refused at that point (a face model that does not load)
        leaves the unit recording as before. Should starting a rebuilt pipeline still fail,
        the cameras touched so far go back to their running settings. The outcome is logged,
        audited, shown in the status (``last_reload``) and returned.
        """
        try:
            new, origin = config_mod.load(self.config_path, demo=self.demo)
        except ConfigError as exc:
            log.error("configuration not reloaded, keeping the running one: %s", exc)
            self._reload_outcome(False, str(exc), str(self.config_path or self.origin))
            return False
        if self.data_dir_override is not None:
            new = config_mod.with_data_dir(new, self.data_dir_override)
        if new.unit != self.cfg.unit:
            log.warning(
                "unit identity or data directory changed in %s: restart edged to apply", origin
            )
            new = new.model_copy(update={"unit": self.cfg.unit})
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
        for cam_id, cam in new_cams.items():
            old = old_cams.get(cam_id)
            if old is not None and cam_id not in touched and old.privacy_masks != cam.privacy_masks:
                self.pipelines[cam_id].set_masks(cam.privacy_masks)
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
        self.audit("config-reloaded", {"origin": origin, "sections_changed": changed})
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
            "unit_id": self.cfg.unit.id,
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
    try:
        cfg, origin = config_mod.load(args.config, demo=args.demo)
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
    daemon.install_signal_handlers()
    try:
        return daemon.run(args.run_for)
    except DataDirError as exc:
        log.error("cannot start: %s", exc)
        return EX_CANTCREAT
    except EdgeError as exc:
        log.error("fatal: %s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
