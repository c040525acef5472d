"""Operator accounts and console sessions, in one SQLite database beside the receiver's files
(embedded mode) or in the cluster's PostgreSQL database (:mod:`.pgconsole`, cluster mode).

The database holds no secret that opens a session by itself: passwords as scrypt hashes,
session tokens as SHA-256. An account logs in with password and TOTP code (``totp``) or with
password and its console client certificate (``certificate``, :mod:`.certlogin`); a session
opened with a certificate keeps that certificate's fingerprint and is refused over a connection
presenting another. The TOTP secrets are in it (the server must compute codes), so the
file is created 0600 and belongs with the CSU's keys in backups.

:class:`OperatorStore` holds every rule and runs them on SQLite;
:class:`.pgconsole.PgOperatorStore` is the same class on PostgreSQL, overriding only where the
transaction comes from and the lock a log-in takes on its account's row (``FOR UPDATE``: two
receivers checking one account's log-ins at once are serialised, so the failure count, the
lock-out and the last used one-time code are each read and written by one of them at a time;
SQLite's ``BEGIN IMMEDIATE`` already serialises every writer). The SQL is written once, with
``?`` parameters.

Thread-safety: one connection per call (sqlite3 in WAL mode serialises writers); the receiver
calls these from its worker pool, the CLI from its one thread. At most ``CONCURRENT_LOGINS``
password checks run at once (each takes 32 MiB for ≈0.1 s): a flood of log-ins queues up
instead of taking the receiver's memory and every worker thread. Time comes from ``clock``
(seconds since the epoch) so expiry and lock-out are unit-tested without waiting.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from ...errors import ConfigError, StorageUnavailableError
from .credentials import check_password, dummy_hash, hash_password, match_totp, password_problem
from .roles import LockoutPolicy, Role, Scope, SessionPolicy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS operators (
    name TEXT PRIMARY KEY,
    role TEXT NOT NULL,
    scope TEXT NOT NULL,
    password TEXT NOT NULL,
    totp_secret TEXT NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    disabled INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    last_failure REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    auth TEXT NOT NULL DEFAULT 'totp'
);
CREATE TABLE IF NOT EXISTS sessions (
    token_sha256 TEXT PRIMARY KEY,
    name TEXT NOT NULL REFERENCES operators(name),
    csrf TEXT NOT NULL,
    created REAL NOT NULL,
    last_seen REAL NOT NULL,
    cert_sha256 TEXT
);
"""
# Columns added after the first release: (table, column, definition) for older databases.
_ADDED_COLUMNS = (
    ("operators", "auth", "TEXT NOT NULL DEFAULT 'totp'"),
    ("sessions", "cert_sha256", "TEXT"),
)

CONCURRENT_LOGINS = 4
_LOGIN_SLOTS = threading.BoundedSemaphore(CONCURRENT_LOGINS)
DEFAULT_LOCKOUT = LockoutPolicy()
DEFAULT_SESSIONS = SessionPolicy()


class AuthMethod(StrEnum):
    """How an account proves itself at log-in, on top of its password."""

    TOTP = "totp"
    """A one-time code from the operator's authenticator app."""
    CERTIFICATE = "certificate"
    """The operator's console client certificate, presented in the TLS handshake."""


@dataclass(frozen=True, slots=True)
class PresentedCertificate:
    """A client certificate presented at log-in, as :mod:`.certlogin` judged it."""

    sha256: str
    """Fingerprint (hex SHA-256 of the DER): what the session is bound to."""
    name: str | None
    """Its subject common name: the account it is for."""
    problem: str | None = None
    """Why it may not log anyone in (revoked, expired, not the console profile); None: valid."""


