"""Helpers of the uplink and CSU receiver tests: a city PKI, sealed segments, a real receiver.

Certificates come from the project's own CA (:mod:`edge.csu.ca`), sealed segments from the
vault's format and key code, the receiver is the real ``edge-csu serve`` process.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from edge.config import RecipientKem
from edge.csu.ca import Profile, VideoCA, cert_pem, key_pem
from edge.csu.receiver.registry import UnitRegistry
from edge.identity.unitkeys import public_pem
from edge.privacy.commitment import MaskCommitment
from edge.vault import format as fmt
from edge.vault import recipient_keys as vault_keys
from edge.vault.base import Backlog, Outbox, OutboxItem, OutboxKind

from .conftest import REPO

CSU_NAME = "csu.test"


@dataclass
class Pki:
    directory: Path
    ca: VideoCA

    @classmethod
    def create(cls, directory: Path) -> Pki:
        ca = VideoCA.init(directory / "ca")
        (directory / "chain.pem").write_bytes(ca.chain_pem)
        return cls(directory, ca)

    @property
    def chain(self) -> Path:
        return self.directory / "chain.pem"

    def issue(
        self,
        name: str,
        out: Path,
        *,
        profile: Profile = Profile.CLIENT,
        days: int = 30,
        not_before: dt.datetime | None = None,
    ) -> tuple[Path, Path, int]:
        """(certificate, key, serial) written as ``out/NAME.crt`` and ``out/NAME.key``."""
        out.mkdir(parents=True, exist_ok=True)
        dns = (name,) if profile is Profile.SERVER else ()
        key, cert = self.ca.issue(
            name, profile=profile, dns_names=dns, days=days, not_before=not_before
        )
        crt_path, key_path = out / f"{name}.crt", out / f"{name}.key"
        crt_path.write_bytes(cert_pem(cert) + self.ca.chain_pem)
        key_path.write_bytes(key_pem(key))
        key_path.chmod(0o600)
        return crt_path, key_path, cert.serial_number


@dataclass
class Csu:
    """Files of a receiver set up for a test, and the running process when started."""

    directory: Path
    pki: Pki
    authority: vault_keys.RecipientPrivate
    operator_token: str = "operator-secret-token"
    expired_token: str = "token-of-an-operator-who-left"
    mqtt_port: int | None = None
    proc: subprocess.Popen[bytes] | None = None
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def config(self) -> Path:
        return self.directory / "csu.toml"

    def write_config(
        self, *, max_segment_bytes: int = 8 * 1024 * 1024, port: int = 0, extra: str = ""
    ) -> None:
        """``extra``: more TOML tables appended as they are (``[limits]``, ``[mqtt]``)."""
        token_hash = hashlib.sha256(self.operator_token.encode()).hexdigest()
        mqtt = (
            # a throwaway loopback broker; TLS and credentials: tests/test_csu_mqtt.py
            f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {self.mqtt_port}\n'
            f'tls = false\ntopic_prefix = "city"\n'
            if self.mqtt_port
            else ""
        )
        self.config.write_text(
            f"""storage_dir = "storage"
registry_dir = "units"
audit_log = "audit.jsonl"
authority_key_file = "keys/authority.key.json"
max_segment_bytes = {max_segment_bytes}

[units]
host = "127.0.0.1"
port = {port}

[operators_listen]
host = "127.0.0.1"
port = 0

[tls]
cert_file = "keys/{CSU_NAME}.crt"
key_file = "keys/{CSU_NAME}.key"
client_ca_file = "{self.pki.chain}"
crl_file = "{self.pki.ca.directory / "crl.pem"}"

[[operators]]
name = "alice"
token_sha256 = "{token_hash}"
expires = 2100-01-01T00:00:00Z

[[operators]]
name = "bob"
token_sha256 = "{hashlib.sha256(self.expired_token.encode()).hexdigest()}"
created = 2020-01-01T00:00:00Z
expires = 2020-04-01T00:00:00Z

