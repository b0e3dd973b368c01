"""The original's face data files: the 27 face latents, their groups, and the 24 direction vectors.

Formats (../shared/fixtures/upstream/ohlora_face_data_formats.md): pandas-written CSVs.
- ohlora_z_vectors.csv: header 0..514, 27 rows of z (512) + label (3).
- ohlora_w_group_names.csv: header case,vector_no,group_name,eyes_corr,mouth_corr,pose_corr.
- property_score_vectors/{eyes,mouth,pose}_change_w_vector_{group}.csv: header ",0..511", one row "0,<512 floats>".
Read with the standard library; values come back as float64, like pandas gives the original.
"""

from __future__ import annotations

import csv
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# `ohlora_no` of the 27 published faces; position i is row i of both face CSVs.
PASSED_OHLORA_NOS = (
    127, 672, 709, 931, 1017, 1073, 1162, 1211, 1277, 1351, 1359, 1409, 1591, 1646,
    1782, 1788, 1819, 1836, 1905, 1918, 2054, 2089, 2100, 2111, 2137, 2185, 2240,
)
GROUPS = ("hhh", "hhl", "hlh", "hll", "lhh", "lhl", "llh", "lll")
PROPERTIES = ("eyes", "mouth", "pose")
Z_FILE = "ohlora_z_vectors.csv"
GROUP_FILE = "ohlora_w_group_names.csv"
VECTOR_DIR = "property_score_vectors"
GROUP_HEADER = ["case", "vector_no", "group_name", "eyes_corr", "mouth_corr", "pose_corr"]


class FaceDataError(ValueError):
    """A face data file that is missing or not in the original's format."""


def _rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        raise FaceDataError(f"face data file {path} is missing")
    with open(path, newline="", encoding="ascii") as fh:
        return [row for row in csv.reader(fh) if row]


def read_z_vectors(path: Path) -> np.ndarray:
    rows = _rows(path)
    if rows[0] != [str(i) for i in range(515)]:
        raise FaceDataError(f"{path}: header must be 0..514 (515 columns)")
    data = rows[1:]
    bad = [i for i, row in enumerate(data) if len(row) != 515]
    if bad:
        raise FaceDataError(f"{path}: row {bad[0] + 1} has {len(data[bad[0]])} values, expected 515")
    return np.array([[float(v) for v in row] for row in data], dtype=np.float64)


def read_group_names(path: Path) -> list[tuple[int, str]]:
    """(case, group_name) per row."""
    rows = _rows(path)
    if rows[0] != GROUP_HEADER:
        raise FaceDataError(f"{path}: header must be {','.join(GROUP_HEADER)}")
    out = []
    for i, row in enumerate(rows[1:], start=1):
        if len(row) != 6 or row[2] not in GROUPS:
            raise FaceDataError(f"{path}: row {i} is not case,vector_no,group(one of {GROUPS}),3 correlations")
        out.append((int(row[0]), row[2]))
    return out


def read_direction_vector(path: Path) -> np.ndarray:
    rows = _rows(path)
    if rows[0] != [""] + [str(i) for i in range(512)] or len(rows) != 2 or len(rows[1]) != 513 or rows[1][0] != "0":
        raise FaceDataError(f"{path}: expected header ',0..511' and one row '0,<512 floats>'")
    return np.array([float(v) for v in rows[1][1:]], dtype=np.float64)


def vector_path(root: Path, prop: str, group: str) -> Path:
    return root / VECTOR_DIR / f"{prop}_change_w_vector_{group}.csv"


@dataclass(frozen=True)
class Face:
    ohlora_no: int
    z: np.ndarray  # (512,) float64
    label: np.ndarray  # (3,) float64
    group: str
    vectors: dict[str, np.ndarray]  # eyes / mouth / pose -> (512,) float64 unit vectors of the face's group


@dataclass(frozen=True)
class FaceChoice:
    face: Face
    random: bool


class FaceBank:
    """The published faces and their group vectors, looked up by `ohlora_no` as in the original."""

    def __init__(self, faces: list[Face]) -> None:
        self.faces = faces
        self.by_no = {f.ohlora_no: f for f in faces}

    @classmethod
    def load(cls, root: Path) -> "FaceBank":
        root = Path(root)
        z = read_z_vectors(root / Z_FILE)
        groups = read_group_names(root / GROUP_FILE)
        if len(groups) != len(z):
            raise FaceDataError(f"{Z_FILE} has {len(z)} rows but {GROUP_FILE} has {len(groups)}")
        vectors = {
            (prop, group): read_direction_vector(vector_path(root, prop, group))
            for group in sorted({g for _, g in groups})
            for prop in PROPERTIES
        }
        faces = [
            Face(case, z[i, :512], z[i, 512:], group, {p: vectors[(p, group)] for p in PROPERTIES})
            for i, (case, group) in enumerate(groups)
        ]
        return cls(faces)

    def choose(self, ohlora_no: int | None, rng: random.Random | None = None) -> FaceChoice:
        """A known number picks that face; none or an unknown one picks one at random (the caller says which)."""
        if ohlora_no is not None and ohlora_no in self.by_no:
            return FaceChoice(self.by_no[ohlora_no], random=False)
        rng = rng or random.Random()
        return FaceChoice(self.faces[rng.randint(0, len(self.faces) - 1)], random=True)


def _shortest(value: float) -> str:
    return repr(float(value))


def write_face_data(root: Path, z_rows: np.ndarray, cases: list[int], groups: list[str],
                    vectors: dict[tuple[str, str], np.ndarray]) -> None:
    """Writes files in the original's exact layout (for tests and for users converting their own faces)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / Z_FILE, "w", newline="\n", encoding="ascii") as fh:
        fh.write(",".join(str(i) for i in range(515)) + "\n")
        for row in z_rows:
            fh.write(",".join(_shortest(round(float(v), 4)) for v in row) + "\n")
    with open(root / GROUP_FILE, "w", newline="\n", encoding="ascii") as fh:
        fh.write(",".join(GROUP_HEADER) + "\n")
        for case, group in zip(cases, groups):
            fh.write(f"{case},0,{group},-0.9,-0.9,-0.9\n")
    (root / VECTOR_DIR).mkdir(exist_ok=True)
    for (prop, group), vec in vectors.items():
        with open(vector_path(root, prop, group), "w", newline="\n", encoding="ascii") as fh:
            fh.write("," + ",".join(str(i) for i in range(512)) + "\n")
            fh.write("0," + ",".join(str(np.float32(v)) for v in vec) + "\n")
