"""portraits: photos -> data/portraits/<photo>/{input,reconstruction,portrait}.png + latent.npz,
reports/portraits.png (input | reconstruction | portrait, one row per photo), reports/portraits.json.

Each photo goes through the dataset's own face code (tasks.faces: load_image, find_faces with
the faces section's settings, largest face kept), is projected into the base model's W or W+
(model/project.py) and rendered twice: by the base model (the reconstruction; the report gives
its distance to the input) and by the blended model (the portrait). A photo that cannot be read,
is too big or has no usable face is reported with the reason and skipped; the others come out.

The portrait is rendered with the blended model's own fixed noise, not the noise optimised
against the base model: that noise has soaked up photo detail that would fight the new look.
"""

from __future__ import annotations

import re
import time
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from styleforge.core.config import FacesParams, LpipsParams, PortraitsParams
from styleforge.core.errors import UserError
from styleforge.core.fetch import Unavailable, fetch
from styleforge.core.grid import save_sheet, tile_for
from styleforge.core.io import atomic_write
from styleforge.core.reports import timed, write_report
from styleforge.tasks.faces import BadImage, find_faces, load_image
from styleforge.tasks.paths import BASE_MODEL, BLEND_MODEL, PORTRAITS_DIR, PORTRAITS_SHEET
from styleforge.tasks.quality import has_face, look_distance, look_signature, target_signature


class Skip(Exception):
    """This photo yields no portrait; `reason` is short and stable, as in the faces report."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def run(params: PortraitsParams, faces: FacesParams, root: Path = Path(".")) -> dict:
    """faces: the dataset's detection and alignment settings, so photos are framed like the training set."""
    folder = root / params.photos
    if not folder.is_dir():
        raise UserError(f"{folder} not found: put the photos to render there (portraits.photos)")
    photos = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    report = make_portraits(
        photos, params, faces,
        base_model=root / BASE_MODEL, blend_model=root / BLEND_MODEL,
        out_dir=root / PORTRAITS_DIR, sheet_path=root / PORTRAITS_SHEET, lpips_cache=root / params.lpips.cache_dir,
        look=root / params.look,
    )
    write_report("portraits", report, root)
    return {"stage": "portraits", **report}