{mqtt}
{extra}"""
        )

    def enroll(self, unit_id: str, signing_key: ed25519.Ed25519PrivateKey) -> None:
        UnitRegistry.enroll(self.directory / "units", unit_id, public_pem(signing_key.public_key()))

    def start(self, timeout: float = 20.0) -> None:
        ports_file = self.directory / "ports.json"
        ports_file.unlink(missing_ok=True)
        log = (self.directory / "csu.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge.csu.main",
                "serve",
                "--config",
                str(self.config),
                "--ports-file",
                str(ports_file),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        deadline = time.monotonic() + timeout
        while not ports_file.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"edge-csu serve did not start: {self.log()[-2000:]}")
            time.sleep(0.05)
        self.ports = json.loads(ports_file.read_text())

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        path = self.directory / "csu.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stored(self, unit_id: str, camera_id: str) -> dict[int, bytes]:
        base = self.directory / "storage" / unit_id / camera_id
        if not base.is_dir():
            return {}
        return {int(p.stem): p.read_bytes() for p in base.glob("*.seg")}


def make_csu(tmp: Path, *, mqtt_port: int | None = None) -> Csu:
    pki = Pki.create(tmp / "pki")
    directory = tmp / "csu"
    pki.issue(CSU_NAME, directory / "keys", profile=Profile.SERVER)
    _, key_path = vault_keys.write_keypair(directory / "keys", RecipientKem.X25519, "authority")
    csu = Csu(directory, pki, vault_keys.load_private(key_path), mqtt_port=mqtt_port)
    csu.write_config()
    return csu


class Sealer:
    """Seals payloads the way the vault does: one epoch, a chain per camera."""

    def __init__(
        self,
        unit_id: str,
        camera_id: str,
        recipient: vault_keys.RecipientPublic,
        signing_key: ed25519.Ed25519PrivateKey | None = None,
    ) -> None:
        self.unit_id = unit_id
        self.camera_id = camera_id
        self.signing_key = signing_key or ed25519.Ed25519PrivateKey.generate()
        self.epoch = vault_keys.EpochKey()
        self.prev_hash = fmt.ZERO_HASH
        self.sequence = 0
        self.frame_index = 0
        info = fmt.hpke_info(unit_id, camera_id, self.epoch.epoch_id)
        env = fmt.EpochEnvelope(
            unit_id,
            camera_id,
            self.epoch.epoch_id,
            time.time_ns(),
            tuple(self.epoch.seal_to([recipient], info)),
        )
        self.envelope = fmt.sign_envelope(env, self.signing_key)

    def seal(
        self,
        init: bytes,
        media: bytes,
        *,
        start_ns: int,
        end_ns: int,
        frames: int = 50,
        masks: tuple[MaskCommitment, ...] = (),
    ) -> bytes:
        """``masks``: the mask commitments of the segment (none: a version-1 header)."""
        nonce = self.epoch.next_nonce()
        header = fmt.SegmentHeader(
            device_id=self.unit_id,
            camera_id=self.camera_id,
            sequence=self.sequence,
            start_wall_ns=start_ns,
            end_wall_ns=end_ns,
            frame_count=frames,
            first_frame_index=self.frame_index,
            epoch_id=self.epoch.epoch_id,
            nonce=nonce,
            prev_hash=self.prev_hash,
            init_len=len(init),
            ciphertext_len=len(init) + len(media) + fmt.TAG_LEN,
            masks=masks,
        )
        ciphertext = self.epoch.encrypt(nonce, init + media, header.pack())
        raw = fmt.sign_segment(header, ciphertext, self.signing_key)
        self.prev_hash = fmt.sha256(raw)
        self.sequence += 1
        self.frame_index += frames
        return raw


class MemoryOutbox(Outbox):
    """An outbox over files in a directory, with the vault's ordering rules. Thread-safe."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._items: dict[tuple[str, str, int, bytes], OutboxItem] = {}
        self.delivered: list[tuple[str, int]] = []

    def add_envelope(self, camera_id: str, epoch_id: bytes, raw: bytes) -> None:
        path = self.directory / f"{camera_id}-{epoch_id.hex()}.env"
        path.write_bytes(raw)
        now = time.time_ns()
        item = OutboxItem(OutboxKind.ENVELOPE, camera_id, -1, epoch_id, now, now, len(raw), path)
        with self._lock:
            self._items[(item.kind, camera_id, -1, epoch_id)] = item

    def add_segment(self, raw: bytes) -> OutboxItem:
        seg = fmt.parse_segment(raw)
        h = seg.header
        path = self.directory / f"{h.camera_id}-{h.sequence:08d}.seg"
        path.write_bytes(raw)
        item = OutboxItem(
            OutboxKind.SEGMENT,
            h.camera_id,
            h.sequence,
            h.epoch_id,
            h.start_wall_ns,
            h.end_wall_ns,
            len(raw),
            path,
        )
        with self._lock:
            self._items[(item.kind, h.camera_id, h.sequence, h.epoch_id)] = item
        return item

    def _sorted(self) -> list[OutboxItem]:
        return sorted(
            self._items.values(),
            key=lambda i: (i.kind != OutboxKind.ENVELOPE, i.start_wall_ns, i.camera_id, i.sequence),
        )

    def outbox(self, limit: int = 100) -> list[OutboxItem]:
        with self._lock:
            return self._sorted()[:limit]

    def outbox_since(self, wall_ns: int, limit: int = 100) -> list[OutboxItem]:
        with self._lock:
            return [i for i in self._sorted() if i.end_wall_ns >= wall_ns][:limit]

    def mark_delivered(self, camera_id: str, sequence: int) -> None:
        with self._lock:
            for key in [k for k in self._items if k[1] == camera_id and k[2] == sequence]:
                del self._items[key]
            self.delivered.append((camera_id, sequence))

    def mark_envelope_delivered(self, camera_id: str, epoch_id: bytes) -> None:
        with self._lock:
            self._items.pop((OutboxKind.ENVELOPE, camera_id, -1, epoch_id), None)

    def backlog(self) -> Backlog:
        with self._lock:
            segs = [i for i in self._items.values() if i.kind is OutboxKind.SEGMENT]
        return Backlog(
            segments=len(segs),
            seconds=sum(i.end_wall_ns - i.start_wall_ns for i in segs) / 1e9,
            bytes=sum(i.size for i in segs),
        )

    def pending_count(self) -> int:
        with self._lock:
            return len(self._items)


