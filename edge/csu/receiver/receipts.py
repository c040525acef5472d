"""The receiver's receipts: every accepted segment is answered with a signed receipt.

The receipt key is an Ed25519 key of the CSU's own (``receipt_key_file``), created once at the
first start with its public half beside it (``<name>.pub.pem``, to configure on the units as
``uplink.csu_receipt_key`` and to give ``edge-csu open --receipt-key``); never replaced, since
every receipt a unit or a bundle holds is checked against it. Format and meaning:
:mod:`edge.vault.receipt`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.errors import ConfigError
from edge.fsutil import write_new, write_new_private
from edge.vault.receipt import sign_receipt


def public_path(key_file: Path) -> Path:
    return key_file.with_name(key_file.name.removesuffix(".pem") + ".pub.pem")


def load_or_create(key_file: Path, what: str = "receipt key") -> ed25519.Ed25519PrivateKey:
    """The receipt key (or another CSU signing key, named by ``what``), created (0600) with its
    public PEM if there is none yet; an existing one is never overwritten."""
    if not key_file.exists():
        key = ed25519.Ed25519PrivateKey.generate()
        key_file.parent.mkdir(parents=True, exist_ok=True)
        write_new_private(
            key_file,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    try:
        loaded = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{key_file}: cannot load the {what} ({exc})") from None
    if not isinstance(loaded, ed25519.Ed25519PrivateKey):
        raise ConfigError(f"{key_file}: the {what} must be an Ed25519 private key")
    pub = public_path(key_file)
    if not pub.exists():
        write_new(
            pub,
            loaded.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
            mode=0o644,
        )
    return loaded


class Receipter:
    """Signs receipts with the CSU's clock (injected for tests); thread-safe (no state)."""

    def __init__(
        self, key: ed25519.Ed25519PrivateKey, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self._key = key
        self._clock = clock

    def sign(self, unit: str, camera: str, sequence: int, chain_hash_hex: str) -> bytes:
        """The signed receipt (raw bytes) of the segment the CSU holds under that sequence."""
        return sign_receipt(
            self._key,
            device_id=unit,
            camera_id=camera,
            sequence=sequence,
            chain_hash=bytes.fromhex(chain_hash_hex),
            csu_time_ns=self._clock(),
        )
