"""Signed A/B updates with RAUC: check a bundle, install it into the other slot, confirm it.

The city's update bundles (``image/bundle.py``) are RAUC bundles signed with the city's update
key, whose certificate (``edge-csu ca issue --profile update``: codeSigning) chains to the CA
in the unit's keyring (``/etc/rauc/system.conf``, ``[keyring] check-purpose=codesign``).
``edgectl update install BUNDLE`` decides nothing about signatures itself: ``rauc extract``
judges the signature, the certificate's purpose and chain, and every byte of the payload (a
verity bundle's hash tree, checked in user space), with the unit's own ``system.conf``. Then
this module adds the city's policy, from the signed payload's ``edge-update.json``:

- the bundle is for this kind of unit (RAUC's ``compatible``, checked by ``rauc install`` too);
- its version is above the running one; a lower one only when the city signed the downgrade
  (``"downgrade": true`` in ``edge-update.json``) *and* the installer asks for it
  (``--downgrade``); the same version is refused (nothing to do);
- no certificate of the signer's chain is revoked on the city CRL the unit holds
  (:mod:`edge.identity.revocation`, on the data partition, the list that also refuses revoked
  operators and configuration signers). RAUC's own ``check-crl`` reads CRLs only from its
  keyring on the read-only root, and refuses every bundle once a CRL is past its nextUpdate or
  missing for one level of the chain; the unit's policy is the CRL users' one: a stale list
  stays in force, a unit that holds none checks nothing and says so. So the signer's
  certificates are read from the bundle's CMS signature (after RAUC verified it) and checked
  with the unit's CRL code.

``rauc install`` then writes the inactive slot and makes it the next boot. The new slot is
marked good only once edged is READY and its self-test passes (``edgectl update mark-good``,
run by ``edge-update-confirm.service`` after boot); until then the boot loader's counter falls
back to the previous slot. The outcome of each step is kept in
``<data_dir>/update/last-update.json`` (the fleet view shows it) and written to the signed
audit log.
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7
from cryptography.x509.oid import NameOID

from edge.errors import EdgeError
from edge.fsutil import write_atomic
from edge.identity.revocation import CityCrl
from edge.slots import LAST_UPDATE_NAME, update_dir_of

SYSTEM_CONF = Path("/etc/rauc/system.conf")
UPDATE_INFO_NAME = "edge-update.json"
#: RAUC's limit on a bundle's CMS signature (``MAX_BUNDLE_SIGNATURE_SIZE``).
MAX_SIGNATURE_BYTES = 64 << 10


class UpdateError(EdgeError, RuntimeError):
    """An update refused or failed; the running slot is unchanged (the message says why)."""


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle ``rauc extract`` accepted: signed by the city, payload intact."""

    path: Path
    compatible: str
    version: str
    downgrade: bool
    signer: str
    certificates: tuple[x509.Certificate, ...] = ()
    """The certificates in the bundle's CMS signature (the signer's, and any intermediate)."""


def version_key(version: str) -> tuple[tuple[int, ...], int, tuple[tuple[int, str], ...]]:
    """Orders versions as people read them: 0.10.0 after 0.9.2, 1.0 after 1.0rc1, 1.0 = 1.0.0.

    (release numbers without trailing zeros, 1 for a final release or 0 for a pre-release,
    the pre-release's words); ``post`` releases come after their release (2)."""
    found = re.match(r"v?(\d+(?:\.\d+)*)(.*)", version.strip())
    if found is None:
        return ((), 0, ((-1, version),))
    numbers = [int(n) for n in found.group(1).split(".")]
    while len(numbers) > 1 and numbers[-1] == 0:
        numbers.pop()
    rest = found.group(2).lstrip(".-+_")
    words = tuple(
        (int(w), "") if w.isdigit() else (-1, w.lower()) for w in re.findall(r"\d+|[A-Za-z]+", rest)
    )
    stage = 1 if not rest else 2 if rest.lower().startswith("post") else 0
    return (tuple(numbers), stage, words)


