"""A throwaway PostgreSQL server for tests: the cluster lab's (:func:`edge.csu.lab.
postgres_server`: ``initdb`` and ``pg_ctl`` from Debian's ``postgresql`` package, run as
``nobody`` in a temporary directory under /tmp, a Unix socket only, trust authentication)."""

from __future__ import annotations

import itertools
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import psycopg.conninfo

from edge.csu import lab
from edge.csu.console.accounts import OperatorStore
from edge.csu.console.alerts import DecisionLog, SqliteDecisions
from edge.csu.console.pgconsole import PgConsoleDatabase, PgDecisions, PgOperatorStore
from edge.csu.console.roles import LockoutPolicy, SessionPolicy
from edge.csu.lab import Postgres
from edge.csu.receiver.pgindex import PgSegmentIndex

from .conftest import require_root, unavailable

__all__ = ["ConsoleDb", "Postgres", "fresh_database", "postgres", "postgres_server"]
_made = itertools.count(1)


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


def fresh_database(conninfo: str) -> str:
    """A new database on the server of ``conninfo``, migrated to the cluster's schema (as a
    receiver's start leaves it): its conninfo. Nothing to clean: it goes with the server."""
    name = f"t{os.getpid()}_{next(_made)}"
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    info = psycopg.conninfo.make_conninfo(conninfo, dbname=name)
    index = PgSegmentIndex(info, "setup")
    try:
        index.migrate()
    finally:
        index.close()
    return info


class ConsoleDb:
    """One console database as each receiver sees it: ``embedded`` (the operators' SQLite
    file) or ``cluster`` (a fresh PostgreSQL database, each receiver on its own connection)."""

    def __init__(self, kind: str, path: Path, server: str | None = None) -> None:
        self.kind = kind
        self.path = path
        self.conninfo = fresh_database(server) if server is not None else None
        self._indexes: dict[str, PgSegmentIndex] = {}

    def _database(self, receiver: str) -> PgConsoleDatabase:
        assert self.conninfo is not None
        if receiver not in self._indexes:
            self._indexes[receiver] = PgSegmentIndex(self.conninfo, receiver)
        index = self._indexes[receiver]
        return PgConsoleDatabase(lambda: index, receiver)

    def store(
        self,
        clock: Callable[[], float],
        receiver: str = "r1",
        *,
        lockout: LockoutPolicy,
        sessions: SessionPolicy,
    ) -> OperatorStore:
        """The accounts as ``receiver`` sees them (one connection per receiver: use each
        receiver's store from one thread at a time)."""
        if self.conninfo is None:
            return OperatorStore(self.path, clock=clock, lockout=lockout, sessions=sessions)
        return PgOperatorStore(
            self._database(receiver), clock=clock, lockout=lockout, sessions=sessions
        )

    def decisions(self, receiver: str = "r1") -> DecisionLog:
        if self.conninfo is None:
            return SqliteDecisions(self.path)
        return PgDecisions(self._database(receiver))

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        """Rows of a query on the database itself (SQLite or PostgreSQL)."""
        if self.conninfo is None:
            with sqlite3.connect(self.path) as db:
                return list(db.execute(sql).fetchall())
        with psycopg.connect(self.conninfo) as conn:
            return list(conn.execute(sql.encode()).fetchall())

    def close(self) -> None:
        for index in self._indexes.values():
            index.close()
