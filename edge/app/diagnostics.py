"""What a status means: turns the daemon's and the machine's figures into findings.

Pure policy over plain data (the dict ``edgectl status --json`` prints), so every verdict, its
likely cause and the next step are unit-tested without a daemon. ``edgectl status`` shows one
line per section; ``edgectl diag`` prints each problem with its cause and what to do; the exit
code of both is the worst level (0 healthy, 1 degraded, 2 failing).

A section whose subsystem is not part of this build or not running says so (level ``n/a``); it
never shows an invented value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import cast

from edge.snapshot import (
    CameraStatus,
    DaemonStatus,
    MemoryStatus,
    StatusReport,
    StorageStatus,
    SystemStatus,
    TimeStatus,
)


class Level(IntEnum):
    OK = 0
    DEGRADED = 1
    FAILING = 2
    NA = -1

    @property
    def label(self) -> str:
        return {0: "OK", 1: "WARN", 2: "FAIL", -1: "n/a"}[self.value]


@dataclass(frozen=True)
class Finding:
    section: str
    level: Level
    summary: str
    """One line for the status screen (≤ 60 characters where possible)."""
    cause: str = ""
    """For problems: the likely cause."""
    action: str = ""
    """For problems: the next step for the technician."""


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min ago"
    return f"{seconds / 3600:.1f}h ago"


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


def camera_findings(cam: CameraStatus) -> list[Finding]:
    cid = cam.get("id", "?")
    # Read with defaults throughout: a status from JSON may come from an older edged.
    capture: Mapping[str, object] = cam.get("capture", {})
    state = str(capture.get("state", "?")).upper()
    fps_in = cam.get("fps_in", 0.0)
    age = cam.get("last_frame_age_s")
    line = (
        f"{cid} {cam.get('width')}x{cam.get('height')} {state.lower()} "
        f"{fps_in:.1f}/{cam.get('fps_configured', 0):g} fps drop {cam.get('frames_dropped', 0)} "
        f"frame {_age(age)}"
    )
    if cam.get("time_gaps"):  # kept as gaps in the recording, never closed up
        line += f" gaps {cam['time_gaps']} ({cam.get('time_gap_s', 0):.0f} s)"
    out: list[Finding] = []
    if state in ("BACKOFF", "FAILED", "ENDED", "STARTING") and (age is None or age > 5):
        reason = capture.get("reason") or "no frames"
        out.append(
            Finding(
                "camera",
                Level.FAILING,
                line,
                f"camera {cid} delivers no frames ({state.lower()}: {reason})",
                "check the camera's power and cable (or the RTSP address and credentials); "
                "capture resumes by itself once frames come back",
            )
        )
    elif age is not None and age > 5:
        out.append(
            Finding(
                "camera",
                Level.FAILING,
                line,
                f"camera {cid}: last frame {age:.0f}s ago",
                "check the camera; run `edgectl logs` for capture errors",
            )
        )
    elif cam.get("frames_dropped", 0) > 0:
        out.append(
            Finding(
                "camera",
                Level.DEGRADED,
                line,
                f"camera {cid}: {cam['frames_dropped']} frame(s) dropped by the recording path",
                "the unit is overloaded: check `edgectl status` load and temperature; lower the "
                "resolution, frame rate or analytics rate",
            )
        )
    else:
        out.append(Finding("camera", Level.OK, line))
    if not cam.get("recorder_alive", True) and cam.get("recorder_error"):
        out.append(
            Finding(
                "record",
                Level.FAILING,
                f"{cid} recording stopped",
                f"recording thread of {cid} stopped: {cam['recorder_error']}",
                "restart edged (`systemctl restart edged`); if it persists, run "
                "`edgectl selftest` and send `edgectl logs` to support",
            )
        )
    masks = cam.get("masks", 0)
    out.append(
        Finding(
            "masks",
            Level.OK,
            f"{cid}: {masks} mask(s), {cam.get('mask_coverage_percent', 0):.1f} % of the picture",
        )
    )
    return out


def recording_findings(daemon: DaemonStatus) -> list[Finding]:
    cams = daemon.get("cameras", [])
    written = sum(c.get("segments_written", 0) for c in cams)
    ages = [c.get("last_write_age_s") for c in cams]
    errors = sum(c.get("sink_errors", 0) for c in cams)
    vault = daemon.get("vault")
    newest = min((a for a in ages if a is not None), default=None)
    summary = f"{written} segments this run, last write {_age(newest)}"
    if isinstance(vault, dict):
        summary += (
            f", {_gb(vault.get('bytes_used', 0))}, {vault.get('retention_days', '?')} d retention"
        )
    out: list[Finding] = []
    stale = [c["id"] for c, a in zip(cams, ages, strict=True) if a is not None and a > 15]
    if errors:
        out.append(
            Finding(
                "record",
                Level.FAILING,
                summary,
                f"{errors} segment(s) could not be written",
                "check storage below and `edgectl logs`; run `edgectl selftest`",
            )
        )
    elif stale:
        out.append(
            Finding(
                "record",
                Level.FAILING,
                summary,
                f"no segment written for over 15 s on {', '.join(stale)}",
                "check the camera section and `edgectl logs`",
            )
        )
    else:
        out.append(Finding("record", Level.OK, summary))
    memory = daemon.get("frame_memory")
    if isinstance(memory, dict) and memory.get("refused", 0) > 0:
        budget = memory.get("budget_bytes", 0) // (1024 * 1024)
        out.append(
            Finding(
                "record",
                Level.DEGRADED,
                f"frame memory {memory.get('peak_bytes', 0) // (1024 * 1024)} of {budget} MiB",
                f"{memory['refused']} frame(s) dropped: the frame memory budget was full",
                "check that the encoder keeps up (load, temperature); if the unit has memory to "
                "spare, raise [memory] frame_budget_mib, else lower the resolution or frame rate",
            )
        )
    if isinstance(vault, dict) and vault.get("chain_ok") is False:
        out.append(
            Finding(
                "record",
                Level.FAILING,
                "recording chain does not verify",
                str(vault.get("chain_error", "integrity check failed")),
                "run `edgectl verify` for details; preserve the unit for investigation",
            )
        )
    return out


def _optional(daemon: DaemonStatus, key: str, section: str) -> Finding | None:
    value = daemon.get(key)
    if value is None:
        return Finding(section, Level.NA, f"{key} not enabled in this configuration")
    return None


def uplink_findings(daemon: DaemonStatus) -> list[Finding]:
    out: list[Finding] = []
    dot1x = daemon.get("dot1x")
    if isinstance(dot1x, dict):
        state = str(dot1x.get("state", "?")).upper()
        cert = dot1x.get("client_certificate") or {}
        line = f"802.1X {state} on {dot1x.get('interface', '?')} as {dot1x.get('identity', '?')}"
        if state in ("AUTHENTICATED", "DISABLED"):
            out.append(Finding("8021x", Level.OK, line))
        else:
            reason = dot1x.get("reason") or "not authorised"
            cause = f"uplink blocked: 802.1X {state} — {reason}"
            action = "check the switch port and the RADIUS log for this unit's identity"
            if cert.get("expired"):
                expiry = str(cert.get("not_after", "?"))[:10]
                cause = f"uplink blocked: 802.1X {state} — client certificate expired {expiry}"
                action = (
                    "run `edgectl enroll --renew` and have the CSR signed by the city's video CA"
                )
            elif cert and not cert.get("present", True):
                action = "enrol the unit: `edgectl enroll`, then `edgectl enroll --install CERT`"
            out.append(Finding("8021x", Level.FAILING, line, cause, action))
        if cert.get("expiring_soon"):
            out.append(
                Finding(
                    "8021x",
                    Level.DEGRADED,
                    f"certificate expires in {cert.get('days_left', 0):.0f} days",
                    str(cert.get("warning")),
                    "run `edgectl enroll --renew` before it expires",
                )
            )
    uplink = daemon.get("uplink")
    if not isinstance(uplink, dict):
        na = _optional(daemon, "uplink", "uplink")
        if na:
            out.append(na)
        return out
    state = str(uplink.get("state", "?")).upper()
    backlog = uplink.get("backlog_s") or 0.0
    ack = _age(uplink.get("last_ack_age_s"))
    line = f"{state} {uplink.get('csu', '')} backlog {backlog:.0f}s ack {ack}"
    if state in ("STREAMING", "SYNCING"):
        level = Level.DEGRADED if backlog > 300 else Level.OK
        out.append(
            Finding(
                "uplink",
                level,
                line,
                f"{backlog:.0f}s of recording waiting for the CSU" if level else "",
                "backfill is running; check the uplink bandwidth budget" if level else "",
            )
        )
    else:
        out.append(
            Finding(
                "uplink",
                Level.DEGRADED,
                line,
                f"CSU not reachable ({state.lower()}: {uplink.get('reason', 'unknown')}); "
                "recording continues locally",
                "check the wired link, 802.1X state and the CSU address; segments are sent "
                "when the link returns",
            )
        )
    presented = str(uplink.get("signing_certificate") or "")
    if presented.startswith("signing certificate refused"):
        out.append(
            Finding(
                "uplink",
                Level.FAILING,
                "CSU refuses the evidence certificate",
                f"the CSU {presented[len('signing certificate ') :]}: it will not accept "
                "this unit's segments",
                "check `edgectl enroll --status`, install a valid evidence certificate, then "
                "`edgectl uplink check`",
            )
        )
    return out


def enrolment_findings(daemon: DaemonStatus) -> list[Finding]:
    """The unit's two certificates: TLS/EAP client (uplink, 802.1X) and evidence signing."""
    certs = daemon.get("certificates")
    if not certs:
        return []
    out: list[Finding] = []
    for name, label in (("tls", "TLS/802.1X"), ("evidence", "evidence")):
        cert = certs.get(name) or {}
        if not cert.get("present"):
            out.append(
                Finding(
                    "enrolment",
                    Level.DEGRADED,
                    f"no {label} certificate",
                    str(cert.get("warning") or f"the unit has no {label} certificate"),
                    "enrol the unit: `edgectl enroll`, have both CSRs signed by the city's "
                    "video CA, then `edgectl enroll --install CERT...`",
                )
            )
        elif cert.get("warning"):
            level = Level.FAILING if cert.get("expired") else Level.DEGRADED
            out.append(
                Finding(
                    "enrolment",
                    level,
                    f"{label} certificate: {str(cert.get('not_after', '?'))[:10]}",
                    str(cert["warning"]),
                    "run `edgectl enroll --renew`, then `edgectl enroll --install CERT...`",
                )
            )
        else:
            out.append(
                Finding(
                    "enrolment",
                    Level.OK,
                    f"{label} certificate valid until {str(cert.get('not_after', '?'))[:10]}",
                )
            )
    return out


