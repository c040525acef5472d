"""One exception hierarchy for the whole firmware.

Every error the firmware raises on purpose derives from :class:`EdgeError` and, where one fits,
from the matching built-in, so callers may catch either. Errors from foreign libraries (FFmpeg
through PyAV, OpenSSL, wpa_supplicant) are translated into this hierarchy in one place each:
:func:`from_av` here for FFmpeg. Code raises *or* logs an error, never both with the same words.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base of every error the firmware raises on purpose."""


class ConfigError(EdgeError, ValueError):
    """A configuration file or value is invalid.

    ``path`` is the file, ``key`` the dotted key path (``cameras[0].privacy_masks[1].points``),
    ``line`` the 1-based line in the file where the key stands, when it could be found.
    """

    def __init__(
        self,
        message: str,
        *,
        path: str | None = None,
        key: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = path
        self.key = key
        self.line = line
        self.reason = message
        where = path or "<config>"
        if line is not None:
            where = f"{where}:{line}"
        prefix = f"{where}: " if path or line is not None else ""
        keypart = f"{key}: " if key else ""
        super().__init__(f"{prefix}{keypart}{message}")


class CaptureError(EdgeError, RuntimeError):
    """A video source failed; :attr:`transient` tells whether a retry may succeed."""

    def __init__(self, message: str, *, transient: bool = True) -> None:
        super().__init__(message)
        self.transient = transient


class FrameBudgetError(EdgeError):
    """A source received frame ``index`` but the frame memory budget had no buffer for it.

    Not a failure of the source: the capture loop counts the frame as dropped, exactly as a
    full recording queue drops one, and reads on (:mod:`edge.framepool`).
    """

    def __init__(self, index: int) -> None:
        super().__init__(f"no frame buffer within the memory budget for frame {index}")
        self.index = index


class MaskError(EdgeError, ValueError):
    """A privacy mask cannot be applied (bad geometry, frame of the wrong size)."""


class EncodeError(EdgeError, RuntimeError):
    """The encoder or the segmenter failed."""


class VaultError(EdgeError, RuntimeError):
    """The recording store failed."""


class IntegrityError(VaultError):
    """Stored or received data fails verification (signature, digest, chain, format)."""


class IndexCorruptError(IntegrityError):
    """The vault's index (a cache of the sealed files) is damaged; it can be rebuilt from them."""


class DataDirError(EdgeError, OSError):
    """The data directory cannot be used: unwritable, full, or held by another ``edged``."""


class InstanceLockedError(DataDirError):
    """Another process holds the lock of a resource that admits one owner (a data directory,
    a control socket); :attr:`holder_pid` names it when it could be read."""

    def __init__(self, what: str, lock_path: object, holder_pid: int | None) -> None:
        holder = f"pid {holder_pid}" if holder_pid is not None else "an unknown pid"
        super().__init__(
            f"{what} is in use by another edged ({holder}, lock {lock_path}): stop that one "
            "first (systemctl stop edged"
            + (f", or kill {holder_pid}" if holder_pid is not None else "")
            + "), or give this one its own --data-dir and control.socket"
        )
        self.what = what
        self.holder_pid = holder_pid


class UplinkError(EdgeError, ConnectionError):
    """The link to the supervision centre failed."""


class ProtocolError(EdgeError, ValueError):
    """A peer on a local channel (control socket, analytics process) sent a message that breaks
    the channel's rules: too large, nested too deep, not the expected shape."""


class AnalyticsError(EdgeError, RuntimeError):
    """The analytics process, its model or its event publishing failed."""


class Dot1xError(EdgeError, RuntimeError):
    """802.1X port authentication: the supplicant is unreachable, misconfigured or refused."""


class EnrolmentError(EdgeError, ValueError):
    """Unit enrolment failed: keys, certificate request or the certificate being installed."""


class KeyExistsError(EdgeError, FileExistsError):
    """A key file is already where a new key would be written: keys are never overwritten."""


class ProvisionError(EdgeError, ValueError):
    """A provisioning request refused; nothing was written (the message says what to do)."""


class CaError(EdgeError, ValueError):
    """The small video CA refused an operation (bad request, unknown serial, no CA there)."""


class OutputError(EdgeError, OSError):
    """A cabinet output (Modbus controller, GPIO relay, audio channel) could not be driven."""


class CommandError(EdgeError, ValueError):
    """A command from the CSU was refused: unsigned, forged, expired, replayed, out of scope."""


class StorageUnavailableError(EdgeError, ConnectionError):
    """The CSU cluster's database or object store cannot be reached or refused a request: the
    receiver answers 503 and the unit retries later."""


def from_av(exc: BaseException, context: str) -> EdgeError:
    """Translate an error raised by PyAV/FFmpeg into the firmware's hierarchy.

    ``context`` says what we were doing ("opening rtsp://cam/stream", "encoding frame 12").
    Input/output and network failures of a source are transient (a camera reboots, a link
    flaps); anything else is reported as it is.
    """
    import av  # local: keep importing this module cheap

    transient_types: tuple[type[BaseException], ...] = (
        OSError,
        av.error.EOFError,
        av.error.ExitError,
    )
    detail = str(exc) or type(exc).__name__
    if isinstance(exc, av.error.FFmpegError):
        detail = f"{exc.strerror or detail} (FFmpeg error {exc.errno})"
    if "encod" in context:
        return EncodeError(f"{context}: {detail}")
    return CaptureError(f"{context}: {detail}", transient=isinstance(exc, transient_types))