def _rauc(conf: Path, *args: str, timeout: float = 3600.0) -> subprocess.CompletedProcess[str]:
    rauc = shutil.which("rauc")
    if rauc is None:
        raise UpdateError("rauc is not installed: this system cannot take updates")
    return subprocess.run(
        [rauc, f"--conf={conf}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _refusal(stderr: str) -> str:
    """RAUC's reason in the installer's words."""
    text = " ".join(stderr.split())
    if "payload is corrupted" in text or "Verification of data area failed" in text:
        return "the bundle is damaged or was altered after signing (payload does not verify)"
    if "unsuitable certificate purpose" in text:
        return "signed by a certificate that is not the city's update signer (wrong purpose)"
    if "signature verification failed" in text or "Verify error" in text:
        return "not signed by the city's update key (signature does not verify: " + (
            text.rsplit("signature verification failed:", 1)[-1].strip()[:200] + ")"
        )
    if "signature" in text.lower() or "Invalid bundle" in text or "squashfs" in text:
        return f"not a signed update bundle ({text[-200:]})"
    return text[-300:] or "rauc refused the bundle"


def check_bundle(path: Path, *, conf: Path = SYSTEM_CONF, work_dir: Path) -> Bundle:
    """Let RAUC check the bundle (signature, certificate, payload); read what the city signed.

    ``work_dir`` receives the extracted payload for the time of the check (the data partition,
    not /tmp: a root image does not fit in memory)."""
    if not path.is_file():
        raise UpdateError(f"{path}: no such bundle file")
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=work_dir) as tmp:
        out = Path(tmp) / "payload"
        result = _rauc(conf, "extract", str(path), str(out))
        if result.returncode != 0:
            raise UpdateError(f"{path.name}: refused: {_refusal(result.stderr)}")
        manifest = configparser.ConfigParser(interpolation=None)
        manifest.read(out / "manifest.raucm", encoding="utf-8")
        try:
            compatible = manifest["update"]["compatible"]
            version = manifest["update"]["version"]
        except KeyError:
            raise UpdateError(f"{path.name}: refused: the manifest names no version") from None
        try:
            info: dict[str, Any] = json.loads((out / UPDATE_INFO_NAME).read_text())
        except (OSError, ValueError):
            info = {}
        signer = re.search(r"Verified inline signature by '([^']*)'", result.stderr)
        certificates = signature_certificates(path)
    return Bundle(
        path=path,
        compatible=compatible,
        version=version,
        downgrade=info.get("downgrade") is True,
        signer=signer.group(1) if signer else "?",
        certificates=tuple(certificates),
    )


def signature_certificates(path: Path) -> list[x509.Certificate]:
    """The certificates RAUC's CMS signature carries. A bundle is the squashfs image, then the
    DER signature, then the signature's size (8 bytes, big-endian); the signer's certificate
    is always in it (``rauc bundle --cert``), intermediates when ``--intermediate`` added them."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, os.SEEK_END)
            if size < 8:
                raise ValueError("shorter than a signature's size")
            f.seek(size - 8)
            length = int.from_bytes(f.read(8), "big")
            if not 0 < length <= min(MAX_SIGNATURE_BYTES, size - 8):
                raise ValueError(f"a signature of {length} bytes")
            f.seek(size - 8 - length)
            certs = pkcs7.load_der_pkcs7_certificates(f.read(length))
    except (OSError, ValueError) as exc:
        raise UpdateError(f"{path.name}: refused: its signature cannot be read ({exc})") from None
    if not certs:
        raise UpdateError(f"{path.name}: refused: its signature carries no certificate")
    return certs


def keyring_certificates(conf: Path = SYSTEM_CONF) -> list[x509.Certificate]:
    """The CA certificates of RAUC's keyring (``[keyring] path=`` in ``conf``); [] if none."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(conf, encoding="utf-8")
        named = parser.get("keyring", "path", fallback="").strip()
        if not named:
            return []
        return x509.load_pem_x509_certificates((conf.parent / named).read_bytes())
    except (OSError, ValueError, configparser.Error):
        return []


def signer_chain(bundle: Bundle, anchors: list[x509.Certificate]) -> list[x509.Certificate]:
    """The signer's chain: the signature's certificates, then their issuers from ``anchors``
    (the keyring, the city CA) up to a self-signed root."""
    chain = list(bundle.certificates)
    while True:
        held = {c.subject for c in chain}
        wanted = {c.issuer for c in chain if c.issuer != c.subject} - held
        more = [c for c in anchors if c.subject in wanted and c not in chain]
        if not more:
            return chain
        chain.extend(more)


def _name(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except x509.ExtensionNotFound:
        return False


def crl_state(crl: CityCrl | None, now: dt.datetime) -> dict[str, Any]:
    """The city CRL an installation is checked against, for its output and the audit log:
    ``state`` is current, stale (past its next update: in force all the same), none (the unit
    holds none: nothing is checked) or damaged (the copy kept is not loaded: nothing checked)."""
    if crl is None:
        return {"state": "none", "path": None}
    status = crl.status(now)
    if status is None:
        if crl.damaged is not None:
            return {"state": "damaged", "path": str(crl.path), "reason": crl.damaged}
        return {"state": "none", "path": str(crl.path)}
    state = "stale" if status.stale else "current"
    return {"state": state, "path": str(crl.path), **status.as_dict()}


def crl_line(state: dict[str, Any]) -> str:
    """``crl_state`` in the installer's words."""
    where = state.get("path") or "the data partition"
    kind = state["state"]
    if kind == "none":
        return f"city CRL: none on this unit ({where}): revoked update signers are not known"
    if kind == "damaged":
        return f"city CRL: {state['reason']}: not loaded, revoked update signers are not known"
    said = (
        f"city CRL {where}: issued {str(state['this_update'])[:16]}, {state['revoked']} "
        f"revoked, next update {str(state['next_update'] or '?')[:16]}"
    )
    if kind == "stale":
        said += " (past it: still in force, later revocations unknown)"
    return said


def revocation_problem(
    bundle: Bundle, crl: CityCrl | None, anchors: list[x509.Certificate], now: dt.datetime
) -> str | None:
    """Why the city CRL the unit holds refuses ``bundle``'s signer, or None: a revoked
    certificate anywhere in the signer's chain, named by serial with the CRL that lists it."""
    if crl is None:
        return None
    for cert in signer_chain(bundle, anchors):
        problem = crl.problem(cert, now, before="this installation")
        if problem is None:
            continue
        status = crl.status(now)
        issued = f", issued {status.this_update[:16]}" if status and status.this_update else ""
        whose = "the signer's certificate"
        if _is_ca(cert):
            whose = "a CA certificate of the signer's chain"
        return (
            f"{whose} {_name(cert)} (serial {cert.serial_number:x}) is revoked on the city CRL "
            f"{crl.path}{issued}: {problem}"
        )
    return None


def policy_problem(bundle: Bundle, running: str, *, downgrade: bool) -> str | None:
    """Why the city's policy refuses ``bundle`` on a unit running ``running``; None if not."""
    new, old = version_key(bundle.version), version_key(running)
    if new == old:
        return f"version {bundle.version} is the one running: nothing to install"
    if new > old:
        return None
    if not bundle.downgrade:
        return (
            f"version {bundle.version} is older than the running {running}: a downgrade needs a "
            "bundle the city signed as one (edge-update.json: downgrade)"
        )
    if not downgrade:
        return (
            f"version {bundle.version} is older than the running {running}: the city allows "
            "this downgrade; confirm it with --downgrade"
        )
    return None


def install(bundle: Bundle, *, conf: Path = SYSTEM_CONF) -> str:
    """``rauc install``: writes the inactive slot and makes it the next boot; its last line."""
    result = _rauc(conf, "install", str(bundle.path))
    if result.returncode != 0:
        lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
        raise UpdateError(f"rauc install failed: {' '.join(lines[-3:])[-400:]}")
    lines = [ln for ln in result.stdout.splitlines() if ln.strip()]
    return lines[-1] if lines else "installed"


def mark_good(*, conf: Path = SYSTEM_CONF) -> str:
    """``rauc status mark-good``: the booted slot stays the boot loader's choice."""
    result = _rauc(conf, "status", "mark-good", timeout=60.0)
    if result.returncode != 0:
        raise UpdateError(f"rauc status mark-good failed: {result.stderr.strip()[-300:]}")
    said = [ln for ln in (result.stdout + result.stderr).splitlines() if "marked" in ln]
    return said[-1].strip() if said else "marked good"


class _Readable(Protocol):
    def read(self, amt: int) -> bytes: ...


def download(source: _Readable, target: Path, *, size: int, sha256: str) -> int:
    """Copy an offered bundle to ``target`` (``.part`` until whole), refusing one longer than
    offered or whose SHA-256 differs: a transfer cut short or altered on the way never becomes
    a bundle file. Returns its size."""
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    got = 0
    with part.open("wb") as out:
        while chunk := source.read(1 << 20):
            got += len(chunk)
            if got > size:
                break
            digest.update(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    if got != size or digest.hexdigest() != sha256:
        part.unlink(missing_ok=True)
        raise UpdateError(
            f"the bundle received ({got} bytes) does not match the CSU's offer ({size} bytes, "
            "SHA-256 as offered): not kept"
        )
    part.replace(target)
    return got


BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
PENDING = ("installed", "not-confirmed")  # an installed version not yet confirmed


def boot_id(path: Path = BOOT_ID) -> str | None:
    """This boot's id (a new one at each boot): tells "installed, not rebooted yet" apart."""
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def bootloader(conf: Path = SYSTEM_CONF) -> str:
    """RAUC's boot loader backend in ``conf`` ("noop" when it names none or cannot be read)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read(conf, encoding="utf-8")
        return parser.get("system", "bootloader", fallback="noop").strip() or "noop"
    except (OSError, configparser.Error):
        return "noop"


def awaiting_reboot(last: dict[str, Any] | None, this_boot: str | None, backend: str) -> bool:
    """Installed during this very boot, with a boot loader that will switch at the next one:
    nothing has booted the new slot yet, so nothing is confirmed or rolled back."""
    return (
        bool(last)
        and (last or {}).get("result") == "installed"
        and backend != "noop"
        and this_boot is not None
        and (last or {}).get("boot_id") == this_boot
    )


def on_probation(last: dict[str, Any] | None, running: str) -> bool:
    """The running version is an installed one the unit has not confirmed yet: if it does not
    become healthy, the boot loader must get the chance to go back (reboot, attempt counted)."""
    if not last or last.get("result") not in PENDING:
        return False
    return version_key(str(last.get("version", "?"))) == version_key(running)


def confirmation(
    last: dict[str, Any] | None, running: str, slot: str | None
) -> dict[str, Any] | None:
    """What a passing self-test after boot says of the last update (None: none was pending).

    An update installed (``"result": "installed"``) and this boot running its version: good.
    Running another version: the new slot did not boot or was not confirmed, and the boot
    loader went back to the previous one: rolled back, and the status says so."""
    if on_probation(last, running):
        return {"result": "good", "version": running, "slot": slot}
    return rolled_back(last, running, slot)


def rolled_back(
    last: dict[str, Any] | None, running: str, slot: str | None
) -> dict[str, Any] | None:
    """The outcome when the boot loader went back: an update pending (installed, or not
    confirmed on its slot) and the unit running another version. None otherwise."""
    if not last or last.get("result") not in PENDING:
        return None
    installed = str(last.get("version", "?"))
    if version_key(installed) == version_key(running):
        return None
    reason = f"the unit booted {running} (slot {slot or '?'}), not the installed {installed}"
    if last.get("result") == "not-confirmed" and last.get("reason"):
        reason += f"; on its slot: {last['reason']}"
    return {
        "result": "rolled-back",
        "version": installed,
        "running": running,
        "slot": slot,
        "reason": reason,
    }


def mark_other_bad(*, conf: Path = SYSTEM_CONF) -> str | None:
    """``rauc status mark-bad other``: the slot the boot loader left is not tried again.
    None when RAUC could not (the roll-back itself already happened)."""
    result = _rauc(conf, "status", "mark-bad", "other", timeout=60.0)
    if result.returncode != 0:
        return None
    said = [ln for ln in (result.stdout + result.stderr).splitlines() if "marked" in ln]
    return said[-1].strip() if said else "marked the other slot bad"


def record(data_dir: Path, outcome: dict[str, Any]) -> dict[str, Any]:
    """Keep the outcome for the fleet view (``slots.last_update``), stamped."""
    outcome = {**outcome, "at": round(time.time(), 1)}
    folder = update_dir_of(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / LAST_UPDATE_NAME, json.dumps(outcome).encode(), mode=0o644)
    if os.geteuid() == 0:
        # Written by root (edgectl update, edge-update-confirm.service): edged reads it for the
        # status and the fleet view, and its AppArmor profile reads only what edged owns.
        owner = data_dir.stat()
        for path in (folder, folder / LAST_UPDATE_NAME):
            os.chown(path, owner.st_uid, owner.st_gid)
    return outcome