def unit_files(csu: Csu, unit_id: str, data_dir: Path, **issue: Any) -> tuple[Path, Path, int]:
    """Issue a unit certificate into ``data_dir/keys`` the way enrolment lays it out."""
    keys = data_dir / "keys"
    crt, key, serial = csu.pki.issue(unit_id, keys, **issue)
    crt.replace(keys / "unit-tls.crt")
    key.replace(keys / "unit-tls.key")
    (keys / "ca.pem").write_bytes(csu.pki.ca.chain_pem)
    return keys / "unit-tls.crt", keys / "unit-tls.key", serial


def signing_key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


os.environ.setdefault("PYTHONUNBUFFERED", "1")


def encoded_segments(
    count: int, *, width: int = 320, height: int = 180, fps: float = 10.0
) -> list[Any]:
    """Real CMAF segments (1 s each) of the synthetic scene, from the project's encoder."""
    from edge.capture.synthetic import SyntheticSource
    from edge.config import EncoderConfig
    from edge.video.encoder import SegmentEncoder

    source = SyntheticSource(width, height, fps, realtime=False)
    source.open()
    encoder = SegmentEncoder(
        "cam1", width, height, fps, EncoderConfig(bitrate_kbps=300, segment_seconds=1.0)
    )
    out: list[Any] = []
    while len(out) < count:
        frame = source.read()
        assert frame is not None
        out.extend(encoder.encode(frame))
    source.close()
    return out[:count]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port
