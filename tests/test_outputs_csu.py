"""The whole chain with real parts: edged (a unit alarm starts a playbook that needs an
agent), pymodbus's server as the sign controller, ``edge-csu serve`` as the CSU, the agent's
key from ``edge-csu ca issue --profile operator`` and ``edge-csu command confirm``. The unit
pulls the command over its own mutual-TLS uplink; a forged command and a replayed one change
nothing and are audited."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edge.identity.unitkeys import keys_dir_of, load_or_create_signing_key
from edge.outputs import commands
from edge.vault.audit import read_audit
from tests.conftest import REPO
from tests.daemon_util import running_edged
from tests.modbus_util import free_port as free_modbus_port
from tests.modbus_util import modbus_server
from tests.test_outputs_commands import _forge
from tests.test_uplink_e2e import unit_config
from tests.uplink_util import free_port, make_csu, unit_files, wait_until

REGISTER = 30


def csu_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.csu.main", *args],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False,
    )  # fmt: skip


def requests_at_csu(events: Path) -> list[dict[str, object]]:
    found = []
    for path in events.glob("*.json"):
        body = json.loads(path.read_bytes())["event"]
        if body["kind"] == "output-confirmation-requested":
            found.append(body["details"])
    return found


def test_an_agents_signed_confirmation_reaches_the_sign_through_the_csu(tmp_path: Path) -> None:
    csu = make_csu(tmp_path)
    port = free_port()
    csu.write_config(port=port)
    data_dir = tmp_path / "unit"
    unit_files(csu, "test-unit", data_dir)
    signing = load_or_create_signing_key(keys_dir_of(data_dir))
    csu.enroll("test-unit", signing)
    operator = tmp_path / "operators" / "agent-dupont"
    operator.parent.mkdir()
    made = csu_cli("ca", "issue", str(csu.pki.ca.directory), "agent-dupont",
                   "--profile", "operator", "--out", str(operator))  # fmt: skip
    assert made.returncode == 0, made.stderr
    with modbus_server() as sign:
        config = unit_config(
            tmp_path / "edge.toml", data_dir, csu, port,
            uplink=f'ca_file = "{data_dir / "keys" / "ca.pem"}"\n'
            "backoff_initial_s = 0.2\nbackoff_max_s = 1.0",
            extra=f"""
[[cameras]]
id = "cam2"
source = "rtsp://127.0.0.1:{free_modbus_port()}/none"

[[outputs]]
name = "sign-up"
meaning = "LANE CLOSED panel, lane 2"
kind = "modbus"
states = {{ closed = 2 }}
[outputs.modbus]
host = "127.0.0.1"
port = {sign.port}
state_register = {REGISTER}

[[playbooks]]
name = "lane-closure"
event = "camera-lost"
camera = "cam2"
output = "sign-up"
state = "closed"
duration_s = 60
""",
        )  # fmt: skip
        csu.start()
        try:
            with running_edged(config, tmp_path) as (proc, notify):
                notify.wait_for("READY=1", timeout=30)
                events = csu.directory / "storage" / "test-unit" / "events"
                wait_until(lambda: requests_at_csu(events), 40, "the request at the CSU")
                [request] = requests_at_csu(events)
                assert request["playbook"] == "lane-closure" and request["output"] == "sign-up"
                time.sleep(1.5)  # a second command poll has come and gone
                assert sign.register(REGISTER) == 0  # nothing moves without an agent

                args = ["--config", str(csu.config), "--unit", "test-unit",
                        "--output", "sign-up", "--key", f"{operator}.key",
                        "--cert", f"{operator}.crt"]  # fmt: skip
                queue = csu.directory / "commands" / "test-unit"
                # An impostor who can write into the CSU's queue but holds no operator key
                # alters a command an agent signed (made here, not queued: the unit would take
                # the genuine one before it could be altered).
                key = serialization.load_pem_private_key(Path(f"{operator}.key").read_bytes(), None)
                cert = x509.load_pem_x509_certificates(Path(f"{operator}.crt").read_bytes())[0]
                assert isinstance(key, ec.EllipticCurvePrivateKey)
                genuine = commands.sign(key, cert, kind="confirm", unit="test-unit",
                                        outputs=["sign-up"], playbook="lane-closure",
                                        event=str(request["event"]))  # fmt: skip
                queue.mkdir(parents=True, exist_ok=True)
                (queue / ("f" * 32 + ".json")).write_bytes(_forge(genuine))
                wait_until(lambda: not list(queue.glob("*.json")), 10, "the unit to take it")
                assert sign.register(REGISTER) == 0

                confirm = csu_cli("command", "confirm", *args, "--playbook", "lane-closure",
                                  "--event", str(request["event"]))  # fmt: skip
                t_filed = time.monotonic()
                assert confirm.returncode == 0, confirm.stdout + confirm.stderr
                t_on = sign.wait_register(REGISTER, 2, 10.0)
                # The unit asks every second (COMMAND_POLL_S): the delay is at most about that.
                print(f"confirmation filed at the CSU -> sign: {(t_on - t_filed) * 1000:.0f} ms")
                assert t_on - t_filed < 3.0

                nonce = confirm.stdout.split()[1]
                taken = queue / "done" / f"{nonce}.json"
                wait_until(taken.exists, 10, "the unit's acknowledgement")
                shutil.copy(taken, queue / taken.name)  # the same command, again
                wait_until(lambda: not (queue / taken.name).exists(), 10, "the replay taken")
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(timeout=30) == 0
                assert sign.register(REGISTER) == 0
        finally:
            csu.stop()
    records, problems = read_audit(data_dir / "vault" / "audit.log", signing.public_key())
    assert problems == []
    refused = [str(r.details["reason"]) for r in records if r.action == "output-command-refused"]
    assert any("signature does not verify" in r for r in refused), refused
    assert any("replayed" in r for r in refused), refused
    driven = [r for r in records if r.action == "output-driven"]
    assert len(driven) == 1 and driven[0].actor.startswith("operator agent-dupont")
    assert driven[0].details["event"] == request["event"]
