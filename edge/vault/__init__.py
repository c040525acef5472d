"""The evidence vault: sealed segments (AES-256-GCM under epoch keys sealed with HPKE to the
CSU), Ed25519 signatures and a hash chain, an on-disk ring with at most 30 days' retention,
crash recovery, the uplink's outbox, verification and evidence export. See docs/VAULT.md and
docs/FORMATS.md; :class:`edge.vault.store.Vault` is the entry point."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.vault.audit import AuditLog as AuditLog
    from edge.vault.audit import check_audit as check_audit
    from edge.vault.base import Backlog as Backlog
    from edge.vault.base import Outbox as Outbox
    from edge.vault.base import OutboxItem as OutboxItem
    from edge.vault.base import OutboxKind as OutboxKind
    from edge.vault.bundle import export_bundle as export_bundle
    from edge.vault.bundle import open_bundle as open_bundle
    from edge.vault.bundle import verify_bundle as verify_bundle
    from edge.vault.eventlog import read_events as read_events
    from edge.vault.index import Index as Index
    from edge.vault.index import IndexRow as IndexRow
    from edge.vault.recipient_keys import EpochKey as EpochKey
    from edge.vault.recipient_keys import load_private as load_private
    from edge.vault.recipient_keys import load_public as load_public
    from edge.vault.recipient_keys import rotate_keypair as rotate_keypair
    from edge.vault.recipient_keys import write_keypair as write_keypair
    from edge.vault.retention import RetentionPolicy as RetentionPolicy
    from edge.vault.retention import plan_purge as plan_purge
    from edge.vault.snapshots import open_snapshot as open_snapshot
    from edge.vault.snapshots import seal_snapshot as seal_snapshot
    from edge.vault.store import Vault as Vault
    from edge.vault.timespec import parse_time as parse_time
    from edge.vault.timespec import resolve_range as resolve_range
    from edge.vault.verify import ChainVerifier as ChainVerifier
    from edge.vault.verify import VerifyReport as VerifyReport
    from edge.vault.verify import self_check as self_check
    from edge.vault.verify import verify_vault as verify_vault

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "read_events": "eventlog",
    "open_snapshot": "snapshots",
    "seal_snapshot": "snapshots",
    "AuditLog": "audit",
    "Backlog": "base",
    "ChainVerifier": "verify",
    "EpochKey": "recipient_keys",
    "Index": "index",
    "IndexRow": "index",
    "Outbox": "base",
    "OutboxItem": "base",
    "OutboxKind": "base",
    "RetentionPolicy": "retention",
    "Vault": "store",
    "VerifyReport": "verify",
    "check_audit": "audit",
    "export_bundle": "bundle",
    "load_private": "recipient_keys",
    "load_public": "recipient_keys",
    "open_bundle": "bundle",
    "parse_time": "timespec",
    "plan_purge": "retention",
    "resolve_range": "timespec",
    "rotate_keypair": "recipient_keys",
    "self_check": "verify",
    "verify_bundle": "bundle",
    "verify_vault": "verify",
    "write_keypair": "recipient_keys",
}
__all__ = [
    "AuditLog",
    "Backlog",
    "ChainVerifier",
    "EpochKey",
    "Index",
    "IndexRow",
    "Outbox",
    "OutboxItem",
    "OutboxKind",
    "RetentionPolicy",
    "Vault",
    "VerifyReport",
    "check_audit",
    "export_bundle",
    "load_private",
    "load_public",
    "open_bundle",
    "open_snapshot",
    "parse_time",
    "plan_purge",
    "read_events",
    "resolve_range",
    "rotate_keypair",
    "seal_snapshot",
    "self_check",
    "verify_bundle",
    "verify_vault",
    "write_keypair",
]
__getattr__ = lazy_exports(__name__, _EXPORTS)
