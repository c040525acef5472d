"""A wired 802.1X lab in network namespaces: a "switch" and a "unit" joined by a veth pair.

The switch namespace runs hostapd (``driver=wired``) with its internal EAP server or forwarding
to a real FreeRADIUS on its loopback, and optionally an nftables ``netdev`` ingress filter on its
port that passes only EAPOL until hostapd reports the unit authorised (like a real switch port),
driven by hostapd's control socket. The unit namespace runs wpa_supplicant (``-D wired``) with
the configuration rendered by :mod:`edge.uplink.dot1x.supplicant_conf`.

Every lab is fresh (namespaces, veth with new MAC addresses, daemons): hostapd ignores a MAC for
about 5 s after a failure or logoff, so negative cases never share one.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from edge.csu.ca import VideoCA, cert_pem, key_pem
from edge.errors import Dot1xError
from edge.uplink.dot1x import supplicant_conf
from edge.uplink.dot1x.ctrl import WpaCtrl

SWITCH_IP, UNIT_IP = "10.231.0.1", "10.231.0.2"
RADIUS_PORT, RADIUS_SECRET = 18121, "lab-secret"
SERVER_NAME = "radius.video.test"
EAPOL_START = b"\x02\x01\x00\x00"  # 802.1X-2004, type EAPOL-Start, empty body
PAE_GROUP = bytes.fromhex("0180c2000003")
_counter = itertools.count()
T = TypeVar("T")


def sh(*args: str, check: bool = True, input_text: str | None = None) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, input=input_text, timeout=20)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


_libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWNET = 0x40000000


def in_netns(ns: str, fn: Callable[[], T]) -> T:
    """Run ``fn`` in a thread that entered network namespace ``ns``.

    A socket keeps the namespace it was created in, so sockets made this way can then be used
    from any thread; namespaces are per thread, so the caller's own stays untouched.
    """
    box: list[T] = []
    errors: list[BaseException] = []

    def body() -> None:
        try:
            fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {ns}")
            finally:
                os.close(fd)
            box.append(fn())
        except BaseException as exc:  # noqa: BLE001  (re-raised in the caller)
            errors.append(exc)

    t = threading.Thread(target=body)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return box[0]


@dataclass
class Creds:
    """Certificates of one test session, all made by our own CA library."""

    root: Path
    ca: VideoCA

    def write(
        self, name: str, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate
    ) -> tuple[Path, Path]:
        kp, cp = self.root / f"{name}.key", self.root / f"{name}.crt"
        kp.write_bytes(key_pem(key))
        kp.chmod(0o600)
        cp.write_bytes(cert_pem(cert))
        return kp, cp

    def ca_with_crl(self) -> Path:
        """The CA chain followed by the current CRL (what hostapd/FreeRADIUS check against)."""
        path = self.root / "ca-crl.pem"
        path.write_bytes(self.ca.chain_pem + self.ca.crl_pem)
        return path

    def chain(self) -> Path:
        path = self.root / "chain.pem"
        path.write_bytes(self.ca.chain_pem)
        return path


@dataclass
class Lab:
    workdir: Path
    switch_ns: str
    unit_ns: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    supplicant: subprocess.Popen[bytes] | None = None
    hostapd: subprocess.Popen[bytes] | None = None
    hostapd_ctrl: Path | None = None
    port_events: list[str] = field(default_factory=list)
    _gate_thread: threading.Thread | None = None
    _stop: threading.Event = field(default_factory=threading.Event)

    # --- links and daemons --------------------------------------------------------------------

    @classmethod
    def create(cls, workdir: Path) -> Lab:
        n = next(_counter)
        tag = f"{os.getpid() % 100000}x{n}"
        lab = cls(workdir, f"e1xsw{tag}", f"e1xun{tag}")
        sh("ip", "netns", "add", lab.switch_ns)
        sh("ip", "netns", "add", lab.unit_ns)
        sh("ip", "link", "add", "sw0", "netns", lab.switch_ns, "type", "veth", "peer", "name",
           "eth0", "netns", lab.unit_ns)  # fmt: skip
        for ns, dev, ip in ((lab.switch_ns, "sw0", SWITCH_IP), (lab.unit_ns, "eth0", UNIT_IP)):
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
        return lab

    def unit_mac(self) -> str:
        info = json.loads(sh("ip", "-n", self.unit_ns, "-j", "link", "show", "eth0"))
        return str(info[0]["address"])

    def _spawn(self, ns: str, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / log_name).open("wb")
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *args], stdout=log, stderr=subprocess.STDOUT
        )
        self.procs.append(proc)
        return proc

    def start_hostapd(
        self, creds: Creds, server: tuple[Path, Path] | None, *, radius: bool = False
    ) -> None:
        """hostapd on the switch port: internal EAP-TLS server with ``server`` (key, cert), or
        forwarding to FreeRADIUS on the switch's loopback when ``radius``."""
        ctrl_dir = self.workdir / "hctl"
        lines = [
            "interface=sw0",
            "driver=wired",
            "ieee8021x=1",
            "eapol_version=2",
            "use_pae_group_addr=1",
            f"ctrl_interface={ctrl_dir}",
            "logger_stdout=-1",
            "logger_stdout_level=1",
        ]
        if radius:
            lines += [
                "eap_server=0",
                "own_ip_addr=127.0.0.1",
                "nas_identifier=lab-switch",
                "auth_server_addr=127.0.0.1",
                f"auth_server_port={RADIUS_PORT}",
                f"auth_server_shared_secret={RADIUS_SECRET}",
            ]
        else:
            assert server is not None
            users = self.workdir / "eap_user"
            users.write_text("* TLS\n")
            lines += [
                "eap_server=1",
                f"eap_user_file={users}",
                f"ca_cert={creds.ca_with_crl()}",
                f"server_cert={server[1]}",
                f"private_key={server[0]}",
                "check_crl=1",  # the leaf's CRL must be present and checked
            ]
        conf = self.workdir / "hostapd.conf"
        conf.write_text("\n".join(lines) + "\n")
        self.hostapd = self._spawn(self.switch_ns, ["hostapd", str(conf)], "hostapd.log")
        self.hostapd_ctrl = ctrl_dir / "sw0"
        wait_until(self.hostapd_ctrl.exists, 5, "hostapd control socket")

    def stop_hostapd(self) -> None:
        """Stop the authenticator (a switch reboot); its control socket goes with it."""
        assert self.hostapd is not None and self.hostapd_ctrl is not None
        self.hostapd.terminate()
        self.hostapd.wait(5)
        self.hostapd = None
        wait_until(lambda: not self.hostapd_ctrl.exists(), 5, "hostapd gone")  # type: ignore[union-attr]

    def start_radius(self, creds: Creds, server: tuple[Path, Path]) -> None:
        """A stand-alone FreeRADIUS (EAP-TLS, CRL checked, CN must equal the EAP identity)."""
        confdir = self.workdir / "raddb"
        confdir.mkdir()
        write_radius_conf(confdir, creds.ca_with_crl(), server)
        self._spawn(
            self.switch_ns,
            ["freeradius", "-f", "-l", "stdout", "-d", str(confdir), "-n", "radiusd"],
            "radius.log",
        )

        def listening() -> bool:
            out = sh("ip", "netns", "exec", self.switch_ns, "ss", "-lun", check=False)
            return f":{RADIUS_PORT}" in out

        wait_until(listening, 10, "FreeRADIUS listening")

    def start_supplicant(self, conf_text: str) -> Path:
        """wpa_supplicant on the unit port with ``conf_text`` (our rendered file)."""
        conf = self.workdir / "wpa_supplicant.conf"
        supplicant_conf.write(conf, conf_text)
        self.supplicant = self._spawn(
            self.unit_ns,
            ["wpa_supplicant", "-D", "wired", "-i", "eth0", "-c", str(conf)],
            "wpa_supplicant.log",
        )
        return conf

    def nudge(self, ctrl_socket: Path, timeout_s: float = 5.0) -> None:
        """Send an EAPOL-Start as soon as the supplicant's PAE runs.

        wpa_supplicant waits about 2 s before its own first EAPOL-Start; hostapd only learns a
        wired station from an EAPOL frame, so this starts the exchange at once.
        """

        def pae_running() -> bool:
            try:
                with WpaCtrl(ctrl_socket, client_dir=Path("/tmp")) as ctrl:
                    return "Supplicant PAE state" in ctrl.request("STATUS")
            except Dot1xError:
                return False

        wait_until(pae_running, timeout_s, "supplicant PAE running")
        mac = bytes.fromhex(self.unit_mac().replace(":", ""))

        def send() -> None:
            with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
                raw.bind(("eth0", 0))
                raw.send(PAE_GROUP + mac + b"\x88\x8e" + EAPOL_START)

        in_netns(self.unit_ns, send)

    # --- switch port gate ---------------------------------------------------------------------

    def install_port_gate(self) -> None:
        """An ingress filter on the switch port passing only EAPOL until hostapd authorises the
        unit's MAC; a thread follows hostapd's control socket to add and remove it."""
        ruleset = """
table netdev port {
    set authorized { type ether_addr; }
    chain ingress {
        type filter hook ingress device "sw0" priority 0; policy drop;
        ether type 0x888e accept
        ether saddr @authorized accept
    }
}
"""
        sh("ip", "netns", "exec", self.switch_ns, "nft", "-f", "-", input_text=ruleset)
        assert self.hostapd_ctrl is not None
        ctrl = WpaCtrl(self.hostapd_ctrl, client_dir=Path("/tmp"))
        ctrl.open()
        ctrl.attach()
        self._gate_thread = threading.Thread(target=self._follow_hostapd, args=(ctrl,), daemon=True)
        self._gate_thread.start()

    def _follow_hostapd(self, ctrl: WpaCtrl) -> None:
        try:
            while not self._stop.is_set():
                line = ctrl.next_event(0.2)
                if line is None:
                    continue
                words = line.split()
                if len(words) >= 2 and words[0] in ("AP-STA-CONNECTED", "AP-STA-DISCONNECTED"):
                    op = "add" if words[0] == "AP-STA-CONNECTED" else "delete"
                    sh("ip", "netns", "exec", self.switch_ns, "nft", op, "element", "netdev",
                       "port", "authorized", f"{{ {words[1]} }}", check=False)  # fmt: skip
                    self.port_events.append(f"{words[0]} {words[1]}")
        except Dot1xError:
            pass
        finally:
            ctrl.close()

    def authorized_macs(self) -> str:
        return sh("ip", "netns", "exec", self.switch_ns, "nft", "list", "set", "netdev", "port",
                  "authorized")  # fmt: skip

    # --- the "CSU" ----------------------------------------------------------------------------

    def start_csu(self, port: int = 7443) -> None:
        """A TCP service in the switch namespace that answers each line with ``csu-ok``."""

        def make() -> socket.socket:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((SWITCH_IP, port))
            s.listen()
            s.settimeout(0.2)
            return s

        listener = in_netns(self.switch_ns, make)

        def serve_one(conn: socket.socket) -> None:
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError):
                    while conn.recv(100):
                        conn.sendall(b"csu-ok\n")

        def serve() -> None:
            with listener:
                while not self._stop.is_set():
                    try:
                        conn, _ = listener.accept()
                    except TimeoutError:
                        continue
                    threading.Thread(target=serve_one, args=(conn,), daemon=True).start()

        threading.Thread(target=serve, daemon=True).start()

    def unit_socket(self) -> socket.socket:
        return in_netns(self.unit_ns, lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))

    # --- teardown -----------------------------------------------------------------------------

    def kill_supplicant(self) -> None:
        assert self.supplicant is not None
        self.supplicant.send_signal(signal.SIGKILL)
        self.supplicant.wait(5)

    def close(self) -> None:
        self._stop.set()
        for proc in reversed(self.procs):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(3)
        if self._gate_thread is not None:
            self._gate_thread.join(2)
        for ns in (self.switch_ns, self.unit_ns):
            sh("ip", "netns", "del", ns, check=False)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
            for p in sorted(self.workdir.glob("*.log"))
        )