@dataclass(frozen=True, slots=True)
class Operator:
    name: str
    role: Role
    scope: Scope
    disabled: bool
    failures: int
    locked_until: float | None
    created: float
    auth: AuthMethod = AuthMethod.TOTP


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in operator, as a request sees it."""

    operator: Operator
    csrf: str
    created: float
    token_sha256: str
    cert_sha256: str | None = None
    """The certificate the session was opened with (certificate accounts), else None."""


@dataclass(frozen=True, slots=True)
class LoginResult:
    session_token: str | None
    """The cookie value (shown to the browser once, stored only as SHA-256); None if refused."""
    session: Session | None
    refusal: str | None = None
    """Why, for the audit log; the browser only ever sees one generic message."""


class Transaction(Protocol):
    """One open transaction of an accounts database: ``execute(sql, params)`` with ``?``
    parameters, returning a cursor (``fetchone``, ``fetchall``, ``rowcount``)."""

    def execute(self, sql: str, parameters: Any = (), /) -> Any: ...


class OperatorStore:
    #: Appended to the log-in's read of its account: the row lock a shared database needs.
    _FOR_UPDATE = ""

    def __init__(
        self,
        path: Path,
        *,
        clock: Callable[[], float] = time.time,
        lockout: LockoutPolicy = DEFAULT_LOCKOUT,
        sessions: SessionPolicy = DEFAULT_SESSIONS,
    ) -> None:
        self.path = path
        self.clock = clock
        self.lockout = lockout
        self.session_policy = sessions
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        db = sqlite3.connect(path, timeout=10)
        try:
            db.executescript(_SCHEMA)  # commits by itself: not inside _db()'s transaction
            _add_columns(db)
        except sqlite3.DatabaseError as exc:
            raise _damaged(path, exc) from None
        finally:
            db.close()

    @contextmanager
    def _db(self) -> Iterator[Transaction]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                db.execute("ROLLBACK")
            if type(exc) is sqlite3.DatabaseError:  # not "locked" (OperationalError): damage
                raise _damaged(self.path, exc) from None
            raise
        finally:
            db.close()

    # --- accounts (edge-csu operator …) ---------------------------------------------------------

    def add(
        self,
        name: str,
        role: Role,
        scope: Scope,
        password: str,
        totp_secret: str,
        *,
        auth: AuthMethod = AuthMethod.TOTP,
    ) -> None:
        """A new account; ``totp_secret`` is ignored (none kept) for a certificate account."""
        problem = password_problem(password, name)
        if problem is not None:
            raise ConfigError(problem)
        if auth is AuthMethod.CERTIFICATE:
            totp_secret = ""
        with self._db() as db:
            if db.execute("SELECT 1 FROM operators WHERE name=?", (name,)).fetchone():
                raise ConfigError(f"operator {name} exists (disable it, or reset its password)")
            db.execute(
                "INSERT INTO operators (name, role, scope, password, totp_secret, created, auth)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    *(name, role.value, str(scope), hash_password(password), totp_secret),
                    *(self.clock(), auth.value),
                ),
            )

    def set_auth(self, name: str, auth: AuthMethod, totp_secret: str = "") -> None:
        """Switch an account to ``auth``; its open sessions end (they were opened the other
        way). ``totp_secret`` is the new secret when switching to TOTP (an account switched
        to certificates keeps none)."""
        if auth is AuthMethod.TOTP and not totp_secret:
            raise ConfigError("switching to one-time codes needs a new TOTP secret")
        with self._db() as db:
            self._require(db, name)
            db.execute(
                "UPDATE operators SET auth=?, totp_secret=?, totp_last_step=0 WHERE name=?",
                (auth.value, totp_secret if auth is AuthMethod.TOTP else "", name),
            )
            db.execute("DELETE FROM sessions WHERE name=?", (name,))

    def set_disabled(self, name: str, disabled: bool) -> None:
        with self._db() as db:
            self._require(db, name)
            db.execute("UPDATE operators SET disabled=? WHERE name=?", (disabled, name))
            if disabled:  # a disabled operator's open sessions end now, not at expiry
                db.execute("DELETE FROM sessions WHERE name=?", (name,))

    def unlock(self, name: str) -> None:
        with self._db() as db:
            self._require(db, name)
            db.execute("UPDATE operators SET failures=0 WHERE name=?", (name,))

    def reset(self, name: str, password: str, totp_secret: str) -> None:
        """New password and TOTP secret (lost phone, forgotten password); sessions end. A
        certificate account gets a new password only (``totp_secret`` is ignored)."""
        problem = password_problem(password, name)
        if problem is not None:
            raise ConfigError(problem)
        with self._db() as db:
            self._require(db, name)
            db.execute(
                "UPDATE operators SET password=?, totp_secret=CASE auth WHEN 'totp' THEN ?"
                " ELSE '' END, totp_last_step=0, failures=0 WHERE name=?",
                (hash_password(password), totp_secret, name),
            )
            db.execute("DELETE FROM sessions WHERE name=?", (name,))

    def get(self, name: str) -> Operator | None:
        with self._db() as db:
            row = db.execute(_SELECT + " WHERE name=?", (name,)).fetchone()
        return None if row is None else self._operator(row)

    def list(self) -> list[Operator]:
        with self._db() as db:
            rows = db.execute(_SELECT + " ORDER BY name").fetchall()
        return [self._operator(r) for r in rows]

    def _require(self, db: Transaction, name: str) -> None:
        if not db.execute("SELECT 1 FROM operators WHERE name=?", (name,)).fetchone():
            raise ConfigError(f"no operator named {name}")

    def _operator(self, row: tuple[str, str, str, int, int, float, float, str]) -> Operator:
        name, role, scope, disabled, failures, last_failure, created, auth = row
        return Operator(
            name=name,
            role=Role(role),
            scope=Scope.parse(scope) if scope != "*" else Scope(),
            disabled=bool(disabled),
            failures=failures,
            locked_until=self._locked_until(failures, last_failure),
            created=created,
            auth=AuthMethod(auth),
        )

    def _locked_until(self, failures: int, last_failure: float) -> float | None:
        until = self.lockout.locked_until(failures, last_failure)
        return until if until is not None and until > self.clock() else None

    # --- log-in and sessions --------------------------------------------------------------------

    def login(
        self,
        name: str,
        password: str,
        code: str,
        certificate: PresentedCertificate | None = None,
    ) -> LoginResult:
        """Check password and code (TOTP account) or password and ``certificate`` (the client
        certificate of the connection, certificate account); a refusal counts towards the
        lock-out of an existing account. A locked or disabled account is refused even with the
        right credentials. A TOTP account ignores any certificate."""
        with _LOGIN_SLOTS:
            return self._login(name, password, code, certificate)

    def _login(
        self, name: str, password: str, code: str, certificate: PresentedCertificate | None
    ) -> LoginResult:
        now = self.clock()
        with self._db() as db:
            row = db.execute(_SELECT_LOGIN + self._FOR_UPDATE, (name,)).fetchone()
            if row is None:
                check_password(password, dummy_hash())  # same time as a wrong password
                return LoginResult(None, None, f"unknown operator {name[:64]!r}")
            stored, secret, last_step, disabled, failures, last_failure, auth = row
            until = self.lockout.locked_until(failures, last_failure)
            if until is not None and until > now:
                return LoginResult(None, None, f"account {name} locked until {until:.0f}")
            if until is not None:  # the lock has run out: a fresh count
                failures = 0
            refusal = None
            step = last_step
            bound = None
            if not check_password(password, stored):
                refusal = "wrong password"
            elif auth == AuthMethod.CERTIFICATE:
                refusal = _certificate_refusal(name, certificate)
                bound = certificate.sha256 if certificate is not None else None
            else:
                step = match_totp(secret, code, now, last_step) if secret else None
                if step is None:
                    refusal = "wrong or reused one-time code"
            if refusal is None and disabled:
                refusal = "account disabled"
            if refusal is not None:
                failures += 1
                db.execute(
                    "UPDATE operators SET failures=?, last_failure=? WHERE name=?",
                    (failures, now, name),
                )
                if self.lockout.locked_until(failures, now) is not None:
                    refusal += f"; account locked for {self.lockout.lock_s} s"
                return LoginResult(None, None, f"{refusal} ({failures} in a row)")
            token = secrets.token_urlsafe(32)
            digest = _sha256(token)
            csrf = secrets.token_urlsafe(32)
            db.execute(
                "UPDATE operators SET failures=0, totp_last_step=? WHERE name=?", (step, name)
            )
            # Sessions nobody came back to are deleted here rather than never.
            db.execute(
                "DELETE FROM sessions WHERE created <= ? OR last_seen <= ?",
                (now - self.session_policy.max_s, now - self.session_policy.idle_s),
            )
            db.execute(
                "INSERT INTO sessions (token_sha256, name, csrf, created, last_seen, cert_sha256)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (digest, name, csrf, now, now, bound),
            )
            op_row = db.execute(_SELECT + " WHERE name=?", (name,)).fetchone()
        session = Session(self._operator(op_row), csrf, now, digest, bound)
        return LoginResult(token, session)

    def session(self, token: str | None) -> tuple[Session | None, str | None]:
        """The session of cookie value ``token`` (its idle time restarts), or why there is none.
        An expired session is deleted: it cannot come back."""
        if not token:
            return None, "no session"
        digest = _sha256(token)
        now = self.clock()
        with self._db() as db:
            row = db.execute(
                "SELECT name, csrf, created, last_seen, cert_sha256 FROM sessions"
                " WHERE token_sha256=?",
                (digest,),
            ).fetchone()
            if row is None:
                return None, "unknown or ended session"
            name, csrf, created, last_seen, bound = row
            why = self.session_policy.expired(created, last_seen, now)
            op_row = db.execute(_SELECT + " WHERE name=?", (name,)).fetchone()
            if why is None and (op_row is None or op_row[3]):
                why = "account disabled"
            if why is not None:
                db.execute("DELETE FROM sessions WHERE token_sha256=?", (digest,))
                return None, f"{why} ({name})"
            db.execute("UPDATE sessions SET last_seen=? WHERE token_sha256=?", (now, digest))
        return Session(self._operator(op_row), csrf, created, digest, bound), None

    def logout(self, token_sha256: str) -> None:
        with self._db() as db:
            db.execute("DELETE FROM sessions WHERE token_sha256=?", (token_sha256,))


_SELECT_LOGIN = (
    "SELECT password, totp_secret, totp_last_step, disabled, failures, last_failure, auth"
    " FROM operators WHERE name=?"
)
_SELECT = "SELECT name, role, scope, disabled, failures, last_failure, created, auth FROM operators"


def _certificate_refusal(name: str, certificate: PresentedCertificate | None) -> str | None:
    """Why a certificate account's log-in is refused by the certificate (None: it passes)."""
    if certificate is None:
        return "no client certificate (the account logs in with its console certificate)"
    if certificate.problem is not None:
        return certificate.problem
    if certificate.name != name:
        return f"the certificate is {str(certificate.name)[:64]!r}'s, not {name}'s"
    return None


def _add_columns(db: sqlite3.Connection) -> None:
    """Bring a database made by an older release up to the schema (new columns only)."""
    for table, column, definition in _ADDED_COLUMNS:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            try:
                db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            except sqlite3.OperationalError as exc:  # another process added it meanwhile
                if "duplicate column" not in str(exc):
                    raise
    db.commit()


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _damaged(path: Path, exc: sqlite3.DatabaseError) -> StorageUnavailableError:
    """A damaged accounts database: said with its path and the way out, never a traceback."""
    return StorageUnavailableError(
        f"{path}: the operators' database is damaged ({exc}); nobody can log in to the console "
        "until it is restored from its backup (or moved aside, and the accounts added again "
        "with edge-csu operator add)"
    )
