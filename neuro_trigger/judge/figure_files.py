"""Figures as files: their PNG names, PNG files written whole or not at all, PNG bytes (report.html),
pixel arrays and PNG files for TensorBoard. Whatever draws a figure (`judge/plots.py`, `judge/overlays.py`)
leaves it to these."""

from __future__ import annotations

import io
import os
import re
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_.=+-]")


def figure_file(name: str) -> str:
    """The PNG file name of a figure."""
    return f"{_UNSAFE.sub('_', name)}.png"


def save_figures(figs: dict[str, Figure], folder: Path, dpi: int = DPI) -> list[Path]:
    """Write each figure as ``folder/<name>.png`` (folder created); return the paths in order.

    Each file appears whole or not at all (written under a temporary name, then renamed), so a run
    stopped while drawing leaves only complete figures, and `--resume` draws the missing ones."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figs.items():
        path = folder / figure_file(name)
        partial = path.with_name(f".{path.name}.part")
        # zlib level 1: files about 10% larger than the default level 6, encoding twice as fast
        fig.savefig(partial, dpi=dpi, format="png", pil_kwargs={"compress_level": 1})
        os.chmod(partial, 0o644)
        os.replace(partial, path)
        paths.append(path)
    return paths


def pngs_to_tensorboard(pngs: dict[str, Path], log_dir: Path, prefix: str = "", step: int = 0) -> None:
    """PNG files (by figure name) as images of a TensorBoard run (tags `prefix` + name), as they are: no
    decoding, no drawing, no encoding again. Missing files are left out."""
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    values = []
    for name, path in pngs.items():
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            continue
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")  # the IHDR chunk
        colorspace = {2: 3, 6: 4}.get(data[25], 4)  # PNG colour type: RGB, RGBA
        values.append(Summary.Value(tag=f"{prefix}{name}", image=Summary.Image(
            height=height, width=width, colorspace=colorspace, encoded_image_string=data)))
    if not values:
        return
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        writer.file_writer.add_summary(Summary(value=values), step)


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an (H, W, 3) uint8 RGB array (for TensorBoard ``add_image``, HWC)."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:, :, :3].copy()


def figure_to_png(fig: Figure, dpi: int = DPI) -> bytes:
    """The figure as PNG bytes (for report.html, which embeds its figures). zlib level 1, as `save_figures`: the
    default level 6 took longer than drawing the figure, for files slightly smaller (docs/performance.md)."""
    if not isinstance(fig.canvas, FigureCanvasAgg):
        FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()
