"""The evidence vault: sealed segments (AES-256-GCM under epoch keys sealed with HPKE to the
CSU), Ed25519 signatures and a hash chain, an on-disk ring with at most 30 days' retention,
crash recovery, the uplink's outbox, verification and evidence export. See docs/VAULT.md and
docs/FORMATS.md; :class:`edge.vault.store.Vault` is the entry point."""
