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


@contextmanager
def postgres() -> Iterator[str]:
    """Start a server; yields its conninfo (database ``postgres``, user ``edge``)."""
    require_root()
    runuser = tool("runuser")
    initdb, pg_ctl = _bin("initdb"), _bin("pg_ctl")
    base = Path(tempfile.mkdtemp(prefix="edge-pg-"))
    try:
        shutil.chown(base, "nobody")
        as_nobody = [runuser, "-u", "nobody", "--"]
        subprocess.run(
            [*as_nobody, initdb, "-D", str(base / "data"), "-U", "edge", "--auth=trust",
             "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        options = f"-c listen_addresses='' -c unix_socket_directories={base} -c fsync=off"
        subprocess.run(
            [*as_nobody, pg_ctl, "-D", str(base / "data"), "-o", options, "-w", "-t", "60",
             "-l", str(base / "log"), "start"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        try:
            yield f"host={base} dbname=postgres user=edge"
        finally:
            subprocess.run(
                [*as_nobody, pg_ctl, "-D", str(base / "data"), "-m", "immediate", "stop"],
                capture_output=True,
                timeout=60,
            )
    finally:
        shutil.rmtree(base, ignore_errors=True)
