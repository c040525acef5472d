"""Analytics models of the image: fetched on the build host, checksum-pinned, cached, staged.

A city lists its models in its role variables (``edge_daemon_models``, see
ansible/roles/edge_daemon/meta/argument_specs.yml)::

    edge_daemon_models:
      - name: detector
        url: https://models.example.invalid/city/detector-v3.tflite
        sha256: 4f6c…            # 64 hex digits, the digest of the file above
        layout: ssd              # [analytics.detector] layout
        labels: [person, bicycle, car]     # or labels_url + labels_sha256 (one label a line)
    edge_daemon_detector_model: detector

The build downloads each file on the build host (urllib: the host's proxy environment applies;
file:// URLs work too), checks its SHA-256 before anything else reads it, keeps it under
``image/cache/models/<sha256>`` and stages it for the edge_daemon role, which installs it as
``/opt/edge/models/<name>.tflite`` (and ``<name>.labels``) and points ``[analytics.detector]`` at
it. A wrong digest stops the build; there is no fallback and nothing is fetched on the unit.

The parsing is pure; :func:`fetch` is the only function that reaches out.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MODELS_DIR = "/opt/edge/models"  # where the role installs them on the unit
LAYOUTS = ("ssd", "yolov8", "mediapipe")  # edge.config.DetectorLayout
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_LABEL = re.compile(r"^[^\x00-\x1f\"\\]{1,64}$")
_SCHEMES = ("https://", "http://", "file://")
MAX_MODEL_BYTES = 512 * 1024 * 1024
MAX_LABELS_BYTES = 1024 * 1024


class ModelError(Exception):
    """A model specification is invalid, or a fetched file is not the pinned one."""


@dataclass(frozen=True)
class Artifact:
    """One pinned file: where it comes from and the SHA-256 it must have."""

    url: str
    sha256: str


@dataclass(frozen=True)
class ModelSpec:
    name: str
    model: Artifact
    layout: str = "ssd"
    labels: tuple[str, ...] = ()  # inline labels, or
    labels_file: Artifact | None = None  # a pinned file, one label a line

    @property
    def model_path(self) -> str:
        return f"{MODELS_DIR}/{self.name}.tflite"

    @property
    def labels_path(self) -> str:
        return f"{MODELS_DIR}/{self.name}.labels"


def _artifact(where: str, url: object, sha256: object) -> Artifact:
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        raise ModelError(f"{where}: url must be an https://, http:// or file:// URL, got {url!r}")
    if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
        raise ModelError(f"{where}: sha256 must be 64 hexadecimal digits, got {sha256!r}")
    return Artifact(url=url, sha256=sha256.lower())


def parse_labels(where: str, labels: object) -> tuple[str, ...]:
    if not isinstance(labels, list) or not labels or len(labels) > 1000:
        raise ModelError(f"{where}: labels must be a list of 1 to 1000 names")
    for label in labels:
        if not isinstance(label, str) or not _LABEL.match(label):
            raise ModelError(f"{where}: label {label!r} is not a short printable name")
    return tuple(labels)


def parse_specs(raw: object) -> list[ModelSpec]:
    """Checks the ``edge_daemon_models`` variable; every mistake is named, nothing is guessed."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ModelError("edge_daemon_models must be a list")
    specs: list[ModelSpec] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ModelError(f"edge_daemon_models[{i}] must be a mapping")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise ModelError(f"edge_daemon_models[{i}]: name must match {_NAME.pattern}")
        where = f"model {name!r}"
        known = {"name", "url", "sha256", "layout", "labels", "labels_url", "labels_sha256"}
        unknown = sorted(set(item) - known)
        if unknown:
            raise ModelError(f"{where}: unknown keys {unknown}")
        layout = item.get("layout", "ssd")
        if layout not in LAYOUTS:
            raise ModelError(f"{where}: layout must be one of {LAYOUTS}, got {layout!r}")
        inline, labels_url = item.get("labels"), item.get("labels_url")
        if (inline is None) == (labels_url is None):
            raise ModelError(f"{where}: give either labels (a list) or labels_url + labels_sha256")
        specs.append(
            ModelSpec(
                name=name,
                model=_artifact(where, item.get("url"), item.get("sha256")),
                layout=layout,
                labels=parse_labels(where, inline) if inline is not None else (),
                labels_file=(
                    _artifact(f"{where} labels", labels_url, item.get("labels_sha256"))
                    if labels_url is not None
                    else None
                ),
            )
        )
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise ModelError(f"model {name!r} is listed twice")
    return specs