def analytics_findings(daemon: DaemonStatus) -> list[Finding]:
    an = daemon.get("analytics")
    if not isinstance(an, dict):
        na = _optional(daemon, "analytics", "analytics")
        return [na] if na else []
    alerts = an.get("recent_alerts") or []
    line = (
        f"{an.get('fps', 0):.1f} fps {an.get('inference_ms', 0):.0f} ms/inference "
        f"drops {an.get('drops', 0)} alerts {len(alerts)}"
    )
    if an.get("mode") == "motion-only":
        # No model: blobs count on lines as `object`; person/vehicle rules can never fire.
        line = f"motion-only: lines count `object`, zone rules off {an.get('fps', 0):.1f} fps"
    elif an.get("mode"):
        line = f"{an['mode']} {line}"
    if not an.get("alive", True):
        return [
            Finding(
                "analytics",
                Level.DEGRADED,
                line,
                "the analytics process is not running (recording is unaffected)",
                "see `edgectl logs`; edged restarts it",
            )
        ]
    cams = [c for c in an.get("cameras") or [] if isinstance(c, dict)]
    unconfined = [c for c in cams if str(c.get("sandbox", "")).startswith("not confined")]
    if unconfined:
        return [
            Finding(
                "analytics",
                Level.DEGRADED,
                line,
                f"the analytics process runs unconfined ({unconfined[0]['sandbox']}): code "
                "run through a malicious model could read the unit's key",
                "boot a kernel with Landlock enabled (`landlock` in its LSM list)",
            )
        ]
    if any(c.get("rejected_messages") for c in cams):
        return [
            Finding(
                "analytics",
                Level.DEGRADED,
                line,
                "the analytics process sent messages edged refused: its model may be hostile",
                "check the model against the city's pinned list; see `edgectl logs`",
            )
        ]
    return [Finding("analytics", Level.OK, line)]


