"""Weights and checkpoints from a path or a URL: downloaded once into a cache, checked by sha256.

A sha256 may be the full digest or its leading hex digits (torchvision names its files by 8).
Unavailable (no file at all) is a FetchError that callers may answer with a fallback or a skip;
any other FetchError (the wrong file) must fail: wrong weights must not pass.
"""

from __future__ import annotations

import hashlib
import http.client
import sys
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import urlopen

from tqdm import tqdm

from styleforge.core.errors import UserError
from styleforge.core.io import atomic_write

URL_SCHEMES = ("http", "https", "file")
TIMEOUT_S = 60


class FetchError(UserError):
    """A file was had but its sha256 is not the one asked for."""


class Unavailable(FetchError):
    """No file: the path does not exist or the download failed."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch(source: str, cache_dir: str | Path, sha256: str | None = None, root: Path | None = None) -> Path:
    """A local file for source: a path (a relative one from root), or a URL downloaded once into cache_dir."""
    if urlparse(source).scheme not in URL_SCHEMES:
        path = Path(source).expanduser()
        if root is not None and not path.is_absolute():
            path = root / path
        if not path.is_file():
            raise Unavailable(f"{path} does not exist")
        _check(path, sha256, str(path))
        return path

    # keyed by the URL too: LPIPS' v0.0 and v0.1 heads are both called vgg.pth
    name = Path(urlparse(source).path).name or "download"
    path = Path(cache_dir) / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{name}"
    if path.is_file():
        _check(path, sha256, str(path))  # the cached copy may have been replaced since
        return path
    try:
        return atomic_write(path, lambda tmp: _download(source, tmp, name, sha256))  # a bad file never takes the name
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError: no network, 404, refused
        raise Unavailable(f"cannot download {source}: {exc}") from None


class Truncated(FetchError):
    """The server closed the connection before the length it announced had arrived."""


def _download(url: str, target: Path, name: str, sha256: str | None) -> None:
    with urlopen(url, timeout=TIMEOUT_S) as response, target.open("wb") as out:
        total = int(response.headers.get("content-length") or 0) or None
        received = 0
        with tqdm(total=total, unit="B", unit_scale=True, desc=name, file=sys.stderr) as bar:
            try:
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    received += len(block)
                    bar.update(len(block))
            except http.client.IncompleteRead as exc:
                received += len(exc.partial)
    if total is not None and received != total:
        raise Truncated(f"download of {url} is truncated: {received} of {total} bytes arrived")
    _check(target, sha256, f"download of {url}")


def _check(path: Path, sha256: str | None, what: str) -> None:
    if sha256 and not (actual := file_sha256(path)).startswith(sha256.lower()):
        raise FetchError(
            f"{what}: sha256 is {actual}, expected {sha256} (a corrupt, stale or different file)"
        )
