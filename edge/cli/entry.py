"""What every command-line tool does the same way around its sub-command.

One place for the ways a run ends that are not the sub-command's own result: an error of
the firmware (one line, exit 2), a file the system refuses (one line naming it), Ctrl-C (an
"interrupted" line, exit 130) and a reader that went away (``edgectl config show | head``:
silence, exit 141 as a shell reports SIGPIPE). None of them prints a traceback: field staff
read these lines, not developers.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Callable, Sequence

from ..errors import EdgeError

#: Exit status after Ctrl-C (128 + SIGINT), as a shell reports it.
EXIT_INTERRUPTED = 130
#: Exit status when the reader of our output went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141

_OS_HINTS = {
    errno.ENOENT: "no such file or directory: check the path",
    errno.EACCES: "permission denied: run it with sudo, or as a member of the unit's groups",
    errno.EPERM: "operation not permitted: run it with sudo",
    errno.EISDIR: "is a directory: give the file inside it",
    errno.ENOTDIR: "a part of the path is not a directory: check the path",
    errno.ENOSPC: "no space left on the device: free space or choose another place",
    errno.EROFS: "read-only file system: choose another place",
    errno.EEXIST: "already exists: choose another name, or move it away first",
}


def describe_os_error(exc: OSError) -> str:
    """One line for an error of the system: the file, what happened, what to do."""
    what = _OS_HINTS.get(exc.errno or 0, exc.strerror or str(exc))
    name = exc.filename if exc.filename is not None else None
    return f"{name}: {what}" if name is not None else what


def run(
    prog: str,
    build_parser: Callable[[], argparse.ArgumentParser],
    argv: Sequence[str] | None,
) -> int:
    """Parse ``argv``, run the chosen sub-command's ``func`` and return the exit status."""
    try:
        try:
            args = build_parser().parse_args(argv)
            code: int = args.func(args)
            # Output still buffered is written here, inside the handlers below, rather than at
            # interpreter exit where a closed pipe could only end in a traceback.
            sys.stdout.flush()
        except EdgeError as exc:
            print(f"{prog}: {exc}", file=sys.stderr)
            code = 2
        except BrokenPipeError:
            raise
        except OSError as exc:
            print(f"{prog}: {describe_os_error(exc)}", file=sys.stderr)
            code = 2
    except KeyboardInterrupt:
        print(f"\n{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The Python documentation's recipe: what is left to flush goes to /dev/null, so that
        # the interpreter's own flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return code
