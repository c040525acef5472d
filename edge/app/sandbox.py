"""Confine the calling process with Landlock: read-only access beneath a few paths, nothing else.

The analytics process parses models supplied from outside. It runs as the same user as edged,
so without more, code run through a malicious model could read everything edged can: the unit's
signing key in ``/var/lib/edge/keys``, camera passwords in ``/etc/edge``. Landlock (Linux ≥ 5.13,
unprivileged) lets the process drop that for itself and its future children, irreversibly:

- file system: read and execute beneath the given paths only (the interpreter, its libraries,
  the model); no write, create or remove anywhere;
- network (ABI ≥ 4): no TCP bind or connect;
- scopes (ABI ≥ 6): no signal to, and no abstract Unix socket of, a process outside the
  sandbox (edged runs as the same user: it could otherwise be killed).

Landlock also forbids ptrace-like access to processes outside the sandbox, so edged's
``/proc/PID/mem`` and ``environ`` stay out of reach. File descriptors opened before stay
usable (the pipes to edged, the shared-memory frame ring).

Where the kernel lacks Landlock (or a seccomp filter refuses it) :func:`confine` says why and
changes nothing: the caller decides (the analytics process logs it and reports it in
``edgectl status``). ``edged.service`` allows the three Landlock system calls for this.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterable
from pathlib import Path

# <linux/landlock.h>; the system call numbers are the same on every architecture we build for.
_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

_EXECUTE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 2, 1 << 3
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
_NET_TCP = (1 << 0) | (1 << 1)  # bind, connect (ABI 4)
_SCOPES = (1 << 0) | (1 << 1)  # abstract Unix sockets, signals (ABI 6)


class _State:
    description = "not confined"


def current() -> str:
    """How this process is confined ("landlock ABI 7", or "not confined: why")."""
    return _State.description


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _abi(libc: ctypes.CDLL) -> int:
    abi = int(libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION))
    if abi < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return abi


def _handled_fs(abi: int) -> int:
    return _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]


def confine(read_only: Iterable[Path]) -> bool:
    """Allow only reading (and executing) beneath ``read_only``; True when in force."""
    libc = _libc()
    try:
        abi = _abi(libc)
    except OSError as exc:
        _State.description = f"not confined: Landlock unavailable ({exc.strerror})"
        return False
    fs = _handled_fs(abi)
    attr = struct.pack("=Q", fs)
    if abi >= 4:
        attr += struct.pack("=Q", _NET_TCP)
    if abi >= 6:
        attr += struct.pack("=Q", _SCOPES)
    buf = ctypes.create_string_buffer(attr, len(attr))
    ruleset = int(libc.syscall(_SYS_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), 0))
    if ruleset < 0:
        _State.description = f"not confined: {os.strerror(ctypes.get_errno())}"
        return False
    try:
        try:
            for path in read_only:
                _allow(libc, ruleset, path)
        except OSError as exc:
            _State.description = f"not confined: {exc.strerror}"
            return False
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            _State.description = f"not confined: {os.strerror(ctypes.get_errno())}"
            return False
        if libc.syscall(_SYS_RESTRICT_SELF, ruleset, 0) != 0:
            _State.description = f"not confined: {os.strerror(ctypes.get_errno())}"
            return False
    finally:
        os.close(ruleset)
    _State.description = f"landlock ABI {abi}"
    return True


def _allow(libc: ctypes.CDLL, ruleset: int, path: Path) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist needs no access
    try:
        access = _READ_FILE | _EXECUTE
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            access |= _READ_DIR
        # struct landlock_path_beneath_attr is packed: u64 allowed_access, s32 parent_fd.
        rule = ctypes.create_string_buffer(struct.pack("=Qi", access, fd), 12)
        if libc.syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"landlock rule for {path}: {os.strerror(err)}")
    finally:
        os.close(fd)
