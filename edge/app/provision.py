"""Provisioning: a freshly flashed unit gets its identity and cameras (``edgectl provision``).

Every unit is flashed from one image, so none has an identity of its own until an installer
gives it one. Until then edged is *unprovisioned*: it records nothing (no recording under a
made-up id), serves its status and this one call, and ``edgectl status`` says what to do.

The call (installer role, through edged's control socket) writes the per-unit file
``<data_dir>/unit.toml`` (:mod:`edge.unitfile`) after checking it laid over the baseline with
the schema edged starts with, then runs enrolment: missing keys are made (an existing key is
never replaced: the vault's chains rest on the signing key) and both certificate requests are
written for the new id. edged then starts again under that identity.

A unit that already has an identity is not provisioned again unless the installer types its
current id (``--replace-identity ID``): an identity names the unit's recordings and
certificates at the CSU. The previous file is kept beside the new one. Every attempt, done or
refused, is written to the signed audit log, with the caller.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge import config as config_mod
from edge import configschema
from edge.config import EdgeConfig
from edge.errors import ConfigError, ProvisionError
from edge.fsutil import write_atomic
from edge.identity import enrolment, unitkeys
from edge.unitfile import to_toml, unit_file_of

log = logging.getLogger("edged.provision")

MAX_CAMERAS = 8


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    unit_id: str
    site: str | None
    cameras: list[dict[str, Any]]
    replace_identity: str | None
    groups: list[str]

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ProvisionRequest:
        unit_id = params.get("unit_id")
        site = params.get("site")
        cameras = params.get("cameras")
        replace = params.get("replace_identity")
        if not isinstance(unit_id, str) or not unit_id:
            raise ProvisionError("give the unit id (--unit-id)")
        if site is not None and not isinstance(site, str):
            raise ProvisionError("the site is text")
        if not isinstance(cameras, list) or not all(isinstance(c, dict) for c in cameras):
            raise ProvisionError("cameras: a list of camera tables")
        if len(cameras) > MAX_CAMERAS:
            raise ProvisionError(f"at most {MAX_CAMERAS} cameras")
        if replace is not None and not isinstance(replace, str):
            raise ProvisionError("replace_identity is the current unit id, as text")
        groups = params.get("groups") or []
        if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
            raise ProvisionError("groups: a list of group names")
        return cls(unit_id, site, cameras, replace, groups)

    def document(self) -> dict[str, Any]:
        unit: dict[str, Any] = {"id": self.unit_id}
        if self.site is not None:
            unit["site"] = self.site
        if self.groups:
            unit["groups"] = self.groups
        # No camera given: the baseline's cameras (an image made for one camera model).
        return {"unit": unit, "cameras": self.cameras} if self.cameras else {"unit": unit}


@dataclass(frozen=True, slots=True)
class Provisioned:
    unit_id: str
    unit_file: Path
    unit_file_sha256: str
    replaced: str | None
    kept_as: Path | None
    tls_csr: Path
    signing_csr: Path
    signing_key_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "unit_id": self.unit_id,
            "unit_file": str(self.unit_file),
            "unit_file_sha256": self.unit_file_sha256,
            "replaced": self.replaced,
            "kept_as": str(self.kept_as) if self.kept_as else None,
            "tls_csr": str(self.tls_csr),
            "signing_csr": str(self.signing_csr),
            "signing_key_id": self.signing_key_id,
        }


def provision(
    request: ProvisionRequest,
    *,
    running: EdgeConfig,
    baseline: Path,
    now: float | None = None,
) -> Provisioned:
    """Check, write the unit file, enrol; raise :class:`ProvisionError` having written nothing.

    ``running`` is the configuration edged runs (its data directory, and whether the unit
    has an identity); ``baseline`` the file the unit file is laid over.
    """
    data_dir = running.unit.data_dir
    unit_path = unit_file_of(data_dir)
    current = running.unit.id if config_mod.is_provisioned(running) else None
    if current is not None and request.replace_identity != current:
        typed = "" if request.replace_identity is None else f" (typed {request.replace_identity!r})"
        raise ProvisionError(
            f"this unit is already provisioned as {current!r}{typed}: its recordings and "
            "certificates carry that id. To give it another identity anyway, type its current "
            f"id: edgectl provision ... --replace-identity {current}"
        )
    if current is None and request.replace_identity is not None:
        raise ProvisionError("the unit has no identity to replace: leave out --replace-identity")
    text = to_toml(
        {configschema.SCHEMA_KEY: configschema.SCHEMA, **request.document()},
        header=f"Per-unit configuration written by edgectl provision at "
        f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}.\n"
        "Laid over the city's baseline (/etc/edge/edge.toml); check it with "
        "edgectl config check.",
    )
    try:
        new = config_mod.parse_layered(
            config_mod.read_text(baseline),
            path=str(baseline),
            unit_text=text,
            unit_path=f"{unit_path} (as provisioned)",
        )
    except ConfigError as exc:
        raise ProvisionError(f"not provisioned: {exc}") from None
    if "cameras" not in new.model_fields_set:
        # The schema's default camera is a synthetic scene: never what a street unit records.
        raise ProvisionError(
            f"the baseline {baseline} names no camera: give them (--camera ID=SOURCE)"
        )
    kept: Path | None = None
    if unit_path.exists():
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        kept = unit_path.with_name(f"{unit_path.name}.{current or 'previous'}.{stamp}")
        write_atomic(kept, unit_path.read_bytes(), mode=0o640)
    data = text.encode()
    write_atomic(unit_path, data, mode=0o640)
    identity = new.dot1x.identity or new.unit.id
    enrolled = enrolment.enrol(unitkeys.keys_dir_of(data_dir), new.unit.id, identity)
    log.info("provisioned as %s (%s); certificate requests written", new.unit.id, unit_path)
    return Provisioned(
        unit_id=new.unit.id,
        unit_file=unit_path,
        unit_file_sha256=hashlib.sha256(data).hexdigest(),
        replaced=current,
        kept_as=kept,
        tls_csr=enrolled.csr_path,
        signing_csr=enrolled.signing_csr_path,
        signing_key_id=enrolled.signing_key_id,
    )
