"""Active checks run inside edged on request (``edgectl selftest``), each with a time limit.

They run in the daemon because only the daemon may touch the camera, the keys and the data
directory (least privilege: maintenance staff never get those rights). No check returns a
picture: a camera check reports frame size and luma statistics only.

Each check is a function returning a short detail string or raising; :func:`run_checks` runs
them one by one in a worker thread and reports ``passed``/``failed``/``timeout`` per check.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge.errors import EdgeError


@dataclass(frozen=True)
class CheckResult:
    name: str
    outcome: str  # "passed" | "failed" | "timeout" | "skipped"
    detail: str
    seconds: float


Check = tuple[str, Callable[[], str], float]  # name, function, time limit in seconds


class SelftestError(EdgeError, AssertionError):
    """A self-test check found a problem."""


class SelftestNotApplicableError(EdgeError):
    """A check that does not apply now (e.g. the CSU while the port is not authorised)."""


def run_checks(checks: list[Check]) -> list[CheckResult]:
    results = []
    for name, fn, limit in checks:
        box: dict[str, Any] = {}

        def target(fn: Callable[[], str] = fn, box: dict[str, Any] = box) -> None:
            try:
                box["detail"] = fn()
            except SelftestNotApplicableError as exc:
                box["skipped"] = str(exc)
            except Exception as exc:  # noqa: BLE001 - every failure becomes a result
                box["error"] = (
                    f"{type(exc).__name__}: {exc}" if not isinstance(exc, EdgeError) else str(exc)
                )

        start = time.monotonic()
        worker = threading.Thread(target=target, name=f"selftest-{name}", daemon=True)
        worker.start()
        worker.join(limit)
        took = round(time.monotonic() - start, 3)
        if worker.is_alive():
            results.append(CheckResult(name, "timeout", f"no answer within {limit:g} s", took))
        elif "skipped" in box:
            results.append(CheckResult(name, "skipped", box["skipped"], took))
        elif "error" in box:
            results.append(CheckResult(name, "failed", box["error"], took))
        else:
            results.append(CheckResult(name, "passed", box.get("detail", ""), took))
    return results


def as_dicts(results: list[CheckResult]) -> list[dict[str, Any]]:
    return [asdict(r) for r in results]


def storage_check(data_dir: Path) -> Callable[[], str]:
    """Write, fsync, read back and remove a file in the data directory."""

    def check() -> str:
        payload = secrets.token_bytes(1 << 20)
        path = data_dir / f".selftest-{secrets.token_hex(4)}.tmp"
        start = time.monotonic()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            if path.read_bytes() != payload:
                raise SelftestError(f"data read back from {data_dir} differs from what was written")
        finally:
            path.unlink(missing_ok=True)
        return f"1 MiB written, synced and read back in {1000 * (time.monotonic() - start):.0f} ms"

    return check


def signing_key_check(keys_dir: Path) -> Callable[[], str]:
    """The unit's signing key reads and signs (what its audit records and, once provisioned,
    its recordings rest on)."""

    def check() -> str:
        from edge.identity import unitkeys  # the one place naming the key files

        key = unitkeys.load_signing_key(keys_dir)
        nonce = secrets.token_bytes(32)
        key.public_key().verify(key.sign(nonce), nonce)
        return f"key {unitkeys.key_id(unitkeys.public_raw(key.public_key()))} signs"

    return check


def frame_check(get_frame: Callable[[], Any], width: int, height: int) -> Callable[[], str]:
    """A fresh frame of the configured size arrives; report luma statistics only."""

    def check() -> str:
        first = get_frame()
        deadline = time.monotonic() + 3.0
        frame = first
        while (frame is None or frame is first) and time.monotonic() < deadline:
            time.sleep(0.05)
            frame = get_frame()
        if frame is None or frame is first:
            raise SelftestError("no new frame from the camera within 3 s")
        if (frame.width, frame.height) != (width, height):
            raise SelftestError(f"frame is {frame.width}x{frame.height}, expected {width}x{height}")
        luma = frame.y.astype(np.float32)
        return (
            f"{frame.width}x{frame.height}, luma mean {luma.mean():.0f}, contrast {luma.std():.1f}"
        )

    return check


def encoder_check(cam: Any) -> Callable[[], str]:
    """Encode one second of test frames with the camera's encoder settings and decode it back."""

    def check() -> str:
        import io

        import av

        from edge.frames import Frame
        from edge.video.encoder import SegmentEncoder

        fps = cam.fps
        encoder = SegmentEncoder("selftest", cam.width, cam.height, fps, cam.encoder)
        segments = []
        try:
            count = max(2, int(fps))
            for i in range(count):
                frame = Frame.blank(cam.width, cam.height, index=i, wall_ns=time.time_ns())
                frame.y[:, : (i * 7) % cam.width] = 200
                segments += encoder.encode(frame)
            segments += encoder.flush()
        finally:
            encoder.close()
        if not segments:
            raise SelftestError("the encoder produced no segment")
        data = segments[0].init + b"".join(s.media for s in segments)
        with av.open(io.BytesIO(data), mode="r") as container:
            decoded = len(list(container.decode(video=0)))
        if decoded != count:
            raise SelftestError(f"{count} frames encoded but {decoded} decoded")
        return f"{count} frames encoded ({cam.encoder.codec}) and decoded back, {len(data)} bytes"

    return check


def csu_check(cfg: Any, gate: Any) -> Callable[[], str]:
    """A mutual-TLS request to the CSU (its resume cursor), only while the uplink may send."""

    def check() -> str:
        import ssl

        from edge.uplink import protocol
        from edge.uplink.tls import connect

        if not gate.is_open():
            raise SelftestNotApplicableError(
                f"not attempted: uplink not authorised ({gate.reason()})"
            )
        try:
            conn = connect(cfg)
        except ssl.SSLCertVerificationError as exc:
            raise SelftestError(f"the CSU's certificate is refused: {exc.verify_message}") from None
        try:
            conn.request("GET", protocol.cursor_path(cfg.unit.id))
            response = conn.getresponse()
            response.read()
            version = conn.sock.version() if isinstance(conn.sock, ssl.SSLSocket) else "?"
        finally:
            conn.close()
        if response.status != 200:
            raise SelftestError(f"the CSU answered {response.status} {response.reason}")
        return f"mutual TLS ({version}) to the CSU, cursor read"

    return check