def make_portraits(
    photos: list[Path],
    params: PortraitsParams,
    faces: FacesParams,
    *,
    base_model: Path,
    blend_model: Path,
    out_dir: Path,
    sheet_path: Path,
    lpips_cache: Path,
    look: Path | None = None,
) -> dict:
    """Project and render every photo into out_dir, the contact sheet to sheet_path; the report.

    look: a folder of the target look's images; each portrait is then measured (is it still a
    face, and is it closer to the look than its reconstruction)."""
    from styleforge.model.checkpoint import (
        load_generator,  # the model code is heavy; import it only to run
    )
    from styleforge.model.lpips import perceptual_distance

    use_cuda = params.device == "cuda" or (params.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    report: dict = {"device": device.type, "w_plus": params.projection.w_plus, "steps": params.projection.steps}
    if not photos:
        report["warning"] = "no photos to render: put some in the portraits.photos folder"
    out_dir.mkdir(parents=True, exist_ok=True)  # DVC's output exists even when every photo is skipped
    with timed(report):
        base = load_generator(base_model).to(device)
        blended = load_generator(blend_model).to(device)
        if base.config != blended.config:
            raise UserError(f"{base_model} and {blend_model} differ in shape: latents of one do not fit the other")
        distance, report["distance"] = perceptual_distance(*lpips_weights(params.lpips, lpips_cache))
        distance.to(device)
        largest = faces.model_copy(update={"multi_face": "largest"})
        target = target_signature(look, base.config.size) if look is not None else None

        results, tiles = [], []
        for photo, name in zip(tqdm(photos, desc="portraits", unit="photo"), _unique_names(photos)):
            start = time.perf_counter()
            try:
                face = aligned_face(photo, largest)
            except Skip as skip:
                results.append({"photo": str(photo), "status": "skipped", "reason": skip.reason})
                continue
            images, result = _portrait(face, base, blended, distance, params, out_dir / name, photo)
            if target is not None:
                result["quality"] = portrait_quality(*images, target, faces, base.config.size)
            tiles += images
            results.append({"photo": str(photo), "name": name, "status": "ok", **result,
                            "seconds": round(time.perf_counter() - start, 2)})
        _write_sheet(sheet_path, tiles, [r for r in results if r["status"] == "ok"], base.config.size)
    return {**report, **_summary(results), "results": results}


def lpips_weights(lpips: LpipsParams, cache_dir: Path) -> tuple[Path | None, Path | None, str]:
    """Local files of the LPIPS weights (fetched from paths or URLs, sha256-checked), or Nones and
    why they are missing. A checksum mismatch raises: wrong weights must not pass."""
    if not (lpips.vgg and lpips.lin):
        return None, None, "no LPIPS weights configured (portraits.lpips.vgg and .lin)"
    try:
        return (fetch(lpips.vgg, cache_dir, lpips.vgg_sha256), fetch(lpips.lin, cache_dir, lpips.lin_sha256),
                "")
    except Unavailable as exc:
        return None, None, str(exc)


def aligned_face(photo: Path, faces: FacesParams) -> np.ndarray:
    """The photo's face, found and aligned exactly as the dataset's faces are; or Skip."""
    try:
        rgb = load_image(photo, faces.max_pixels)
    except BadImage as exc:
        raise Skip(f"bad_image:{exc.reason}") from None
    crops, rejects = find_faces(rgb, faces)
    if not crops:
        raise Skip(",".join(sorted({reject.reason for reject in rejects})) or "no_face")
    return crops[0].image


def _portrait(face, base, blended, distance, params: PortraitsParams, folder: Path, photo: Path):
    from styleforge.model.generate import to_uint8
    from styleforge.model.project import project, save_latent, to_tensor

    target = to_tensor(face, base.config.size)
    projection = project(base, target, distance, **params.projection.model_dump(), seed=params.seed)
    with torch.inference_mode():
        portrait, _ = blended([projection.latent], input_is_latent=True, randomize_noise=False)
    images = [to_uint8(target)[0], to_uint8(projection.images)[0], to_uint8(portrait)[0]]
    for image, file in zip(images, ("input.png", "reconstruction.png", "portrait.png")):
        atomic_write(folder / file, lambda tmp, image=image: Image.fromarray(image).save(tmp, format="PNG"))
    value = round(projection.distance[0].item(), 5)
    save_latent(folder / "latent.npz", projection, 0, distance=value, w_plus=params.projection.w_plus, photo=str(photo))
    return images, {"distance": value, "start_distance": round(projection.history[0], 5)}


def portrait_quality(_input, reconstruction, portrait, target, faces: FacesParams, size: int) -> dict:
    """Is the portrait still a face, and did the blend move it toward the look (closer to the
    target than the base model's reconstruction of the same photo)?"""
    to_portrait = look_distance(look_signature([portrait], size), target)
    to_reconstruction = look_distance(look_signature([reconstruction], size), target)
    return {"face": has_face(portrait, faces), "portrait_to_target": round(to_portrait, 4),
            "reconstruction_to_target": round(to_reconstruction, 4), "closer": to_portrait < to_reconstruction}


def _unique_names(photos: list[Path]) -> list[str]:
    """Output folder names: the file stem made safe (ASCII letters, digits, - and _; no dots, so
    no `..` or hidden folders, no slashes), then -2, -3 ... until unique, case-insensitively (a
    file system may fold case), so no two photos share a folder whatever their names."""
    taken: set[str] = set()
    names = []
    for photo in photos:
        ascii_stem = unicodedata.normalize("NFKD", Path(photo.name).stem).encode("ascii", "ignore").decode()
        base = re.sub(r"[^A-Za-z0-9_-]+", "-", ascii_stem).strip("-_") or "photo"
        name, copy = base, 1
        while name.lower() in taken:
            copy += 1
            name = f"{base}-{copy}"
        taken.add(name.lower())
        names.append(name)
    return names


def _write_sheet(path: Path, tiles: list[np.ndarray], done: list[dict], size: int) -> None:
    captions = [text for r in done for text in (r["name"], f"d={r['distance']:.3f}", "portrait")]
    save_sheet(path, tiles, captions, tile=tile_for(size), cols=3)


def _summary(results: list[dict]) -> dict:
    done = [r for r in results if r["status"] == "ok"]
    return {
        "photos": len(results),
        "portraits": len(done),
        "skipped": len(results) - len(done),
        "skip_reasons": dict(Counter(r["reason"] for r in results if r["status"] != "ok")),
        "mean_distance": round(float(np.mean([r["distance"] for r in done])), 5) if done else None,
        "seconds_per_photo": round(float(np.mean([r["seconds"] for r in done])), 2) if done else None,
        **_quality_summary([r["quality"] for r in done if "quality" in r]),
    }


def _quality_summary(measured: list[dict]) -> dict:
    if not measured:
        return {}
    return {"quality": {"faces": sum(q["face"] for q in measured), "closer_to_look": sum(q["closer"] for q in measured),
                        "of": len(measured)}}

