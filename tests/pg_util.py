"""A throwaway PostgreSQL server for tests: ``initdb`` and ``pg_ctl`` from Debian's
``postgresql`` package, in a temporary directory, listening on a Unix socket only.

PostgreSQL refuses to run as root, and the tests run as root: the cluster is created and run
as ``nobody`` (``runuser -u nobody``) in a directory made for it under /tmp (pytest's own
temporary directories are 0700 root and nobody could not enter them). As root, the fixture
connects through the socket with trust authentication, local to the temporary directory.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .conftest import require_root, tool, unavailable


def _bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        unavailable(f"{name} not installed (Debian package postgresql; tools/setup.sh)")
    return found[-1]


class Postgres:
    """A running test server: ``conninfo``, and ``stop``/``start`` to inject an outage."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.conninfo = f"host={base} dbname=postgres user=edge"
        self._as_nobody = [tool("runuser"), "-u", "nobody", "--"]
        self._pg_ctl = _bin("pg_ctl")

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [*self._as_nobody, self._pg_ctl, "-D", str(self.base / "data"), *args],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = f"-c listen_addresses='' -c unix_socket_directories={self.base} -c fsync=off"
        self._ctl("-o", options, "-w", "-t", "60", "-l", str(self.base / "log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Create and start a server in a new directory; stopped and removed afterwards."""
    require_root()
    base = Path(tempfile.mkdtemp(prefix="edge-pg-"))
    try:
        shutil.chown(base, "nobody")
        server = Postgres(base)
        subprocess.run(
            [*server._as_nobody, _bin("initdb"), "-D", str(base / "data"), "-U", "edge",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        server.start()
        try:
            yield server
        finally:
            subprocess.run(
                [*server._as_nobody, server._pg_ctl, "-D", str(base / "data"), "-m",
                 "immediate", "stop"],
                capture_output=True, timeout=60,
            )  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def postgres() -> Iterator[str]:
    """Start a server; yields its conninfo (database ``postgres``, user ``edge``)."""
    with postgres_server() as server:
        yield server.conninfo
