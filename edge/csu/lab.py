"""A cluster-mode CSU on one machine, from Debian's packages: PostgreSQL (``initdb``/``pg_ctl``
in a temporary directory), OpenStack Swift with its S3 API, HAProxy in TCP mode with the
configuration this package ships (:data:`HAPROXY_CONFIG`), and K ``edge-csu serve`` processes
in cluster mode. ``edge-csu bench --cluster`` runs on it; the cluster tests start the same.

Everything listens on 127.0.0.1 (PostgreSQL on a Unix socket only) and lives under one
directory removed afterwards. PostgreSQL refuses to run as root, Swift drops to ``nobody``:
both run as ``nobody`` in directories given to it under /tmp.

Why Swift and not Ceph's RADOS gateway: Swift is four small Python servers reading files we
write, ready in seconds with no cluster to bootstrap; radosgw needs a running Ceph cluster
(monitors, an OSD) before it can answer.
"""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ed25519

from ..errors import EdgeError

S3_ACCESS_KEY = "edge:csu"
BUCKET = "segments"
_SWIFT_SERVERS = ("account", "container", "object")


class LabError(EdgeError):
    """The lab could not start (a package missing, a server that does not come up)."""


def haproxy_config_text() -> str:
    """The HAProxy configuration shipped for cluster mode (``edge/csu/deploy/haproxy.cfg``)."""
    return resources.files("edge.csu.deploy").joinpath("haproxy.cfg").read_text()


def _tool(name: str, package: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        raise LabError(f"{name} not installed (Debian package {package})")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if (proc is not None and proc.poll() is not None) or time.monotonic() > deadline:
                raise LabError(f"{what} did not start listening on port {port}") from None
            time.sleep(0.05)


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if not found:
        raise LabError(f"{name} not installed (Debian package postgresql)")
    return found[-1]


class Postgres:
    """A running throwaway server: ``conninfo``, and ``stop``/``start`` to cut it off."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.conninfo = f"host={base} dbname=postgres user=edge"
        self._as_nobody = [_tool("runuser", "util-linux"), "-u", "nobody", "--"]
        self._pg_ctl = _pg_bin("pg_ctl")

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run(
            [*self._as_nobody, self._pg_ctl, "-D", str(self.base / "data"), *args],
            check=check,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        options = (
            f"-c listen_addresses='' -c unix_socket_directories={self.base} -c fsync=off "
            "-c max_connections=400"
        )
        self._ctl("-o", options, "-w", "-t", "60", "-l", str(self.base / "log"), "start")

    def stop(self) -> None:
        self._ctl("-m", "immediate", "stop")


@contextmanager
def postgres_server() -> Iterator[Postgres]:
    """Create and start a server in a new directory; stopped and removed afterwards."""
    if os.geteuid() != 0:
        raise LabError("the lab's PostgreSQL runs as nobody: start it as root")
    base = Path(tempfile.mkdtemp(prefix="edge-pg-"))
    try:
        shutil.chown(base, "nobody")
        server = Postgres(base)
        subprocess.run(
            [*server._as_nobody, _pg_bin("initdb"), "-D", str(base / "data"), "-U", "edge",
             "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, timeout=120,
        )  # fmt: skip
        server.start()
        try:
            yield server
        finally:
            server._ctl("-m", "immediate", "stop", check=False)
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- the object store -------------------------------------------------------------------------


@dataclass
class S3Lab:
    endpoint: str
    access_key: str
    secret_file: Path
    directory: Path
    _proxy: list[str] = field(default_factory=list)
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def _start(self, name: str, command: list[str]) -> None:
        log = self.directory / f"{name}.log"
        self._procs[name] = subprocess.Popen(
            command, stdout=log.open("ab"), stderr=subprocess.STDOUT
        )

    def stop_proxy(self) -> None:
        """The S3 endpoint goes away (an outage of the object store)."""
        proc = self._procs["proxy"]
        proc.terminate()
        proc.wait(10)

    def start_proxy(self, timeout: float = 60) -> None:
        self._start("proxy", self._proxy)
        wait_port(int(self.endpoint.rsplit(":", 1)[1]), self._procs["proxy"], "swift", timeout)

    def close(self) -> None:
        for proc in self._procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self._procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def swift_s3() -> Iterator[S3Lab]:
    """Swift's four servers with the s3api middleware, one replica on one device."""
    builder = _tool("swift-ring-builder", "swift")
    base = Path(tempfile.mkdtemp(prefix="edge-swift-"))
    secret = secrets.token_hex(16)  # a throwaway lab's, never the same twice
    (base / "srv" / "d1").mkdir(parents=True)
    (base / "swift.conf").write_text(
        "[swift-hash]\nswift_hash_path_suffix = edge-lab\nswift_hash_path_prefix = edge\n"
        "[storage-policy:0]\nname = gold\ndefault = yes\n"
    )
    common = (
        f"[DEFAULT]\nbind_ip = 127.0.0.1\nworkers = 0\nuser = nobody\nswift_dir = {base}\n"
        "log_address = /dev/null\n"
    )
    ports = {name: free_port() for name in (*_SWIFT_SERVERS, "proxy")}
    lab = S3Lab(f"http://127.0.0.1:{ports['proxy']}", S3_ACCESS_KEY, base / "secret", base)
    try:
        for name in _SWIFT_SERVERS:
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
            f"[filter:tempauth]\nuse = egg:swift#tempauth\nuser_edge_csu = {secret} .admin\n"
        )
        (base / "secret").write_text(secret + "\n")
        for path in [base, *base.rglob("*")]:
            shutil.chown(path, "nobody")
        for name in _SWIFT_SERVERS:
            lab._start(
                name, [_tool(f"swift-{name}-server", "swift"), str(base / f"{name}-server.conf")]
            )
        lab._proxy = [_tool("swift-proxy-server", "swift-proxy"), str(base / "proxy-server.conf")]
        lab._start("proxy", lab._proxy)
        for name in (*_SWIFT_SERVERS, "proxy"):
            wait_port(ports[name], lab._procs[name], f"swift-{name}-server", 60)
        yield lab
    finally:
        lab.close()
        shutil.rmtree(base, ignore_errors=True)


