"""Start a real ``edged`` process and listen to what it tells systemd."""

from __future__ import annotations

import codecs
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.config import RecipientKem
from edge.vault.keys import write_keypair


class NotifyListener:
    """An ``sd_notify`` socket as systemd provides one (``NOTIFY_SOCKET``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[str] = []

    def wait_for(self, needle: str, timeout: float) -> str:
        """Return the first message containing ``needle`` (old or new); fail after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            for msg in self.messages:
                if needle in msg:
                    return msg
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {needle!r} from edged in {timeout}s: {self.messages}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.extend(data.decode().splitlines())

    def drain(self) -> None:
        self.sock.setblocking(False)
        try:
            while True:
                self.messages.extend(self.sock.recv(4096).decode().splitlines())
        except BlockingIOError:
            pass
        finally:
            self.sock.setblocking(True)

    def close(self) -> None:
        self.sock.close()


class DaemonLog:
    """edged's stderr read as it comes, so a test waits for what the daemon says it did (a log
    line) rather than for a fixed time that a loaded machine may not honour."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.proc = proc
        self.fd = proc.stderr.fileno()
        self.text = ""
        self.pos = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def wait_for(self, needle: str, timeout: float) -> str:
        """The log from the last match on, up to and including the next line holding ``needle``."""
        deadline = time.monotonic() + timeout
        while (found := self.text.find(needle, self.pos)) < 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {needle!r} in edged's log in {timeout}s:\n{self.text}")
            ready, _, _ = select.select([self.fd], [], [], remaining)
            if ready:
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    raise AssertionError(f"edged closed its log before {needle!r}:\n{self.text}")
                self.text += self._decoder.decode(chunk)
        end = self.text.find("\n", found)
        end = len(self.text) if end < 0 else end + 1
        part, self.pos = self.text[self.pos : end], end
        return part

    def read_all(self) -> str:
        """Everything edged logged, once it has exited."""
        while chunk := os.read(self.fd, 65536):
            self.text += self._decoder.decode(chunk)
        self.text += self._decoder.decode(b"", final=True)
        return self.text


def write_config(
    path: Path, data_dir: Path, *, extra: str = "", camera: str = "", source: str = "synthetic"
) -> Path:
    """A small, fast configuration: one synthetic 320x240 camera, 1 s segments, recorded into
    the vault for a CSU key pair made beside the file (``csu/csu.key.json`` opens it)."""
    csu_dir = path.parent / "csu"
    if not (csu_dir / "csu.pub.json").exists():
        write_keypair(csu_dir, RecipientKem.MLKEM768_X25519)
    path.write_text(
        f"""\
[vault]
csu_public_key = "{csu_dir / "csu.pub.json"}"

[unit]
id = "test-unit"
data_dir = "{data_dir}"

[[cameras]]
id = "cam1"
source = "{source}"
width = 320
height = 240
fps = 10
{camera}
[cameras.encoder]
segment_seconds = 1.0
preset = "ultrafast"

[[cameras.privacy_masks]]
name = "window"
points = [[0.55, 0.15], [0.9, 0.12], [0.92, 0.5], [0.57, 0.55]]
{extra}"""
    )
    return path


@contextmanager
def running_edged(
    config: Path, tmp: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[str], NotifyListener]]:
    listener = NotifyListener(tmp / "notify.sock")
    full_env = {**os.environ, "NOTIFY_SOCKET": str(listener.path), **(env or {})}
    full_env.pop("JOURNAL_STREAM", None)
    full_env.pop("INVOCATION_ID", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.daemon", "--config", str(config), *args],
        env=full_env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        yield proc, listener
    except BaseException:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            sys.stderr.write("--- edged stderr ---\n" + proc.stderr.read()[-5000:])
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        if proc.stderr:
            proc.stderr.close()
        listener.close()


def sealed_segments(data_dir: Path, camera: str = "cam1") -> list[Path]:
    return sorted((data_dir / "vault" / "segments" / camera).rglob("*.seg"))


def export_and_open(data_dir: Path, config: Path, out: Path) -> Path:
    """Export everything recorded and open it with the CSU key: a playable MP4."""
    bundle = out / "bundle"
    clip = out / "clip.mp4"
    subprocess.run(
        [sys.executable, "-m", "edge.cli.main", "export", "--config", str(config),
         "--data-dir", str(data_dir),
         "--from", "2000-01-01T00:00:00Z", "--to", "2100-01-01T00:00:00Z",
         "--case", "TEST-1", "--out", str(bundle)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "edge.csu.main", "open", str(bundle),
         "--key", str(config.parent / "csu" / "csu.key.json"), "--out", str(clip),
         "--unit-key", str(data_dir / "keys" / "unit-signing.pub.pem")],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return clip
