"""The TLS side of an MQTT client, shared by the unit's analytics publisher and the CSU's
event publisher: the broker's certificate is checked (against ``ca_file``, or the system's
trust store), TLS 1.2 at least, and a client certificate when one is configured."""

from __future__ import annotations

import ssl
from pathlib import Path

from .errors import ConfigError


def broker_context(
    ca_file: str | Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    *,
    section: str,
) -> ssl.SSLContext:
    """``section`` names the configuration table in errors (``analytics.mqtt``, ``mqtt``)."""
    if cert_file is not None and key_file is None:
        raise ConfigError(f"{section}.cert_file needs key_file")
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if ca_file is None else str(ca_file)
        )
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if cert_file is not None and key_file is not None:
            ctx.load_cert_chain(str(cert_file), str(key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{section}: TLS material: {exc}") from None
    return ctx
