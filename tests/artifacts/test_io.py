"""Safe output: a user's files survive every refused write; tinylm replaces only what it wrote; a killed write's
temp files are cleaned at the next write; outputs get the usual modes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tinylm.artifacts.io import MARKER, atomic_dir, atomic_file, check_output_dir, check_output_file, is_tinylm_dir
from tinylm.errors import TinyLMError


def user_folder(path: Path) -> Path:
    """A folder holding a user's file that must survive."""
    path.mkdir(parents=True)
    (path / "week_of_checkpoints.txt").write_text("precious")
    return path


def write(target: Path, text: str = "new", overwrite: bool = False) -> None:
    with atomic_dir(target, overwrite=overwrite) as tmp:
        (tmp / "model.txt").write_text(text)


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if "tinylm-" in p.name)


@pytest.mark.parametrize("overwrite", [False, True])
def test_a_users_folder_survives_with_and_without_overwrite(tmp_path, overwrite):
    target = user_folder(tmp_path / "out")
    with pytest.raises(TinyLMError, match="not empty" if not overwrite else "not written by tinylm"):
        write(target, overwrite=overwrite)
    with pytest.raises(TinyLMError):
        check_output_dir(target, overwrite=overwrite)
    assert (target / "week_of_checkpoints.txt").read_text() == "precious"
    assert sorted(p.name for p in target.iterdir()) == ["week_of_checkpoints.txt"]
    assert leftovers(tmp_path) == []


def test_only_a_folder_tinylm_wrote_is_replaced_and_only_with_overwrite(tmp_path):
    target = tmp_path / "out"
    write(target, "first")
    assert is_tinylm_dir(target) and (target / MARKER).is_file()
    with pytest.raises(TinyLMError, match="pass --overwrite"):
        write(target, "second")
    assert (target / "model.txt").read_text() == "first"
    write(target, "second", overwrite=True)
    assert (target / "model.txt").read_text() == "second"
    assert leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    write(empty)  # an empty folder is no one's work: written without --overwrite
    assert (empty / "model.txt").is_file()


def test_an_error_while_writing_leaves_the_previous_folder_and_no_temp(tmp_path):
    target = tmp_path / "out"
    write(target, "first")
    with pytest.raises(RuntimeError):
        with atomic_dir(target, overwrite=True) as tmp:
            (tmp / "model.txt").write_text("half")
            raise RuntimeError("killed half way")
    assert (target / "model.txt").read_text() == "first"
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("name", [".", "..", "parent", "grandparent", "cwd-absolute"])
def test_working_dir_and_its_parents_are_never_targets(tmp_path, monkeypatch, name):
    cwd = tmp_path / "project" / "work"
    cwd.mkdir(parents=True)
    (cwd / "keep.txt").write_text("precious")
    monkeypatch.chdir(cwd)
    target = {".": Path("."), "..": Path(".."), "parent": cwd.parent, "grandparent": tmp_path,
              "cwd-absolute": cwd}[name]
    for overwrite in (False, True):
        with pytest.raises(TinyLMError, match="refused"):
            write(target, overwrite=overwrite)
    assert (cwd / "keep.txt").read_text() == "precious"
    assert leftovers(cwd) == [] and leftovers(cwd.parent) == [] and leftovers(tmp_path) == []


def test_protected_paths_of_a_run(tmp_path):
    run = tmp_path / "runs" / "quickstart"
    (run / "logs").mkdir(parents=True)
    for target in (run, run.parent):
        with pytest.raises(TinyLMError, match="which this run also writes"):
            check_output_dir(target, overwrite=True, protect=[run / "logs"])
    assert check_output_dir(run / "model", protect=[run / "logs"]) == run / "model"


