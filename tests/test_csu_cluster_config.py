"""Cluster mode's configuration (``storage = "cluster"`` and ``[cluster]`` in csu.toml) and the
deployment files shipped for it (HAProxy's configuration), judged by the real tools."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge.csu import lab
from edge.csu.receiver import settings
from edge.errors import ConfigError

from .conftest import REPO, tool

CLUSTER = """storage = "cluster"

[cluster]
receiver_id = "r1"

[cluster.database]
conninfo = "host=db.csu.test dbname=edge user=edge_csu"
password_file = "secrets/db-password"

[cluster.object_store]
endpoint = "https://s3.csu.test"
bucket = "edge-segments"
access_key = "edge-csu"
secret_file = "secrets/s3-secret"
"""


def _refusal(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as refused:
        settings.parse(text, path="csu.toml")
    return refused.value


def test_cluster_mode_is_chosen_in_csu_toml_and_paths_resolve(tmp_path: Path) -> None:
    cfg = settings.parse(CLUSTER, path="csu.toml", base=tmp_path)
    assert cfg.storage == "cluster" and cfg.cluster is not None
    assert cfg.cluster.database.password_file == tmp_path / "secrets" / "db-password"
    assert cfg.cluster.object_store.secret_file == tmp_path / "secrets" / "s3-secret"
    assert settings.parse("", path="csu.toml").storage == "embedded"


@pytest.mark.parametrize(
    ("text", "key", "line", "words"),
    [
        ('storage = "cluster"\n', "storage", 1, "needs a [cluster] table"),
        (CLUSTER.replace("edge_csu", "edge_csu password=hunter2"),
         "cluster.database.conninfo", 7, "password_file"),
        (CLUSTER.replace("host=db.csu.test dbname=edge user=edge_csu",
                         "postgresql://edge_csu:hunter2@db.csu.test/edge"),
         "cluster.database.conninfo", 7, "password_file"),
        (CLUSTER.replace('bucket = "edge-segments"', 'bucket = "Edge_Segments"'),
         "cluster.object_store.bucket", 12, "pattern"),
        (CLUSTER + "region = 'x'\n", "cluster.object_store.region", 15, "unknown key"),
        (CLUSTER.replace('receiver_id = "r1"\n', ""), "cluster.receiver_id", 3, "required"),
        ('storage = "sqlite"\n', "storage", 1, "embedded"),
        ('[limits]\nproxy_protocol_from = ["haproxy-1"]\n', "limits.proxy_protocol_from", 2,
         "not an IP address"),
    ],
)  # fmt: skip
def test_mistakes_are_named_by_file_line_and_key(
    text: str, key: str, line: int, words: str
) -> None:
    refusal = _refusal(text)
    assert (refusal.key, refusal.line, refusal.path) == (key, line, "csu.toml"), str(refusal)
    assert words in str(refusal)


def test_a_receiver_that_cannot_reach_its_database_does_not_start(tmp_path: Path) -> None:
    """One line naming the database, a failure status; nothing listens."""
    (tmp_path / "secret").write_text("s\n")
    config = tmp_path / "csu.toml"
    config.write_text(
        CLUSTER.replace("host=db.csu.test", f"host={tmp_path / 'no-db'}")
        .replace('password_file = "secrets/db-password"\n', "connect_timeout_s = 2\n")
        .replace("secrets/s3-secret", "secret")
        + "[units]\nport = 0\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "serve", "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert run.returncode != 0
    assert "segment index" in run.stderr and "no-db" in run.stderr, run.stderr[-2000:]
    assert "listening" not in run.stdout


def test_the_shipped_haproxy_configuration_is_valid_as_shipped_and_as_the_lab_runs_it(
    tmp_path: Path,
) -> None:
    haproxy = tool("haproxy")
    shipped = REPO / "edge" / "csu" / "deploy" / "haproxy.cfg"
    env = {**os.environ, "EDGE_CSU_LISTEN": "127.0.0.1:8443"}
    check = subprocess.run([haproxy, "-c", "-f", str(shipped)], capture_output=True, env=env)
    assert check.returncode == 0, check.stderr.decode()
    text = lab.haproxy_config(9000, [9001, 9002, 9003])
    assert "mode tcp" in text and text.count("\n    server r") == 3
    (tmp_path / "h.cfg").write_text(text)
    check = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "h.cfg")], capture_output=True)
    assert check.returncode == 0, check.stderr.decode()
    # one of its lines broken: the judge really judges
    (tmp_path / "bad.cfg").write_text(text.replace("mode tcp", "mode tcpx"))
    check = subprocess.run([haproxy, "-c", "-f", str(tmp_path / "bad.cfg")], capture_output=True)
    assert check.returncode != 0


def test_the_operations_guide_example_is_a_valid_cluster_configuration(tmp_path: Path) -> None:
    import re

    text = (REPO / "docs" / "OPERATIONS.md").read_text(encoding="utf-8")
    block = re.search(r"```toml\n(storage = \"cluster\".*?)```", text, re.S)
    assert block is not None
    cfg = settings.parse(block.group(1), path="OPERATIONS.md", base=tmp_path)
    assert cfg.cluster is not None and cfg.cluster.receiver_id == "r1"
    assert cfg.limits.proxy_protocol_from == ["10.20.0.5", "10.20.0.6"]


def test_the_shipped_receiver_unit_is_hardened_and_runs_the_instance_configuration(
    tmp_path: Path,
) -> None:
    import re
    import shutil

    shipped = REPO / "edge" / "csu" / "deploy" / "edge-csu@.service"
    text = shipped.read_text()
    assert "ExecStart=/opt/edge-csu/venv/bin/edge-csu serve --config /etc/edge-csu/%i.toml" in text
    assert "Restart=always" in text and "User=edge-csu" in text
    unit = tmp_path / "edge-csu@r1.service"
    shutil.copy(shipped, unit)
    out = subprocess.run(
        [tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    match = re.search(r"Overall exposure level for edge-csu@r1\.service: (\d+\.\d+)", out.stdout)
    assert match, out.stdout + out.stderr
    assert float(match.group(1)) <= 2.0, out.stdout


@pytest.mark.parametrize("action", ["purge", "audit"])
def test_retention_commands_on_a_cluster_configuration_work_on_the_cluster_stores(
    tmp_path: Path, action: str
) -> None:
    """Never a silent purge or audit of an empty local directory while the recordings are in
    the cluster's stores: the command needs the cluster's database (here, its password file
    is missing) and says so. The commands at work on a real cluster: test_csu_cluster_retention."""
    config = tmp_path / "csu.toml"
    config.write_text(CLUSTER)
    run = subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "retention", action, "--config", str(config)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert run.returncode != 0
    assert "db-password" in run.stderr and "database password" in run.stderr, run.stderr
    assert not (tmp_path / "storage").exists()
