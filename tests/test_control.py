"""The control socket's access rules, exercised by real processes running as other users."""

from __future__ import annotations

import json
import os
import stat
import tempfile
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
