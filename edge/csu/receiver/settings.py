"""Configuration of the CSU receiver (``edge-csu serve --config FILE``): its own small schema.

Same rules as the unit's (:mod:`edge.config`): every field typed, bounded, defaulted and
described; unknown keys are errors naming the file, the dotted key and the line. Relative paths
are resolved against the directory of the configuration file, so a CSU directory can be moved
as a whole.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ...config import locate_line
from ...errors import ConfigError
from ...uplink.protocol import DEFAULT_MAX_SEGMENT_BYTES
from ..console.roles import OPERATOR_NAME, SCOPE_ITEM

_LOOPBACK = ("localhost", "127.0.0.1", "::1")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class ListenConfig(_Section):
    host: str = Field(default="127.0.0.1", min_length=1, max_length=253)
    """Address the listener binds to."""
    port: int = Field(default=8443, ge=0, le=65535)
    """TCP port (0 picks a free one, written to ``<storage>/ports.json``)."""


class TlsConfig(_Section):
    cert_file: Path = Path("keys/csu-tls.crt")
    """Certificate the receiver presents (and its chain), PEM."""
    key_file: Path = Path("keys/csu-tls.key")
    """Private key of that certificate, PEM."""
    client_ca_file: Path = Path("keys/ca.pem")
    """CA certificate(s) unit certificates must chain to; no other CA is trusted."""
    crl_file: Path | None = None
    """CRL of that CA (PEM); revoked units are refused at the handshake and per request."""


class OperatorConfig(_Section):
    name: str = Field(pattern=OPERATOR_NAME.pattern)
    """Who the operator is, as the audit log names them."""
    token_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    """SHA-256 (hex) of the operator's bearer token; the token itself is never stored."""
    created: dt.datetime | None = None
    """When the token was issued (``edge-csu token new`` writes it), with its UTC offset."""
    expires: dt.datetime
    """When the token stops being accepted (refused with 401, audited), with its UTC offset.
    Required: a bearer token that never expires outlives the person it was given to."""
    role: Literal["viewer", "investigator", "supervisor", "admin"] = "investigator"
    """What the token may do (roles of the console); the default keeps what tokens could do
    before roles existed: view and export."""
    scope: list[str] = Field(default_factory=list, max_length=1000)
    """Units (``unit``) and cameras (``unit/camera``) the token may see; empty (entries written
    before scopes existed) means every camera."""

    @field_validator("scope")
    @classmethod
    def _scope_items(cls, value: list[str]) -> list[str]:
        for item in value:
            if not SCOPE_ITEM.match(item):
                raise ValueError(f"scope item {item!r}: give UNIT or UNIT/CAMERA (lower case)")
        return value

    @field_validator("created", "expires")
    @classmethod
    def _with_offset(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.utcoffset() is None:
            raise ValueError("give the UTC offset (e.g. 2027-03-01T00:00:00Z)")
        return value

    @model_validator(mode="after")
    def _expires_after_creation(self) -> OperatorConfig:
        if self.created is not None and self.expires <= self.created:
            raise ValueError("expires must be after created")
        return self


@dataclass(frozen=True, slots=True)
class TokenVerdict:
    """Whom a bearer token authenticates, or why it is refused (for the audit log)."""

    operator: str | None
    refusal: str | None = None
    entry: OperatorConfig | None = None
    """The configuration entry of the token (role and scope) when it is accepted."""


class MqttConfig(_Section):
    enabled: bool = False
    """Publish verified events to an MQTT broker."""
    host: str = Field(default="localhost", min_length=1, max_length=253)
    """Broker host name (the name its TLS certificate carries)."""
    port: int = Field(default=8883, ge=1, le=65535)
    """Broker port (8883 = MQTT over TLS)."""
    tls: bool = True
    """Use TLS (the broker's certificate checked against ``ca_file``). Only a broker on this
    host may be reached without it, and never with a password."""
    ca_file: Path | None = None
    """CA chain of the broker's certificate (none: the system's trust store)."""
    cert_file: Path | None = None
    """Client certificate (the broker takes its CN as the user name); with ``key_file``."""
    key_file: Path | None = None
    """Private key of ``cert_file``."""
    username: str | None = Field(default=None, pattern=r"^[A-Za-z0-9._@-]{1,64}$")
    """User name at the broker; the password is read from ``password_file``."""
    password_file: Path | None = None
    """File holding the broker password (first line), readable by the receiver only; a
    password is never written in this configuration."""
    topic_prefix: str = Field(default="edge", pattern=r"^[A-Za-z0-9/_-]{1,64}$")
    """Events go to ``<prefix>/<unit>/<camera>/events``."""
    qos: int = Field(default=1, ge=0, le=2)
    """MQTT quality of service of event messages: 1 (PUBACK) or 2 (PUBCOMP). An event is
    marked published only once the broker acknowledges it, so 0 (no acknowledgement, at most
    once) is refused."""
    ack_timeout_s: float = Field(default=5.0, gt=0, le=8)
    """How long the unit's request waits for the broker's acknowledgement of its event; past
    it the unit is answered 503 (stored, not yet published: send again). Below cluster mode's
    10 s publication lease, so a receiver still waiting keeps its claim."""
    republish_interval_s: float = Field(default=30.0, ge=1, le=3600)
    """How often the receiver publishes stored events still unacknowledged (their unit has
    gone silent, or a receiver died before the broker's acknowledgement); also at start."""
    republish_batch: int = Field(default=100, ge=1, le=10_000)
    """Most such events published per pass (the oldest first)."""

    @field_validator("qos")
    @classmethod
    def _acknowledged(cls, value: int) -> int:
        if value == 0:
            raise ValueError(
                "qos 0 is never acknowledged by the broker (at most once: an event could be "
                "lost); use 1 or 2"
            )
        return value

    @model_validator(mode="after")
    def _credentials(self) -> MqttConfig:
        if (self.username is None) != (self.password_file is None):
            raise ValueError("username and password_file go together")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together")
        if not self.tls and (self.username is not None or self.cert_file is not None):
            raise ValueError("credentials are only sent over TLS (tls = true)")
        if not self.tls and self.enabled and self.host not in _LOOPBACK:
            raise ValueError(f"a broker on another host ({self.host}) is reached over TLS only")
        return self


class LimitsConfig(_Section):
    """What one client may hold of the receiver (each listener counts its own connections)."""

    max_connections: int = Field(default=2000, ge=1, le=100_000)
    """Open connections per listener, authenticated or not; more are closed at once."""
    max_connections_per_source: int = Field(default=16, ge=1, le=10_000)
    """Open connections from one IP address per listener (a unit needs one or two)."""
    handshake_timeout_s: float = Field(default=10.0, gt=0, le=300)
    """A TLS handshake not finished within this is aborted."""
    idle_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """A connection that sends no request for this long (including none at all) is closed."""
    body_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    """A request body must arrive whole within this, or the request gets 408."""
    proxy_protocol_from: list[str] = Field(default_factory=list, max_length=64)
    """Addresses of the proxies in front of the units' listener (HAProxy with
    ``send-proxy-v2``): their connections must begin with a PROXY protocol v2 header, whose
    source address is then the unit's for ``max_connections_per_source`` and the logs.
    Connections from other addresses are taken as they are."""

    @field_validator("proxy_protocol_from")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        import ipaddress

        for item in value:
            try:
                ipaddress.ip_address(item)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address") from None
        return value


#: The legal limit (CSI L252-3: one month): a configuration may shorten it, never lengthen it.
MAX_RETENTION_DAYS = 30


class RetentionConfig(_Section):
    """How long the CSU keeps recordings; docs/OPERATIONS.md, *Retention at the CSU*."""

    days: int = Field(default=MAX_RETENTION_DAYS, ge=1, le=MAX_RETENTION_DAYS)
    """Segments older than this are deleted, unless a legal hold covers them (at most 30)."""
    purge_interval_s: float = Field(default=3600.0, ge=1, le=86400)
    """How often the running receiver purges (and at start); SIGUSR1 purges at once."""
    directory: Path = Path("retention")
    """Legal holds (``holds.jsonl``) and signed deletion records (``deletions.jsonl``)."""
    key_file: Path = Path("keys/csu-retention.pem")
    """Ed25519 key signing the deletion records (created at first use, public half beside it
    as ``.pub.pem`` for auditors)."""


class ClusterDatabaseConfig(_Section):
    conninfo: str = Field(min_length=1, max_length=1000)
    """libpq connection string of the shared PostgreSQL database (``host=db.csu.city
    dbname=edge user=edge_csu sslmode=verify-full``); never a password."""
    password_file: Path | None = None
    """File holding the database password (first line), readable by the receiver only."""
    connect_timeout_s: int = Field(default=5, ge=1, le=120)
    """A connection not made within this is a lost database (the unit is answered 503)."""

    @field_validator("conninfo")
    @classmethod
    def _no_password(cls, value: str) -> str:
        if re.search(r"(^|\s)password\s*=", value) or re.search(r"://[^/@]*:[^/@]*@", value):
            raise ValueError("no password in conninfo: give password_file")
        return value


class ClusterObjectStoreConfig(_Section):
    endpoint: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=500)
    """URL of the S3-compatible service (``https://s3.csu.city``)."""
    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
    """Bucket holding the sealed bytes (made by the storage administrator)."""
    access_key: str = Field(min_length=1, max_length=200)
    """Access key id of the receivers' credentials."""
    secret_file: Path
    """File holding the secret key (first line), readable by the receiver only."""
    ca_file: Path | None = None
    """CA chain of the service's certificate (none: the system's trust store)."""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    """Connect and read timeout of one request; beyond it the unit is answered 503."""


