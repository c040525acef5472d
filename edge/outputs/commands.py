"""Commands from the CSU to a unit's outputs: one signed format, signed at the CSU with an
operator's key, checked on the unit before anything moves.

Wire form (JSON, at most :data:`MAX_BYTES`)::

    {"v": 1, "body": "<base64 of the body's exact bytes>",
     "signature": "<base64 DER ECDSA P-256/SHA-256 of b'edge-command-v1\\0' + body bytes>",
     "certificate": "<PEM of the operator certificate>"}

Body (JSON)::

    {"v": 1, "type": "confirm" | "manual", "unit": "cam-nord-0001", "outputs": ["sign-north"],
     "playbook": "lane-closure", "event": "<event id>",        # confirm
     "output": "sign-north", "state": "closed" | "safe", "duration_s": 120,   # manual
     "issued_ns": ..., "expires_ns": ..., "nonce": "<32 hex digits>"}

The signature covers the body's bytes as sent, so nothing is re-serialised before checking.
The operator certificate must chain to the city CA the unit already pins for its uplink
(``uplink.ca_file``), carry the operator profile (keyUsage digitalSignature, the extended key
usage :data:`OPERATOR_COMMANDS`, never a TLS one, not a CA) and be valid now. The agent the
audit log names is the certificate's common name and serial.

On the unit (:class:`CommandInbox`) a command is refused, audited and changes nothing when it
is unsigned or its signature or certificate does not verify, names another unit, is expired or
lives longer than :data:`MAX_LIFETIME_S`, was issued in the future, its nonce was seen before
(the nonces are kept on disk until their command expires, so a restart forgets none), or its
target is outside its ``outputs`` scope or unknown to this unit.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

from edge import jsonlimits
from edge.config import EdgeConfig
from edge.errors import CommandError, EdgeError
from edge.fsutil import write_atomic
from edge.identity import pki
from edge.identity.revocation import CityCrl

log = logging.getLogger(__name__)

OPERATOR_COMMANDS = ObjectIdentifier("2.25.66306665124794820636415250288809678909")
"""Extended key usage of an operator certificate: signs commands to cabinet outputs (a UUID
OID, RFC 4122 / ITU-T X.667: needs no registration)."""

_DOMAIN = b"edge-command-v1\0"
MAX_BYTES = 16 * 1024
#: Longest a command may live: an agent's decision is about now, not about the next hour.
MAX_LIFETIME_S = 900.0
#: Clock difference tolerated between the CSU and the unit (both NTS-synchronised).
MAX_SKEW_S = 30.0
_NONCE_RE = re.compile(r"^[0-9a-f]{32}\Z")
_TLS_EKUS = {
    ExtendedKeyUsageOID.SERVER_AUTH,
    ExtendedKeyUsageOID.CLIENT_AUTH,
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE,
}


@dataclass(frozen=True, slots=True)
class Command:
    kind: str  # "confirm" | "manual"
    unit: str
    outputs: tuple[str, ...]
    issued_ns: int
    expires_ns: int
    nonce: str
    agent: str
    """The operator certificate's CN and serial: who decided."""
    playbook: str | None = None
    event: str | None = None
    output: str | None = None
    state: str | None = None
    duration_s: float | None = None


# --- CSU side ------------------------------------------------------------------------------


def sign(
    key: ec.EllipticCurvePrivateKey,
    certificate: x509.Certificate,
    *,
    kind: str,
    unit: str,
    outputs: Sequence[str],
    lifetime_s: float = 120.0,
    now_ns: int | None = None,
    nonce: str | None = None,
    **fields: Any,
) -> bytes:
    """A signed command, ready for the unit (``fields``: playbook and event, or output, state
    and duration_s)."""
    issued = time.time_ns() if now_ns is None else now_ns
    body = {
        "v": 1,
        "type": kind,
        "unit": unit,
        "outputs": list(outputs),
        "issued_ns": issued,
        "expires_ns": issued + int(lifetime_s * 1e9),
        "nonce": nonce or secrets.token_hex(16),
        **fields,
    }
    raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
    signature = key.sign(_DOMAIN + raw, ec.ECDSA(hashes.SHA256()))
    return json.dumps(
        {
            "v": 1,
            "body": base64.b64encode(raw).decode(),
            "signature": base64.b64encode(signature).decode(),
            "certificate": certificate.public_bytes(serialization.Encoding.PEM).decode(),
        }
    ).encode()


def nonce_of(envelope: bytes) -> str | None:
    """The nonce of a command, unchecked (the receiver files commands by it)."""
    try:
        doc = jsonlimits.loads(envelope, max_bytes=MAX_BYTES)
        body = json.loads(base64.b64decode(doc["body"], validate=True))
        nonce = body["nonce"]
    except (ValueError, KeyError, TypeError, binascii.Error, EdgeError):
        return None
    return nonce if isinstance(nonce, str) and _NONCE_RE.match(nonce) else None


