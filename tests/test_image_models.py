"""Build-time model fetch (image/models.py): parsing the city's list, fetching over file:// URLs,
checking the SHA-256 before anything is kept, the cache, the staged files the role installs;
and the package extras build.py adds to the wheelhouse."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path
from typing import Any

import pytest

from image import build, layout, models

from .tflite_models import ssd_model


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    """A real (tiny) LiteRT model, so the bytes are what a unit would load."""
    (tmp_path / "src").mkdir()
    return ssd_model(tmp_path / "src" / "detector.tflite", side=8, rows=10)


def _spec(path: Path, **over: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": "detector",
        "url": path.as_uri(),
        "sha256": _sha(path.read_bytes()),
        "labels": ["person", "bicycle", "car"],
    }
    item.update(over)
    return item


# -- parsing (pure) -----------------------------------------------------------------------------


def test_parse_accepts_inline_labels_and_labels_file() -> None:
    digest = "ab" * 32
    specs = models.parse_specs(
        [
            {"name": "a", "url": "https://models.example.invalid/a.tflite",
             "sha256": digest.upper(), "labels": ["person"], "layout": "yolov8"},
            {"name": "b", "url": "file:///srv/b.tflite", "sha256": digest,
             "labels_url": "file:///srv/b.txt", "labels_sha256": digest},
        ]
    )  # fmt: skip
    assert [s.name for s in specs] == ["a", "b"]
    assert specs[0].model.sha256 == digest  # normalised to lower case, as sha256sum prints
    assert specs[0].layout == "yolov8" and specs[0].labels == ("person",)
    assert specs[1].layout == "ssd" and specs[1].labels_file is not None
    assert specs[0].model_path == "/opt/edge/models/a.tflite"
    assert models.parse_specs(None) == [] and models.parse_specs([]) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sha256": "12345"}, "64 hexadecimal"),
        ({"sha256": None}, "64 hexadecimal"),
        ({"url": "ftp://x/y.tflite"}, "URL"),
        ({"url": "/srv/model.tflite"}, "URL"),
        ({"name": "../etc"}, "name must match"),
        ({"layout": "resnet"}, "layout"),
        ({"labels": []}, "labels"),
        ({"labels": ['bad"quote']}, "label"),
        ({"labels_url": "file:///x", "labels_sha256": "ab" * 32}, "either labels"),
        ({"labels": None}, "either labels"),
        ({"checksum": "x"}, "unknown keys"),
    ],
)
def test_parse_rejects_with_a_named_reason(change: dict[str, Any], message: str) -> None:
    item: dict[str, Any] = {"name": "detector", "url": "https://models.example.invalid/d.tflite",
            "sha256": "ab" * 32, "labels": ["person"]}  # fmt: skip
    item.update(change)
    item = {k: v for k, v in item.items() if v is not None or k == "sha256"}
    with pytest.raises(models.ModelError, match=message):
        models.parse_specs([item])


def test_parse_rejects_a_name_listed_twice() -> None:
    item = {"name": "d", "url": "file:///d", "sha256": "ab" * 32, "labels": ["person"]}
    with pytest.raises(models.ModelError, match="twice"):
        models.parse_specs([item, dict(item)])


def test_labels_file_skips_blank_lines_and_comments() -> None:
    text = "# COCO subset\nperson\n\nbicycle\n  car  \n"
    assert models.labels_from_text("x", text) == ("person", "bicycle", "car")


# -- fetch and cache ----------------------------------------------------------------------------


def test_good_digest_is_fetched_into_the_cache(model_file: Path, tmp_path: Path) -> None:
    (spec,) = models.parse_specs([_spec(model_file)])
    cache = tmp_path / "cache"
    got = models.fetch("model 'detector'", spec.model, cache)
    assert got == cache / spec.model.sha256
    assert got.read_bytes() == model_file.read_bytes()
    assert got.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in cache.iterdir()] == [spec.model.sha256]  # no partial file left


def test_wrong_digest_names_model_and_both_digests_and_keeps_nothing(
    model_file: Path, tmp_path: Path
) -> None:
    wrong = "0" * 64
    (spec,) = models.parse_specs([_spec(model_file, sha256=wrong)])
    cache = tmp_path / "cache"
    with pytest.raises(models.ModelError) as err:
        models.fetch("model 'detector'", spec.model, cache)
    text = str(err.value)
    assert "model 'detector'" in text and wrong in text
    assert _sha(model_file.read_bytes()) in text
    assert not cache.exists() or not any(cache.iterdir())


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.tflite"
    (spec,) = models.parse_specs([_spec_for_missing(missing)])
    with pytest.raises(models.ModelError, match=r"model 'detector': cannot fetch file://"):
        models.fetch("model 'detector'", spec.model, tmp_path / "cache")


def _spec_for_missing(path: Path) -> dict[str, Any]:
    return {"name": "detector", "url": path.as_uri(), "sha256": "ab" * 32, "labels": ["person"]}


def test_cached_hit_does_not_touch_the_source(model_file: Path, tmp_path: Path) -> None:
    (spec,) = models.parse_specs([_spec(model_file)])
    cache = tmp_path / "cache"
    models.fetch("m", spec.model, cache)
    model_file.unlink()  # the source is gone: only the cache can answer
    assert models.fetch("m", spec.model, cache).read_bytes() != b""


def test_corrupt_cache_entry_is_fetched_again(model_file: Path, tmp_path: Path) -> None:
    (spec,) = models.parse_specs([_spec(model_file)])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.model.sha256).write_bytes(b"truncated")
    got = models.fetch("m", spec.model, cache)
    assert _sha(got.read_bytes()) == spec.model.sha256


def test_corrupt_cache_entry_without_source_fails(model_file: Path, tmp_path: Path) -> None:
    (spec,) = models.parse_specs([_spec(model_file)])
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / spec.model.sha256).write_bytes(b"truncated")
    model_file.unlink()
    with pytest.raises(models.ModelError, match="cannot fetch"):
        models.fetch("m", spec.model, cache)


# -- staging for the role -----------------------------------------------------------------------


def test_stage_writes_model_labels_and_manifest(model_file: Path, tmp_path: Path) -> None:
    labels = tmp_path / "src" / "labels.txt"
    labels.write_text("person\nbicycle\n")
    raw = [
        _spec(model_file),
        _spec(model_file, name="yolo", layout="yolov8", labels=None,
              labels_url=labels.as_uri(), labels_sha256=_sha(labels.read_bytes())),
    ]  # fmt: skip
    raw[1].pop("labels")
    specs = models.parse_specs(raw)
    dest = tmp_path / "staged"
    got = models.stage(specs, tmp_path / "cache", dest)
    assert got == {"detector": ("person", "bicycle", "car"), "yolo": ("person", "bicycle")}
    assert sorted(p.name for p in dest.iterdir()) == [
        "detector.labels",
        "detector.tflite",
        "models.json",
        "yolo.labels",
        "yolo.tflite",
    ]
    assert (dest / "yolo.labels").read_text() == "person\nbicycle\n"
    manifest = json.loads((dest / "models.json").read_text())
    assert manifest[1] == {
        "name": "yolo",
        "sha256": _sha(model_file.read_bytes()),
        "layout": "yolov8",
        "labels": ["person", "bicycle"],
    }


def test_stage_stops_on_a_wrong_labels_digest(model_file: Path, tmp_path: Path) -> None:
    labels = tmp_path / "src" / "labels.txt"
    labels.write_text("person\n")
    raw = _spec(model_file, labels_url=labels.as_uri(), labels_sha256="cd" * 32)
    raw.pop("labels")
    with pytest.raises(models.ModelError, match="labels: SHA-256 mismatch"):
        models.stage(models.parse_specs([raw]), tmp_path / "cache", tmp_path / "staged")


# -- build.py: role variables and extras --------------------------------------------------------


def test_role_vars_city_file_overrides_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    city = tmp_path / "city.yml"
    city.write_text("edge_daemon_extras: [analytics]\nedge_daemon_models: []\n")
    monkeypatch.setenv("EDGE_IMAGE_VARS", str(city))
    target = layout.TARGETS["qemu-amd64"]
    merged = build.role_vars(target)
    assert merged["edge_daemon_extras"] == ["analytics"]
    assert merged["edge_daemon_system_site_packages"] is True  # from the profile
    assert build._extras(target) == ("analytics",)
    monkeypatch.delenv("EDGE_IMAGE_VARS")
    assert build._extras(target) == ()  # the emulated profile leaves analytics off


def test_wheel_requirements_add_the_requested_extras(tmp_path: Path) -> None:
    wheel = tmp_path / "edge-0.1.0-py3-none-any.whl"
    meta = "\n".join(
        [
            "Metadata-Version: 2.1",
            "Name: edge",
            "Requires-Dist: numpy>=1.26",
            "Requires-Dist: systemd-python>=235",
            'Requires-Dist: ai-edge-litert>=2.3; extra == "analytics"',
            'Requires-Dist: gpiod>=2.1; extra == "unit"',
            "",
        ]
    )
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("edge-0.1.0.dist-info/METADATA", meta)
    assert build._wheel_requirements(wheel) == ["numpy>=1.26"]
    with_extra = build._wheel_requirements(wheel, ("analytics",))
    assert with_extra == ["numpy>=1.26", "ai-edge-litert>=2.3"]


def test_command_line_stages_for_a_maintenance_run(model_file: Path, tmp_path: Path) -> None:
    city = tmp_path / "city.yml"
    city.write_text(json.dumps({"edge_daemon_models": [_spec(model_file)]}))
    dest, cache = tmp_path / "staged", tmp_path / "cache"
    assert models.main([str(city), str(dest), "--cache", str(cache)]) == 0
    assert (dest / "detector.tflite").read_bytes() == model_file.read_bytes()
    city.write_text(json.dumps({"edge_daemon_models": [_spec(model_file, sha256="1" * 64)]}))
    assert models.main([str(city), str(dest), "--cache", str(cache)]) == 1


def test_variables_with_vault_secrets_still_give_the_models(tmp_path: Path) -> None:
    first = tmp_path / "city.yml"
    first.write_text(
        "edge_daemon_extras: [analytics]\n"
        "edge_base_syslog_password: !vault |\n"
        "  $ANSIBLE_VAULT;1.1;AES256\n"
        "  6162636465\n"
    )
    secrets = tmp_path / "secrets.yml"
    secrets.write_text("$ANSIBLE_VAULT;1.1;AES256\n6162636465\n")
    later = tmp_path / "later.yml"
    later.write_text("edge_daemon_extras: []\n")
    assert models.load_vars([first, secrets])["edge_daemon_extras"] == ["analytics"]
    assert models.load_vars([first, secrets, later])["edge_daemon_extras"] == []
    bad = tmp_path / "bad.yml"
    bad.write_text("- a list\n")
    with pytest.raises(models.ModelError, match="mapping"):
        models.load_vars([bad])
