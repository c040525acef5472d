"""The control socket's access rules, exercised by real processes running as other users."""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.app import control

from .conftest import require_root

MAINT_GID = 64242
INSTALL_GID = 64243


@pytest.fixture
def server() -> Iterator[control.ControlServer]:
    # A directory other users may traverse (pytest's tmp_path is private to root).
    sockdir = Path(tempfile.mkdtemp(prefix="edge-ctl-"))
    sockdir.chmod(0o755)
    audited: list[tuple[int, str]] = []
    methods = {
        "status": control.Method(control.Role.MAINT, lambda c, p: {"uid": c.uid}),
        "preview": control.Method(
            control.Role.INSTALL, lambda c, p: {"png_base64": "..."}, audited=True
        ),
    }
    srv = control.ControlServer(
        sockdir / "control.sock",
        methods,
        maint_group=MAINT_GID,
        install_group=INSTALL_GID,
        audit=lambda caller, method, params: audited.append((caller.uid, method)),
    )
    srv.start()
    srv.audited = audited  # type: ignore[attr-defined]
    try:
        yield srv
    finally:
        srv.close()
        sockdir.rmdir()


def call_as(uid: int, groups: list[int], path: Path, method: str) -> dict[str, Any]:
    """Call the socket from a forked child that dropped to ``uid`` with ``groups``."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges for real, then call
        os.close(read_fd)
        try:
            os.setgroups(groups)
            os.setgid(groups[0] if groups else uid)
            os.setuid(uid)
            try:
                result: dict[str, Any] = {"ok": True, "result": control.call(path, method)}
            except control.ControlError as exc:
                result = {"ok": False, "error": str(exc), "denied": exc.denied}
            os.write(write_fd, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    out: dict[str, Any] = json.loads(data)
    return out


def test_socket_is_unix_only_and_connectable(server: control.ControlServer) -> None:
    mode = server.path.stat().st_mode
    assert stat.S_ISSOCK(mode)


def test_root_has_every_role(server: control.ControlServer) -> None:
    require_root()
    assert control.call(server.path, "status") == {"uid": 0}
    assert "png_base64" in control.call(server.path, "preview")
    assert server.audited == [(0, "preview")]  # type: ignore[attr-defined]


def test_maintenance_gets_status_but_never_a_picture(server: control.ControlServer) -> None:
    require_root()
    status = call_as(41001, [MAINT_GID], server.path, "status")
    assert status == {"ok": True, "result": {"uid": 41001}}
    preview = call_as(41001, [MAINT_GID], server.path, "preview")
    assert preview["ok"] is False
    assert preview["denied"] is True
    assert "needs the install role" in preview["error"]
    assert server.audited == []  # type: ignore[attr-defined]


def test_installer_gets_preview_and_is_audited(server: control.ControlServer) -> None:
    require_root()
    preview = call_as(41002, [INSTALL_GID], server.path, "preview")
    assert preview["ok"] is True
    assert server.audited == [(41002, "preview")]  # type: ignore[attr-defined]


def test_stranger_is_refused_everything(server: control.ControlServer) -> None:
    require_root()
    for method in ("status", "preview"):
        answer = call_as(41003, [41003], server.path, method)
        assert answer["ok"] is False and answer["denied"] is True, answer


def test_unknown_method_and_garbage(server: control.ControlServer) -> None:
    with pytest.raises(control.ControlError, match="unknown method"):
        control.call(server.path, "format-disk")
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(server.path))
    sock.sendall(b"\x00not json\n")
    answer = json.loads(sock.recv(4096))
    sock.close()
    assert answer["ok"] is False and "bad request" in answer["error"]


def test_roles_policy() -> None:
    c = control.Caller(pid=1, uid=5, gid=5, groups=frozenset({5, 7}))
    assert control.roles_of(c, maint_gid=7, install_gid=8) == {control.Role.MAINT}
    assert control.roles_of(c, maint_gid=None, install_gid=7) == {
        control.Role.MAINT,
        control.Role.INSTALL,
    }
    assert control.roles_of(c, maint_gid=9, install_gid=8) == set()


def test_daemon_not_running_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(control.ControlError, match="edged is not running"):
        control.call(tmp_path / "none.sock", "status")


# --- field trials (#11 item 19): the unit's real modes, and an attacker on the socket ---------

DAEMON_UID = 41010


def unit_runtime_mode() -> int:
    """``RuntimeDirectoryMode`` of the shipped unit, as systemd will apply it."""
    text = (Path(__file__).parents[1] / "edge" / "data" / "edged.service").read_text()
    match = re.search(r"^RuntimeDirectoryMode=([0-7]+)$", text, re.M)
    assert match, "edged.service must state RuntimeDirectoryMode"
    return int(match.group(1), 8)


def test_roles_reach_the_socket_under_the_units_runtime_directory_mode() -> None:
    """/run/edge as systemd makes it (owner edge, the unit's mode): real unprivileged processes
    in the maintenance and installer groups get their answers; a stranger cannot list it."""
    require_root()
    base = Path(tempfile.mkdtemp(prefix="edge-run-"))
    base.chmod(0o755)
    rundir = base / "edge"
    rundir.mkdir()
    os.chown(rundir, DAEMON_UID, DAEMON_UID)
    rundir.chmod(unit_runtime_mode())
    srv = control.ControlServer(
        rundir / "control.sock",
        {
            "status": control.Method(control.Role.MAINT, lambda c, p: {"uid": c.uid}),
            "preview": control.Method(control.Role.INSTALL, lambda c, p: {"png_base64": "."}),
        },
        maint_group=MAINT_GID,
        install_group=INSTALL_GID,
    )
    srv.start()
    try:
        assert call_as(41001, [MAINT_GID], srv.path, "status") == {
            "ok": True,
            "result": {"uid": 41001},
        }
        assert call_as(41002, [INSTALL_GID], srv.path, "preview")["ok"] is True
        stranger = call_as(41003, [41003], srv.path, "status")
        assert stranger["ok"] is False and stranger["denied"] is True
        assert not stat.S_IMODE(rundir.stat().st_mode) & 0o044, "others must not list /run/edge"
    finally:
        srv.close()
        rundir.rmdir()
        base.rmdir()


def connect_as(uid: int, groups: list[int], path: Path, payload: bytes, timeout: float) -> bytes:
    """What a process of ``uid`` reads back after connecting and writing ``payload`` raw."""
    import socket

    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            os.setgroups(groups)
            os.setgid(groups[0])
            os.setuid(uid)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            sock.connect(str(path))
            got = b""
            # The server may close before reading: its answer is still there to read.
            with contextlib.suppress(OSError):
                sock.sendall(payload)
            try:
                while chunk := sock.recv(4096):
                    got += chunk
            except (OSError, TimeoutError) as exc:
                got += f"<{type(exc).__name__}>".encode()
            os.write(write_fd, got)
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return data


def test_stranger_is_refused_before_its_request_is_read(server: control.ControlServer) -> None:
    require_root()
    # Sends nothing at all: the refusal must come anyway, at once (not after a read timeout).
    t0 = time.monotonic()
    answer = connect_as(41003, [41003], server.path, b"", timeout=3.0)
    assert time.monotonic() - t0 < 2.0
    assert json.loads(answer.split(b"\n")[0])["denied"] is True, answer
    # Whatever it sends (here a request that would exhaust a parser) is never read.
    bomb = b'{"method":"status","params":' + b"[" * 30000
    answer = connect_as(41003, [41003], server.path, bomb, timeout=3.0)
    assert json.loads(answer.split(b"\n")[0])["denied"] is True, answer


def test_deeply_nested_request_is_a_bad_request_not_a_crash(server: control.ControlServer) -> None:
    require_root()
    import socket

    for depth in (30000, 20):
        nested = b"[" * depth + b"]" * depth
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(5.0)
        sock.connect(str(server.path))
        sock.sendall(b'{"method":"status","params":{"x":' + nested + b"}}\n")
        answer = json.loads(sock.recv(4096))
        sock.close()
        assert answer["ok"] is False and "nested deeper" in answer["error"], answer
    assert control.call(server.path, "status") == {"uid": 0}


def test_concurrent_connections_are_bounded_and_trickled_requests_cut(
    server: control.ControlServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_root()
    import socket

    monkeypatch.setattr(control, "REQUEST_DEADLINE_S", 1.0)
    threads_before = threading.active_count()
    idle = []
    for _ in range(control.MAX_CONNECTIONS):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(server.path))
        sock.sendall(b'{"meth')  # and then nothing more, slowly
        idle.append(sock)
    time.sleep(0.2)
    assert threading.active_count() <= threads_before + control.MAX_CONNECTIONS
    with pytest.raises(control.ControlError, match="busy"):
        control.call(server.path, "status", timeout=2.0)
    # The trickling callers are cut at the deadline, and their slots come back.
    for sock in idle:
        sock.settimeout(3.0)
        answer = json.loads(sock.recv(4096))
        assert answer["ok"] is False and "not complete within" in answer["error"], answer
        sock.close()
    time.sleep(0.1)
    assert control.call(server.path, "status") == {"uid": 0}
