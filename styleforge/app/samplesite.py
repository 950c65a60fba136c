"""The sample site: the project's demo and test target, served on 127.0.0.1 (there is no internet).

Pages are committed in styleforge/sample_site/. Images are generated at start-up, deterministically,
from real photos that ship inside installed packages (scikit-image's LFW faces and astronaut,
matplotlib's Grace Hopper, a cat, coffee and textures that are not faces), in the awkward formats a
real scrape meets: RGBA, CMYK, palette PNG, GIF, 16-bit PNG, grayscale, EXIF-rotated, many sizes.

    /index.html          static gallery: src, srcset (w and x), lazy data-* attributes, <picture>,
                         relative, root-relative and absolute URLs; `.gallery` holds the main set
    /scroll.html         builds itself with JavaScript from /api/scroll?batch=N as the reader scrolls
    /game/index.html     the target look: the same faces cel-shaded like a game's player cards
    /game/scroll.html    more of them, fed by /api/scroll?feed=game&batch=N
    /models/...          the demo's base face model (package data), as a model hub would serve it
    /empty.html          a page with no images
    /private/...         disallowed by robots.txt

The real photos are what the demo's base model was trained on (recipes/base-faces/); the game
look is what the demo fine-tunes it toward, so its portraits show a style transfer.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import sys
import tempfile
import threading
from contextlib import contextmanager
from functools import partial
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from string import Template
from typing import Iterator
from urllib.parse import parse_qs, urlsplit

import numpy as np
import skimage.data
from matplotlib import cbook
from PIL import Image, ImageDraw, ImageFilter, ImageOps

PAGES_DIR = Path(__file__).with_name("sample_site")
HOST = "127.0.0.1"
DEFAULT_PORT = 8765
log = logging.getLogger(__name__)

FACE_COUNT = 100  # skimage.data.lfw_subset(): the first 100 patches are faces, the rest are not
PRIVATE_FACES = range(97, 100)  # only under /private/, which robots.txt disallows
PICTURE_FACES = range(23, 26)  # index.html offers these as a WebP <source> and a JPEG <img>
JPEG_QUALITY = 90
EXIF_ORIENTATION = 0x0112
ROTATE_90_CLOCKWISE_TO_VIEW = 6  # the EXIF orientation value: pixels are stored a quarter-turn left

# The game look: every public face cel-shaded; the static page shows the first half, the scroll
# feed the rest. Shading: a smoothed, contrast-stretched luminance posterised into GAME_LEVELS
# flat tones of a violet-to-cream ramp, with dark outlines; the levels and blur are the coarsest
# at which the faces stage still finds 9 in 10 of the faces (measured on these 97).
GAME_FACES = [index for index in range(FACE_COUNT) if index not in PRIVATE_FACES]
GAME_STATIC = GAME_FACES[: len(GAME_FACES) // 2]
GAME_SCROLL = GAME_FACES[len(GAME_FACES) // 2 :]
GAME_RAMP = ((46, 30, 84), (150, 70, 110), (232, 140, 100), (255, 214, 170))  # shadow .. highlight, RGB
GAME_LEVELS = 6
GAME_BLUR_SIGMA = 2.5
GAME_OUTLINE = (25, 15, 35)

# The scroll feed: faces 30-89, twelve a batch, with a texture, a near duplicate (a smaller Grace
# Hopper) and an exact duplicate (the astronaut under a cache-busting query) mixed in.
SCROLL_FACES = range(30, 90)
FEED_BATCH = 12
SCROLL_EXTRAS = {0: "img/grass.jpg", 1: "img/grace_hopper-256.jpg", 2: "img/astronaut.jpg?v=2"}


def write_images(root: Path) -> None:
    """Every image the pages use, under root/img and root/private/img (well under a second)."""
    public, private = root / "img", root / "private" / "img"
    public.mkdir(parents=True, exist_ok=True)
    private.mkdir(parents=True, exist_ok=True)
    faces = [_face(patch, index) for index, patch in enumerate(skimage.data.lfw_subset()[:FACE_COUNT])]
    for index, face in enumerate(faces):
        if index in PRIVATE_FACES:
            _save(face.resize((160, 160), Image.Resampling.LANCZOS), private / f"face-{index:03d}.jpg")
        else:
            _write_face_sizes(face, index, public)
    _write_awkward_formats(faces, public)
    _write_photos(public)
    game = root / "game" / "img"
    game.mkdir(parents=True, exist_ok=True)
    for index in GAME_FACES:
        Image.fromarray(cel_shade(np.asarray(faces[index]))).save(game / f"face-{index:03d}.png")


def cel_shade(rgb: np.ndarray) -> np.ndarray:
    """A photo as flat-shaded game art: few tones of a fixed ramp, dark outlines (RGB uint8)."""
    import cv2

    gray = cv2.GaussianBlur(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), GAME_BLUR_SIGMA)
    low, high = np.percentile(gray, (1, 99))
    tone = np.clip((gray - low) / max(high - low, 1.0), 0, 0.999)
    keys = np.asarray(GAME_RAMP, np.float32)
    position = np.linspace(0, len(keys) - 1, GAME_LEVELS)
    below = np.floor(position).astype(int)
    above = np.minimum(below + 1, len(keys) - 1)
    ramp = (keys[below] * (1 - (position - below))[:, None] + keys[above] * (position - below)[:, None]).astype(np.uint8)
    shaded = ramp[(tone * GAME_LEVELS).astype(int)]
    edges = cv2.dilate(cv2.Canny(np.uint8(tone * 255), 100, 250), np.ones((3, 3), np.uint8))
    shaded[edges > 0] = GAME_OUTLINE
    return shaded


def _face(patch: np.ndarray, index: int) -> Image.Image:
    """A 25x25 LFW patch as a 320 px photo. Most get a light duotone (shadows and highlights
    varied per face) so the set is not all grayscale; every fifth stays black-and-white, like the
    old photos a real scrape finds."""
    gray = Image.fromarray(np.uint8(np.rint(patch * 255))).resize((320, 320), Image.Resampling.LANCZOS)
    if index % 5 == 0:
        return gray.convert("RGB")
    shift = np.random.default_rng(index).integers(-12, 13, 3)
    shadow = tuple(int(v) for v in np.clip(np.array([30, 20, 16]) + shift, 0, 255))
    highlight = tuple(int(v) for v in np.clip(np.array([255, 232, 208]) + shift, 0, 255))
    return ImageOps.colorize(gray, black=shadow, white=highlight)


def _write_face_sizes(face: Image.Image, index: int, folder: Path) -> None:
    """The sizes the pages pick from: 80 and 160 px for srcset w descriptors, @2x for x
    descriptors, and WebP for the faces that index.html offers as <picture> sources."""
    stem = f"face-{index:03d}"
    regular = face.resize((160, 160), Image.Resampling.LANCZOS)
    _save(regular, folder / f"{stem}.jpg")
    _save(regular.resize((80, 80), Image.Resampling.LANCZOS), folder / f"{stem}-80.jpg")
    _save(face, folder / f"{stem}@2x.jpg")
    if index in PICTURE_FACES:
        regular.save(folder / f"{stem}.webp", quality=80)


def _write_awkward_formats(faces: list[Image.Image], folder: Path) -> None:
    """Faces 90-96 only in the modes and formats that trip up naive decoders."""
    rgba = faces[90].convert("RGBA")
    rgba.putalpha(_soft_oval(rgba.size))
    rgba.save(folder / "face-090-alpha.png")
    faces[91].convert("CMYK").save(folder / "face-091-cmyk.jpg", quality=JPEG_QUALITY)
    faces[92].convert("P", palette=Image.Palette.ADAPTIVE, colors=64).save(folder / "face-092-palette.png")
    faces[93].save(folder / "face-093.gif")
    sixteen_bit = np.asarray(faces[94].convert("L"), np.uint16) * 257  # full 0..65535 range
    Image.fromarray(sixteen_bit).save(folder / "face-094-16bit.png")
    _save(faces[95].convert("L"), folder / "face-095-gray.jpg")
    _write_exif_rotated(faces[96], folder / "face-096-rotated.jpg")


def _soft_oval(size: tuple[int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    width, height = size
    ImageDraw.Draw(mask).ellipse((width // 10, 0, width - width // 10, height - 1), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(width // 20))


def _write_exif_rotated(face: Image.Image, path: Path) -> None:
    """A portrait stored on its side with orientation 6, as phone cameras write them: it shows
    upright only to readers that apply the EXIF orientation."""
    portrait = ImageOps.pad(face, (320, 400), color=(236, 230, 220))
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_90_CLOCKWISE_TO_VIEW
    stored = portrait.transpose(Image.Transpose.ROTATE_90)  # a quarter-turn counter-clockwise
    stored.save(path, quality=JPEG_QUALITY, exif=exif.tobytes())


def _write_photos(folder: Path) -> None:
    """Larger photos: two real portraits in several sizes (near duplicates and a thumbnail too
    small to use), a cameraman, and a cat, coffee and textures a face detector must reject."""
    astronaut = Image.fromarray(skimage.data.astronaut())
    _save(astronaut, folder / "astronaut.jpg")
    for side in (200, 48):
        _save(astronaut.resize((side, side), Image.Resampling.LANCZOS), folder / f"astronaut-{side}.jpg")
    with cbook.get_sample_data("grace_hopper.jpg") as original:
        grace_hopper = original.read()
    (folder / "grace_hopper.jpg").write_bytes(grace_hopper)
    small = Image.open(io.BytesIO(grace_hopper))
    _save(small.resize((256, 300), Image.Resampling.LANCZOS), folder / "grace_hopper-256.jpg")
    _save(Image.fromarray(skimage.data.camera()), folder / "camera.jpg")
    _save(Image.fromarray(skimage.data.chelsea()), folder / "chelsea.jpg")
    coffee = Image.fromarray(skimage.data.coffee())
    _save(coffee, folder / "coffee.jpg")
    coffee.save(folder / "coffee.webp", quality=80)
    Image.fromarray(skimage.data.brick()).save(folder / "brick.png")
    _save(Image.fromarray(skimage.data.grass()[:300]), folder / "grass.jpg")
    icon = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(icon).ellipse((2, 2, 29, 29), fill=(200, 80, 40, 255))
    icon.save(folder / "icon.png")


def _save(image: Image.Image, path: Path) -> None:
    image.save(path, quality=JPEG_QUALITY)


def game_batches() -> list[list[dict]]:
    """The game feed behind /api/scroll?feed=game."""
    faces = [{"src": f"/game/img/face-{index:03d}.png", "alt": f"player {index}"} for index in GAME_SCROLL]
    return [faces[start : start + FEED_BATCH] for start in range(0, len(faces), FEED_BATCH)]


def scroll_batches() -> list[list[dict]]:
    """The feed behind /api/scroll: every fourth face also offers a srcset, as feeds often do."""
    faces = list(SCROLL_FACES)
    batches = []
    for start in range(0, len(faces), FEED_BATCH):
        batch = [_feed_item(index) for index in faces[start : start + FEED_BATCH]]
        extra = SCROLL_EXTRAS.get(len(batches))
        if extra:
            batch.append({"src": f"/{extra}", "alt": Path(urlsplit(extra).path).stem})
        batches.append(batch)
    return batches


def _feed_item(index: int) -> dict:
    name = f"/img/face-{index:03d}"
    item = {"src": f"{name}.jpg", "alt": f"face {index}"}
    if index % 4 == 0:
        item["srcset"] = f"{name}-80.jpg 80w, {name}.jpg 160w, {name}@2x.jpg 320w"
    return item


class SampleSiteHandler(SimpleHTTPRequestHandler):
    """Static files from the built site, plus the JSON feed behind the infinite-scroll page."""

    feeds = {"photos": scroll_batches(), "game": game_batches()}

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/api/scroll":
            query = parse_qs(url.query)
            self._send_batch(query.get("feed", ["photos"])[0], query.get("batch", ["0"])[0])
        else:
            super().do_GET()

    def _send_batch(self, feed: str, batch: str) -> None:
        batches = self.feeds.get(feed)
        if batches is None or not batch.isdigit() or int(batch) >= len(batches):
            self.send_error(HTTPStatus.NOT_FOUND, "no such feed or batch")
            return
        number = int(batch)
        following = number + 1 if number + 1 < len(batches) else None
        self.send_bytes(json.dumps({"images": batches[number], "next": following}).encode(), "application/json")

    def send_bytes(self, body: bytes, content_type: str, status: int = HTTPStatus.OK) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def list_directory(self, path: str) -> None:
        # A real site does not list its folders, and a listing would hand a crawler every image.
        self.send_error(HTTPStatus.NOT_FOUND)

    def log_message(self, format: str, *args) -> None:  # the base class names it `format`
        log.debug("%s " + format, self.address_string(), *args)


class QuietThreadingHTTPServer(ThreadingHTTPServer):
    """Clients that hang up mid-response (a scraper enforcing its size cap) are normal, not errors."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def build_site(root: Path, origin: str) -> Path:
    """Write pages and images under root. Pages are templates: $origin becomes this server's
    http://host:port, so the gallery can hold absolute URLs; $game_gallery the game page's cards."""
    cards = "\n    ".join(f'<img src="img/face-{index:03d}.png" alt="player {index}">' for index in GAME_STATIC)
    for page in (path for path in PAGES_DIR.rglob("*") if path.is_file()):
        target = root / page.relative_to(PAGES_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        if page.suffix == ".html":
            target.write_text(Template(page.read_text()).substitute(origin=origin, game_gallery=cards))
        else:
            shutil.copyfile(page, target)
    write_images(root)
    return root


@contextmanager
def serve(port: int = 0, handler: type[SampleSiteHandler] = SampleSiteHandler) -> Iterator[str]:
    """Serve the sample site on 127.0.0.1 in a daemon thread; yields its base URL (no trailing /).

    port 0 picks a free port. handler lets tests add behaviours of their own in a subclass.
    """
    with tempfile.TemporaryDirectory(prefix="styleforge-site-") as tmp:
        server = QuietThreadingHTTPServer((HOST, port), partial(handler, directory=tmp))
        base_url = f"http://{HOST}:{server.server_address[1]}"
        try:
            build_site(Path(tmp), base_url)
            threading.Thread(target=server.serve_forever, name="sample-site", daemon=True).start()
            try:
                yield base_url
            finally:
                server.shutdown()  # only once serving: shutdown() waits for serve_forever to end
        finally:
            server.server_close()


def serve_forever(port: int = DEFAULT_PORT) -> None:
    """Serve the sample site until interrupted (what `styleforge sample-site` runs)."""
    with serve(port) as base_url:
        print(f"sample site: {base_url}/index.html ({FACE_COUNT} faces and more; Ctrl-C stops)", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass
