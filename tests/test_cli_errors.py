"""Every ``edgectl``/``edge-csu`` sub-command used the way a tired technician uses it at 3 a.m.
(a missing file, a directory for a file, the wrong kind of file, edged stopped, no configuration)
ends with one line that says what to do, a non-zero exit and never a traceback; Ctrl-C and a
closed pipe (``| head``) end cleanly too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edge import config as config_mod
from edge.cli.main import main as edgectl
from edge.config import RecipientKem
from edge.csu.main import main as edge_csu
from edge.vault.recipient_keys import write_keypair

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A unit configuration (edged not running: its control socket is not there), a CSU key
    pair, a directory, a file of garbage, a path that does not exist; no /etc/edge/edge.toml."""
    pub, key = write_keypair(tmp_path / "csu", RecipientKem.MLKEM768_X25519)
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        f'[unit]\nid = "unit-1"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[vault]\ncsu_public_key = "{pub}"\n'
        f'[control]\nsocket = "{tmp_path / "control.sock"}"\n'
    )
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\xff\xfe\x00garbage")
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", tmp_path / "etc" / "edge.toml")
    return {
        "cfg": cfg, "pub": pub, "key": key, "dir": tmp_path / "csu", "junk": junk,
        "missing": tmp_path / "missing", "out": tmp_path / "out",
    }  # fmt: skip


