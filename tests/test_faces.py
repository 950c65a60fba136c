"""The faces stage on real photos that ship in installed packages (no mocks, no downloads)."""

import hashlib
import io
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import skimage.data
from matplotlib import cbook
from PIL import Image

from styleforge.core.config import FacesParams
from styleforge.tasks import faces
from styleforge.tasks.faces import (
    BadImage,
    CropGeometry,
    align_face,
    find_faces,
    load_image,
)

DEFAULTS = FacesParams()


# ---------------------------------------------------------------- photos and files


def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


def grace_hopper() -> np.ndarray:
    with cbook.get_sample_data("grace_hopper.jpg") as file:
        return np.asarray(Image.open(file).convert("RGB"))


def lfw_photo(patch: np.ndarray) -> Image.Image:
    """A 25x25 LFW patch as the sample site serves it: Lanczos up to 320 px, then down to 160."""
    gray = Image.fromarray(np.uint8(np.rint(patch * 255))).resize((320, 320), Image.Resampling.LANCZOS)
    return gray.convert("RGB").resize((160, 160), Image.Resampling.LANCZOS)


def encode(image: Image.Image | np.ndarray, fmt: str = "PNG", **options) -> bytes:
    image = Image.fromarray(image) if isinstance(image, np.ndarray) else image
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def write_raw(root: Path, files: dict[str, bytes]) -> dict[str, str]:
    """data/raw/<name> for each file plus a scrape manifest of the real schema; name -> sha256."""
    raw = root / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    rows, shas = [], {}
    for name, data in files.items():
        (raw / name).write_bytes(data)
        shas[name] = hashlib.sha256(data).hexdigest()
        rows.append({"url": f"https://example.test/{name}", "page": "https://example.test/", "sha256": shas[name],
                     "phash": "", "bytes": len(data), "width": 0, "height": 0, "status": "ok", "error": None,
                     "path": name, "content_type": "image/png", "source": "test"})
    rows.append({**rows[0], "url": "https://mirror.example.test/same"})  # same content twice: one input
    rows.append({**rows[0], "url": "https://example.test/failed", "sha256": "f" * 64, "status": "error",
                 "error": "HTTP 404", "path": None})  # not downloaded: must be skipped
    pd.DataFrame(rows).to_parquet(raw / "manifest.parquet")
    return shas


def eyes_again(crop: np.ndarray) -> tuple[tuple[float, float], tuple[float, float]]:
    """The eyes found afresh in an aligned crop (its face is big: a lower min_face is fine)."""
    found, _ = find_faces(crop, FacesParams(min_face=32))
    assert len(found) == 1 and found[0].eyes is not None, "the crop's face was not found again"
    return found[0].eyes


# ---------------------------------------------------------------- detection and alignment


@pytest.mark.parametrize("photo", [astronaut, grace_hopper])
def test_one_aligned_square_face_with_ffhq_framing(photo):
    found, _ = find_faces(photo(), DEFAULTS)
    assert len(found) == 1
    face = found[0]
    assert face.image.shape == (256, 256, 3) and face.image.dtype == np.uint8
    assert face.eyes is not None
    # FFHQ framing: eyes a quarter of the crop apart, their midpoint just above the middle.
    (lx, ly), (rx, ry) = eyes_again(face.image)
    assert 0.18 < (rx - lx) / 256 < 0.32
    assert abs((lx + rx) / 2 / 256 - 0.5) < 0.05 and 0.38 < (ly + ry) / 2 / 256 < 0.52


def test_1024_crop():
    found, _ = find_faces(astronaut(), FacesParams(resolution=1024))
    assert [face.image.shape for face in found] == [(1024, 1024, 3)]


