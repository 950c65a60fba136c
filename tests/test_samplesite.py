"""The sample site: deterministic images in the promised formats, served with its feed and rules."""

import hashlib

import requests
from PIL import Image, ImageOps

from styleforge.app.samplesite import build_site, serve


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