def ensure_bucket(s3: S3Lab, bucket: str = BUCKET, timeout: float = 30) -> None:
    """Make the bucket, waiting for Swift's backends (the proxy listens before they answer)."""
    from .receiver.objstore import ObjectStore, ObjectStoreError

    deadline = time.monotonic() + timeout
    while True:
        try:
            ObjectStore(
                s3.endpoint, bucket, s3.access_key, s3.secret_file, timeout_s=10
            ).ensure_bucket()
            return
        except ObjectStoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


# --- HAProxy and the receivers ----------------------------------------------------------------


def haproxy_config(listen_port: int, receiver_ports: list[int]) -> str:
    """The shipped configuration with its placeholders filled and one ``server`` line per
    receiver (the shipped file lists two: a deployment edits that list)."""
    lines = []
    servers_done = False
    for line in haproxy_config_text().splitlines():
        if line.strip().startswith("server "):
            if not servers_done:
                indent = line[: len(line) - len(line.lstrip())]
                for i, port in enumerate(receiver_ports, start=1):
                    lines.append(f"{indent}server r{i} 127.0.0.1:{port}")
                servers_done = True
            continue
        lines.append(line.replace("${EDGE_CSU_LISTEN}", f"127.0.0.1:{listen_port}"))
    return "\n".join(lines) + "\n"


class HAProxy:
    def __init__(self, directory: Path, listen_port: int, receiver_ports: list[int]) -> None:
        self.directory = directory
        self.port = listen_port
        directory.mkdir(parents=True, exist_ok=True)
        self.config = directory / "haproxy.cfg"
        self.config.write_text(haproxy_config(listen_port, receiver_ports))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        haproxy = _tool("haproxy", "haproxy")
        check = subprocess.run([haproxy, "-c", "-f", str(self.config)], capture_output=True)
        if check.returncode != 0:
            raise LabError(f"haproxy refuses its configuration: {check.stderr.decode()[-800:]}")
        log = (self.directory / "haproxy.log").open("ab")
        self.proc = subprocess.Popen(
            [haproxy, "-db", "-f", str(self.config)], stdout=log, stderr=subprocess.STDOUT
        )
        wait_port(self.port, self.proc, "haproxy", 20)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@dataclass
