"""``python -m edge.csu.demo_setup --data-dir D --out DIR``: a CSU on loopback for ``make demo``.

Creates (once, then reuses) a small city CA, the receiver's certificate, the authority key
that opens sealed segments, an operator token; issues the unit's TLS certificate into
``D/keys/`` and certifies its signing key (``unit-signing.crt``, evidence profile), which the
unit presents to the receiver itself (nothing is copied to the CSU by hand); then writes, with
a free port, ``DIR/csu.toml`` (for ``edge-csu serve``) and ``DIR/edge.toml`` (the embedded
demo configuration plus the vault's recipient and the uplink), and a console account
(``DIR/console-login``: name, password, one-time-code secret). Prints shell assignments
(``CSU_PORT=…``) for the demo script; ``--code DIR`` prints the account's current one-time code
(what the operator's authenticator app would show).
Demo material only: a real city uses its own PKI (docs/UPLINK.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import secrets
import socket
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.identity import (
    CA_CHAIN_NAME,
    SIGNING_CERT_NAME,
    TLS_CERT_NAME,
    TLS_KEY_NAME,
    enrolment,
    evidence,
    keys_dir_of,
    load_or_create_signing_key,
)
from edge.vault import recipient_keys as vault_keys

from ..config import DEMO_CONFIG, DEMO_CONFIG_TOML
from ..errors import CaError
from ..fsutil import write_new_private
from .ca import Profile, VideoCA, cert_pem, key_pem
from .token_cmd import operator_entry

SERVER_NAME = "csu.demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _held_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    """A TLS key already there (a certificate lost, not the key): it is reused, never replaced."""
    if not path.exists():
        return None
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CaError(f"{path}: not an ECDSA key")
    return key


def setup(data_dir: Path, out: Path) -> dict[str, str]:
    out.mkdir(parents=True, exist_ok=True)
    unit_id = DEMO_CONFIG.unit.id
    ca_dir = out / "ca"
    ca = VideoCA.open(ca_dir) if (ca_dir / "video-ca.key").exists() else VideoCA.init(ca_dir)
    keys = out / "keys"
    keys.mkdir(exist_ok=True)
    if not (keys / "csu.crt").exists():
        held = _held_key(keys / "csu.key")
        key, cert = ca.issue(
            SERVER_NAME, profile=Profile.SERVER, dns_names=(SERVER_NAME,), key=held
        )
        if held is None:
            write_new_private(keys / "csu.key", key_pem(key))
        (keys / "csu.crt").write_bytes(cert_pem(cert) + ca.chain_pem)
    if not (keys / "authority.key.json").exists():
        vault_keys.write_keypair(keys, DEMO_CONFIG.vault.kem, "authority")
    token_file = out / "operator-token"
    if not token_file.exists():
        write_new_private(token_file, secrets.token_urlsafe(24).encode())
    token = token_file.read_text().strip()
    unit_keys = keys_dir_of(data_dir)
    signing = load_or_create_signing_key(unit_keys)
    if not (unit_keys / TLS_CERT_NAME).exists():
        held = _held_key(unit_keys / TLS_KEY_NAME)
        ukey, ucert = ca.issue(unit_id, key=held)
        if held is None:
            write_new_private(unit_keys / TLS_KEY_NAME, key_pem(ukey))
        (unit_keys / TLS_CERT_NAME).write_bytes(cert_pem(ucert))
    (unit_keys / CA_CHAIN_NAME).write_bytes(ca.chain_pem)
    if not evidence.certifies(unit_keys / SIGNING_CERT_NAME, signing.public_key()):
        # The installer's flow: request, CA signature (evidence profile), checked install.
        csr = x509.load_pem_x509_csr(enrolment.make_signing_csr(signing, unit_id))
        pem = cert_pem(ca.sign_csr(csr)) + ca.chain_pem
        enrolment.install_certificates(unit_keys, pem, unit_id, ca_data=ca.chain_pem)
    login = _console_account(out)
    port = _free_port()
    console_port = _free_port()
    created = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the demo token: 30 days each run
    (out / "csu.toml").write_text(
        f"""# CSU receiver of the demo (edge-csu serve --config {out / "csu.toml"})
storage_dir = "storage"
registry_dir = "units"
audit_log = "audit.jsonl"
authority_key_file = "keys/authority.key.json"

[units]
host = "127.0.0.1"
port = {port}

[operators_listen]
host = "127.0.0.1"
port = {console_port}

[tls]
cert_file = "keys/csu.crt"
key_file = "keys/csu.key"
client_ca_file = "ca/chain.pem"
crl_file = "ca/crl.pem"

{operator_entry("demo-operator", token, created, created + dt.timedelta(days=30))}"""
    )
    unit_toml = DEMO_CONFIG_TOML.replace('data_dir = "./edge-data"', f'data_dir = "{data_dir}"')
    recipient = f'csu_public_key = "{(keys / "authority.pub.json").resolve()}"\n'
    # This demo has a real CSU key: the embedded default's demo recipient is not wanted.
    unit_toml = "\n".join(
        line for line in unit_toml.splitlines() if not line.startswith("demo_recipient")
    )
    if "\n[vault]\n" in unit_toml:
        unit_toml = unit_toml.replace("\n[vault]\n", "\n[vault]\n" + recipient, 1)
    else:
        unit_toml += "\n[vault]\n" + recipient
    (out / "edge.toml").write_text(
        unit_toml
        + f"""
[uplink]
enabled = true
csu_url = "https://127.0.0.1:{port}"
server_name = "{SERVER_NAME}"
"""
    )
    return {
        "CSU_PORT": str(port),
        "CSU_TOKEN": token,
        "CSU_UNIT": unit_id,
        "CSU_CONSOLE": f"https://127.0.0.1:{console_port}/console/",
        "CSU_LOGIN": login[0],
        "CSU_PASSWORD": login[1],
    }


def _console_account(out: Path) -> tuple[str, str, str]:
    """The demo's console account (a supervisor for the whole fleet), made once."""
    from .console import OperatorStore, Role, Scope
    from .console.credentials import new_totp_secret

    path = out / "console-login"
    if path.exists():
        name, password, secret = path.read_text().split()
        return name, password, secret
    name, password, secret = "demo", secrets.token_urlsafe(12), new_totp_secret()
    store = OperatorStore(out / "operators.db")
    if store.get(name) is None:
        store.add(name, Role.SUPERVISOR, Scope(), password, secret)
    else:  # the login file was lost, not the account: a new password and secret
        store.reset(name, password, secret)
    write_new_private(path, f"{name} {password} {secret}\n".encode())
    return name, password, secret


def current_code(out: Path) -> str:
    from .console.credentials import totp_at, totp_step

    secret = (out / "console-login").read_text().split()[2]
    return totp_at(secret, totp_step(time.time()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--code", type=Path, help="print the demo account's one-time code")
    args = parser.parse_args(argv)
    if args.code is not None:
        print(current_code(args.code))
        return 0
    if args.data_dir is None or args.out is None:
        parser.error("--data-dir and --out are required")
    for name, value in setup(args.data_dir.resolve(), args.out.resolve()).items():
        print(f"{name}={value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
