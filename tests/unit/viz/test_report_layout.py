"""figure_png: a figure whose decorations cannot fit is saved larger, not clipped and not warned about."""

from __future__ import annotations

import io
import warnings

from mechscope.viz.report import figure_png, new_figure


def _png_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        return im.size


def test_tight_layout_failure_grows_the_image_instead_of_warning() -> None:
    fig = new_figure(1.0, 1.0)  # 100 x 100 px
    ax = fig.add_subplot()
    ax.imshow([[0.0, 1.0], [1.0, 0.0]])
    ax.set_title("\n".join(["a title taller than a one-inch figure"] * 8))
    ax.set_xlabel("\n".join(["and a tall label"] * 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = figure_png(fig)
    w, h = _png_size(data)
    assert h > 100 and w >= 100  # grew to hold the title and label
    small = new_figure(3.0, 2.0)
    small.add_subplot().plot([0, 1])
    assert _png_size(figure_png(small)) == (300, 200)  # figures that fit keep their size