class ClusterShared:
    """What every receiver of the lab shares: the CSU's TLS identity, the fleet CA, the unit
    registry (deployed identically on each receiver in a real cluster) and the stores."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path
    registry_dir: Path
    conninfo: str
    s3: S3Lab
    bucket: str = BUCKET
    mqtt_port: int | None = None


def receiver_config(
    shared: ClusterShared, receiver_id: str, port: int, extra: str = "", top: str = ""
) -> str:
    """``csu.toml`` of one cluster receiver listening on ``port`` (the lab's own paths; the
    operators' listener on a free port). ``top``: top-level keys (``authority_key_file``),
    ``extra``: tables, appended."""
    mqtt = (
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {shared.mqtt_port}\ntls = false\n'
        'topic_prefix = "city"\n'
        if shared.mqtt_port
        else ""
    )
    return f"""storage = "cluster"
registry_dir = "{shared.registry_dir}"
audit_log = "audit.jsonl"
{top}

[cluster]
receiver_id = "{receiver_id}"

[cluster.database]
conninfo = "{shared.conninfo}"

[cluster.object_store]
endpoint = "{shared.s3.endpoint}"
bucket = "{shared.bucket}"
access_key = "{shared.s3.access_key}"
secret_file = "{shared.s3.secret_file}"

[units]
host = "127.0.0.1"
port = {port}

[operators_listen]
host = "127.0.0.1"
port = 0

[tls]
cert_file = "{shared.cert_file}"
key_file = "{shared.key_file}"
client_ca_file = "{shared.client_ca_file}"

[limits]
# HAProxy (send-proxy-v2) names each unit's address; all the lab's units dial from 127.0.0.1.
proxy_protocol_from = ["127.0.0.1"]
max_connections_per_source = 10000
max_connections = 10000

{mqtt}{extra}"""


@dataclass
class ReceiverProcess:
    """One ``edge-csu serve`` of the cluster, on a fixed port (HAProxy's server line)."""

    name: str
    directory: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    operators_port: int | None = None
    """Where its operators' listener is (known once started)."""

    @property
    def config(self) -> Path:
        return self.directory / "csu.toml"

    def start(self, timeout: float = 60) -> None:
        ports = self.directory / "ports.json"
        ports.unlink(missing_ok=True)
        log = (self.directory / "csu.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.csu.main", "serve", "--config", str(self.config),
             "--ports-file", str(ports)],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not ports.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"receiver {self.name} did not start: {self.log()[-2000:]}")
            time.sleep(0.05)
        bound = json.loads(ports.read_text())
        if bound["units"] != self.port:
            raise LabError(f"receiver {self.name} is not on port {self.port}")
        self.operators_port = int(bound["operators"])

    def kill(self) -> None:
        """``kill -9``: no clean-up of any kind (the failover the cluster must survive)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        path = self.directory / "csu.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process so far (``/proc/PID/stat``)."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class ClusterFront:
    """HAProxy and the receivers behind it."""

    haproxy: HAProxy
    receivers: list[ReceiverProcess]

    @property
    def port(self) -> int:
        return self.haproxy.port

    def stop(self) -> None:
        self.haproxy.stop()
        for receiver in self.receivers:
            receiver.stop()


@contextmanager
def cluster_front(
    directory: Path, shared: ClusterShared, count: int, extra: str = "", top: str = ""
) -> Iterator[ClusterFront]:
    """``count`` receivers in cluster mode on ``shared`` stores, behind HAProxy."""
    receivers = []
    for i in range(1, count + 1):
        r = ReceiverProcess(f"r{i}", directory / f"r{i}", free_port())
        r.directory.mkdir(parents=True, exist_ok=True)
        r.config.write_text(receiver_config(shared, r.name, r.port, extra, top))
        receivers.append(r)
    front = ClusterFront(
        HAProxy(directory / "haproxy", free_port(), [r.port for r in receivers]), receivers
    )
    try:
        for r in receivers:
            r.start()
        front.haproxy.start()
        yield front
    finally:
        front.stop()


def audit_cluster(
    conninfo: str, s3: S3Lab, units: dict[str, tuple[int, ed25519.Ed25519PublicKey]],
    bucket: str = BUCKET,
) -> dict[str, Any]:  # fmt: skip
    """What the cluster holds of simulated units (``unit id -> (segments produced, signing
    key)``, sequences from 0): segments lost, sequences stored twice (rows or objects),
    chain links that do not hold, objects without a row, and each unit's newest segment read
    back and checked (hash as recorded, signature)."""
    import psycopg

    from ..vault import format as fmt
    from .receiver.objstore import ObjectStore, segment_key

    with psycopg.connect(conninfo) as conn:
        rows = conn.execute(
            "SELECT unit, sequence, hash, prev_hash, receiver FROM segments WHERE camera = 'cam1'"
        ).fetchall()
    held: dict[str, dict[int, tuple[str, str]]] = {u: {} for u in units}
    receivers: dict[str, int] = {}
    for unit, seq, digest, prev, receiver in rows:
        if unit in held:
            held[unit][int(seq)] = (str(digest), str(prev))
            receivers[str(receiver)] = receivers.get(str(receiver), 0) + 1
    objects = ObjectStore(s3.endpoint, bucket, s3.access_key, s3.secret_file, timeout_s=30)
    per_sequence: dict[tuple[str, int], int] = {}
    orphans = 0
    for key in objects.keys(""):
        unit, _, name = key.split("/", 2)
        seq = int(name.split("-", 1)[0])
        if unit not in held:
            continue
        per_sequence[(unit, seq)] = per_sequence.get((unit, seq), 0) + 1
        if seq not in held[unit]:
            orphans += 1
    lost = broken = read_back_bad = 0
    for unit, (produced, public) in units.items():
        chain = held[unit]
        lost += sum(1 for seq in range(produced) if seq not in chain)
        broken += sum(
            1 for seq, (_, prev) in chain.items() if seq - 1 in chain and chain[seq - 1][0] != prev
        )
        if chain:
            last = max(chain)
            raw = objects.get(segment_key(unit, "cam1", last, chain[last][0]))
            try:
                fmt.verify_segment(raw, public)
                ok = fmt.sha256(raw).hex() == chain[last][0]
            except EdgeError:
                ok = False
            read_back_bad += not ok
    return {
        "segments_stored": sum(len(c) for c in held.values()),
        "lost": lost,
        "stored_twice": sum(n - 1 for n in per_sequence.values() if n > 1),
        "objects_without_row": orphans,
        "rows_without_object": sum(
            1 for unit, chain in held.items() for seq in chain if (unit, seq) not in per_sequence
        ),
        "chain_breaks": broken,
        "read_back_failures": read_back_bad,
        "by_receiver": receivers,
    }
