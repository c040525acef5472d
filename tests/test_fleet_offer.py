"""``edge-csu fleet offer --group``: a bundle rolled out in waves by a real receiver to units
that ask for it over their real mutual-TLS connection (``edge.uplink.tls``) and report
themselves in the ``X-Edge-Fleet`` header, as edged's uplink does. The units' reports after
the download are written by the test (a unit cannot boot another version here): a confirmed
update, or the injected fault, a roll-back. RAUC's own judgement of bundles:
tests/test_update.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from edge import __version__, updates
from edge import config as config_mod
from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.uplink import protocol
from edge.uplink.client import FLEET_HEADER
from edge.uplink.tls import connect

from .conftest import REPO
from .uplink_util import free_port, make_csu, unit_files

NEW = "99.0.0"


class Unit(threading.Thread):
    """A unit that asks the CSU for an update every 0.2 s, saying what it runs; offered one,
    it downloads it (size and SHA-256 checked) and then reports ``behaviour``: "good" (runs
    it, confirmed) or "rolls-back" (the boot loader went back)."""

    def __init__(self, cfg: config_mod.EdgeConfig, groups: list[str], behaviour: str) -> None:
        super().__init__(name=f"unit-{cfg.unit.id}", daemon=True)
        self.cfg, self.groups, self.behaviour = cfg, groups, behaviour
        self.version = __version__
        self.last_update: dict[str, str] | None = None
        self.offered_at: float | None = None
        self.errors: list[str] = []
        self.stop = threading.Event()

    def report(self) -> str:
        return json.dumps({
            "version": self.version, "slot": "A", "last_update": self.last_update,
            "config_digest": "0" * 64, "config_documents": {}, "groups": self.groups,
            "config_refused": None,
        })  # fmt: skip

    def run(self) -> None:
        path = protocol.update_path(self.cfg.unit.id)
        while not self.stop.wait(0.2):
            try:
                conn = connect(self.cfg)
            except OSError as exc:
                self.errors.append(str(exc))
                continue
            try:
                conn.request("GET", path, headers={FLEET_HEADER: self.report()})
                response = conn.getresponse()
                body = response.read()
                if response.status != 200 or self.offered_at is not None:
                    continue
                offer = json.loads(body)
                assert set(offer) == {"bundle", "version", "size", "sha256"}, offer
                self.offered_at = time.monotonic()
                conn.request("GET", path + "/bundle", headers={FLEET_HEADER: self.report()})
                target = self.cfg.unit.data_dir / "update" / "download" / offer["bundle"]
                target.parent.mkdir(parents=True, exist_ok=True)
                updates.download(
                    conn.getresponse(), target, size=offer["size"], sha256=offer["sha256"]
                )
                if self.behaviour == "good":
                    self.version = NEW
                    self.last_update = {"result": "good", "version": NEW, "slot": "B"}
                else:
                    booted = f"the unit booted {__version__} (slot A)"
                    self.last_update = {
                        "result": "rolled-back", "version": NEW, "running": __version__,
                        "reason": f"{booted}, not the installed {NEW}",
                    }  # fmt: skip
            except (OSError, ValueError, updates.UpdateError) as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            finally:
                conn.close()


def _config(tmp: Path, unit: str, data_dir: Path, port: int, csu: Any) -> config_mod.EdgeConfig:
    path = tmp / f"{unit}.toml"
    path.write_text(f"""
[unit]
id = "{unit}"
data_dir = "{data_dir}"

[vault]
kem = "x25519"
csu_public_key = "{csu.directory / "keys" / "authority.pub.json"}"

[uplink]
enabled = true
csu_url = "https://127.0.0.1:{port}"
server_name = "csu.test"
ca_file = "{data_dir / "keys" / "ca.pem"}"
""")
    return config_mod.load(path)[0]


def test_a_bundle_rolls_out_canary_first_and_stops_at_the_first_roll_back(tmp_path: Path) -> None:
    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    bundle = tmp_path / f"edge-{NEW}.raucb"
    bundle.write_bytes(os.urandom(300_000))
    plan = {"unit-a": "good", "unit-b": "rolls-back", "unit-c": "good", "unit-d": "good"}
    units = []
    for name, behaviour in [*plan.items(), ("unit-south", "good")]:
        data_dir = tmp_path / name
        unit_files(csu, name, data_dir)
        csu.enroll(name, load_or_create_signing_key(keys_dir_of(data_dir)))
        groups = ["south"] if name == "unit-south" else ["nord"]
        units.append(Unit(_config(tmp_path, name, data_dir, port, csu), groups, behaviour))
    by_name = {u.cfg.unit.id: u for u in units}

    def offer(*more: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "edge.csu.main", "fleet", "offer", str(bundle),
             "--version", NEW, "--config", str(csu.config), *more],
            capture_output=True, text=True, timeout=120, cwd=REPO, check=False,
        )  # fmt: skip

    csu.start()
    try:
        for unit in units:
            unit.start()
        # Every unit has reported its groups (the receiver keeps them every 2 s at most).
        storage = csu.directory / "storage"
        deadline = time.monotonic() + 20
        while not all((storage / n / "status.json").exists() for n in by_name):
            assert time.monotonic() < deadline, "the units' reports did not reach the receiver"
            time.sleep(0.2)
        time.sleep(2.5)
        rolled = offer("--group", "nord", "--waves", "1,2,100%", "--wait", "20", "--json")
    finally:
        for unit in units:
            unit.stop.set()
        for unit in units:
            unit.join(10)
        csu.stop()
    assert rolled.returncode == 1, rolled.stdout + rolled.stderr
    outcome = json.loads(rolled.stdout)
    assert [w["units"] for w in outcome["waves"]] == [["unit-a"], ["unit-b"]]
    assert outcome["waves"][0]["result"] == f"version {NEW} in effect"
    assert outcome["stopped"] == (
        f"unit-b rolled-back the update to {NEW}: the unit booted {__version__} (slot A), "
        f"not the installed {NEW}"
    )
    a, b = by_name["unit-a"], by_name["unit-b"]
    assert a.offered_at is not None and b.offered_at is not None and a.offered_at < b.offered_at
    # The wave after the roll-back, and the other district, were offered nothing.
    for name in ("unit-c", "unit-d", "unit-south"):
        assert by_name[name].offered_at is None, name
    assert (tmp_path / "unit-a" / "update" / "download" / bundle.name).read_bytes() == (
        bundle.read_bytes()
    )
    # Stopped, the offer is withdrawn: unit-b would fetch it again and roll back again.
    assert outcome["withdrawn"] is True
    offered = json.loads((csu.directory / "updates" / "offer.json").read_text())
    assert offered["units"] == []
    assert not [e for u in units for e in u.errors if "Connection refused" not in e], [
        u.errors for u in units
    ]
