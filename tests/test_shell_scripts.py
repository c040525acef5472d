"""The project's own shell scripts: pipelines that cannot fail at random under ``pipefail``.

With ``set -o pipefail`` a pipeline fails when any stage fails. A reader that stops early
(``head``, ``grep -q``, ``grep -m``) closes the pipe while the writer may still be writing; the
writer then dies of SIGPIPE (status 141) and the script fails, or not, depending on timing:
``make demo`` failed on some re-runs this way. Readers in our scripts read to the end.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, tool

#: A pipe into a reader that may exit before its writer has finished.
EARLY_READER = re.compile(
    r"\|\s*(head\b|grep\s+(?:-\w*[qm]|--quiet|--silent|--max-count)|sed\s+-n\s+'[^']*q)"
)


def _scripts() -> list[Path]:
    """Shell scripts and make recipes of the build, demo, CI and image tooling."""
    candidates = [REPO / "Makefile", *(REPO / "tools").iterdir(), *(REPO / ".ci").iterdir()]
    candidates += [p for p in (REPO / "image").rglob("*") if p.is_file()]
    return sorted(
        path
        for path in candidates
        if path.is_file()
        and path.suffix != ".py"
        and (path.name == "Makefile" or path.read_text(errors="replace").startswith("#!/"))
    )


def test_the_scripts_are_found() -> None:
    names = {p.relative_to(REPO).as_posix() for p in _scripts()}
    assert {"Makefile", "tools/demo.sh", "tools/setup.sh", ".ci/run"} <= names


@pytest.mark.parametrize("path", _scripts(), ids=lambda p: p.relative_to(REPO).as_posix())
def test_no_pipe_into_a_reader_that_exits_early(path: Path) -> None:
    offending = [
        f"{path.relative_to(REPO)}:{n}: {line.strip()}"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if not line.lstrip().startswith("#") and EARLY_READER.search(line)
    ]
    assert offending == [], "SIGPIPE under pipefail:\n" + "\n".join(offending)


def test_the_pattern_catches_the_failure_it_names() -> None:
    """The judge is bash: an early reader does fail a pipefail pipeline, a full reader does not."""
    bash = tool("bash")
    early = "set -o pipefail; seq 1 200000 | head -n 1 >/dev/null"
    full = "set -o pipefail; seq 1 200000 | sed -n '1p' >/dev/null"
    assert subprocess.run([bash, "-c", early], check=False).returncode == 141
    assert subprocess.run([bash, "-c", full], check=False).returncode == 0
    assert EARLY_READER.search(early) and not EARLY_READER.search(full)
