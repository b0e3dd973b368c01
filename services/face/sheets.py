"""Contact sheets so a user can look at the faces and their expressions before choosing one."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from services.face.renderers import Renderer

NEUTRAL = (0.2, 1.0, 0.0)  # the original's idle weights
GRID_EYES = (0.8, 0.2, -0.6, -1.15)
GRID_MOUTH = (1.0, -0.6, -1.2, -1.5)
GRID_POSE = (0.45, 0.0, -1.2, -1.65)
THUMB = 128


def _tile(frames: list[np.ndarray], columns: int, labels: list[str]) -> Image.Image:
    rows = (len(frames) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * THUMB, rows * (THUMB + 16)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, (frame, label) in enumerate(zip(frames, labels)):
        x, y = (i % columns) * THUMB, (i // columns) * (THUMB + 16)
        sheet.paste(Image.fromarray(frame).resize((THUMB, THUMB), Image.Resampling.LANCZOS), (x, y))
        draw.text((x + 4, y + THUMB + 2), label, fill=(0, 0, 0))
    return sheet


def contact_sheet(renderer: Renderer) -> Image.Image:
    ids = renderer.face_ids()
    frames = [renderer.render(i, np.array([NEUTRAL]))[0] for i in ids]
    return _tile(frames, min(9, len(ids)), [f"face {i}" for i in ids])


def expression_grid(renderer: Renderer, face_id: int) -> Image.Image:
    """Rows: eyes weight; columns: mouth weight; one block per head-turn weight (side by side)."""
    blocks = []
    for pose in GRID_POSE:
        weights = np.array([[e, m, pose] for e in GRID_EYES for m in GRID_MOUTH])
        frames = list(renderer.render(face_id, weights))
        blocks.append(_tile(frames, len(GRID_MOUTH), [f"e{e:+.1f} m{m:+.1f} p{pose:+.1f}" for e, m, _ in weights]))
    width = sum(b.width for b in blocks) + 8 * (len(blocks) - 1)
    grid = Image.new("RGB", (width, blocks[0].height), (220, 220, 220))
    x = 0
    for block in blocks:
        grid.paste(block, (x, 0))
        x += block.width + 8
    return grid
