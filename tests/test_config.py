from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from edge import config
from edge.errors import ConfigError

GOOD = """\
[unit]
id = "cab-0042"
data_dir = "/var/lib/edge"

[[cameras]]
id = "north"
source = "rtsp://10.0.0.5/stream1"
fps = 12.5

[[cameras.privacy_masks]]
name = "flat 2B"
points = [[0.1, 0.1], [0.3, 0.1], [0.3, 0.4]]
fill = "pixelate"

[[cameras]]
id = "south"
source = "file:/srv/clip.mp4"
"""


def test_demo_default_is_valid_and_masked() -> None:
    cfg = config.DEMO_CONFIG
    assert cfg.cameras[0].source == "synthetic"
    # One mask per storey of the façade; tests/test_demo_config.py checks they hide every window.
    assert [m.name for m in cfg.cameras[0].privacy_masks] == [
        "upper-floor windows",
        "ground-floor windows",
    ]
    assert cfg.unit.data_dir == Path("edge-data")


def test_good_config_parses() -> None:
    cfg = config.parse(GOOD, path="edge.toml")
    assert [c.id for c in cfg.cameras] == ["north", "south"]
    assert cfg.cameras[0].privacy_masks[0].fill is config.MaskFill.PIXELATE


@pytest.mark.parametrize(
    ("needle", "replacement", "key", "line", "reason"),
    [
        ("fps = 12.5", "fps = -1", "cameras[0].fps", 8, "greater than 0"),
        ('fill = "pixelate"', 'fill = "blur"', "cameras[0].privacy_masks[0].fill", 13, "solid"),
        ('id = "south"', 'id = "south"\ncolour = 3', "cameras[1].colour", 17, "unknown key"),
        ('source = "file:/srv/clip.mp4"', 'source = "http://x"', "cameras[1].source", 17, "rtsp"),
        ('id = "cab-0042"', 'id = "Cab 42"', "unit.id", 2, "pattern"),
        (
            "[[0.1, 0.1], [0.3, 0.1], [0.3, 0.4]]",
            "[[0.1, 0.1]]",
            "cameras[0].privacy_masks[0].points",
            12,
            "at least 3",
        ),
    ],
)
def test_errors_name_file_key_and_line(
    needle: str, replacement: str, key: str, line: int, reason: str
) -> None:
    text = GOOD.replace(needle, replacement)
    with pytest.raises(ConfigError) as info:
        config.parse(text, path="/etc/edge/edge.toml")
    err = info.value
    assert err.path == "/etc/edge/edge.toml"
    assert err.key == key
    assert err.line == line
    assert reason in str(err)
    assert str(err).startswith(f"/etc/edge/edge.toml:{line}: {key}: ")


def test_toml_syntax_error_has_line() -> None:
    with pytest.raises(ConfigError) as info:
        config.parse('[unit]\nid = "a"\nbroken = [\n', path="x.toml")
    assert info.value.line is not None
    assert "not valid TOML" in str(info.value)


def test_duplicate_camera_ids_refused() -> None:
    with pytest.raises(ConfigError, match="used twice"):
        config.parse('[[cameras]]\nid = "a"\n[[cameras]]\nid = "a"\n')


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path / "nope.toml")


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_edgectl_config_check(tmp_path: Path) -> None:
    good = tmp_path / "good.toml"
    good.write_text(GOOD)
    bad = tmp_path / "bad.toml"
    bad.write_text(GOOD.replace("fps = 12.5", "fps = 0\nspeed = 2"))
    cmd = [sys.executable, "-m", "edge.cli.main", "config", "check"]
    ok = subprocess.run([*cmd, str(good)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr
    assert "OK" in ok.stdout
    ko = subprocess.run([*cmd, str(bad)], capture_output=True, text=True, check=False)
    assert ko.returncode == 1
    assert f"{bad}:8: cameras[0].fps:" in ko.stderr
    assert f"{bad}:9: cameras[0].speed: unknown key" in ko.stderr
    assert "2 problem(s)" in ko.stderr


# --- recipient keys: public halves only (issue #11, item 4) ------------------------------------


def _private_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    return ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize("field", ["csu_public_key", "escrow_public_key"])
def test_config_check_refuses_a_private_key_as_recipient(tmp_path: Path, field: str) -> None:
    from edge.vault.keys import write_keypair

    pub, key = write_keypair(tmp_path / "csu", config.RecipientKem.X25519)
    pem = tmp_path / "escrow.pem"
    pem.write_bytes(_private_pem())
    cmd = [sys.executable, "-m", "edge.cli.main", "config", "check"]
    for wrong in (key, pem):
        other = pub if field == "escrow_public_key" else None
        lines = [f'{field} = "{wrong}"', 'kem = "x25519"']
        if other is not None:
            lines.insert(0, f'csu_public_key = "{other}"')
        path = tmp_path / "edge.toml"
        path.write_text(GOOD + "\n[vault]\n" + "\n".join(lines) + "\n")
        ko = subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=False)
        assert ko.returncode == 1, ko.stdout + ko.stderr
        assert f"vault.{field}" in ko.stderr and "PUBLIC key" in ko.stderr, ko.stderr
        assert str(wrong) in ko.stderr
    # The public half is accepted.
    path.write_text(GOOD + f'\n[vault]\ncsu_public_key = "{pub}"\nkem = "x25519"\n')
    ok = subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=False)
    assert ok.returncode == 0, ok.stderr