def time_findings(system: SystemStatus) -> list[Finding]:
    t = system.get("time", cast(TimeStatus, {}))
    offset = t.get("offset_s")
    line = f"{t.get('source', '?')} " + (
        f"offset {offset * 1000:+.1f} ms " if offset is not None else ""
    )
    line += "synchronised" if t.get("synchronised") else "NOT synchronised"
    if t.get("synchronised"):
        if offset is not None and abs(offset) > 1.0:
            return [
                Finding(
                    "time",
                    Level.DEGRADED,
                    line,
                    f"clock offset {offset:+.2f}s: evidence timestamps are off",
                    "check the NTP/NTS servers (chronyc sources)",
                )
            ]
        return [Finding("time", Level.OK, line)]
    return [
        Finding(
            "time",
            Level.DEGRADED,
            line,
            f"clock not synchronised ({t.get('detail', '')}): "
            "evidence timestamps cannot be trusted",
            "check that the NTP/NTS servers are reachable through the firewall (chronyc sources)",
        )
    ]


def health_findings(system: SystemStatus) -> list[Finding]:
    out: list[Finding] = []
    soc = system.get("soc_celsius")
    mem = system.get("memory", cast(MemoryStatus, {}))
    load = system.get("load") or [0.0]
    parts = [f"SoC {soc:.1f}°C" if soc is not None else "SoC temp n/a"]
    throttling = system.get("throttling")
    if throttling:
        parts.append("throttled")
    parts.append(f"load {load[0]:.2f}")
    if mem:
        parts.append(
            f"mem {mem.get('available_bytes', 0) // 2**20}/"
            f"{mem.get('total_bytes', 0) // 2**20} MB free"
        )
    line = " ".join(parts)
    if soc is not None and soc >= 80:
        out.append(
            Finding(
                "health",
                Level.DEGRADED,
                line,
                f"SoC at {soc:.0f}°C: the unit throttles and may drop frames",
                "check the cabinet ventilation and the heat sink",
            )
        )
    elif throttling and any("now" in t for t in throttling):
        out.append(
            Finding(
                "health",
                Level.DEGRADED,
                line,
                "the unit is throttled now: " + ", ".join(throttling),
                "under-voltage: check the power supply; temperature: check ventilation",
            )
        )
    else:
        out.append(Finding("health", Level.OK, line))
    st = system.get("storage", cast(StorageStatus, {}))
    if st:
        sline = f"free {_gb(st.get('free_bytes', 0))} ({st.get('free_percent', 0):.0f} %)"
        if st.get("fs_errors"):
            out.append(
                Finding(
                    "storage",
                    Level.FAILING,
                    sline + f" errors {st['fs_errors']}",
                    f"the data file system reports {st['fs_errors']} error(s)",
                    "replace the storage medium at the next visit; export any evidence first",
                )
            )
        elif st.get("free_percent", 100) < 5:
            out.append(
                Finding(
                    "storage",
                    Level.DEGRADED,
                    sline,
                    "storage almost full: the oldest recordings are being purged early",
                    "check max_bytes/min_free_percent in edge.toml or fit larger storage",
                )
            )
        else:
            out.append(Finding("storage", Level.OK, sline))
    return out


