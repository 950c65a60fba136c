"""Atomic writes: all or nothing, and the permissions a plain write would give the file."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from styleforge.core.io import atomic_write, atomic_write_bytes, atomic_write_json


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_an_atomic_write_has_the_mode_of_a_plain_write_beside_it(tmp_path):
    (tmp_path / "plain.json").write_text("{}")
    atomic_write_json(tmp_path / "report.json", {"a": 1})
    atomic_write_bytes(tmp_path / "model.pt", b"weights")
    assert mode(tmp_path / "report.json") == mode(tmp_path / "plain.json") == mode(tmp_path / "model.pt")
    assert mode(tmp_path / "report.json") != 0o600


def test_the_umask_of_the_process_decides_as_for_any_file(tmp_path):
    """Under umask 077 a plain write is 0600, and so is ours; under 002 both are 0664."""
    script = ("import os, sys; from pathlib import Path; from styleforge.core.io import atomic_write_json; "
              "atomic_write_json(Path(sys.argv[1]) / 'a.json', {}); (Path(sys.argv[1]) / 'b.json').write_text('{}')")
    for umask, expected in ((0o077, 0o600), (0o002, 0o664)):
        folder = tmp_path / oct(umask)
        folder.mkdir()
        subprocess.run([sys.executable, "-c", script, str(folder)], check=True, preexec_fn=lambda u=umask: os.umask(u))
        assert mode(folder / "a.json") == mode(folder / "b.json") == expected


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.pt"
    target.write_bytes(b"old")

    def half_then_fail(tmp):
        tmp.write_bytes(b"ne")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, half_then_fail)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]
