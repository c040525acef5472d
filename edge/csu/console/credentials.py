"""Operator credentials: scrypt password hashes and RFC 6238 time-based one-time codes.

scrypt (memory-hard, from ``cryptography``) with N=2^15, r=8, p=1 costs 32 MiB and ≈0.1 s per
guess; the parameters are stored with each hash so they can be raised later without locking
anyone out. TOTP is the 30-second, 6-digit, HMAC-SHA1 profile every authenticator app reads
from an ``otpauth://`` URI; a code is accepted one step early or late (clock drift of the
workstation's phone) and never twice (the last accepted step is stored).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import os
import struct
import urllib.parse

from cryptography.exceptions import InvalidKey
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

SCRYPT_N = 1 << 15
SCRYPT_R = 8
SCRYPT_P = 1
MIN_PASSWORD_LENGTH = 12
TOTP_STEP_S = 30
TOTP_DIGITS = 6


def hash_password(password: str, *, n: int = SCRYPT_N) -> str:
    """``scrypt$N$r$p$salt$key`` (base64) of ``password``."""
    salt = os.urandom(16)
    key = Scrypt(salt=salt, length=32, n=n, r=SCRYPT_R, p=SCRYPT_P).derive(password.encode())
    return "$".join(["scrypt", str(n), str(SCRYPT_R), str(SCRYPT_P), _b64(salt), _b64(key)])


def check_password(password: str, stored: str) -> bool:
    try:
        kind, n, r, p, salt, key = stored.split("$")
        if kind != "scrypt":
            return False
        kdf = Scrypt(salt=_unb64(salt), length=32, n=int(n), r=int(r), p=int(p))
        kdf.verify(password.encode(), _unb64(key))
    except (InvalidKey, ValueError):
        return False
    return True


@functools.cache
def dummy_hash() -> str:
    """Checked against when the operator does not exist, so that a refusal takes as long
    either way (made on first use: not every program that imports this logs anyone in)."""
    return hash_password("no such operator, but the same cost")


def password_problem(password: str, name: str) -> str | None:
    """Why ``password`` is refused for ``name``, or None."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if name.lower() in password.lower():
        return "the password must not contain the operator's name"
    return None


def new_totp_secret() -> str:
    """A 160-bit secret in base32, as authenticator apps expect."""
    return base64.b32encode(os.urandom(20)).decode()


def totp_uri(secret: str, name: str, issuer: str = "edge CSU") -> str:
    label = urllib.parse.quote(f"{issuer}:{name}")
    query = urllib.parse.urlencode({"secret": secret, "issuer": issuer, "digits": TOTP_DIGITS})
    return f"otpauth://totp/{label}?{query}"


def totp_at(secret: str, step: int) -> str:
    """The code of time step ``step`` (RFC 4226 truncation)."""
    key = base64.b32decode(secret)
    mac = hmac.new(key, struct.pack(">Q", step), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    value = struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF
    return str(value % 10**TOTP_DIGITS).zfill(TOTP_DIGITS)


def totp_step(now_s: float) -> int:
    return int(now_s // TOTP_STEP_S)


def match_totp(secret: str, code: str, now_s: float, last_step: int) -> int | None:
    """The step ``code`` belongs to (within one step of ``now_s``) if later than ``last_step``
    (the one used at the previous log-in: no replay); None when refused."""
    code = code.strip().replace(" ", "")
    if len(code) != TOTP_DIGITS or not code.isdigit():
        return None
    now = totp_step(now_s)
    found = None
    for step in (now - 1, now, now + 1):
        if hmac.compare_digest(totp_at(secret, step), code) and step > last_step:
            found = step
    return found


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _unb64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)
