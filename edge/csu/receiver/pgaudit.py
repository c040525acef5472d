"""The operator audit log in cluster mode: one hash chain in the cluster's PostgreSQL database,
shared by every receiver (tables of the "shared audit chain" migration in :data:`.pgindex.
MIGRATIONS`).

Each record is made exactly as in the file (:class:`.access_log.AuditLog`): the same fields
(``receiver`` names the receiver that wrote it), the same canonical form, signed with that
receiver's audit key; its ``prev`` is the SHA-256 of the previous record's line, whichever
receiver wrote it. An append is one transaction: it takes the chain's advisory lock (appends
from every receiver and command are serialised for the time of one insert), reads the head,
inserts the line under the next sequence number and commits, so records of several receivers
interleave in one chain with no gap and no fork (the primary key on ``seq`` is the last guard).

Keys: each receiver keeps its own audit key (``audit_key_file``) and registers its public half
in ``audit_keys`` (key id, receiver) with its first append (one key deployed to every
receiver works too: it is registered under each). :func:`verify` checks each record against
a key registered by the receiver it names. The table alone proves only that the
records were signed by keys registered in the database: someone able to write it could register
a key of their own and rewrite the whole chain, so an auditor compares the key ids that
``edge-csu audit verify`` prints with copies of the receivers' public keys, or gives those
copies (``--public-key``, repeated): then only they are accepted.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from ...errors import ConfigError, VaultError
from ...identity.unitkeys import load_public_pem
from .access_log import ZERO, AuditLog, AuditReport, signed_bytes
from .deletions import key_id
from .pgindex import PgSegmentIndex

#: Advisory lock of the audit chain's head (apart from pgindex's and the console's locks).
_AUDIT_LOCK = 0x65646175  # "edau"


class PgAuditLog(AuditLog):
    """:class:`.access_log.AuditLog` on the cluster's shared chain. ``connection``: the calling
    thread's index (the receiver's :meth:`.cluster.ClusterStore.index`, or one of its own)."""

    def __init__(
        self,
        connection: Callable[[], PgSegmentIndex],
        receiver: str,
        key: ed25519.Ed25519PrivateKey | None = None,
        *,
        unsigned_reason: str = "",
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        # Not AuditLog.__init__: no file.
        self._connection = connection
        self.receiver = receiver
        self._stamp = {"receiver": receiver}
        self._key = key
        self._key_id = key_id(key.public_key()) if key is not None else ""
        self._unsigned_reason = unsigned_reason
        self._clock = clock
        self._lock = threading.Lock()
        self._registered = False

    def record(self, who: str, action: str, **what: Any) -> dict[str, Any]:
        with self._lock:
            if self._key is None and self._unsigned_reason:
                print(f"audit: {self._unsigned_reason}: records are written unsigned",
                      file=sys.stderr)  # fmt: skip
                self._unsigned_reason = ""
            entry = {"time_ns": self._clock(), "who": who, "action": action, **self._stamp, **what}
            with self._connection().transaction() as cur:
                if self._key is not None and not self._registered:
                    pem = self._key.public_key().public_bytes(
                        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                    )
                    cur.execute(
                        "INSERT INTO audit_keys VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                        (self._key_id, self.receiver, pem.decode(), time.time_ns()),
                    )
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (_AUDIT_LOCK,))
                cur.execute("SELECT seq, line FROM audit_chain ORDER BY seq DESC LIMIT 1")
                row = cur.fetchone()
                seq, prev = (0, ZERO) if row is None else (int(row[0]), _hash(str(row[1])))
                entry["prev"] = prev
                line = self._line(entry).rstrip(b"\n").decode()
                cur.execute(
                    "INSERT INTO audit_chain VALUES (%s, %s, %s)", (seq + 1, self.receiver, line)
                )
            self._registered = self._registered or self._key is not None
            return entry

    def keys(self) -> dict[str, tuple[set[str], ed25519.Ed25519PublicKey]]:
        """The registered keys: key id → (the receivers that registered it, public key)."""
        with self._connection().transaction() as cur:
            rows = cur.execute("SELECT key_id, receiver, public_pem FROM audit_keys").fetchall()
        found: dict[str, tuple[set[str], ed25519.Ed25519PublicKey]] = {}
        for kid, receiver, pem in rows:
            try:
                public = load_public_pem(str(pem).encode(), origin=str(kid))
            except VaultError:
                continue  # a damaged row: the records it would verify are then refused
            if key_id(public) == kid:  # else a row naming another key: never trusted
                found.setdefault(str(kid), (set(), public))[0].add(str(receiver))
        return found

    def verify(
        self, pinned: list[ed25519.Ed25519PublicKey] | None = None
    ) -> tuple[AuditReport, dict[str, list[str]]]:
        """The whole chain checked (:func:`verify`) with the registered keys, or only with
        ``pinned`` when given; also the registered key ids and their receivers."""
        try:
            with self._connection().transaction() as cur:
                rows = cur.execute("SELECT seq, line FROM audit_chain ORDER BY seq").fetchall()
        except psycopg.errors.UndefinedTable:
            raise ConfigError(
                "the cluster's database has no shared audit chain yet: start a receiver of "
                "this version first (it applies the schema migrations)"
            ) from None
        registered = self.keys()
        report = verify([(int(s), str(line)) for s, line in rows], registered, pinned)
        return report, {kid: sorted(names) for kid, (names, _) in registered.items()}


def _hash(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


@dataclass
class _Keys:
    registered: dict[str, tuple[set[str], ed25519.Ed25519PublicKey]]
    pinned: dict[str, ed25519.Ed25519PublicKey] | None = None

    def check(self, entry: dict[str, Any]) -> str | None:
        """Why the record's signature does not hold (None: it holds)."""
        kid = entry.get("key_id")
        if self.pinned is not None:
            public = self.pinned.get(str(kid))
            if public is None:
                return "signed by a key that is not among those given"
        else:
            known = self.registered.get(str(kid))
            if known is None:
                return "signed by a key no receiver registered"
            if entry.get("receiver") not in known[0]:
                return "signed with a key the receiver it names did not register"
            public = known[1]
        try:
            public.verify(base64.b64decode(entry["sig"], validate=True), signed_bytes(entry))
        except (InvalidSignature, binascii.Error, TypeError):
            return "bad signature (record edited, or signed by another key)"
        return None


