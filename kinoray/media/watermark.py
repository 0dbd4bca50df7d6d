"""The test-asset mark: a white box with ``TEST`` in black block letters, burned into the top-left corner of
every rendition of a test asset (Mux marks its test assets too).

Drawn straight into the ``yuv420p`` planes with numpy rather than through a filter graph: the bundled FFmpeg
has no ``drawtext``, and writing the planes is exact, deterministic (byte-identical re-runs) and the same on
the CPU and GPU paths, which both hand the encoders ``yuv420p`` frames. Sizes follow the picture's height,
so every rung shows the same mark at its own scale.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np

from kinoray.media.frames import Scaler

__all__ = ["MARK_TEXT", "MarkBox", "WatermarkScaler", "mark_box", "mark_frame"]

MARK_TEXT = "TEST"
#: 5×7 glyphs, one string per row ("#" = ink).
_GLYPHS = {
    "T": ("#####", "..#..", "..#..", "..#..", "..#..", "..#..", "..#.."),
    "E": ("#####", "#....", "#....", "####.", "#....", "#....", "#####"),
    "S": (".####", "#....", "#....", ".###.", "....#", "....#", "####."),
}
_GLYPH_ROWS, _GLYPH_COLUMNS = 7, 5
_BOX_LUMA, _INK_LUMA, _NEUTRAL_CHROMA = 235, 16, 128


def _text_mask(text: str) -> np.ndarray:
    """The text as a boolean bitmap, one column of space between glyphs."""
    columns = []
    for position, char in enumerate(text):
        if position:
            columns.append(np.zeros((_GLYPH_ROWS, 1), dtype=bool))
        columns.append(np.array([[cell == "#" for cell in row] for row in _GLYPHS[char]], dtype=bool))
    return np.concatenate(columns, axis=1)


_MASK = _text_mask(MARK_TEXT)


@dataclass(frozen=True)
class MarkBox:
    """Where the mark lies in a picture: the box's top-left corner and size (even, so chroma aligns), and the
    glyph scale (pixels per glyph cell)."""

    left: int
    top: int
    width: int
    height: int
    scale: int


def mark_box(width: int, height: int) -> MarkBox:
    """The mark's box in a ``width``×``height`` picture: about a ninth of the height, inset by a thirtieth."""
    scale = max(1, height // 90)
    pad = 2 * scale
    box_width = min(width, _MASK.shape[1] * scale + 2 * pad)
    box_height = min(height, _MASK.shape[0] * scale + 2 * pad)
    margin = height // 30
    return MarkBox(left=max(0, min(margin, width - box_width)) & ~1, top=max(0, min(margin, height - box_height)) & ~1,
                   width=box_width & ~1 or 2, height=box_height & ~1 or 2, scale=scale)


def _plane(frame: av.VideoFrame, index: int, rows: int, columns: int) -> np.ndarray:
    plane = frame.planes[index]
    return np.frombuffer(memoryview(plane), np.uint8).reshape(-1, plane.line_size)[:rows, :columns]


def mark_frame(frame: av.VideoFrame) -> av.VideoFrame:
    """A copy of ``frame`` (``yuv420p``) with the mark burned in; ``frame`` itself is not changed (the same
    decoded frame may be shown again for a repeated slot, or scaled for another rung)."""
    if frame.format.name != "yuv420p":
        frame = frame.reformat(format="yuv420p")
    width, height = frame.width, frame.height
    out = av.VideoFrame(width, height, "yuv420p")
    for index, (rows, columns) in enumerate(((height, width), ((height + 1) // 2, (width + 1) // 2),
                                             ((height + 1) // 2, (width + 1) // 2))):
        _plane(out, index, rows, columns)[:] = _plane(frame, index, rows, columns)
    for name in ("colorspace", "color_range"):
        setattr(out, name, getattr(frame, name))
    box = mark_box(width, height)
    luma = _plane(out, 0, height, width)
    region = luma[box.top:box.top + box.height, box.left:box.left + box.width]
    region[:] = _BOX_LUMA
    ink = np.kron(_MASK, np.ones((box.scale, box.scale), dtype=bool))
    pad = 2 * box.scale
    ink = ink[:max(0, box.height - pad), :max(0, box.width - pad)]
    region[pad:pad + ink.shape[0], pad:pad + ink.shape[1]][ink] = _INK_LUMA
    for index in (1, 2):
        chroma = _plane(out, index, (height + 1) // 2, (width + 1) // 2)
        chroma[box.top // 2:(box.top + box.height) // 2, box.left // 2:(box.left + box.width) // 2] = _NEUTRAL_CHROMA
    return out


class WatermarkScaler:
    """A scaler whose every output frame carries the mark (wraps the CPU or GPU scaler of a chunk)."""

    def __init__(self, inner: Scaler) -> None:
        self.inner = inner
        self.name = inner.name

    def scale(self, frame: av.VideoFrame) -> list[av.VideoFrame]:
        return [mark_frame(scaled) for scaled in self.inner.scale(frame)]
