"""walk: what the blend does, as video -> reports/videos/walk.mp4 and morph-<photo>.mp4.

- walk.mp4: a looped latent walk (lerp in W) of the blended model through walk.seeds, the model's
  constant noise: faces in the target look turning into one another.
- morph-<photo>.mp4: each portrait's projected latent rendered by the base model, then by the
  blends at each layer-swap cut (coarse layers from the base), then by the fine-tuned model and
  back: the photo's face taking on the look one resolution at a time.

Frames stream to the encoder (imageio-ffmpeg's H.264), so a long walk costs no memory.
"""

from __future__ import annotations

from pathlib import Path

from styleforge.core.config import BlendParams, WalkParams
from styleforge.core.reports import timed, write_report
from styleforge.core.video import write_frames
from styleforge.model.checkpoint import load_generator
from styleforge.model.project import load_latent
from styleforge.model.walk import morph_frames, seed_keyframes, walk_frames
from styleforge.tasks.paths import BASE_MODEL, BLEND_MODEL, FINETUNED_MODEL, PORTRAITS_DIR, VIDEOS

WALK_VIDEO = VIDEOS / "walk.mp4"


def run(params: WalkParams, blend: BlendParams, root: Path = Path(".")) -> dict:
    """blend: which side the coarse layers come from, so the morph passes the blends the stage made."""
    report: dict = {}
    with timed(report):
        (root / VIDEOS).mkdir(parents=True, exist_ok=True)
        for stale in (root / VIDEOS).glob("*.mp4"):  # a portrait since removed leaves no old morph
            stale.unlink()
        blended = load_generator(root / BLEND_MODEL)
        cells = [seed_keyframes(blended, params.seeds, params.truncation)]
        write_frames(str(root / WALK_VIDEO), walk_frames(blended, cells, params.frames, loop=True), params.fps,
                     total=params.frames)
        base, finetuned = load_generator(root / BASE_MODEL), load_generator(root / FINETUNED_MODEL)
        morphs = []
        for latent_file in sorted((root / PORTRAITS_DIR).glob("*/latent.npz"))[: params.morphs]:
            latent = load_latent(latent_file)[0]
            out = root / VIDEOS / f"morph-{latent_file.parent.name}.mp4"
            frames = morph_frames(base, finetuned, latent, params.morph_frames, loop=True, reverse=blend.reverse)
            write_frames(str(out), frames, params.fps, total=params.morph_frames)
            morphs.append(str(out.relative_to(root)))
        report.update(walk=str(WALK_VIDEO), seeds=list(params.seeds), frames=params.frames, fps=params.fps,
                      morphs=morphs, morph_frames=params.morph_frames, size=blended.config.size)
    write_report("walk", report, root)
    return report