def test_tilted_face_comes_out_level():
    photo = astronaut()
    upright = find_faces(photo, DEFAULTS)[0][0].geometry.angle
    turn = cv2.getRotationMatrix2D((256, 256), 10, 1.0)  # 10 degrees counter-clockwise
    tilted = cv2.warpAffine(photo, turn, (512, 512), borderMode=cv2.BORDER_REFLECT_101)
    found, _ = find_faces(tilted, DEFAULTS)
    assert len(found) == 1
    assert found[0].geometry.angle == pytest.approx(upright - 10, abs=3)
    (lx, ly), (rx, ry) = eyes_again(found[0].image)
    assert abs(math.degrees(math.atan2(ry - ly, rx - lx))) < 3


def test_face_at_the_edge_is_mirrored_not_stretched():
    photo = np.ascontiguousarray(astronaut()[:, 150:])  # the face now 20 px from the left edge
    found, _ = find_faces(photo, DEFAULTS)
    assert len(found) == 1 and found[0].image.shape == (256, 256, 3)
    # At scale 1 and no turn, a crop reaching 40 px past the photo's left edge is the photo itself
    # (pixel for pixel away from the edge: nothing stretched), and its first 40 columns are the
    # photo's first columns mirrored, blurred and (further out) faded to grey as FFHQ does.
    crop = align_face(photo, CropGeometry(centre=(87.5, 199.5), side=256, angle=0.0), 256).astype(int)
    np.testing.assert_array_equal(crop[:, 66:], photo[72:328, 26:216])  # the blur eases in over 26 px
    mirrored = cv2.GaussianBlur(photo[72:328, 40:0:-1], (0, 0), 0.02 * 256).astype(int)
    assert np.abs(crop[:, 30:40] - mirrored[:, 30:40]).mean() < 6  # next to the edge: barely faded
    assert crop[:, :40].std() < photo[72:328, 1:41].std()


def test_shrinking_is_uniform_and_area_averaged():
    photo = astronaut()
    crop = align_face(photo, CropGeometry(centre=(255.5, 255.5), side=512, angle=0.0), 256)
    expected = cv2.resize(photo, (256, 256), interpolation=cv2.INTER_AREA)
    assert np.abs(crop.astype(int) - expected).mean() < 1.5


def test_faces_under_min_face_are_rejected_not_enlarged():
    found, rejects = find_faces(astronaut(), FacesParams(min_face=100))  # the face is about 96 px
    assert found == []
    assert {r.reason for r in rejects} == {"too_small"}
    assert max(r.box[2] for r in rejects) > 90  # the face itself was found, then refused


