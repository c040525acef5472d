"""The update bundle of an image: root slot A as a RAUC bundle signed with the city's update key.

``make image`` builds it beside the disk image when the city's update signer is given
(``EDGE_UPDATE_CERT`` and ``EDGE_UPDATE_KEY``: a certificate of ``edge-csu ca issue CA NAME
--profile update`` and its key, on the build machine only). Units install it with
``edgectl update install`` (``edge/updates.py``): RAUC checks the signature against the
unit's keyring, the unit checks the version.

The bundle holds the root file system image (``root.ext4``), RAUC's manifest and
``edge-update.json`` (version, compatible, and whether the city allows installing it over a
newer version: ``downgrade``), all under the signature. Format ``verity`` (RAUC 1.8, Debian
bookworm): the payload is checked block by block, at install and by ``rauc extract``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger("image")

UPDATE_INFO_NAME = "edge-update.json"  # the unit reads it: edge.updates.UPDATE_INFO_NAME


def compatible(target_name: str) -> str:
    """RAUC's ``compatible``: a bundle installs only on units of the same target."""
    return f"edge-{target_name}"


def manifest(target_name: str, version: str, fmt: str = "verity") -> str:
    return (
        "[update]\n"
        f"compatible={compatible(target_name)}\n"
        f"version={version}\n\n"
        "[bundle]\n"
        f"format={fmt}\n\n"
        "[image.rootfs]\n"
        "filename=root.ext4\n"
    )


def build_bundle(
    root_image: Path,
    out: Path,
    *,
    target_name: str,
    version: str,
    cert: Path,
    key: Path,
    downgrade: bool = False,
    fmt: str = "verity",
) -> Path:
    """Write ``out`` (a signed ``.raucb``) from a root partition image; returns ``out``."""
    out.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="bundle-", dir=out.parent) as tmp:
        content = Path(tmp) / "content"
        content.mkdir()
        try:
            os.link(root_image, content / "root.ext4")  # same file system: no copy
        except OSError:
            shutil.copyfile(root_image, content / "root.ext4")
        (content / "manifest.raucm").write_text(manifest(target_name, version, fmt))
        info = {"version": version, "compatible": compatible(target_name), "downgrade": downgrade}
        (content / UPDATE_INFO_NAME).write_text(json.dumps(info) + "\n")
        subprocess.run(
            ["rauc", "bundle", f"--cert={cert}", f"--key={key}", str(content), str(out)],
            check=True,
            capture_output=True,
            text=True,
        )
    log.info("update bundle %s (%d MiB), %s", out, out.stat().st_size >> 20, version)
    return out


def signer_from_env() -> tuple[Path, Path] | None:
    """The city's update signer for ``make image`` (EDGE_UPDATE_CERT, EDGE_UPDATE_KEY)."""
    cert, key = os.environ.get("EDGE_UPDATE_CERT"), os.environ.get("EDGE_UPDATE_KEY")
    if not cert or not key:
        return None
    return Path(cert), Path(key)