def test_files_where_folders_are_expected_and_folders_where_files_are(tmp_path):
    (tmp_path / "a_file").write_text("x")
    with pytest.raises(TinyLMError, match="is a file, not a folder"):
        check_output_dir(tmp_path / "a_file")
    with pytest.raises(TinyLMError, match="is a file; choose another location"):
        check_output_dir(tmp_path / "a_file" / "out")
    with pytest.raises(TinyLMError, match="is a file; choose another location"):
        check_output_file(tmp_path / "a_file" / "results.json")
    with pytest.raises(TinyLMError, match="is a folder; name a file"):
        check_output_file(tmp_path)
    with pytest.raises(TinyLMError, match="is a folder"):
        with atomic_file(tmp_path) as handle:
            handle.write("x")
    assert (tmp_path / "a_file").read_text() == "x"


KILLED_WRITER = """
import os, signal, sys
from tinylm.artifacts.io import atomic_dir, atomic_file
target = sys.argv[1]
if sys.argv[2] == "dir":
    with atomic_dir(target, overwrite=True) as tmp:
        (tmp / "model.safetensors").write_bytes(b"0" * 100_000)
        os.kill(os.getpid(), signal.SIGKILL)
else:
    with atomic_file(target, "wb") as handle:
        handle.write(b"0" * 100_000)
        handle.flush()
        os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("kind", ["dir", "file"])
def test_a_killed_writes_temp_is_cleaned_at_the_next_write(tmp_path, kind):
    target = tmp_path / ("out" if kind == "dir" else "round_1.npz")
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(target), kind], timeout=120)
    assert result.returncode == -signal.SIGKILL
    assert len(leftovers(tmp_path)) == 1 and not target.exists()
    mine = user_folder(tmp_path / f".{target.name}.old.backup")  # a user's dot-folder with a similar name
    if kind == "dir":
        write(target)
    else:
        with atomic_file(target) as handle:
            handle.write("new")
    assert leftovers(tmp_path) == [] and target.exists()
    assert (mine / "week_of_checkpoints.txt").read_text() == "precious"


def test_a_live_writers_temp_is_kept(tmp_path):
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        busy = tmp_path / f".out.tinylm-tmp.{sleeper.pid}.abc"
        busy.mkdir()
        write(tmp_path / "out")
        assert busy.is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    write(tmp_path / "out", overwrite=True)
    assert not busy.exists()


def test_outputs_get_the_usual_modes(tmp_path):
    previous = os.umask(0o022)
    try:
        write(tmp_path / "out")
        with atomic_file(tmp_path / "results.json") as handle:
            handle.write("{}")
    finally:
        os.umask(previous)
    mode = lambda path: stat.S_IMODE(path.stat().st_mode)  # noqa: E731
    assert mode(tmp_path / "out") == 0o755
    assert mode(tmp_path / "out" / "model.txt") == 0o644 and mode(tmp_path / "out" / MARKER) == 0o644
    assert mode(tmp_path / "results.json") == 0o644


def test_a_symlinked_output_is_written_through_and_leaves_nothing_beside_it(tmp_path):
    real = tmp_path / "real"
    with atomic_dir(real) as tmp:
        (tmp / "a.txt").write_text("first")
    link = tmp_path / "link"
    link.symlink_to(real)
    with atomic_dir(link, overwrite=True) as tmp:
        (tmp / "a.txt").write_text("second")
    assert link.is_symlink() and (link / "a.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]  # no .link.tinylm-old.<pid>


def test_an_output_is_refused_when_it_is_contains_or_lies_inside_an_input(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for target in (model, model / "freq", tmp_path):
        with pytest.raises(TinyLMError, match="input of this command"):
            check_output_dir(target, overwrite=True, inputs=[model])
    assert check_output_dir(tmp_path / "elsewhere", inputs=[model, "builtin:smollm2-135m"]) == tmp_path / "elsewhere"


def test_only_the_marker_makes_a_folder_tinylms(tmp_path):
    (tmp_path / "tinylm.json").write_text("{}")
    (tmp_path / "shards").mkdir()
    assert not is_tinylm_dir(tmp_path)
    (tmp_path / MARKER).write_text("")
    assert is_tinylm_dir(tmp_path)
