"""A throwaway S3-compatible object store for tests: OpenStack Swift from Debian's packages
(``swift-proxy``, ``swift-account``, ``swift-container``, ``swift-object``) with its ``s3api``
middleware, one replica on one device in a temporary directory.

Why Swift and not Ceph's RADOS gateway: Swift is four small Python servers reading files we
write, ready in seconds with no cluster to bootstrap; radosgw needs a running Ceph cluster
(monitors, an OSD) before it can answer. The servers start as root and drop to ``nobody``
(``user =``), so the directory is made under /tmp and given to ``nobody``.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .conftest import tool
from .uplink_util import free_port

ACCESS_KEY = "edge:csu"
SECRET = "s3-test-secret"
_SERVERS = ("account", "container", "object")


@dataclass(frozen=True)
class S3Lab:
    endpoint: str
    access_key: str
    secret_file: Path
    directory: Path


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"swift did not start: {log.read_text()[-2000:]}") from None
            time.sleep(0.1)


@contextmanager
def swift_s3() -> Iterator[S3Lab]:
    builder = tool("swift-ring-builder")
    base = Path(tempfile.mkdtemp(prefix="edge-swift-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        (base / "srv" / "d1").mkdir(parents=True)
        (base / "swift.conf").write_text(
            "[swift-hash]\nswift_hash_path_suffix = edge-test\nswift_hash_path_prefix = edge\n"
            "[storage-policy:0]\nname = gold\ndefault = yes\n"
        )
        common = (
            f"[DEFAULT]\nbind_ip = 127.0.0.1\nworkers = 0\nuser = nobody\nswift_dir = {base}\n"
            "log_address = /dev/null\n"
        )
        ports = {name: free_port() for name in (*_SERVERS, "proxy")}
        for name in _SERVERS:
            ring = str(base / f"{name}.builder")
            device = f"r1z1-127.0.0.1:{ports[name]}/d1"
            for args in (["create", "6", "1", "1"], ["add", device, "1"], ["rebalance"]):
                subprocess.run([builder, ring, *args], check=True, capture_output=True)
            (base / f"{name}-server.conf").write_text(
                f"{common}bind_port = {ports[name]}\ndevices = {base / 'srv'}\n"
                f"mount_check = false\n[pipeline:main]\npipeline = {name}-server\n"
                f"[app:{name}-server]\nuse = egg:swift#{name}\n"
            )
        (base / "proxy-server.conf").write_text(
            f"{common}bind_port = {ports['proxy']}\n[pipeline:main]\n"
            "pipeline = catch_errors proxy-logging cache s3api tempauth proxy-logging"
            " proxy-server\n"
            "[app:proxy-server]\nuse = egg:swift#proxy\naccount_autocreate = true\n"
            "[filter:catch_errors]\nuse = egg:swift#catch_errors\n"
            "[filter:proxy-logging]\nuse = egg:swift#proxy_logging\n"
            "[filter:cache]\nuse = egg:swift#memcache\n"
            "[filter:s3api]\nuse = egg:swift#s3api\n"
            f"[filter:tempauth]\nuse = egg:swift#tempauth\nuser_edge_csu = {SECRET} .admin\n"
        )
        (base / "secret").write_text(SECRET + "\n")
        shutil.chown(base, "nobody")
        for path in base.rglob("*"):
            shutil.chown(path, "nobody")
        for name in (*_SERVERS, "proxy"):
            log = base / f"{name}.log"
            procs.append(
                subprocess.Popen(
                    [tool(f"swift-{name}-server"), str(base / f"{name}-server.conf")],
                    stdout=log.open("wb"),
                    stderr=subprocess.STDOUT,
                )
            )
        for name, proc in zip((*_SERVERS, "proxy"), procs, strict=True):
            _wait_port(ports[name], proc, base / f"{name}.log", 60)
        yield S3Lab(f"http://127.0.0.1:{ports['proxy']}", ACCESS_KEY, base / "secret", base)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(base, ignore_errors=True)