def test_edged_refuses_to_start_with_the_csu_private_key(tmp_path: Path) -> None:
    from .daemon_util import write_config

    cfg_path = write_config(tmp_path / "edge.toml", tmp_path / "data")
    cfg_path.write_text(cfg_path.read_text().replace("csu.pub.json", "csu.key.json"))
    run = subprocess.run(
        [sys.executable, "-m", "edge.daemon", "--config", str(cfg_path), "--run-for", "5"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert run.returncode == 78, run.stderr[-2000:]
    assert "vault.csu_public_key" in run.stderr and "PUBLIC key" in run.stderr
    assert not (tmp_path / "data" / "vault" / "segments").exists()


def test_vault_refuses_a_key_file_swapped_after_the_config_was_loaded(tmp_path: Path) -> None:
    from edge.vault.keys import resolve_recipients, write_keypair

    pub, key = write_keypair(tmp_path / "csu", config.RecipientKem.X25519)
    cfg = config.parse(
        GOOD + f'\n[vault]\ncsu_public_key = "{pub}"\nescrow_public_key = "{pub}"\nkem = "x25519"\n'
    )
    assert len(resolve_recipients(cfg)) == 2
    pub.write_bytes(key.read_bytes())  # someone copies the private file over the public one
    with pytest.raises(ConfigError, match=r"vault\.csu_public_key: .*holds a recipient key"):
        resolve_recipients(cfg)


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ('[[analytics.cameras]]\ncamera = "north"\nface_blur = true\n', "needs face_model_path"),
        ('[analytics]\nface_model_sha256 = "' + "a" * 64 + '"\n', "face_model_path is not"),
        ('[analytics.detector]\nmodel_sha256 = "' + "a" * 64 + '"\n', "model_path is not"),
        ('[analytics.mqtt]\ncert_file = "/etc/edge/mqtt.crt"\n', "go together"),
        ('[analytics.mqtt]\nkey_file = "/etc/edge/mqtt.key"\n', "go together"),
        ('[analytics.mqtt]\ntls = false\nca_file = "/etc/edge/ca.pem"\n', "need tls = true"),
        ('[[analytics.cameras]]\ncamera = "nort"\n', "not among the cameras"),
        ('[vault]\ndemo_recipient = true\ncsu_public_key = "/etc/edge/csu.pub"\n', "combined"),
    ],
)
def test_dependent_settings_are_checked_by_the_schema(extra: str, reason: str) -> None:
    """A setting that needs another is refused when the file is read, not later at run time
    (a SIGHUP used to accept face_blur without a model, then fail half-way through reload)."""
    with pytest.raises(ConfigError, match=reason):
        config.parse(GOOD + "\n" + extra, path="edge.toml")


def test_face_blur_with_its_model_is_accepted() -> None:
    extra = (
        '[analytics]\nface_model_path = "/opt/edge/models/face.tflite"\n'
        '[[analytics.cameras]]\ncamera = "north"\nface_blur = true\n'
    )
    cfg = config.parse(GOOD + "\n" + extra, path="edge.toml")
    assert cfg.analytics.for_camera("north").face_blur
