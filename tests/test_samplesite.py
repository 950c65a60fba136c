"""The sample site: deterministic images in the promised formats, served with its feed and rules."""

import hashlib
import io
from urllib.parse import urljoin

import requests
from PIL import Image, ImageOps

from styleforge.app.samplesite import build_site, serve
from tests.conftest import REPO


def digests(root):
    return {p.relative_to(root): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def test_images_are_deterministic_and_in_the_awkward_formats(tmp_path):
    first, second = build_site(tmp_path / "a", "http://127.0.0.1:1"), build_site(tmp_path / "b", "http://127.0.0.1:1")
    assert digests(first) == digests(second)
    img = first / "img"
    modes = {name: Image.open(img / name).mode for name in (
        "face-090-alpha.png", "face-091-cmyk.jpg", "face-092-palette.png", "face-093.gif",
        "face-094-16bit.png", "face-095-gray.jpg", "camera.jpg",
    )}  # fmt: skip
    assert modes == {
        "face-090-alpha.png": "RGBA", "face-091-cmyk.jpg": "CMYK", "face-092-palette.png": "P",
        "face-093.gif": "P", "face-094-16bit.png": "I;16", "face-095-gray.jpg": "L", "camera.jpg": "L",
    }  # fmt: skip
    rotated = Image.open(img / "face-096-rotated.jpg")
    assert rotated.getexif()[0x0112] == 6 and rotated.size == (400, 320)
    assert ImageOps.exif_transpose(rotated).size == (320, 400)
    assert len(list(img.glob("face-0[0-9][0-9].jpg"))) == 97 and len(list((first / "private/img").iterdir())) == 3
    assert "$origin" not in (first / "index.html").read_text()


def test_served_site_has_absolute_urls_robots_rules_and_a_finite_feed():
    with serve() as base_url:
        index = requests.get(f"{base_url}/index.html", timeout=5).text
        assert f'src="{base_url}/img/face-026.jpg"' in index
        assert "Disallow: /private/" in requests.get(f"{base_url}/robots.txt", timeout=5).text
        batches, batch = [], 0
        while batch is not None:
            answer = requests.get(f"{base_url}/api/scroll", params={"batch": batch}, timeout=5).json()
            batches.append(answer["images"])
            batch = answer["next"]
        assert [len(b) for b in batches] == [13, 13, 13, 12, 12]
        assert requests.get(f"{base_url}/api/scroll?batch=5", timeout=5).status_code == 404
        assert requests.get(f"{base_url}/img/", timeout=5).status_code == 404, "no folder listings"
        assert requests.get(f"{base_url}/img/face-001.webp", timeout=5).status_code == 404


def test_the_game_pages_show_every_public_face_in_the_game_look_once():
    """The demo's target look: the static game page and the game feed together hold each public
    face once, each a cel-shaded copy of that face (few tones of the ramp, outlines), and the
    faces stage finds a face in most of them."""
    import numpy as np

    from styleforge.app.samplesite import GAME_FACES, GAME_LEVELS, GAME_OUTLINE
    from styleforge.core.config import load_params
    from styleforge.tasks.quality import face_rate

    with serve() as base_url:
        page_url = f"{base_url}/game/index.html"
        static = [urljoin(page_url, src) for src in _image_sources(requests.get(page_url, timeout=5).text)]
        fed, batch = [], 0
        while batch is not None:
            answer = requests.get(f"{base_url}/api/scroll", params={"feed": "game", "batch": batch}, timeout=5).json()
            fed += [urljoin(base_url, item["src"]) for item in answer["images"]]
            batch = answer["next"]
        assert all("/game/img/" in url for url in static + fed)
        assert sorted(url.rsplit("/", 1)[1] for url in static + fed) == [f"face-{index:03d}.png" for index in GAME_FACES]

        def fetch(url: str) -> np.ndarray:
            return np.asarray(Image.open(io.BytesIO(requests.get(url, timeout=5).content)).convert("RGB"))

        for index in (GAME_FACES[0], GAME_FACES[-1]):
            game, photo = fetch(f"{base_url}/game/img/face-{index:03d}.png"), fetch(f"{base_url}/img/face-{index:03d}.jpg")
            tones = {tuple(int(v) for v in c) for c in game.reshape(-1, 3)}
            assert 3 <= len(tones - {GAME_OUTLINE}) <= GAME_LEVELS, f"a few flat tones (and outlines), not {len(tones)}"
            # the same face: the game picture's light and dark follow the photo's
            light = np.asarray(Image.fromarray(game).convert("L").resize(photo.shape[1::-1]), np.float32)
            assert np.corrcoef(light.ravel(), photo.mean(axis=2).ravel())[0, 1] > 0.5
        faces = load_params(REPO / "params.yaml").faces  # the demo's: eyes not required of flat art
        assert face_rate([fetch(url) for url in (static + fed)[::4]], faces) >= 0.8


def _image_sources(html: str) -> list[str]:
    from bs4 import BeautifulSoup

    return [img["src"] for img in BeautifulSoup(html, "html.parser").find_all("img")]