class ClusterConfig(_Section):
    """Cluster mode (``storage = "cluster"``): docs/OPERATIONS.md, *Cluster mode*."""

    receiver_id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    """This receiver's name among the cluster's (recorded with what it stores; unique)."""
    database: ClusterDatabaseConfig
    """The shared PostgreSQL: segment index, chain decisions, envelopes, events, cursors."""
    object_store: ClusterObjectStoreConfig
    """The shared S3-compatible store: the sealed bytes."""


class ServeConfig(_Section):
    cluster: ClusterConfig | None = None
    """Shared database and object store of cluster mode (required by ``storage = "cluster"``)."""
    storage: Literal["embedded", "cluster"] = "embedded"
    """Where received data lives: ``embedded`` (``storage_dir``, one receiver) or ``cluster``
    (PostgreSQL and an S3-compatible store shared by several receivers, ``[cluster]``)."""
    storage_dir: Path = Path("storage")
    """Where received sealed segments and events are stored (per unit / camera / sequence)."""
    registry_dir: Path = Path("units")
    """Enrolled units: ``<unit-id>.crt`` (evidence certificate, presented by the unit) or
    ``<unit-id>.pem`` (a pinned Ed25519 signing public key, copied by hand)."""
    audit_log: Path = Path("audit.jsonl")
    """Append-only log of every viewing and export (who, what, when)."""
    audit_key_file: Path = Path("audit-key.pem")
    """Ed25519 key signing every audit record (created at the first start, 0600, public half
    beside it as ``.pub.pem`` for ``edge-csu audit verify``); never overwritten."""
    commands_dir: Path = Path("commands")
    """Signed commands to units' cabinet outputs waiting for their unit to pull them
    (``edge-csu command`` writes them here)."""
    config_dir: Path = Path("config")
    """Signed configuration documents offered to the units (``edge-csu config sign --out``
    writes there): each unit gets those for its id and those for groups (it keeps its own)."""
    update_dir: Path = Path("updates")
    """The update bundle offered to the units (``edge-csu fleet offer`` writes ``offer.json``
    and the bundle there); units fetch it with ``edgectl update fetch``."""
    authority_key_file: Path | None = None
    """Recipient private key that opens sealed segments for viewing (HLS); none disables it."""
    receipt_key_file: Path | None = None
    """Ed25519 key signing a receipt for every accepted segment (created at the first start,
    public half beside it as ``.pub.pem``); none: no receipts."""
    max_segment_bytes: int = Field(default=DEFAULT_MAX_SEGMENT_BYTES, ge=1024, le=1 << 30)
    """Largest sealed segment accepted; larger bodies are refused with 413."""
    live_segments: int = Field(default=6, ge=2, le=100)
    """Segments listed in a live HLS playlist."""
    units: ListenConfig = ListenConfig()
    """Listener for units (TLS 1.3, client certificate required)."""
    operators_listen: ListenConfig = ListenConfig(port=8444)
    """Listener for operators' video (TLS 1.3, bearer token)."""
    tls: TlsConfig = TlsConfig()
    """Certificates and trust anchors."""
    operators: list[OperatorConfig] = Field(default_factory=list, max_length=1000)
    """Bearer tokens (scripts, HLS players) authorised to view and export video."""
    operators_db: Path = Path("operators.db")
    """Console accounts, sessions and alert decisions (``edge-csu operator``), SQLite, mode
    0600; embedded mode only (cluster mode keeps them in the cluster's database)."""
    mqtt: MqttConfig = MqttConfig()
    """Event publishing."""
    limits: LimitsConfig = LimitsConfig()
    """Connection, handshake, idle and body-time limits of both listeners."""
    retention: RetentionConfig = RetentionConfig()
    """Age limit of recordings, legal holds and deletion records."""

    @field_validator("storage")
    @classmethod
    def _cluster_table(cls, value: str, info: ValidationInfo) -> str:
        # On `storage` (its line is what to fix); `cluster` is validated first, so a broken
        # [cluster] table is reported as itself, not as a missing one.
        if value == "cluster" and info.data.get("cluster") is None and "cluster" in info.data:
            raise ValueError('storage = "cluster" needs a [cluster] table')
        return value

    def resolved(self, base: Path) -> ServeConfig:
        """A copy with every relative path made relative to ``base``."""

        def fix(p: Path | None) -> Path | None:
            return None if p is None else (p if p.is_absolute() else base / p)

        tls = self.tls.model_copy(
            update={
                "cert_file": fix(self.tls.cert_file),
                "key_file": fix(self.tls.key_file),
                "client_ca_file": fix(self.tls.client_ca_file),
                "crl_file": fix(self.tls.crl_file),
            }
        )
        mqtt = self.mqtt.model_copy(
            update={
                "ca_file": fix(self.mqtt.ca_file),
                "cert_file": fix(self.mqtt.cert_file),
                "key_file": fix(self.mqtt.key_file),
                "password_file": fix(self.mqtt.password_file),
            }
        )
        retention = self.retention.model_copy(
            update={
                "directory": fix(self.retention.directory),
                "key_file": fix(self.retention.key_file),
            }
        )
        cluster = self.cluster
        if cluster is not None:
            cluster = cluster.model_copy(
                update={
                    "database": cluster.database.model_copy(
                        update={"password_file": fix(cluster.database.password_file)}
                    ),
                    "object_store": cluster.object_store.model_copy(
                        update={
                            "secret_file": fix(cluster.object_store.secret_file),
                            "ca_file": fix(cluster.object_store.ca_file),
                        }
                    ),
                }
            )
        return self.model_copy(
            update={
                "cluster": cluster,
                "mqtt": mqtt,
                "retention": retention,
                "storage_dir": fix(self.storage_dir),
                "registry_dir": fix(self.registry_dir),
                "audit_log": fix(self.audit_log),
                "audit_key_file": fix(self.audit_key_file),
                "commands_dir": fix(self.commands_dir),
                "config_dir": fix(self.config_dir),
                "update_dir": fix(self.update_dir),
                "operators_db": fix(self.operators_db),
                "authority_key_file": fix(self.authority_key_file),
                "receipt_key_file": fix(self.receipt_key_file),
                "tls": tls,
            }
        )

    def operator_for_token(self, token: str | None, now: dt.datetime) -> TokenVerdict:
        """The operator ``token`` authenticates at ``now``; a refusal names the reason (an
        expired token names its operator: the audit log then says whose it was)."""
        if not token:
            return TokenVerdict(None, "no bearer token")
        digest = hashlib.sha256(token.encode()).hexdigest()
        found: OperatorConfig | None = None
        for op in self.operators:  # every entry compared, in constant time each
            if hmac.compare_digest(op.token_sha256, digest):
                found = op
        if found is None:
            return TokenVerdict(None, "unknown token")
        if now >= found.expires:
            return TokenVerdict(
                None, f"token of {found.name} expired on {found.expires.isoformat()}"
            )
        return TokenVerdict(found.name, entry=found)


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse(text: str, *, path: str = "<csu config>", base: Path | None = None) -> ServeConfig:
    """Validate TOML text; :class:`ConfigError` names file, key and line of the first problem."""
    try:
        raw: dict[str, Any] = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", path=path) from None
    try:
        cfg = ServeConfig.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        loc = tuple(err["loc"])
        msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        raise ConfigError(
            msg, path=path, key=_format_loc(loc) or None, line=locate_line(text, loc)
        ) from None
    return cfg.resolved(base) if base is not None else cfg


def load(path: Path) -> ServeConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", path=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=str(path)) from None
    return parse(text, path=str(path), base=path.resolve().parent)
