"""Benchmarks run by ``edgectl bench NAME --json``.

Each benchmark is a module here exposing ``run(args: argparse.Namespace) -> dict[str, object]``
and ``add_arguments(parser)``; :data:`BENCHMARKS` maps the name users type to the module. Every
benchmark measures a ratio against a baseline in the same run (memcpy, the FFmpeg CLI, a raw
TLS sink) so its figures mean something on any machine.
"""

from __future__ import annotations

#: name -> module under edge.bench
BENCHMARKS: dict[str, str] = {
    "analytics": "analytics",
    "capture": "capture",
    "encode": "encode",
    "mask": "mask",
    "outputs": "outputs",
    "memory": "memory",
    "pipeline": "pipeline",
    "startup": "startup",
    "vault": "vault",
}
