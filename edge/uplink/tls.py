"""The unit's TLS context for the CSU: TLS 1.3 only, the CSU's CA pinned, client certificate.

The pinned CA file is the only trust anchor: the system store is never loaded, so a
certificate from any public CA (or another city's) is an impostor here.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from pathlib import Path
from urllib.parse import urlsplit

from edge.identity.unitkeys import CA_CHAIN_NAME, TLS_CERT_NAME, TLS_KEY_NAME, keys_dir_of

from ..config import EdgeConfig
from ..errors import UplinkError


def key_paths(cfg: EdgeConfig) -> tuple[Path, Path, Path]:
    """(CA file, certificate, key) with the ``<data_dir>/keys/`` defaults applied."""
    keys = keys_dir_of(cfg.unit.data_dir)
    up = cfg.uplink
    return (
        up.ca_file or keys / CA_CHAIN_NAME,
        up.cert_file or keys / TLS_CERT_NAME,
        up.key_file or keys / TLS_KEY_NAME,
    )


def client_context(cfg: EdgeConfig) -> ssl.SSLContext:
    ca_file, cert_file, key_file = key_paths(cfg)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=ca_file)
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise UplinkError(f"uplink TLS material ({ca_file}, {cert_file}): {exc}") from None
    return ctx


class CsuConnection(http.client.HTTPSConnection):
    """HTTPS connection to the CSU, checking its certificate against ``server_name`` (which may
    differ from the address dialled)."""

    def __init__(
        self, host: str, port: int, server_name: str, context: ssl.SSLContext, timeout: float
    ) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = server_name
        self._ctx = context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._server_name)


def connect(cfg: EdgeConfig) -> CsuConnection:
    """An established (handshaken) connection to the configured CSU."""
    host, port, name = endpoint(cfg)
    conn = CsuConnection(host, port, name, client_context(cfg), cfg.uplink.connect_timeout_s)
    conn.connect()
    return conn


def endpoint(cfg: EdgeConfig) -> tuple[str, int, str]:
    """(host, port, name the CSU certificate must carry)."""
    parts = urlsplit(cfg.uplink.csu_url)
    host = parts.hostname or ""
    return host, parts.port or 443, cfg.uplink.server_name or host