def verify(
    rows: list[tuple[int, str]],
    registered: dict[str, tuple[set[str], ed25519.Ed25519PublicKey]],
    pinned: list[ed25519.Ed25519PublicKey] | None = None,
) -> AuditReport:
    """Checks the rows ``(seq, line)`` in order: sequence numbers from 1 with no gap, the hash
    chain, every signature; stops at the first problem, named by its sequence number
    (``unsigned_lines``/``signed_lines`` hold sequence numbers)."""
    keys = _Keys(registered, None if pinned is None else {key_id(k): k for k in pinned})
    report = AuditReport()
    prev = ZERO
    for expected, (seq, line) in enumerate(rows, start=1):
        if seq != expected:
            report.problem = f"seq {expected}: missing (record deleted)"
            return report
        try:
            entry = json.loads(line)
            if not isinstance(entry, dict):
                raise ValueError("not an object")
        except ValueError:
            report.problem = f"seq {seq}: not an audit record (damaged or forged)"
            return report
        if entry.get("prev") != prev:
            report.problem = f"seq {seq}: audit chain broken (record removed or edited)"
            return report
        if "sig" in entry:
            why = keys.check(entry)
            if why is not None:
                report.problem = f"seq {seq}: {why}"
                return report
            report.signed += 1
            report.signed_lines.add(seq)
        else:
            report.unsigned_lines.append(seq)
        report.records.append(entry)
        report.count += 1
        prev = _hash(line)
    report.head = prev
    return report