@contextlib.contextmanager
def lab(workdir: Path) -> Iterator[Lab]:
    the_lab = Lab.create(workdir)
    try:
        yield the_lab
    finally:
        the_lab.close()


def wait_until(pred: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def write_radius_conf(confdir: Path, ca_file: Path, server: tuple[Path, Path]) -> None:
    """A minimal stand-alone FreeRADIUS 3 configuration: one client, EAP-TLS only.

    Stand-alone rather than Debian's /etc/freeradius: no unrelated modules, no permissions to
    adjust, nothing shared between tests. ``check_cert_cn`` ties the certificate to the EAP
    identity, the RADIUS policy docs/DOT1X.md recommends.
    """
    (confdir / "dictionary").write_text("$INCLUDE /usr/share/freeradius/dictionary\n")
    (confdir / "radiusd.conf").write_text(f"""
prefix = /usr
exec_prefix = /usr
sysconfdir = /etc
localstatedir = /var
sbindir = /usr/sbin
logdir = {confdir}
raddbdir = {confdir}
radacctdir = {confdir}
name = radiusd
confdir = {confdir}
modconfdir = {confdir}
certdir = {confdir}
cadir = {confdir}
run_dir = {confdir}
db_dir = {confdir}
libdir = /usr/lib/freeradius
pidfile = {confdir}/radiusd.pid
max_request_time = 30
cleanup_delay = 5
max_requests = 1024
hostname_lookups = no
log {{
    destination = stdout
    auth = yes
    auth_badpass = no
    auth_goodpass = no
}}
security {{
    allow_core_dumps = no
    max_attributes = 200
    reject_delay = 0
    status_server = no
}}
thread pool {{
    start_servers = 2
    max_servers = 4
    min_spare_servers = 1
    max_spare_servers = 3
    max_requests_per_server = 0
}}
client lab-switch {{
    ipaddr = 127.0.0.1
    secret = {RADIUS_SECRET}
    require_message_authenticator = yes
}}
modules {{
    eap {{
        default_eap_type = tls
        timer_expire = 60
        ignore_unknown_eap_types = no
        max_sessions = 64
        tls-config tls-common {{
            private_key_file = {server[0]}
            certificate_file = {server[1]}
            ca_file = {ca_file}
            check_crl = yes
            check_cert_cn = %{{User-Name}}
            tls_min_version = "1.2"
            cipher_list = "DEFAULT"
            ecdh_curve = "prime256v1"
            cache {{
                enable = no
            }}
        }}
        tls {{
            tls = tls-common
        }}
    }}
}}
server default {{
    listen {{
        type = auth
        ipaddr = 127.0.0.1
        port = {RADIUS_PORT}
    }}
    authorize {{
        eap {{
            ok = return
        }}
    }}
    authenticate {{
        eap
    }}
    post-auth {{
    }}
}}
""")