def cabinet_findings(daemon: DaemonStatus) -> list[Finding]:
    out: list[Finding] = []
    door = daemon.get("door")
    if isinstance(door, dict):
        if door.get("open"):
            out.append(
                Finding(
                    "cabinet",
                    Level.DEGRADED,
                    "door OPEN",
                    "the cabinet door is open (alarm raised to the CSU)",
                    "close the door when the intervention is over",
                )
            )
        else:
            out.append(Finding("cabinet", Level.OK, "door closed"))
    else:
        out.append(Finding("cabinet", Level.NA, "no door switch configured"))
    tamper = daemon.get("tamper")
    if isinstance(tamper, dict) and tamper.get("active"):
        out.append(
            Finding(
                "cabinet",
                Level.FAILING,
                "tamper: " + ", ".join(tamper["active"]),
                "camera tampering detected: " + ", ".join(tamper["active"]),
                "inspect the camera (lens covered or sprayed, moved, defocused)",
            )
        )
    return out


def output_findings(daemon: DaemonStatus) -> list[Finding]:
    """Cabinet outputs: one line with each output's state; a failed write or a guard that is
    not running is a problem (an output might stay driven), a request waiting for an agent is
    shown as one."""
    outputs = daemon.get("outputs")
    if not isinstance(outputs, dict):
        return []
    out: list[Finding] = []
    states = []
    for name, st in outputs["outputs"].items():
        left = f" {st['until_s']:.0f}s" if st["until_s"] is not None else ""
        states.append(f"{name} {st['state'].upper() if st['state'] != 'safe' else 'safe'}{left}")
        if st["error"] is not None:
            out.append(
                Finding(
                    "outputs",
                    Level.FAILING,
                    f"{name}: not driven ({st['state']})",
                    f"output {name} ({st['meaning']}): {st['error']}",
                    "check the controller or line (power, cable, address); edged retries the "
                    "safe state every second",
                )
            )
    if outputs["guard_pid"] is None:
        out.append(
            Finding(
                "outputs",
                Level.FAILING,
                "guard not running",
                "the process that makes outputs safe if edged dies is not running",
                "restart edged (systemctl restart edged); see its journal",
            )
        )
    for req in outputs["pending"]:
        out.append(
            Finding(
                "outputs",
                Level.DEGRADED,
                f"{req['playbook']} waits for an agent ({req['expires_in_s']:.0f}s)",
                f"playbook {req['playbook']} ({req['camera']}) waits for a CSU agent's "
                "confirmation",
                "an agent confirms or lets it lapse from the CSU (edge-csu command)",
            )
        )
    return [Finding("outputs", Level.OK, ", ".join(states) or "none"), *out]


