"""The drawn face: eyes, mouth and head turn follow their weights, measured in the pixels."""

from __future__ import annotations

import numpy as np

from services.face.sketch import LOOKS, SketchRenderer

R = SketchRenderer()


def render(eyes: float, mouth: float, pose: float, face: int = 0) -> np.ndarray:
    return R.render(face, np.array([[eyes, mouth, pose]]))[0].astype(int)


def near(img: np.ndarray, color: tuple[int, int, int], tol: int = 40) -> np.ndarray:
    return np.abs(img - np.array(color)).sum(axis=2) < tol


def eye_white_pixels(img: np.ndarray) -> int:
    return int(near(img[110:150], (252, 252, 252), 20).sum())


def mouth_pixels(img: np.ndarray) -> int:
    region = img[160:200]
    return int((near(region, (150, 40, 56), 60) | near(region, (236, 128, 140), 40)).sum())


def pupil_centroid_x(img: np.ndarray) -> float:
    ys, xs = np.nonzero(near(img[110:150], (28, 20, 24), 30))
    return float(xs.mean())


def strictly_increasing(values: list[float]) -> bool:
    return all(b > a for a, b in zip(values, values[1:]))


def test_more_negative_eye_weight_opens_the_eyes_wider():
    for face in range(len(LOOKS)):
        whites = [eye_white_pixels(render(e, 1.0, 0.0, face)) for e in (1.1, 0.8, 0.4, 0.0, -0.4, -0.8)]
        assert strictly_increasing(whites), (face, whites)
        assert whites[0] == 0, "a blink closes the eyes"


def test_more_negative_mouth_weight_opens_the_mouth_wider():
    for face in range(len(LOOKS)):
        opening = [mouth_pixels(render(0.2, m, 0.0, face)) for m in (0.8, 0.4, 0.0, -0.4, -0.8, -1.2, -1.5)]
        assert strictly_increasing(opening), (face, opening)


def test_more_negative_pose_weight_turns_the_head_further():
    for face in range(len(LOOKS)):
        xs = [pupil_centroid_x(render(0.2, 1.0, p, face)) for p in (0.6, 0.3, 0.0, -0.4, -0.8, -1.2, -1.6)]
        assert strictly_increasing(xs), (face, xs)


def test_looks_are_distinct_and_frames_are_the_native_size():
    frames = [render(0.2, 1.0, 0.0, face) for face in R.face_ids()]
    assert all(f.shape == (256, 256, 3) for f in frames)
    for i in range(len(frames)):
        for j in range(i + 1, len(frames)):
            assert np.abs(frames[i] - frames[j]).mean() > 5, (i, j)


def test_a_batch_equals_single_frames():
    weights = np.array([[0.2, 1.0, 0.0], [-1.0, -1.3, -1.0], [1.2, 1.0, 0.3]])
    batch = R.render(2, weights)
    for row, frame in zip(weights, batch):
        assert np.array_equal(frame, R.render(2, row[None])[0])