def two_people() -> np.ndarray:
    canvas = np.full((600, 1000, 3), 90, np.uint8)
    canvas[40:552, 20:532] = astronaut()
    canvas[280:580, 640:896] = cv2.resize(grace_hopper(), None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    return canvas


def test_multi_face_all_or_largest():
    everyone, _ = find_faces(two_people(), FacesParams(multi_face="all"))
    assert len(everyone) == 2
    largest, rejects = find_faces(two_people(), FacesParams(multi_face="largest"))
    assert len(largest) == 1
    assert largest[0].box == max((face.box for face in everyone), key=lambda box: box[2] * box[3])
    assert "not_largest" in [r.reason for r in rejects]


@pytest.mark.parametrize("zoom", [0.85, 1.8, 3.6])
def test_a_face_of_any_size_in_a_large_photo_is_found_once(zoom):
    """Faces of about 80, 170 and 350 px in a 1600x1200 photo: each lies in another octave of the
    search (copy 640 px wide), and each is found, once, with its eyes."""
    head = cv2.resize(astronaut()[:300, 80:400], None, fx=zoom, fy=zoom, interpolation=cv2.INTER_CUBIC)
    photo = cv2.resize(skimage.data.coffee(), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    top, left = 60, 200
    photo[top: top + head.shape[0], left: left + head.shape[1]] = head
    found, _ = find_faces(photo, DEFAULTS)
    assert len(found) == 1 and found[0].eyes is not None
    x, y, width, height = found[0].box
    face_x, face_y, face_side = left + (177 - 80) * zoom, top + 65 * zoom, 96 * zoom  # her face in astronaut()
    assert abs(x + width / 2 - (face_x + face_side / 2)) < 0.15 * face_side
    assert abs(y + height / 2 - (face_y + face_side / 2)) < 0.15 * face_side
    assert 0.8 < width / face_side < 1.25


@pytest.mark.parametrize("name", ["chelsea", "coffee", "camera", "brick", "grass", "gravel"])
def test_cat_coffee_cameraman_and_textures_give_no_faces(name):
    photo = getattr(skimage.data, name)()
    photo = photo if photo.ndim == 3 else np.dstack([photo] * 3)
    for scale in (1.0, 2.0):
        found, rejects = find_faces(cv2.resize(photo, None, fx=scale, fy=scale), DEFAULTS)
        assert found == [] and rejects


# ---------------------------------------------------------------- decoding what scrapers bring


def exif_rotated_astronaut() -> bytes:
    """Stored turned 90 degrees counter-clockwise, with EXIF Orientation 6 saying to turn it back."""
    image = Image.fromarray(np.rot90(astronaut()).copy())
    exif = image.getexif()
    exif[0x0112] = 6
    return encode(image, "JPEG", quality=95, exif=exif)


def bomb() -> bytes:
    """A few kB of PNG that decodes to 196 million pixels."""
    return encode(Image.new("1", (14000, 14000)))


@pytest.fixture(scope="module")
def awkward_files() -> dict[str, bytes]:
    photo = Image.fromarray(astronaut())
    rgba = photo.convert("RGBA")
    rgba.paste((0, 0, 0, 0), (0, 400, 512, 512))  # the bottom strip fully transparent
    sixteen = (np.asarray(photo.convert("L"), np.uint16) * 257).astype(np.uint16)
    jpeg = encode(photo, "JPEG", quality=90)
    return {
        "empty.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "notes.jpg": b"<html>not found</html>",
        "bomb.png": bomb(),
        "gray.png": encode(photo.convert("L")),
        "rgba.png": encode(rgba),
        "palette.png": encode(photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=256)),
        "cmyk.jpg": encode(photo.convert("CMYK"), "JPEG", quality=95),
        "sixteen.png": encode(Image.fromarray(sixteen)),
        "exif.jpg": exif_rotated_astronaut(),
    }


@pytest.fixture(scope="module")
def awkward_dir(tmp_path_factory, awkward_files) -> Path:
    folder = tmp_path_factory.mktemp("awkward")
    for name, data in awkward_files.items():
        (folder / name).write_bytes(data)
    return folder


@pytest.mark.parametrize("name, reason", [("empty.jpg", "empty"), ("truncated.jpg", "truncated"),
                                          ("notes.jpg", "not_an_image"), ("bomb.png", "decompression_bomb")])
def test_unusable_files_raise_bad_image(awkward_dir, name, reason):
    with pytest.raises(BadImage) as caught:
        load_image(awkward_dir / name, DEFAULTS.max_pixels)
    assert caught.value.reason == reason


def test_max_pixels_caps_what_is_decoded(awkward_dir):
    with pytest.raises(BadImage, match="max_pixels"):
        load_image(awkward_dir / "gray.png", max_pixels=100_000)


@pytest.mark.parametrize("name", ["gray.png", "rgba.png", "palette.png", "cmyk.jpg", "sixteen.png", "exif.jpg"])
def test_awkward_modes_become_upright_rgb(awkward_dir, name):
    rgb = load_image(awkward_dir / name, DEFAULTS.max_pixels)
    assert rgb.shape == (512, 512, 3) and rgb.dtype == np.uint8 and rgb.flags.writeable
    gray = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY).astype(int)
    # upright and the same picture: within a few levels of the original, as gray
    assert np.abs(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)[:400].astype(int) - gray[:400]).mean() < 8


def test_transparency_becomes_white_and_16_bit_is_scaled_not_clipped(awkward_dir):
    assert (load_image(awkward_dir / "rgba.png", DEFAULTS.max_pixels)[400:] == 255).all()
    sixteen = load_image(awkward_dir / "sixteen.png", DEFAULTS.max_pixels)
    assert sixteen.mean() < 200  # clipping would make it nearly all 255


