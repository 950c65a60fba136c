import json

import cv2
import numpy as np
import pytest
from skimage import data

from styleforge.core.config import AugmentParams
from styleforge.tasks.augment import run


def _write(path, rgb):
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


@pytest.fixture
def faces_root(tmp_path):
    _write(tmp_path / "data/faces/astronaut_0.png", cv2.resize(data.astronaut(), (128, 128)))
    _write(tmp_path / "data/faces/coffee_0.png", cv2.resize(data.coffee(), (128, 128)))
    return tmp_path


def _dataset(root):
    return json.loads((root / "data/train/dataset.json").read_text())


def test_safe_preset_is_original_plus_mirror(faces_root):
    report = run(AugmentParams(), faces_root)
    assert report["inputs"] == 2 and report["outputs"] == 4
    dataset = _dataset(faces_root)
    assert dataset["resolution"] == 128
    original = cv2.imread(str(faces_root / "data/train/astronaut_0_orig.png"))
    mirrored = cv2.imread(str(faces_root / "data/train/astronaut_0_aug0.png"))
    np.testing.assert_array_equal(mirrored, original[:, ::-1])
    assert (faces_root / "reports/augment.json").exists() and (faces_root / "reports/augment.png").exists()


def test_full_preset_is_seeded_and_records_params(faces_root):
    params = AugmentParams(preset="full", copies=4, group_p=1.0, seed=7, keep_original=False)
    run(params, faces_root)
    first = {p.name: p.read_bytes() for p in (faces_root / "data/train").glob("*.png")}
    records = _dataset(faces_root)["images"]
    applied = {name for record in records for name, _ in record["transforms"]}
    assert {"CoarseDropout"} <= applied  # group_p=1 means every group fires
    assert applied & {"GaussianBlur", "MotionBlur", "MedianBlur"}
    assert applied & {"RGBShift", "RandomBrightnessContrast", "CLAHE"}
    run(params, faces_root)
    second = {p.name: p.read_bytes() for p in (faces_root / "data/train").glob("*.png")}
    assert first == second
    run(params.model_copy(update={"seed": 8}), faces_root)
    third = {p.name: p.read_bytes() for p in (faces_root / "data/train").glob("*.png")}
    assert third != first


def test_adding_a_face_leaves_other_outputs_unchanged(faces_root):
    params = AugmentParams(preset="full", copies=2, group_p=1.0, keep_original=False)
    run(params, faces_root)
    before = (faces_root / "data/train/coffee_0_aug1.png").read_bytes()
    _write(faces_root / "data/faces/aaa_first.png", cv2.resize(data.chelsea(), (128, 128)))
    run(params, faces_root)
    assert (faces_root / "data/train/coffee_0_aug1.png").read_bytes() == before


def test_odd_aspect_ratio_is_padded_not_stretched(faces_root):
    wide = np.zeros((64, 128, 3), np.uint8)
    wide[:, :, 1] = 200
    _write(faces_root / "data/faces/wide.png", wide)
    run(AugmentParams(), faces_root)
    out = cv2.imread(str(faces_root / "data/train/wide_orig.png"))
    assert out.shape == (128, 128, 3)
    assert (out[:, :, 1] == 200).all()  # reflect padding of a flat image: no black bars, no distortion


def test_empty_and_unreadable_inputs_are_reported(tmp_path):
    report = run(AugmentParams(), tmp_path)
    assert report["outputs"] == 0 and "warning" in report
    (tmp_path / "data/faces").mkdir(parents=True, exist_ok=True)
    _write(tmp_path / "data/faces/good.png", cv2.resize(data.astronaut(), (64, 64)))
    (tmp_path / "data/faces/broken.png").write_bytes(b"not a png")
    report = run(AugmentParams(), tmp_path)
    assert report["rejects"] == {"unreadable": 1} and report["outputs"] == 2
