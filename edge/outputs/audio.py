"""Audio channel: the city's prerecorded messages played through ALSA (``aplay``).

Only files of ``messages_dir`` named in the output's ``states`` are ever played: no text, no
file and no stream comes from the network. The player is bounded twice: ``aplay -d`` stops it
at the action's duration, and the engine's safe state (or edged's death: the player gets
SIGKILL when edged dies, ``PR_SET_PDEATHSIG``) stops it sooner.
"""

from __future__ import annotations

import ctypes
import math
import shutil
import signal
import subprocess
import wave
from pathlib import Path

from edge.config import AudioOutputConfig, OutputConfig
from edge.errors import OutputError
from edge.outputs.base import OutputDriver

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    # Runs in the child between fork and exec. The death signal fires when the thread that
    # forked exits: the engine's thread lives as long as edged, so that is edged's death.
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def wav_duration(path: Path) -> float:
    """Duration in seconds of a WAV file, from its header (raises OutputError if unreadable)."""
    try:
        with wave.open(str(path), "rb") as wav:
            return wav.getnframes() / float(wav.getframerate())
    except (OSError, EOFError, wave.Error) as exc:
        raise OutputError(f"message {path}: not a readable WAV file: {exc}") from None


class AudioDriver(OutputDriver):
    def __init__(self, cfg: OutputConfig) -> None:
        super().__init__(cfg)
        assert cfg.audio is not None
        self.audio: AudioOutputConfig = cfg.audio
        self._player: subprocess.Popen[bytes] | None = None

    def message(self, state: str) -> Path:
        return self.audio.messages_dir / str(self.cfg.states[state])

    def check(self) -> list[str]:
        problems = []
        if shutil.which("aplay") is None:
            problems.append(f"output {self.name}: aplay (alsa-utils) is not installed")
        for state in self.cfg.states:
            try:
                seconds = wav_duration(self.message(state))
            except OutputError as exc:
                problems.append(f"output {self.name}: {exc}")
                continue
            if seconds > self.cfg.max_duration_s:
                problems.append(
                    f"output {self.name}: message {self.message(state)} lasts {seconds:.1f} s, "
                    f"over max_duration_s ({self.cfg.max_duration_s:g} s)"
                )
        return problems

    def drive(self, state: str, duration_s: float) -> None:
        self.safe()  # one message at a time
        path = self.message(state)
        wav_duration(path)  # a damaged or missing file is an error here, not a silent player
        cmd = ["aplay", "-q", "-D", self.audio.device, "-d", str(max(1, math.ceil(duration_s)))]
        try:
            self._player = subprocess.Popen(
                [*cmd, str(path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                preexec_fn=_die_with_parent,  # only prctl between fork and exec: no lock
            )
        except OSError as exc:
            raise OutputError(f"output {self.name}: aplay not started: {exc}") from None

    def playing(self) -> bool:
        return self._player is not None and self._player.poll() is None

    def wait(self, timeout: float) -> int:
        """Wait for the message to end (tests, the engine's shutdown); aplay's exit status."""
        assert self._player is not None
        try:
            status = self._player.wait(timeout)
        except subprocess.TimeoutExpired:
            raise OutputError(f"output {self.name}: still playing after {timeout} s") from None
        if status != 0 and self._player.stderr is not None:
            err = self._player.stderr.read().decode(errors="replace").strip()
            raise OutputError(f"output {self.name}: aplay failed ({status}): {err}")
        return status

    def safe(self) -> None:
        player, self._player = self._player, None
        if player is None:
            return
        if player.poll() is None:
            player.kill()
        player.wait()
        if player.stderr is not None:
            player.stderr.close()

    def close(self) -> None:
        self.safe()
