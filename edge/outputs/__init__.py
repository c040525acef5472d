"""Public API of :mod:`edge.outputs` (see ``__all__``): cabinet outputs and playbooks."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge.lazyexports import lazy_exports

if TYPE_CHECKING:
    from edge.outputs.base import OutputDriver as OutputDriver
    from edge.outputs.base import make_driver as make_driver
    from edge.outputs.engine import OutputEngine as OutputEngine
    from edge.outputs.playbooks import Decision as Decision
    from edge.outputs.playbooks import PlaybookPolicy as PlaybookPolicy

#: public name -> the module defining it (imported on first use)
_EXPORTS = {
    "OutputDriver": "base",
    "make_driver": "base",
    "OutputEngine": "engine",
    "Decision": "playbooks",
    "PlaybookPolicy": "playbooks",
}
__all__ = ["Decision", "OutputDriver", "OutputEngine", "PlaybookPolicy", "make_driver"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
