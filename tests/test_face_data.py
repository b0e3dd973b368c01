"""Loaders for the original's face files, made here in its exact formats; face choice."""

from __future__ import annotations

import random

import numpy as np
import pytest

from services.face.face_data import (
    GROUPS,
    PASSED_OHLORA_NOS,
    PROPERTIES,
    FaceBank,
    FaceDataError,
    vector_path,
    write_face_data,
)


@pytest.fixture
def face_dir(tmp_path):
    rng = np.random.default_rng(7)
    rows = np.round(rng.standard_normal((27, 515)), 4)
    groups = [GROUPS[i % len(GROUPS)] for i in range(27)]
    vectors = {}
    for group in GROUPS:
        for prop in PROPERTIES:
            v = rng.standard_normal(512)
            vectors[(prop, group)] = v / np.linalg.norm(v)
    write_face_data(tmp_path, rows, list(PASSED_OHLORA_NOS), groups, vectors)
    return tmp_path, rows, groups, vectors


def test_files_have_the_original_layout(face_dir):
    root, _, _, _ = face_dir
    z_lines = (root / "ohlora_z_vectors.csv").read_text().splitlines()
    assert z_lines[0] == ",".join(str(i) for i in range(515)) and len(z_lines) == 28
    assert (root / "ohlora_w_group_names.csv").read_text().startswith("case,vector_no,group_name,eyes_corr,mouth_corr,pose_corr\n127,0,")
    vec_lines = vector_path(root, "eyes", "lhh").read_text().splitlines()
    assert vec_lines[0].startswith(",0,1,2,") and vec_lines[1].startswith("0,") and len(vec_lines) == 2


def test_bank_loads_latents_groups_and_group_vectors(face_dir):
    root, rows, groups, vectors = face_dir
    bank = FaceBank.load(root)
    assert [f.ohlora_no for f in bank.faces] == list(PASSED_OHLORA_NOS)
    face = bank.by_no[1277]
    index = PASSED_OHLORA_NOS.index(1277)
    assert np.array_equal(face.z, rows[index, :512]) and np.array_equal(face.label, rows[index, 512:])
    assert face.group == groups[index]
    for prop in PROPERTIES:
        np.testing.assert_allclose(face.vectors[prop], vectors[(prop, face.group)], atol=1e-7)
        assert face.vectors[prop].dtype == np.float64


def test_known_number_picks_that_face_and_unknown_picks_randomly(face_dir):
    bank = FaceBank.load(face_dir[0])
    chosen = bank.choose(2111)
    assert chosen.face.ohlora_no == 2111 and not chosen.random
    for number in (None, 5, 99999):
        pick = bank.choose(number, random.Random(3))
        assert pick.random and pick.face.ohlora_no in PASSED_OHLORA_NOS
    seen = {bank.choose(None, random.Random(seed)).face.ohlora_no for seed in range(200)}
    assert len(seen) > 20, "random choice must cover the faces"


def test_malformed_files_are_refused(face_dir):
    root = face_dir[0]
    path = root / "ohlora_z_vectors.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:5] + [lines[5].rsplit(",", 1)[0]] + lines[6:]) + "\n")
    with pytest.raises(FaceDataError, match="row 5 has 514 values"):
        FaceBank.load(root)
    vector_path(root, "pose", "hhh").unlink()
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FaceDataError, match="pose_change_w_vector_hhh.csv is missing"):
        FaceBank.load(root)
