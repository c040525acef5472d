"""The embedded demo configuration shows the product doing its job: every window of the synthetic
façade is hidden by the demo's own privacy masks, judged on rendered frames against the scene's
ground truth (edge.capture.scene.windows) through the real PrivacyMasker."""

from __future__ import annotations

import numpy as np
import pytest

from edge.capture import open_source
from edge.capture.scene import windows
from edge.capture.synthetic import SyntheticSource
from edge.config import DEMO_CONFIG
from edge.privacy.masker import MASK_CHROMA, MASK_LUMA, PrivacyMasker

from .conftest import REPO

CAM = DEMO_CONFIG.cameras[0]


@pytest.mark.parametrize("seed", [CAM.synthetic.seed, 2, 3])
def test_no_window_pixel_survives_the_demo_masks(seed: int) -> None:
    source = open_source(CAM.model_copy(update={"synthetic": CAM.synthetic.model_copy(
        update={"seed": seed})}), realtime=False)  # fmt: skip
    assert isinstance(source, SyntheticSource)
    masker = PrivacyMasker(CAM.privacy_masks, CAM.width, CAM.height)
    panes = windows(CAM.width, CAM.height)
    assert len(panes) == 16  # two storeys of eight: the test would prove nothing on none
    for index in (0, 60, 250):
        frame = source.render(index)
        masker.apply(frame)
        leaks = []
        for window in panes:
            x0, y0, x1, y1 = window.outer
            luma = frame.y[y0:y1, x0:x1]
            chroma = (slice(y0 // 2, (y1 + 1) // 2), slice(x0 // 2, (x1 + 1) // 2))
            if (
                not np.all(luma == MASK_LUMA)
                or not np.all(frame.u[chroma] == MASK_CHROMA)
                or not np.all(frame.v[chroma] == MASK_CHROMA)
            ):
                leaks.append((window.storey, window.column, int(np.sum(luma != MASK_LUMA))))
        assert leaks == [], f"frame {index}: (storey, column, visible luma pixels) {leaks}"


def test_the_readme_does_not_copy_the_demo_masks() -> None:
    """The demo's masks live in one place; a copy in the README drifts (it did)."""
    readme = (REPO / "README.md").read_text()
    for mask in CAM.privacy_masks:
        first = mask.points[0]
        assert f"[{first[0]}, {first[1]}]" not in readme, mask.name
