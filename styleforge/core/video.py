"""Frames to a file, as they come: H.264 MP4, animated WebP or GIF, or a folder of numbered PNGs.

All three video formats go through the ffmpeg binary that imageio-ffmpeg ships, one frame at a
time down its pipe, so a walk of any length holds only the frames it is rendering. Pillow also
writes animated GIF and WebP, but it keeps every GIF frame until the file is closed and wants
WebP frames as one list: neither streams.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from styleforge.core.errors import UserError
from styleforge.core.io import atomic_write

# Per-frame palettes: one palette for a whole walk would be computed only after the last frame,
# which means buffering them all; `stats_mode=single` + `new=1` keep the GIF streaming.
_GIF_PALETTES = "split[a][b];[a]palettegen=stats_mode=single[p];[b][p]paletteuse=new=1"

# imageio_ffmpeg.write_frames arguments per extension. quality=None: these output_params set it.
FORMATS = {
    # yuv420p: what every player decodes; CRF 18: x264's "visually lossless"; faststart: the
    # index at the front, so a browser plays while it downloads
    ".mp4": {"codec": "libx264", "pix_fmt_out": "yuv420p", "output_params": ["-crf", "18", "-movflags", "+faststart"]},
    ".webp": {"codec": "libwebp_anim", "pix_fmt_out": "yuv420p", "output_params": ["-quality", "90", "-loop", "0"]},
    # GIF stores delays in hundredths of a second: 30 fps plays at 100/3
    ".gif": {"codec": "gif", "pix_fmt_out": "pal8", "output_params": ["-filter_complex", _GIF_PALETTES, "-loop", "0"]},
}
FRAME_PATTERN = "frame*.png"


class VideoError(UserError, ValueError):
    """An output the writer cannot make: an unknown extension, a folder that already holds frames."""


def output_kind(out: str) -> str:
    """'frames' for a folder (a trailing slash, or one that exists), else the video extension.

    Takes the text as typed: a Path would drop the trailing slash that marks a new folder.
    """
    if out.endswith(("/", "\\")) or Path(out).is_dir():
        folder = Path(out)
        if folder.is_dir() and any(folder.glob(FRAME_PATTERN)):
            raise VideoError(f"--out {out}: already holds {FRAME_PATTERN} from an earlier run; give an empty or new folder")
        return "frames"
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        known = ", ".join(FORMATS)
        raise VideoError(f"--out {out}: unknown extension {suffix or '(none)'!r}; give {known}, or a folder (DIR/) for PNG frames")
    return suffix


def write_frames(out: str, frames: Iterable[np.ndarray], fps: float, total: int) -> Path:
    """Write RGB uint8 frames [H, W, 3] to out (see output_kind); returns the path written.

    total (how many frames will come) sets the width of PNG frame numbers, so that they sort.
    """
    kind = output_kind(out)
    if kind == "frames":
        return _write_pngs(Path(out), frames, digits=max(6, len(str(total - 1))))
    return atomic_write(out, lambda tmp: _encode(tmp, iter(frames), fps, kind, name=out))


def _write_pngs(folder: Path, frames: Iterable[np.ndarray], digits: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for index, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"frame{index:0{digits}d}.png")
    return folder


def _encode(path: Path, frames: Iterator[np.ndarray], fps: float, kind: str, name: str) -> None:
    """Encode into path (a temp file beside the output called name, which the errors give)."""
    first = next(frames)
    height, width = first.shape[:2]
    # Frames are whole multiples of the model's power-of-two size, so never odd: macro_block_size=2
    # keeps imageio-ffmpeg from rescaling them to multiples of 16. Errors only: palettegen warns
    # about duplicate colours on flat GIF frames, and failures are caught by the count below.
    writer = imageio_ffmpeg.write_frames(
        str(path), (width, height), fps=fps, quality=None, macro_block_size=2, ffmpeg_log_level="error", **FORMATS[kind]
    )
    writer.send(None)
    written = 0
    try:
        for frame in itertools.chain([first], frames):
            writer.send(np.ascontiguousarray(frame))
            written += 1
    finally:
        writer.close()
    # imageio-ffmpeg does not look at ffmpeg's exit status: count what actually landed in the file
    try:
        landed = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
    except (RuntimeError, OSError) as exc:
        raise VideoError(f"{name}: ffmpeg wrote no readable video ({exc})") from exc
    if landed != written:
        raise VideoError(f"{name}: ffmpeg wrote {landed} of {written} frames (its messages are above)")