# --- unit side -----------------------------------------------------------------------------


def operator_problem(cert: x509.Certificate) -> str | None:
    """Why ``cert`` is not an operator certificate, or None when it is one."""
    if isinstance(cert.public_key(), ed25519.Ed25519PublicKey):
        return "its key is a unit's evidence-signing key type (Ed25519), not an operator's"
    problem, ekus = pki.signing_leaf_problem(cert, no_eku=" (the operator one is required)")
    if problem is not None:
        return problem
    if OPERATOR_COMMANDS not in ekus:
        return "it is not an operator certificate (no command-signing extendedKeyUsage)"
    if ekus & _TLS_EKUS:
        return "it also allows TLS authentication"
    return None


def _agent(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    name = str(cns[0].value) if len(cns) == 1 else "?"
    return f"operator {name} (certificate {cert.serial_number:x})"


def verify(
    envelope: bytes,
    *,
    unit_id: str,
    ca_certs: Sequence[x509.Certificate],
    now_ns: int,
    crl: CityCrl | None = None,
) -> Command:
    """The command in ``envelope`` once every check passed; CommandError says which failed.
    With ``crl`` (the city's, as the unit holds it), a revoked operator is refused too."""
    try:
        doc = jsonlimits.loads(envelope, max_bytes=MAX_BYTES)
        raw = base64.b64decode(doc["body"], validate=True)
        signature = base64.b64decode(doc["signature"], validate=True)
        cert = x509.load_pem_x509_certificate(str(doc["certificate"]).encode())
    except (KeyError, TypeError, ValueError, binascii.Error, EdgeError) as exc:
        raise CommandError(f"not a signed command ({type(exc).__name__}: {exc})") from None
    if not signature:
        raise CommandError("unsigned command")
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise CommandError("the operator key is not an ECDSA key")
    try:
        key.verify(signature, _DOMAIN + raw, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise CommandError(
            f"the signature does not verify (forged or altered); claims {_agent(cert)}"
        ) from None
    roots, inter = pki.anchors(ca_certs)
    if not roots:
        raise CommandError("no city root CA on the unit to check operator certificates with")
    at = dt.datetime.fromtimestamp(now_ns / 1e9, dt.UTC)
    problem = pki.verify_path(cert, inter, roots, at, operator_problem)
    if problem is None and crl is not None:
        problem = crl.problem(cert, at, before="this command")
    if problem is not None:
        raise CommandError(f"{_agent(cert)}: certificate refused: {problem}")
    agent = _agent(cert)
    try:
        body = json.loads(raw)
        command = Command(
            kind=str(body["type"]),
            unit=str(body["unit"]),
            outputs=tuple(str(o) for o in body["outputs"]),
            issued_ns=int(body["issued_ns"]),
            expires_ns=int(body["expires_ns"]),
            nonce=str(body["nonce"]),
            agent=agent,
            playbook=body.get("playbook"),
            event=body.get("event"),
            output=body.get("output"),
            state=body.get("state"),
            duration_s=None if body.get("duration_s") is None else float(body["duration_s"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CommandError(f"malformed command body from {agent}: {exc}") from None
    if body.get("v") != 1 or command.kind not in ("confirm", "manual"):
        raise CommandError(f"unknown command version or type from {agent}")
    if not _NONCE_RE.match(command.nonce):
        raise CommandError(f"command from {agent} has no valid nonce")
    if command.unit != unit_id:
        raise CommandError(f"command for unit {command.unit!r} from {agent}, this is {unit_id!r}")
    if command.expires_ns <= now_ns:
        ago = (now_ns - command.expires_ns) / 1e9
        raise CommandError(f"command from {agent} expired {ago:.0f} s ago")
    if command.issued_ns > now_ns + MAX_SKEW_S * 1e9:
        raise CommandError(f"command from {agent} issued in the future (clock?)")
    if command.expires_ns - command.issued_ns > MAX_LIFETIME_S * 1e9:
        raise CommandError(f"command from {agent} lives over {MAX_LIFETIME_S:g} s")
    return command


class NonceStore:
    """Nonces of commands already acted on or refused, each kept until its command expires,
    on disk (``fsutil.write_atomic``) before the command takes effect."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[str, int] = {}
        #: What was wrong with the store found at start (kept aside), for the audit log.
        self.damaged: str | None = None
        try:
            loaded = json.loads(path.read_bytes())
            self._seen = {str(k): int(v) for k, v in loaded.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, AttributeError) as exc:
            # Never silently repaired: the damaged file is kept aside and the inbox audits it.
            # Commands live at most MAX_LIFETIME_S, so the replays it could let through are
            # bounded to that window.
            aside = path.with_name(f"{path.name}.damaged-{time.time_ns()}")
            self.damaged = f"{path} unreadable ({exc}); kept as {aside.name}"
            log.error("command nonce store %s", self.damaged)
            try:
                path.rename(aside)
            except OSError as err:
                self.damaged += f" (not moved aside: {err})"

    def seen(self, nonce: str) -> bool:
        return nonce in self._seen

    def add(self, nonce: str, expires_ns: int, now_ns: int) -> None:
        self._seen = {n: e for n, e in self._seen.items() if e > now_ns}
        self._seen[nonce] = expires_ns
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps(self._seen, sort_keys=True).encode(), mode=0o600)


Audit = Callable[[str, dict[str, Any], str], None]


class CommandInbox:
    """Checks every command the uplink pulls from the CSU, hands the good ones to the
    engine and audits the refusals. Called from the uplink thread only; ``_lock`` keeps the
    nonce check and its record together should another caller appear."""

    def __init__(
        self,
        cfg: EdgeConfig,
        engine: Any,
        audit: Audit,
        ca_certs: Sequence[x509.Certificate],
        *,
        wall_ns: Callable[[], int] = time.time_ns,
        crl: CityCrl | None = None,
    ) -> None:
        self.cfg = cfg
        self.engine = engine
        self.audit = audit
        self.ca_certs = list(ca_certs)
        self.crl = crl
        self._wall_ns = wall_ns
        self.nonces = NonceStore(cfg.unit.data_dir / "outputs" / "command-nonces.json")
        if self.nonces.damaged is not None:
            audit("output-command-nonces-damaged", {"reason": self.nonces.damaged}, "edged")
        self._lock = threading.Lock()
        self.accepted = 0
        self.refused = 0

    def handle(self, envelope: bytes) -> bool:
        """True when the command was accepted (queued to the engine)."""
        now = self._wall_ns()
        agent = "unknown sender"
        with self._lock:
            try:
                cmd = verify(
                    envelope,
                    unit_id=self.cfg.unit.id,
                    ca_certs=self.ca_certs,
                    now_ns=now,
                    crl=self.crl,
                )
                agent = cmd.agent
                self._check_scope(cmd)
                if self.nonces.seen(cmd.nonce):
                    raise CommandError(f"replayed command (nonce {cmd.nonce} already used)")
                self.nonces.add(cmd.nonce, cmd.expires_ns, now)
            except CommandError as exc:
                self.refused += 1
                log.warning("command refused: %s", exc)
                self.audit("output-command-refused", {"reason": str(exc)}, agent)
                self.engine.command_refused({"reason": str(exc)}, agent)
                return False
            except OSError as exc:
                self.refused += 1
                log.error("command refused: its nonce could not be recorded: %s", exc)
                details = {"reason": f"nonce not recorded: {exc}"}
                self.audit("output-command-refused", details, agent)
                self.engine.command_refused(details, agent)
                return False
        self.accepted += 1
        self.audit(
            "output-command-accepted",
            {"type": cmd.kind, "nonce": cmd.nonce, "playbook": cmd.playbook, "event": cmd.event,
             "output": cmd.output, "state": cmd.state},
            cmd.agent,
        )  # fmt: skip
        if cmd.kind == "confirm":
            assert cmd.event is not None and cmd.playbook is not None
            self.engine.confirm(cmd.event, cmd.playbook, cmd.agent)
        else:
            assert cmd.output is not None and cmd.state is not None
            self.engine.manual(cmd.output, cmd.state, cmd.duration_s or 0.0, cmd.agent)
        return True

    def _check_scope(self, cmd: Command) -> None:
        outputs = {o.name for o in self.cfg.outputs}
        if cmd.kind == "confirm":
            pb = next((p for p in self.cfg.playbooks if p.name == cmd.playbook), None)
            if pb is None or not isinstance(cmd.event, str):
                raise CommandError(f"no playbook {cmd.playbook!r} on this unit")
            target = pb.output
        else:
            if cmd.output not in outputs or not isinstance(cmd.state, str):
                raise CommandError(f"no output {cmd.output!r} on this unit")
            if cmd.duration_s is None or not 0 < cmd.duration_s <= 86_400:
                raise CommandError("a manual command needs duration_s, 0 to 86400 s")
            target = cmd.output
        if target not in cmd.outputs:
            raise CommandError(f"output {target!r} is outside the command's scope {cmd.outputs}")


def load_ca_certs(path: Path) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        log.error("city CA %s unreadable: every command will be refused (%s)", path, exc)
        return []
