"""Durable file writes, one of each: every file the firmware keeps goes through here.

Crash-only: a crash or a power cut leaves the old content or the new, never a mix, and a
rename is not done until the directory holding it is fsync'd. :func:`write_atomic` replaces a
file (configuration, certificates, sealed segments, spooled events, metrics);
:func:`write_new` creates one that must never be replaced (keys: a key that recordings or
certificates rest on is created once).
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
from pathlib import Path

from .errors import KeyExistsError


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(
    path: Path,
    data: bytes,
    *,
    mode: int = 0o644,
    tmp_dir: Path | None = None,
    make_parents: bool = False,
    durable: bool = True,
    exact_mode: bool = True,
) -> None:
    """Write ``data`` to ``path`` so that a crash leaves the old content or the new, never a mix:
    temporary file, fsync, rename, fsync of the directory.

    The temporary file is created with its final mode, so a private key is never readable by
    others, not even for an instant. It lies beside ``path`` (``.NAME.THREAD.tmp``) or, with
    ``tmp_dir`` (same file system), in that directory (``NAME.THREAD.tmp``, where start-up
    clears what a crash left); its name is unique per thread, so concurrent writers never share
    one. ``make_parents`` creates missing directories of ``path`` durably first.
    ``durable=False`` skips both fsyncs: still atomic for readers, but a power cut may lose
    the change (figures refreshed often, never evidence). ``exact_mode=False`` lets the
    process umask narrow ``mode`` (the vault: edged's UMask=0077 keeps segments 0600).
    """
    if tmp_dir is None:
        tmp = path.with_name(f".{path.name}.{threading.get_ident()}.tmp")
    else:
        tmp = tmp_dir / f"{path.name}.{threading.get_ident()}.tmp"
    if make_parents:  # before the temporary file, which may lie in that very directory
        makedirs_durably(path.parent)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        _fill(fd, data, mode if exact_mode else None, sync=durable)
        tmp.replace(path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk must not also leave half a file behind
        raise
    if durable:
        fsync_dir(path.parent)


def write_new(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Create ``path`` holding ``data``; :class:`KeyExistsError` if anything is already there.

    The content is written and fsync'd under a temporary name (created exclusively, mode 0600
    from the first byte) and then hard-linked to ``path``: the link is the exclusive, atomic
    step (like ``O_EXCL``), so two writers racing, or a tired technician running a command
    twice, can never replace a key, and a power cut never leaves half of one.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
    tmp = Path(tmp_name)
    try:
        _fill(fd, data, mode)
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise _exists(path) from None
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            _write_exclusive(path, data, mode)  # no hard links here (a FAT stick for a CA)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)


def _exists(path: Path) -> KeyExistsError:
    return KeyExistsError(f"{path}: a key file is already there; refusing to overwrite it")


def _write_exclusive(path: Path, data: bytes, mode: int) -> None:
    """``O_EXCL`` creation, for file systems without hard links: still never over an existing
    file, though a crash may leave it short (the caller's key is then unusable, not replaced)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise _exists(path) from None
    _fill(fd, data, mode)


def _fill(fd: int, data: bytes, mode: int | None, *, sync: bool = True) -> None:
    """Write all of ``data`` to the new file ``fd``, set ``mode`` exactly (the umask may have
    removed bits asked for; None keeps what it left), fsync when ``sync``, close."""
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def write_new_private(path: Path, data: bytes) -> None:
    """:func:`write_new` with mode 0600: how every private key of the firmware is written."""
    write_new(path, data, mode=0o600)


def makedirs_durably(path: Path) -> None:
    """Create missing directories, each one made durable in its parent."""
    if path.is_dir():
        return
    makedirs_durably(path.parent)
    try:
        path.mkdir()
    except FileExistsError:
        return
    fsync_dir(path.parent)
