"""wpa_supplicant's wired EAP-TLS configuration, rendered from ``edge.toml``.

The file is what Debian's ``wpa_supplicant-wired@IFACE.service`` reads
(``/etc/wpa_supplicant/wpa_supplicant-wired-IFACE.conf``). Provisioning renders it with the
same code: ``edgectl dot1x render-config --output PATH`` (exit code and "changed"/"unchanged"
on stdout make it idempotent for Ansible), so there is one source of truth for its content.

What the file enforces, and why:

* ``eap=TLS`` only: the unit proves itself with its certificate; no password exists to steal.
* ``ca_cert`` and a server-name constraint (``domain_match`` or ``domain_suffix_match``) are
  always present: without both, any RADIUS server, or any certificate of the same CA (another
  unit's), would be accepted, and an impostor port could take the unit's exchange.
* mode 0600: it names the unit's private key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.identity.unitkeys import CA_CHAIN_NAME, TLS_CERT_NAME, TLS_KEY_NAME, keys_dir_of

from ...config import EdgeConfig
from ...errors import Dot1xError
from ...fsutil import write_atomic


@dataclass(frozen=True)
class Dot1xSettings:
    """The ``dot1x`` section with every default resolved against the unit's data directory."""

    interface: str
    identity: str
    client_cert: Path
    client_key: Path
    server_ca: Path
    domain_match: str | None
    domain_suffix_match: str | None
    ctrl_dir: Path
    ctrl_group: str
    supplicant_conf: Path

    @property
    def ctrl_socket(self) -> Path:
        """wpa_supplicant's control socket for the interface."""
        return self.ctrl_dir / self.interface


def settings(cfg: EdgeConfig) -> Dot1xSettings:
    """Resolve the ``dot1x`` section of ``cfg`` (defaults: the unit id, ``<data_dir>/keys/``)."""
    d = cfg.dot1x
    keys = keys_dir_of(cfg.unit.data_dir)
    return Dot1xSettings(
        interface=d.interface,
        identity=d.identity or cfg.unit.id,
        client_cert=d.client_cert or keys / TLS_CERT_NAME,
        client_key=d.client_key or keys / TLS_KEY_NAME,
        server_ca=d.server_ca or keys / CA_CHAIN_NAME,
        domain_match=d.server_domain_match,
        domain_suffix_match=d.server_domain_suffix_match,
        ctrl_dir=d.ctrl_dir,
        ctrl_group=d.ctrl_group,
        supplicant_conf=d.supplicant_conf
        or Path(f"/etc/wpa_supplicant/wpa_supplicant-wired-{d.interface}.conf"),
    )


def _quoted(name: str, value: str | Path) -> str:
    text = str(value)
    # wpa_supplicant's quoted strings end at the next '"' and its lines at a newline: either
    # would let a value inject directives (an "any server" override) into the network block.
    if any(c in text for c in '"\n\r\0'):
        raise Dot1xError(f"dot1x {name} {text!r} contains a quote or a line break")
    return f'\t{name}="{text}"'


def render(s: Dot1xSettings, *, origin: str = "edge.toml") -> str:
    """The supplicant file for ``s``. Pure: checks no file, so an image can be provisioned
    before the unit is enrolled."""
    if not (s.domain_match or s.domain_suffix_match):
        # Also enforced by the configuration schema; kept here because this is the last point
        # before the file exists, and the file must never accept any server.
        raise Dot1xError("refusing to render a supplicant file that accepts any RADIUS server")
    network = [
        "\tkey_mgmt=IEEE8021X",
        "\teap=TLS",
        "\teapol_flags=0",  # wired: no dynamic WEP keys follow the authentication
        _quoted("identity", s.identity),
        _quoted("ca_cert", s.server_ca),
        _quoted("client_cert", s.client_cert),
        _quoted("private_key", s.client_key),
    ]
    if s.domain_match:
        network.append(_quoted("domain_match", s.domain_match))
    if s.domain_suffix_match:
        network.append(_quoted("domain_suffix_match", s.domain_suffix_match))
    # TLS 1.0/1.1 are broken; 1.3 stays at wpa_supplicant's default (off for EAP-TLS in 2.10)
    # because many RADIUS servers in the field still mishandle it.
    network.append('\tphase1="tls_disable_tlsv1_0=1 tls_disable_tlsv1_1=1"')
    lines = [
        f"# wpa_supplicant wired 802.1X EAP-TLS for {s.interface}, rendered from {origin}.",
        "# Do not edit: regenerate with `edgectl dot1x render-config`.",
        f"ctrl_interface=DIR={s.ctrl_dir} GROUP={s.ctrl_group}",
        "ap_scan=0",  # wired: no scanning, the one network block applies to the port
        "eapol_version=2",
        "fast_reauth=1",
        "network={",
        *network,
        "}",
    ]
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> bool:
    """Write the file atomically with mode 0600; returns False when it already held ``text``."""
    try:
        current = path.read_text(encoding="utf-8")
        if current == text and (path.stat().st_mode & 0o777) == 0o600:
            return False
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), mode=0o600)
    return True