# (tool, arguments with {placeholders}, a fragment of the one line: its next step)
CASES: dict[str, tuple[str, list[str], str]] = {
    "status without a configuration": (
        "edgectl", ["status"], "(use --config FILE, or --demo for the embedded demo)"),
    "export without a configuration": (
        "edgectl", ["export", "--last", "1m", "--case", "X", "--out", "{out}"], "--demo"),
    "configuration missing": ("edgectl", ["mask", "show", "--config", "{missing}"], "cannot read"),
    "configuration is a directory": (
        "edgectl", ["mask", "show", "--config", "{dir}"], "cannot read"),
    "configuration is garbage": ("edgectl", ["mask", "show", "--config", "{junk}"], "UTF-8"),
    "config check of a directory": ("edgectl", ["config", "check", "{dir}"], "is a directory"),
    "config check of a missing file": (
        "edgectl", ["config", "check", "{missing}"], "no such file or directory: check the path"),
    "mask preview, edged stopped": (
        "edgectl", ["mask", "preview", "--config", "{cfg}", "--out", "{out}"], "--direct"),
    "selftest, edged stopped": (
        "edgectl", ["selftest", "--config", "{cfg}"], "systemctl start edged"),
    "verify, no vault yet": ("edgectl", ["verify", "--config", "{cfg}"], "no vault"),
    "audit, no vault yet": ("edgectl", ["audit", "--config", "{cfg}"], "edged"),
    "export, no vault yet": (
        "edgectl", ["export", "--config", "{cfg}", "--last", "1m", "--case", "X", "--out", "{out}"],
        "edged creates the vault at its first start"),
    "uplink check, not enrolled": (
        "edgectl", ["uplink", "check", "--config", "{cfg}"], "not enrolled yet: run edgectl"),
    "keygen onto a file": ("edge-csu", ["keygen", "--out", "{junk}"], "already exists"),
    "enroll --install of a missing certificate": (
        "edgectl", ["enroll", "--config", "{cfg}", "--install", "{missing}"],
        "no such file or directory: check the path"),
    "enroll --install of a directory": (
        "edgectl", ["enroll", "--config", "{cfg}", "--install", "{dir}"], "is a directory"),
    "camera probe of a missing file": (
        "edgectl", ["camera", "probe", "--config", "{cfg}", "--source", "file:{missing}",
                    "--seconds", "2"], "No such file"),
    "open a missing bundle": (
        "edge-csu", ["open", "{missing}", "--key", "{key}", "--out", "{out}"], "no bundle at"),
    "open a file as a bundle": (
        "edge-csu", ["open", "{junk}", "--key", "{key}", "--out", "{out}"], "not a bundle"),
    "open with the public key": (
        "edge-csu", ["open", "{dir}", "--key", "{pub}", "--out", "{out}"],
        "this is a public key; opening needs the private one"),
    "open with a missing key": (
        "edge-csu", ["open", "{dir}", "--key", "{missing}", "--out", "{out}"], "cannot read"),
    "open with a garbage CA": (
        "edge-csu", ["open", "{dir}", "--key", "{key}", "--ca", "{junk}", "--out", "{out}"],
        "not PEM"),
    "units with a missing configuration": (
        "edge-csu", ["units", "--config", "{missing}"], "cannot"),
    "token list of a directory": ("edge-csu", ["token", "list", "--config", "{dir}"], "cannot"),
    "ca sign without a CA": ("edge-csu", ["ca", "sign", "{dir}", "{missing}"], "edge-csu ca init"),
    "ca list without a CA": ("edge-csu", ["ca", "list", "{missing}"], "edge-csu ca init"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrong_use_is_one_line_with_a_next_step(
    world: dict[str, Path], case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    tool, template, step = CASES[case]
    args = [a.format(**{k: str(v) for k, v in world.items()}) for a in template]
    code = (edgectl if tool == "edgectl" else edge_csu)(args)  # raises on a traceback
    captured = capsys.readouterr()
    assert code != 0, captured.out + captured.err
    said = (captured.err + captured.out).strip()
    assert step in said, said
    reports = ("camera probe of a missing file", "uplink check, not enrolled")
    if tool == "edgectl" and case not in reports:  # those are reports, not errors
        errors = [line for line in captured.err.splitlines() if line.startswith(f"{tool}:")]
        assert len(errors) == 1, captured.err


def _run(*argv: str, **kw: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
        [sys.executable, "-m", *argv], env=env, text=True, **kw
    )


@pytest.mark.parametrize("command", [["mask", "show"], ["config", "show"]])
def test_a_closed_pipe_ends_quietly(command: list[str]) -> None:
    """``edgectl config show | head -n 1``: the reader is gone before the output is written
    (here: before the tool even starts, so every write meets the closed pipe)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = _run("edge.cli.main", *command, "--demo", stdout=write_end, stderr=subprocess.PIPE)
    finally:
        os.close(write_end)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.wait(timeout=30)
    assert err == "", err  # no traceback, no "Exception ignored … BrokenPipeError"
    assert proc.returncode == 141  # 128 + SIGPIPE, as a shell reports a reader gone


def test_ctrl_c_prints_one_line_and_exits_130(world: dict[str, Path]) -> None:
    """Ctrl-C during a long command (a 10 s camera probe) and while the tool is still starting."""
    # Timed from the moment edgectl's main module is loaded (see test_vault_export.py).
    launcher = (
        "import sys; from edge.cli.main import main; print('ready', flush=True); "
        "sys.exit(main(sys.argv[1:]))"
    )
    for delay in (0.0, 2.0):
        proc = subprocess.Popen(
            [sys.executable, "-c", launcher, "camera", "probe", "--demo", "--seconds", "10"],
            env={**os.environ, "PYTHONPATH": str(REPO)},
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(delay)
        proc.send_signal(signal.SIGINT)
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, err
        assert err.strip().splitlines()[-1] == "edgectl: interrupted" and "Traceback" not in err


def test_serve_on_a_busy_port_names_it_and_its_holder(tmp_path: Path) -> None:
    from .uplink_util import make_csu

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        csu = make_csu(tmp_path)
        csu.write_config(port=port)
        proc = _run(
            "edge.csu.main", "serve", "--config", str(csu.config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        _out, err = proc.communicate(timeout=60)
    finally:
        holder.close()
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "OSError" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("edge-csu: ") and f"port {port} on 127.0.0.1 is already in use" in line
    assert f"by pid {os.getpid()}" in line and "units.port" in line


def _edged_without_default(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """edged on a machine with no /etc/edge/edge.toml (the default path pointed elsewhere)."""
    launcher = (
        "import pathlib, sys; import edge.config as c; "
        "c.DEFAULT_CONFIG_PATH = pathlib.Path(sys.argv[1]); "
        "from edge.app.daemon import main; sys.exit(main(sys.argv[2:]))"
    )
    return subprocess.run(
        [sys.executable, "-c", launcher, str(tmp_path / "etc" / "edge.toml"), *args],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


def test_edged_never_runs_the_demo_unasked(tmp_path: Path) -> None:
    """No configuration file and no --demo: refused (the demo's recipient key lives on the unit,
    so a unit running it silently could read its own recordings)."""
    result = _edged_without_default(tmp_path, "--run-for", "5")
    assert result.returncode == 78, result.stderr
    assert (
        f"no configuration at {tmp_path / 'etc' / 'edge.toml'} (use --config FILE, or --demo "
        "for the embedded demo)" in result.stderr
    )
    assert not (tmp_path / "edge-data").exists()  # nothing recorded, no demo key made
    both = _edged_without_default(tmp_path, "--demo", "--config", str(tmp_path / "x.toml"))
    assert both.returncode == 78 and "give --config FILE or --demo, not both" in both.stderr
    demo = _edged_without_default(tmp_path, "--demo", "--run-for", "0.5")
    assert demo.returncode == 0, demo.stderr
    assert (tmp_path / "edge-data" / "demo-csu" / "csu.pub.json").is_file()


def test_the_hint_after_enroll_is_a_command_that_works(
    world: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """The next step printed by ``edgectl enroll`` names --ca: without the city's chain the
    uplink cannot verify the CSU, and ``--install`` without it leaves the unit half-enrolled."""
    assert edgectl(["enroll", "--config", str(world["cfg"])]) == 0
    out = capsys.readouterr().out
    hint = out.splitlines()[-1].strip()
    assert hint.startswith("edgectl enroll --install ") and " --ca " in hint, out


@pytest.mark.parametrize(
    ("tool", "args", "step"),
    [
        ("edge.cli.main", ["mask", "show", "--config", "{cfg}"], "run it with sudo"),
        ("edge.cli.main", ["config", "check", "{cfg}"], "run it with sudo"),
        ("edge.cli.main", ["status", "--config", "{cfg}"], "run it with sudo"),
        ("edge.csu.main", ["open", "{dir}", "--key", "{key}", "--out", "{dir}/x.mp4"], "sudo"),
    ],
)
def test_no_permission_is_one_line_with_a_next_step(tool: str, args: list[str], step: str) -> None:
    """The same commands run by a user who may not read the files (a maintainer without sudo)."""
    import shutil
    import tempfile

    from .conftest import require_root
    from .conftest import tool as which

    require_root()
    base = Path(tempfile.mkdtemp(prefix="edge-perm-"))
    try:
        base.chmod(0o755)
        cfg = base / "edge.toml"
        cfg.write_text('[unit]\nid = "unit-1"\n')
        cfg.chmod(0o600)  # root's, as /etc/edge/edge.toml may be
        bundle = base / "bundle"
        bundle.mkdir(mode=0o755)
        key = base / "csu.key.json"
        key.write_text("{}")
        key.chmod(0o600)
        values = {"cfg": str(cfg), "dir": str(bundle), "key": str(key)}
        result = subprocess.run(
            [which("setpriv"), "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-m", tool, *[a.format(**values) for a in args]],
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    assert step in result.stderr and "permission denied" in result.stderr.lower(), result.stderr
