"""The "sketch" face: a drawn Oh-LoRA for machines without the original weights.

Same controls as the StyleGAN face and the original's sign convention: more negative
weight = wider eyes, wider mouth, more head turn; the idle face (0.2, 1.0, 0.0) has
relaxed eyes and a closed, smiling mouth. Drawn at twice the size and reduced, so
edges are smooth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

NATIVE_SIZE = 256
SCALE = 2  # drawn at 2x, reduced with a box filter for anti-aliasing

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Look:
    name: str
    hair: RGB
    hair_shade: RGB
    long_hair: bool
    skin: RGB
    iris: RGB
    shirt: RGB
    background: tuple[RGB, RGB]


LOOKS = (
    Look("long dark-brown hair, warm background", (74, 48, 38), (52, 33, 27), True, (250, 222, 204), (92, 64, 46), (236, 240, 248), ((255, 236, 222), (246, 206, 196))),
    Look("short black bob, blue background", (34, 32, 40), (20, 19, 26), False, (246, 218, 198), (58, 48, 44), (250, 214, 222), ((214, 230, 250), (178, 204, 240))),
    Look("long chestnut hair, green background", (128, 72, 40), (98, 52, 30), True, (252, 226, 208), (86, 110, 62), (246, 246, 232), ((222, 242, 224), (190, 224, 198))),
    Look("long blonde hair, lilac background", (226, 190, 120), (196, 156, 92), True, (253, 230, 214), (70, 120, 168), (96, 110, 160), ((236, 226, 250), (210, 196, 240))),
    Look("pink bob, peach background", (236, 150, 176), (206, 116, 146), False, (252, 228, 214), (120, 70, 96), (250, 250, 250), ((255, 228, 204), (250, 200, 180))),
    Look("long ash hair, grey background", (150, 146, 150), (116, 112, 118), True, (244, 220, 204), (70, 82, 96), (40, 44, 56), ((232, 234, 238), (204, 208, 216))),
)


def _clip01(x: float) -> float:
    return float(min(1.0, max(0.0, x)))


def eye_openness(eyes: float) -> float:
    """0 closed … 1 wide; idle (0.2) is relaxed, a blink (+0.44…+1.2) closes."""
    return _clip01(0.56 - 0.48 * eyes)


def mouth_openness(mouth: float) -> float:
    """0 closed (idle weight 1.0) … 1 wide open (−1.6)."""
    return _clip01((1.1 - mouth) / 2.7)


def head_turn(pose: float) -> float:
    """−1 … 1; more negative pose weight = more turn (to the viewer's right)."""
    return float(max(-1.0, min(1.0, -pose / 1.8)))


class SketchRenderer:
    name = "sketch"
    native_size = NATIVE_SIZE

    def face_ids(self) -> list[int]:
        return list(range(len(LOOKS)))

    def describe(self, face_id: int) -> str:
        return LOOKS[face_id].name

    def render(self, face_id: int, expressions: np.ndarray) -> np.ndarray:
        """(N, 3) weights -> (N, 256, 256, 3) uint8 RGB."""
        look = LOOKS[face_id]
        return np.stack([self._draw(look, *map(float, row)) for row in expressions])

    def _draw(self, look: Look, eyes: float, mouth: float, pose: float) -> np.ndarray:
        s = NATIVE_SIZE * SCALE
        top, bottom = look.background
        gradient = np.linspace(0, 1, s, dtype=np.float32)[:, None, None]
        bg = (np.array(top, np.float32) * (1 - gradient) + np.array(bottom, np.float32) * gradient)
        image = Image.fromarray(np.broadcast_to(bg, (s, s, 3)).astype(np.uint8))
        d = ImageDraw.Draw(image)
        u = s / 512  # drawing units: a 512 canvas
        turn = head_turn(pose)
        dx = 44 * turn * u  # features move with the turn
        hx = 256 * u + 0.55 * dx  # head centre
        spread = 1 - 0.22 * abs(turn)  # features crowd together when the head turns
        half_w = 108 * u * (1 - 0.07 * abs(turn))

        # hair behind, shoulders, neck
        if look.long_hair:
            d.rounded_rectangle((hx - 150 * u, 150 * u, hx + 150 * u, 470 * u), radius=90 * u, fill=look.hair_shade)
        d.ellipse((96 * u, 420 * u, 416 * u, 620 * u), fill=look.shirt)
        d.rectangle((226 * u + 0.2 * dx, 360 * u, 286 * u + 0.2 * dx, 440 * u), fill=_shade(look.skin, 0.93))
        d.ellipse((hx - 150 * u, 70 * u, hx + 150 * u, 330 * u), fill=look.hair)
        # head
        d.ellipse((hx - half_w, 120 * u, hx + half_w, 398 * u), fill=look.skin)
        # fringe: a crescent over the forehead, shifted with the turn
        d.polygon(_fringe(hx + 0.4 * dx, u), fill=look.hair)

        open_e = eye_openness(eyes)
        for side in (-1, 1):
            cx, cy = 256 * u + dx + side * 50 * u * spread, 262 * u
            self._eye(d, cx, cy, open_e, look, u, side)
            # brows rise a little as the eyes open
            by = cy - (34 + 10 * open_e) * u
            d.arc((cx - 28 * u, by - 10 * u, cx + 28 * u, by + 14 * u), 200, 340, fill=look.hair_shade, width=max(1, int(5 * u)))
            # cheeks
            d.ellipse((cx - 20 * u + side * 6 * u * spread, 312 * u, cx + 20 * u + side * 6 * u * spread, 330 * u), fill=_mix(look.skin, (244, 150, 160), 0.35))
        # nose
        nx = 256 * u + 1.15 * dx
        d.line((nx, 292 * u, nx - 5 * u * (1 if turn >= 0 else -1), 308 * u), fill=_shade(look.skin, 0.78), width=max(1, int(3 * u)))
        self._mouth(d, 256 * u + 1.05 * dx, 348 * u, mouth_openness(mouth), u)
        return np.asarray(image.reduce(SCALE))

    @staticmethod
    def _eye(d: ImageDraw.ImageDraw, cx: float, cy: float, open_e: float, look: Look, u: float, side: int) -> None:
        w = 24 * u
        h = (1.5 + 19 * open_e) * u
        if open_e < 0.06:  # closed: a soft lash line
            d.arc((cx - w, cy - 8 * u, cx + w, cy + 8 * u), 10, 170, fill=(60, 40, 40), width=max(1, int(4 * u)))
            return
        d.ellipse((cx - w, cy - h, cx + w, cy + h), fill=(252, 252, 252))
        r = min(13 * u, h)
        d.ellipse((cx - 13 * u, cy - r, cx + 13 * u, cy + r), fill=look.iris)
        pr = min(6 * u, h * 0.6)
        d.ellipse((cx - 6 * u, cy - pr, cx + 6 * u, cy + pr), fill=(28, 20, 24))
        if h > 6 * u:
            d.ellipse((cx + 3 * u, cy - 7 * u, cx + 8 * u, cy - 2 * u), fill=(255, 255, 255))
        d.arc((cx - w - 2 * u, cy - h - 2 * u, cx + w + 2 * u, cy + h + 2 * u), 190, 350, fill=(50, 34, 36), width=max(1, int(5 * u)))
        d.line((cx + side * w, cy - h * 0.4, cx + side * (w + 7 * u), cy - h * 0.8 - 3 * u), fill=(50, 34, 36), width=max(1, int(3 * u)))

    @staticmethod
    def _mouth(d: ImageDraw.ImageDraw, cx: float, cy: float, open_m: float, u: float) -> None:
        w = (24 + 10 * open_m) * u
        if open_m < 0.08:  # closed: a smile
            d.arc((cx - w, cy - 14 * u, cx + w, cy + 8 * u), 20, 160, fill=(196, 86, 96), width=max(1, int(5 * u)))
            return
        h = (3 + 30 * open_m) * u
        d.chord((cx - w, cy - h * 0.5, cx + w, cy + h * 1.4), 0, 180, fill=(150, 40, 56))
        d.rectangle((cx - w * 0.95, cy - h * 0.5, cx + w * 0.95, cy + 0.45 * h), fill=(150, 40, 56))
        d.chord((cx - w * 0.55, cy + h * 0.45, cx + w * 0.55, cy + h * 1.35), 180, 360, fill=(236, 128, 140))
        d.rectangle((cx - w * 0.8, cy - h * 0.5, cx + w * 0.8, cy - h * 0.5 + 4 * u), fill=(255, 255, 255))


def _fringe(cx: float, u: float) -> list[tuple[float, float]]:
    """Bangs: the top of the head down to a scalloped edge across the forehead."""
    top = [(cx + 118 * u * np.cos(a), 190 * u - 110 * u * np.sin(a)) for a in np.linspace(np.pi * 1.05, -0.05 * np.pi, 24)]
    edge_x = np.linspace(118, -118, 9)
    edge_y = [232, 206, 222, 200, 214, 196, 210, 200, 236]
    return top + [(cx + x * u, y * u) for x, y in zip(edge_x, edge_y)]


def _shade(color: RGB, k: float) -> RGB:
    return tuple(int(c * k) for c in color)  # type: ignore[return-value]


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(x * (1 - t) + y * t) for x, y in zip(a, b))  # type: ignore[return-value]
