"""Training images: a folder (with the augment stage's dataset.json, or any images), read through
the project's one image reader, and the step-addressed sampler that makes resume exact."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from styleforge.core.images import load_image
from styleforge.model.distributed import Ranks

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
log = logging.getLogger(__name__)


def list_images(folder: Path) -> tuple[list[Path], int | None]:
    """The images of a folder: those dataset.json lists (and its resolution), else every image."""
    if not folder.is_dir():
        raise FileNotFoundError(f"training images: {folder} is not a folder (run the stage that makes it)")
    manifest = folder / "dataset.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        return [folder / item["file"] for item in meta["images"]], meta.get("resolution")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), None


class ImageFolder(Dataset):
    """RGB uint8 [3, R, R] images at the model's resolution, centre-cropped square if needed."""

    def __init__(self, folder: Path, resolution: int):
        self.paths, declared = list_images(folder)
        if not self.paths:
            raise ValueError(f"training images: no images in {folder}")
        missing = [p.name for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"training images: {len(missing)} listed in {folder}/dataset.json are missing, "
                                    f"e.g. {', '.join(missing[:3])}")
        self.resolution = resolution
        self.source_resolution = declared or max(load_image(self.paths[0]).shape[:2])
        if self.source_resolution != resolution:
            log.info("dataset %s is %dx%d, the model %dx%d: images are resized as they load", folder,
                     self.source_resolution, self.source_resolution, resolution, resolution)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        image = Image.fromarray(load_image(self.paths[index]))
        side = min(image.size)
        if image.width != image.height:
            left, top = (image.width - side) // 2, (image.height - side) // 2
            image = image.crop((left, top, left + side, top + side))
        if side != self.resolution:
            image = image.resize((self.resolution, self.resolution), Image.Resampling.LANCZOS)
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


class StepBatchSampler(Sampler):
    """This rank's share of batch `step` of an endless shuffled stream, from `start_step` on.

    Global position k is image perm_e[k mod n] with e = k // n and perm_e a permutation seeded
    by (seed, e); step s covers positions [s*batch, (s+1)*batch), rank r its r-th slice. A
    resumed run therefore needs only the step to see exactly the images it would have seen.
    """

    def __init__(self, size: int, batch: int, seed: int, ranks: Ranks, start_step: int):
        self.size, self.batch, self.seed, self.start_step = size, batch, seed, start_step
        self.per_rank = batch // ranks.world
        self.offset = ranks.rank * self.per_rank
        self._epoch, self._perm = -1, None

    def _image(self, position: int) -> int:
        epoch = position // self.size
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=gen).tolist()
        return self._perm[position % self.size]

    def __iter__(self):
        step = self.start_step
        while True:
            first = step * self.batch + self.offset
            yield [self._image(k) for k in range(first, first + self.per_rank)]
            step += 1


def endless_batches(dataset: ImageFolder, batch: int, seed: int, workers: int, ranks: Ranks, start_step: int):
    """uint8 batches [per-rank batch, 3, R, R] from step start_step on, forever."""
    sampler = StepBatchSampler(len(dataset), batch, seed, ranks, start_step)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                        pin_memory=ranks.device.type == "cuda", persistent_workers=workers > 0)
    return iter(loader)
