"""A throwaway PostgreSQL server for tests: the cluster lab's (:func:`edge.csu.lab.
postgres_server`: ``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package, run as
``nobody`` in a temporary directory under /tmp, a Unix socket only, trust authentication)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from edge.csu import lab
from edge.csu.lab import Postgres

from .conftest import require_root, unavailable

__all__ = ["Postgres", "postgres", "postgres_server"]


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Create and start a server in a new directory; stopped and removed afterwards."""
    require_root()
    try:
        server = lab.postgres_server()
        started = server.__enter__()
    except lab.LabError as exc:
        unavailable(f"{exc} (tools/setup.sh)")
    try:
        yield started
    finally:
        server.__exit__(None, None, None)


@contextmanager
def postgres() -> Iterator[str]:
    """Start a server; yields its conninfo (database ``postgres``, user ``edge``)."""
    with postgres_server() as server:
        yield server.conninfo
