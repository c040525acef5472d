"""Private keys are created once and never overwritten (issue #11, item 3).

A tired technician runs ``edge-csu keygen`` twice, ``edge-csu ca issue`` into a directory that
already holds a key, ``edgectl enroll --renew`` twice: each time the key that recordings or
certificates rest on must survive byte for byte. Replacing a recipient key is a separate,
confirmed ``keygen --rotate`` that keeps the old key.
"""

from __future__ import annotations

import datetime as dt
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from edge import enrolment
from edge.config import RecipientKem
from edge.csu.ca import VideoCA, cert_pem
from edge.csu.main import main as edge_csu
from edge.errors import EnrolmentError, KeyExistsError
from edge.unitkeys import load_or_create_signing_key, write_new_private
from edge.vault.keys import load_private, load_public, rotate_keypair

KEM = RecipientKem.X25519.value


def _keygen(out: Path, *extra: str) -> int:
    return edge_csu(["keygen", "--out", str(out), "--kem", KEM, *extra])


def test_keygen_twice_refuses_and_keeps_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "csu"
    assert _keygen(out) == 0
    key, pub = out / "csu.key.json", out / "csu.pub.json"
    before = key.read_bytes(), pub.read_bytes()
    capsys.readouterr()
    assert _keygen(out) == 2
    err = capsys.readouterr().err
    assert "refusing to overwrite" in err and "--rotate" in err and str(key) in err
    assert (key.read_bytes(), pub.read_bytes()) == before
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert sorted(p.name for p in out.iterdir()) == ["csu.key.json", "csu.pub.json"]


def test_keygen_refuses_when_only_one_half_is_there(tmp_path: Path) -> None:
    out = tmp_path / "csu"
    assert _keygen(out) == 0
    (out / "csu.pub.json").unlink()  # lost public half: the private key must still survive
    key = (out / "csu.key.json").read_bytes()
    assert _keygen(out) == 2
    assert (out / "csu.key.json").read_bytes() == key
    assert not (out / "csu.pub.json").exists()


def test_rotate_needs_confirmation_and_keeps_the_old_key(tmp_path: Path) -> None:
    out = tmp_path / "csu"
    assert _keygen(out) == 0
    old_key, old_pub = (out / "csu.key.json").read_bytes(), (out / "csu.pub.json").read_bytes()
    # No terminal to ask and no --yes: nothing changes.
    assert _keygen(out, "--rotate") == 2
    assert (out / "csu.key.json").read_bytes() == old_key
    assert _keygen(out, "--rotate", "--yes") == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 4, names
    kept_key = [out / n for n in names if n.startswith("csu.key.") and n != "csu.key.json"]
    kept_pub = [out / n for n in names if n.startswith("csu.pub.") and n != "csu.pub.json"]
    assert kept_key[0].read_bytes() == old_key and kept_pub[0].read_bytes() == old_pub
    assert stat.S_IMODE(kept_key[0].stat().st_mode) == 0o600
    assert (out / "csu.key.json").read_bytes() != old_key
    assert stat.S_IMODE((out / "csu.key.json").stat().st_mode) == 0o600
    assert "private" not in json.loads((out / "csu.pub.json").read_text())
    # The kept key still opens what was sealed to the old public key.
    assert load_private(kept_key[0]).public.raw == load_public(kept_pub[0]).raw


def test_rotate_twice_in_one_second_never_overwrites_an_archive(tmp_path: Path) -> None:
    out = tmp_path / "csu"
    kem = RecipientKem.X25519
    assert _keygen(out) == 0
    now = dt.datetime(2026, 12, 1, 12, 0, 0, tzinfo=dt.UTC)
    _, _, first = rotate_keypair(out, kem, now=now)
    archived = first[0].read_bytes()
    current = (out / "csu.key.json").read_bytes()
    with pytest.raises(KeyExistsError):
        rotate_keypair(out, kem, now=now)
    assert first[0].read_bytes() == archived
    assert (out / "csu.key.json").read_bytes() == current


def test_rotate_without_a_key_is_refused(tmp_path: Path) -> None:
    assert _keygen(tmp_path / "empty", "--rotate", "--yes") == 2
    assert not (tmp_path / "empty" / "csu.key.json").exists()


def test_write_new_private_is_exclusive(tmp_path: Path) -> None:
    path = tmp_path / "k.pem"
    write_new_private(path, b"first")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyExistsError, match="refusing to overwrite"):
        write_new_private(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"]  # no temporary file left


def test_signing_key_is_never_replaced(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    first = load_or_create_signing_key(keys)
    pem = (keys / "unit-signing.pem").read_bytes()
    (keys / "unit-signing.pub.pem").unlink()
    again = load_or_create_signing_key(keys)
    assert (keys / "unit-signing.pem").read_bytes() == pem
    assert again.public_key() == first.public_key()


def test_ca_init_and_issue_never_overwrite_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ca_dir = tmp_path / "ca"
    assert edge_csu(["ca", "init", str(ca_dir)]) == 0
    root, sub = (ca_dir / "root.key").read_bytes(), (ca_dir / "video-ca.key").read_bytes()
    assert edge_csu(["ca", "init", str(ca_dir)]) == 2
    assert (ca_dir / "root.key").read_bytes() == root
    assert (ca_dir / "video-ca.key").read_bytes() == sub

    out = tmp_path / "csu-tls"
    assert edge_csu(["ca", "issue", str(ca_dir), "csu.city.test", "--out", str(out)]) == 0
    key = Path(f"{out}.key")
    held = key.read_bytes()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    issued = len(VideoCA.open(ca_dir).issued())
    capsys.readouterr()
    assert edge_csu(["ca", "issue", str(ca_dir), "csu.city.test", "--out", str(out)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert key.read_bytes() == held
    assert len(VideoCA.open(ca_dir).issued()) == issued  # refused before issuing


def test_second_renewal_keeps_the_pending_key(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    ca = VideoCA.init(tmp_path / "ca")
    result = enrolment.enrol(keys, "unit-7", "unit-7.city.test")
    csr = x509.load_pem_x509_csr(result.csr_path.read_bytes())
    enrolment.install(keys, cert_pem(ca.sign_csr(csr)), "unit-7", ca_data=ca.chain_pem)
    enrolment.enrol(keys, "unit-7", "unit-7.city.test", renew=True)
    pending = (keys / enrolment.TLS_NEW_KEY_NAME).read_bytes()
    with pytest.raises(EnrolmentError, match="renewal is already under way"):
        enrolment.enrol(keys, "unit-7", "unit-7.city.test", renew=True)
    assert (keys / enrolment.TLS_NEW_KEY_NAME).read_bytes() == pending


def test_write_new_without_hard_links_is_still_exclusive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno
    import os

    def no_links(src: object, dst: object) -> None:  # a FAT file system, for a CA on a stick
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / "root.key"
    write_new_private(path, b"first")
    assert path.read_bytes() == b"first" and stat.S_IMODE(path.stat().st_mode) == 0o600
    with pytest.raises(KeyExistsError):
        write_new_private(path, b"second")
    assert path.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["root.key"]