def config_findings(daemon: DaemonStatus) -> list[Finding]:
    """A refused SIGHUP: the unit runs its previous configuration, not the file on disk."""
    reload = daemon.get("last_reload")
    if not isinstance(reload, dict) or reload.get("ok", True):
        return []
    return [
        Finding(
            "config",
            Level.DEGRADED,
            "reload failed: running the previous configuration",
            str(reload.get("error") or "the new configuration was refused"),
            f"fix {reload.get('origin', 'the configuration')} (`edgectl config check FILE`), "
            "then `systemctl reload edged`",
        )
    ]


def update_findings(daemon: DaemonStatus) -> list[Finding]:
    """An update that did not take: rolled back to the previous slot, or not confirmed."""
    last = daemon.get("last_update")
    if not isinstance(last, dict):
        return []
    result = last.get("result")
    version = last.get("version", "?")
    if result == "rolled-back":
        return [
            Finding(
                "update",
                Level.DEGRADED,
                f"update to {version} rolled back: running {last.get('running', '?')}",
                "the new slot did not boot, or edged was not healthy there, and the previous "
                "slot booted again",
                f"{last.get('reason', '')}; `edgectl update status`; tell the CSU before "
                "installing it again",
            )
        ]
    if result == "not-confirmed":
        return [
            Finding(
                "update",
                Level.DEGRADED,
                f"slot not confirmed after the update to {version}",
                "edged was not ready or its self-test failed after the update: the previous "
                "slot boots again at the next reboot",
                f"{last.get('reason', '')}; `edgectl selftest`, `edgectl logs`",
            )
        ]
    return []


