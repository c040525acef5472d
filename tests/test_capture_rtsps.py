"""rtsps:// cameras: the camera's certificate is checked before its password is sent.

A real camera (gst-rtsp-server over TLS) must work with its CA or with its pinned certificate;
an impostor on the camera's address (a Python TLS server that asks for Basic authentication,
as the one of the field trial did) must never receive the password, nor any RTSP request.
Certificates are made by the ``openssl`` CLI.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge import config
from edge.capture.pyav import PyAVSource
from edge.errors import CaptureError, ConfigError

from .conftest import tool
from .test_capture_live import SECRET, RtspCamera, _free_port, needs_server


@dataclass(frozen=True)
class Pki:
    ca: Path
    """Test CA of the camera maker / city."""
    camera: tuple[Path, Path]
    """Camera certificate for 127.0.0.1, issued by the CA."""
    self_signed: tuple[Path, Path]
    """A camera's own self-signed certificate, named after the camera, not its address."""
    impostor: tuple[Path, Path]
    """Self-signed for 127.0.0.1: all an attacker on the camera's address can present."""


def _openssl(*args: str | Path) -> None:
    subprocess.run([tool("openssl"), *map(str, args)], check=True, capture_output=True)


def _self_signed(directory: Path, name: str, subject: str, san: str, *ca: str) -> tuple[Path, Path]:
    crt, key = directory / f"{name}.crt", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", crt, "-days", "2", "-subj", subject, "-addext",
        f"subjectAltName={san}", *ca,
    )  # fmt: skip
    return crt, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("camera-pki")
    ca_crt, ca_key = d / "ca.crt", d / "ca.key"
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=Test camera CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    camera = _self_signed(
        d, "camera", "/CN=127.0.0.1", "IP:127.0.0.1", "-CA", str(ca_crt), "-CAkey", str(ca_key)
    )
    own = _self_signed(d, "own", "/CN=cam-0042.cabinet", "DNS:cam-0042.cabinet")
    impostor = _self_signed(d, "impostor", "/CN=127.0.0.1", "IP:127.0.0.1")
    return Pki(ca_crt, camera, own, impostor)


def _fingerprint(crt: Path) -> str:
    der = ssl.PEM_cert_to_DER_cert(crt.read_text())
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


@dataclass
class Impostor:
    """A TLS server on loopback that answers every request with 401 Basic and keeps all it got."""

    cert: tuple[Path, Path]
    port: int = 0
    received: list[bytes] = field(default_factory=list)
    handshakes: int = 0

    def __post_init__(self) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(*map(str, self.cert))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    self.handshakes += 1
                    tls.settimeout(5)
                    while data := tls.recv(65536):
                        self.received.append(data)
                        cseq = next(
                            (ln.split(b":")[1].strip() for ln in data.split(b"\r\n")
                             if ln.lower().startswith(b"cseq:")),
                            b"1",
                        )  # fmt: skip
                        tls.sendall(
                            b"RTSP/1.0 401 Unauthorized\r\nCSeq: " + cseq + b"\r\n"
                            b'WWW-Authenticate: Basic realm="camera"\r\n\r\n'
                        )
            except OSError:
                continue

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def impostor(pki: Pki) -> Iterator[Impostor]:
    server = Impostor(pki.impostor)
    try:
        yield server
    finally:
        server.close()


def _source(url: str, **tls: object) -> PyAVSource:
    return PyAVSource(url, 160, 120, 25.0, open_timeout_s=5.0, read_timeout_s=2.0, **tls)  # type: ignore[arg-type]


def test_impostor_never_receives_the_password(pki: Pki, impostor: Impostor) -> None:
    url = f"rtsps://admin:{SECRET}@127.0.0.1:{impostor.port}/cam"
    by_ca = _source(url, tls_ca_file=pki.ca)
    with pytest.raises(CaptureError, match="certificate did not verify") as info:
        by_ca.open()
    assert info.value.transient and SECRET not in str(info.value)
    pinned = _source(url, tls_fingerprint_sha256=_fingerprint(pki.camera[0]))
    with pytest.raises(CaptureError, match="not the pinned one") as info:
        pinned.open()
    assert "password was not sent" in str(info.value)
    assert impostor.received == [], "no RTSP request (let alone credentials) reached it"
    # The control: without verification, FFmpeg does send the password to the impostor.
    bare = _source(url, tls_ca_file=pki.ca)
    del bare._options["tls_verify"], bare._options["ca_file"]
    with pytest.raises(CaptureError):
        bare.open()
    assert any(b"Authorization: Basic" in r for r in impostor.received)


def test_unverified_rtsps_is_refused_with_the_next_step() -> None:
    with pytest.raises(ConfigError, match="tls_ca_file and tls_fingerprint_sha256"):
        PyAVSource("rtsps://admin:pw@127.0.0.1/cam", 160, 120, 25.0)
    text = '[[cameras]]\nid = "door"\nsource = "rtsps://admin:pw@10.0.0.7/cam"\n'
    with pytest.raises(ConfigError, match="must be verified before its password is sent") as info:
        config.parse(text, path="edge.toml")
    assert "openssl x509 -noout -fingerprint -sha256" in str(info.value)
    with pytest.raises(ConfigError, match="rtsps:// cameras only"):
        config.parse(text.replace("rtsps", "rtsp") + 'tls_ca_file = "/etc/edge/cam-ca.pem"\n')
    pinned = text + 'tls_fingerprint_sha256 = "' + "ab:" * 31 + 'ab"\n'
    assert config.parse(pinned).cameras[0].tls_fingerprint_sha256 is not None


@needs_server
@pytest.mark.parametrize("trust", ["ca", "pin"])
def test_genuine_rtsps_camera_delivers_frames(pki: Pki, trust: str) -> None:
    crt, key = pki.camera if trust == "ca" else pki.self_signed
    port = _free_port()
    camera = RtspCamera(port, "--size", "320x240", "--tls-cert", str(crt), "--tls-key", str(key))
    camera.start()
    try:
        url = f"rtsps://admin:{SECRET}@127.0.0.1:{port}/cam"
        if trust == "ca":
            source = _source(url, tls_ca_file=pki.ca)
        else:  # a self-signed certificate named after the camera, not its address: the pin
            source = _source(url, tls_fingerprint_sha256=_fingerprint(crt).lower())
        source.open()
        frames = [source.read() for _ in range(10)]
        source.close()
    finally:
        camera.kill()
    assert all(f is not None and (f.width, f.height) == (160, 120) for f in frames)
