import hashlib

import pytest

from styleforge.core.fetch import FetchError, Unavailable, fetch


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_url_is_downloaded_once_and_checksummed(tmp_path):
    source, cache = tmp_path / "vgg16-copy.pth", tmp_path / "cache"
    source.write_bytes(b"weights")
    fetched = fetch(source.as_uri(), cache, _sha256(b"weights"))
    assert fetched.parent == cache and fetched.name.endswith("-vgg16-copy.pth")
    assert fetched.read_bytes() == b"weights"
    source.unlink()  # a second call must not download again
    assert fetch(source.as_uri(), cache, _sha256(b"weights")[:8]) == fetched  # a leading prefix will do


def test_a_wrong_checksum_fails_and_never_takes_the_cached_name(tmp_path):
    source, cache = tmp_path / "vgg.pth", tmp_path / "cache"
    source.write_bytes(b"weights")
    with pytest.raises(FetchError, match="sha256 is"):
        fetch(source.as_uri(), cache, "0" * 64)
    assert list(cache.iterdir()) == []
    with pytest.raises(FetchError, match="sha256 is"):
        fetch(str(source), cache, "0" * 8)


def test_relative_paths_are_from_root_and_missing_files_are_unavailable(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"checkpoint")
    assert fetch("model.pt", tmp_path / "cache", root=tmp_path) == tmp_path / "model.pt"
    with pytest.raises(Unavailable, match="does not exist"):
        fetch("absent.pt", tmp_path / "cache", root=tmp_path)
    with pytest.raises(Unavailable, match="cannot download"):
        fetch((tmp_path / "absent.pt").as_uri(), tmp_path / "cache")