def crl_findings(daemon: DaemonStatus) -> list[Finding]:
    """The city's CRL the unit checks operators' commands and configuration signers against."""
    uplink = daemon.get("uplink")
    if uplink is None:
        return []  # no uplink, nothing gives orders and no CRL comes
    crl = daemon.get("city_crl")
    if not isinstance(crl, dict):
        if uplink.get("state") != "streaming":
            return []  # the uplink's own finding says why; the CRL comes with the connection
        return [
            Finding(
                "crl",
                Level.DEGRADED,
                "no city CRL: revoked operators not known",
                "the CSU this unit streams to serves no CRL, so a revoked operator's command or "
                "signer's configuration cannot be refused here",
                "at the CSU, set tls.crl_file to the city CA's CRL (edge-csu ca crl)",
            )
        ]
    nxt = str(crl.get("next_update") or "?")[:16]
    if crl.get("stale"):
        return [
            Finding(
                "crl",
                Level.DEGRADED,
                f"city CRL past its next update ({nxt})",
                "the CSU has served no newer CRL: revocations made since are unknown to this "
                "unit (the list it holds still applies)",
                "check the uplink line; at the CSU, publish a fresh CRL (edge-csu ca crl)",
            )
        ]
    return [Finding("crl", Level.OK, f"city CRL: {crl.get('revoked', 0)} revoked, until {nxt}")]


def provisioning_finding() -> Finding:
    """A unit without an identity records nothing: the one thing to do is provision it."""
    return Finding(
        "unit",
        Level.FAILING,
        "UNPROVISIONED: no identity yet, recording nothing",
        "a freshly flashed unit has no unit id until an installer gives it one",
        "as installer: edgectl provision --unit-id ID --site SITE --camera cam1=SOURCE, "
        "then have the certificate requests signed (edgectl enroll --status)",
    )


def evaluate(status: StatusReport) -> list[Finding]:
    """Every finding for a full status dict (``{"daemon": …, "daemon_error": …, "system": …}``)."""
    out: list[Finding] = []
    daemon = status.get("daemon")
    if not isinstance(daemon, dict):
        out.append(
            Finding(
                "edged",
                Level.FAILING,
                "edged not running",
                status.get("daemon_error") or "edged is not running",
                "run `systemctl status edged` and `edgectl logs`; start it with "
                "`systemctl start edged`",
            )
        )
    elif daemon.get("provisioned") is False:
        # Nothing runs but the status: every other section would only repeat it.
        out.append(provisioning_finding())
        out.extend(config_findings(daemon))
    else:
        for cam in daemon.get("cameras", []):
            out.extend(camera_findings(cam))
        out.extend(recording_findings(daemon))
        out.extend(uplink_findings(daemon))
        out.extend(enrolment_findings(daemon))
        out.extend(analytics_findings(daemon))
        out.extend(cabinet_findings(daemon))
        out.extend(output_findings(daemon))
        out.extend(config_findings(daemon))
        out.extend(update_findings(daemon))
        out.extend(crl_findings(daemon))
    system = status.get("system") or cast(SystemStatus, {})
    out.extend(time_findings(system))
    out.extend(health_findings(system))
    return out


def worst(findings: list[Finding]) -> Level:
    return max((f.level for f in findings if f.level is not Level.NA), default=Level.OK)