def labels_from_text(where: str, text: str) -> tuple[str, ...]:
    """A labels file: one label a line; blank lines and ``#`` comments are skipped."""
    lines = [ln.strip() for ln in text.splitlines()]
    return parse_labels(where, [ln for ln in lines if ln and not ln.startswith("#")])


def verify(where: str, data: bytes, expected: str) -> None:
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise ModelError(
            f"{where}: SHA-256 mismatch: expected {expected}, got {actual}; "
            "the file changed at its source or in transit, or the pinned digest is wrong"
        )


def fetch(where: str, artifact: Artifact, cache: Path, limit: int = MAX_MODEL_BYTES) -> Path:
    """The file of ``artifact`` in ``cache`` (named by its digest), downloaded once.

    A cached file is checked again (the cache is a plain directory anyone may have touched);
    a download is checked in memory before it is written, then renamed into place atomically.
    urllib's default opener honours http_proxy/https_proxy/no_proxy of the build host.
    """
    path = cache / artifact.sha256
    if path.is_file():
        try:
            verify(f"{where} (cached {path})", path.read_bytes(), artifact.sha256)
            log.info("%s: from cache %s", where, path)
            return path
        except ModelError:
            log.warning("%s: cached %s is corrupt, fetching again", where, path)
            path.unlink()
    log.info("%s: fetching %s", where, artifact.url)
    try:
        with urllib.request.urlopen(artifact.url, timeout=60) as resp:  # noqa: S310 (schemes checked)
            data = resp.read(limit + 1)
    except (OSError, ValueError) as exc:
        raise ModelError(f"{where}: cannot fetch {artifact.url}: {exc}") from exc
    if len(data) > limit:
        raise ModelError(f"{where}: {artifact.url} is larger than {limit} bytes")
    verify(where, data, artifact.sha256)
    cache.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache, prefix=".partial-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def stage(specs: Sequence[ModelSpec], cache: Path, dest: Path) -> dict[str, tuple[str, ...]]:
    """Fetches every model (and labels file) and copies them into ``dest`` for the role.

    ``dest`` gets ``<name>.tflite`` and ``<name>.labels`` per model; returns the labels of each
    model by name (a labels file is parsed here, so a malformed one stops the build).
    """
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    labels: dict[str, tuple[str, ...]] = {}
    for spec in specs:
        where = f"model {spec.name!r}"
        shutil.copyfile(fetch(where, spec.model, cache), dest / f"{spec.name}.tflite")
        if spec.labels_file is not None:
            src = fetch(f"{where} labels", spec.labels_file, cache, MAX_LABELS_BYTES)
            try:
                text = src.read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise ModelError(f"{where} labels: not UTF-8 text") from exc
            labels[spec.name] = labels_from_text(f"{where} labels", text)
        else:
            labels[spec.name] = spec.labels
        (dest / f"{spec.name}.labels").write_text("\n".join(labels[spec.name]) + "\n")
    # What the role installs and renders into [analytics.detector]: only verified values.
    manifest = [
        {"name": s.name, "sha256": s.model.sha256, "layout": s.layout, "labels": labels[s.name]}
        for s in specs
    ]
    (dest / "models.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return labels


def load_vars(paths: Sequence[Path]) -> dict[str, object]:
    """Role variables of YAML files, a later file replacing a variable (as ansible-playbook -e).

    A city's files may hold Ansible Vault secrets: a ``!vault`` value reads as None and a wholly
    encrypted file is skipped (log line), since the build only needs the models and extras,
    which are not secret.
    """
    import yaml  # ships with ansible, which the build needs anyway

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_constructor("!vault", lambda _loader, _node: None)
    merged: dict[str, object] = {}
    for path in paths:
        text = path.read_text()
        if text.startswith("$ANSIBLE_VAULT"):
            log.info("%s is vault-encrypted: not read by the build (keep models out of it)", path)
            continue
        data = yaml.load(text, Loader=_Loader) or {}  # noqa: S506 (a SafeLoader subclass)
        if not isinstance(data, dict):
            raise ModelError(f"{path} must hold a mapping of role variables")
        merged.update(data)
    return merged


def main(argv: list[str] | None = None) -> int:
    """Stage the models of role-variable files for a maintenance run (image/build.py does it
    for an image): ``python3 image/models.py city.yml … DEST`` then
    ``-e edge_daemon_models_dir=DEST``."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("vars", nargs="+", type=Path, help="role variable files (later wins)")
    parser.add_argument("dest", type=Path, help="staging directory (replaced)")
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / "cache" / "models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="models: %(message)s")
    try:
        merged = load_vars(args.vars)
        stage(parse_specs(merged.get("edge_daemon_models")), args.cache, args.dest)
    except ModelError as exc:
        print(f"models: {exc}", file=sys.stderr)  # noqa: T201
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
