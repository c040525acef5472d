"""The data directory as one ``edged`` sees it: one writer, and a clear refusal when unusable.

**One writer.** Two ``edged`` on one data directory (a technician starting one by hand beside
the service) would both append to the same hash chains with the same sequence numbers: the
evidence is broken for good. So ``edged`` takes an exclusive ``flock`` on ``DATA_DIR/edged.lock``
before it touches anything else there, and holds it for the life of the process (the kernel
drops it when the process dies, even by SIGKILL, so a crash never leaves a stale lock). The
file holds the holder's PID, only to name it in the refusal; the lock itself is the ``flock``.
The descriptor is not inherited by child processes (Python opens it close-on-exec), so a
left-over child can never keep a directory locked.

The same helper guards the control socket (:mod:`edge.control`): whoever holds the socket's
lock owns the socket path, so a second instance never deletes or replaces the first's socket.

**Unusable directory.** A read-only mount, a path that is a file, a directory of another owner
or a full disk is reported as one line naming the path, the cause and the next step
(:func:`unusable`), never as a traceback.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import DataDirError, InstanceLockedError

LOCK_NAME = "edged.lock"
#: Free space a *new* vault needs to start (keys, index, the purge reserve, first segments).
#: An existing vault starts on a full disk: retention makes room there.
FRESH_MIN_FREE = 512 * 1024


class HeldLock:
    """An exclusive ``flock`` held until :meth:`release` (or the process ends)."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, path: Path, *, what: str) -> HeldLock:
        """Lock ``path`` (created 0600 if needed) and write our PID into it.

        Raises :class:`InstanceLockedError` naming the holder when another process has it;
        ``OSError`` when the file cannot be created or written (the caller says why).
        """
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_pid(fd)
                os.close(fd)
                raise InstanceLockedError(what, path, holder) from None
            except BaseException:
                os.close(fd)
                raise
            # A holder releasing with ``remove=True`` unlinks the file before it unlocks: a
            # lock won on that unlinked file is worth nothing, so open the path again.
            if _same_file(fd, path):
                break
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            os.fsync(fd)  # a full disk shows here, before anything else is written
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd)

    def release(self, *, remove: bool = False) -> None:
        """Drop the lock; ``remove`` deletes the file first (while still holding it)."""
        if self._fd is not None:
            if remove and _same_file(self._fd, self.path):
                self.path.unlink()
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None


def _same_file(fd: int, path: Path) -> bool:
    held = os.fstat(fd)
    try:
        named = os.stat(path)
    except FileNotFoundError:
        return False
    return (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def lock_data_dir(data_dir: Path) -> HeldLock:
    """Create ``data_dir`` if needed and become its one writer; :class:`DataDirError` else."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if not data_dir.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(data_dir))
        lock = HeldLock.acquire(data_dir / LOCK_NAME, what=f"data directory {data_dir}")
        if not (data_dir / "vault").is_dir():
            st = os.statvfs(data_dir)
            free = st.f_bavail * st.f_frsize
            if free < FRESH_MIN_FREE:
                lock.release()
                raise OSError(
                    errno.ENOSPC,
                    f"{free // 1024} KiB free, a new vault needs {FRESH_MIN_FREE // 1024} KiB",
                    str(data_dir),
                )
        return lock
    except OSError as exc:
        if isinstance(exc, DataDirError):
            raise
        raise unusable(data_dir, exc) from None


def unusable(data_dir: Path, exc: OSError) -> DataDirError:
    """One line for an ``OSError`` met while preparing ``data_dir``: path, cause, next step."""
    where = exc.filename or data_dir
    code = exc.errno
    if code == errno.EROFS:
        step = "the file system is mounted read-only: remount it read-write or use another"
        step += " --data-dir"
    elif code in (errno.ENOSPC, errno.EDQUOT):
        step = "no space left: free space on that file system or use another --data-dir"
    elif code in (errno.EACCES, errno.EPERM):
        step = (
            f"edged runs as uid {os.geteuid()}, which may not write there: give the directory "
            f"to that user (chown -R) or use another --data-dir"
        )
    elif code in (errno.ENOTDIR, errno.EEXIST):
        step = "a file stands where a directory is needed: move it away or use another --data-dir"
    else:
        step = "check the storage (dmesg, edgectl status) or use another --data-dir"
    cause = exc.strerror or str(exc)
    return DataDirError(f"data directory {data_dir} unusable: {where}: {cause}; {step}")