# ---------------------------------------------------------------- the stage: files, cache, reports


def run_stage(root: Path, **params) -> dict:
    return faces.run(FacesParams(**params), root)


def test_stage_counts_every_bad_input_and_keeps_going(tmp_path, awkward_files):
    shas = write_raw(tmp_path, awkward_files)
    report = run_stage(tmp_path)
    assert report["inputs"] == len(awkward_files)
    assert report["rejects"]["bad_image:empty"] == 1
    assert report["rejects"]["bad_image:truncated"] == 1
    assert report["rejects"]["bad_image:not_an_image"] == 1
    assert report["rejects"]["bad_image:decompression_bomb"] == 1
    assert report["bad_images"] == 4
    written = {path.name for path in (tmp_path / "data/faces").iterdir()}
    for name in ("gray.png", "rgba.png", "palette.png", "cmyk.jpg", "sixteen.png", "exif.jpg"):
        assert f"{shas[name]}_0.png" in written, f"no face from {name}"
    assert json.loads((tmp_path / "reports/faces.json").read_text()) == report


@pytest.fixture(scope="module")
def lfw_run(tmp_path_factory):
    """The stage over the 200 LFW patches as sample-site photos: 100 faces, then 100 non-faces."""
    root = tmp_path_factory.mktemp("lfw")
    patches = skimage.data.lfw_subset()
    photos = {f"lfw-{i:03d}.jpg": encode(lfw_photo(patch), "JPEG", quality=90) for i, patch in enumerate(patches)}
    shas = write_raw(root, photos)
    return root, shas, run_stage(root)


def test_lfw_faces_pass_and_non_faces_do_not(lfw_run):
    root, shas, report = lfw_run
    sources = {f"{sha}_0.png": name for name, sha in shas.items()}
    passed = {sources[path.name] for path in (root / "data/faces").glob("*_0.png")}
    assert len([name for name in passed if int(name[4:7]) < 100]) >= 80  # 86 with the defaults as tuned
    assert [name for name in passed if int(name[4:7]) >= 100] == []
    assert list((root / "data/faces").glob("*_1.png")) == []  # one face each: none found twice
    assert report["rejects"]["no_face"] >= 100


def test_contact_sheets_are_written_and_bounded(lfw_run):
    root, _, report = lfw_run
    for name in ("faces.png", "faces_rejects.png"):
        sheet = Image.open(root / "reports" / name)
        assert sheet.mode == "RGB"
        assert sheet.width <= 8 * 144 and sheet.height <= 8 * (144 + 14)  # at most 64 tiles
    assert report["faces_written"] > 64 and report["rejected"] > 64  # so both sheets had to choose


def test_cache_reruns_only_what_changed(tmp_path):
    patches = skimage.data.lfw_subset()
    files = {f"lfw-{i:03d}.jpg": encode(lfw_photo(patches[i]), "JPEG", quality=90) for i in range(0, 100, 5)}
    write_raw(tmp_path, files)
    first = run_stage(tmp_path)
    assert (first["processed"], first["from_cache"]) == (20, 0)
    outputs = sorted(path.name for path in (tmp_path / "data/faces").iterdir())

    again = run_stage(tmp_path, workers=1)  # workers shapes how, not what: same cache entries
    assert (again["processed"], again["from_cache"]) == (0, 20)
    assert sorted(path.name for path in (tmp_path / "data/faces").iterdir()) == outputs

    for path in (tmp_path / "data/faces").iterdir():  # DVC deletes its outputs before a rerun
        path.unlink()
    write_raw(tmp_path, {**files, "lfw-001.jpg": encode(lfw_photo(patches[1]), "JPEG", quality=90)})
    grown = run_stage(tmp_path)
    assert (grown["processed"], grown["from_cache"]) == (1, 20)
    assert set(outputs) <= {path.name for path in (tmp_path / "data/faces").iterdir()}

    changed = run_stage(tmp_path, margin=0.6)
    assert (changed["processed"], changed["from_cache"]) == (21, 0)
    assert changed["params_hash"] != grown["params_hash"]
