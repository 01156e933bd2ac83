"""Safe, atomic file-system writes: never destroy what tinylm did not write.

Every folder tinylm writes is built in a temp path beside the target, gets a ``.tinylm`` marker file, and is
renamed into place only when complete. An existing target is replaced only with ``overwrite=True`` *and* only
when it carries that marker (or is empty); ``.``, ``..``, the filesystem root, the home folder and any parent of
the working directory are never targets. ``check_output_dir`` runs the same checks up front, so a command can
refuse a bad ``--out`` before it spends an hour of work; temp folders and files left by a killed write
(``.<name>.tinylm-tmp.<pid>.*``, ``.<name>.tinylm-old.<pid>``) are cleaned at the next write to the same
target. Files and folders get the usual modes (0644 / 0755).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from tinylm.errors import TinyLMError

MARKER = ".tinylm"  # present in every folder tinylm wrote; only such folders may be overwritten
FILE_MODE, DIR_MODE = 0o644, 0o755


def _umask_modes(path: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600; give what we write the modes any other tool would."""
    umask = os.umask(0)
    os.umask(umask)
    if path.is_dir():
        for root, dirs, files in os.walk(path):
            os.chmod(root, DIR_MODE & ~umask)
            for name in files:
                os.chmod(os.path.join(root, name), FILE_MODE & ~umask)
    else:
        os.chmod(path, FILE_MODE & ~umask)


def is_tinylm_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder that tinylm wrote (the marker, or a model dir's ``tinylm.json``)."""
    return (Path(path) / MARKER).is_file() or (Path(path) / "tinylm.json").is_file()


def _protected(target: Path, protect: Iterable[str | os.PathLike] = ()) -> str | None:
    """Why ``target`` may never be written as a whole, or None."""
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if target.name in ("", ".", "..") or resolved == cwd:
        return "it is the working directory or its parent"
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        return "it is the filesystem root or the home folder"
    if resolved in cwd.parents:
        return "it contains the working directory"
    for keep in protect:
        keep = Path(keep).expanduser().resolve()
        if resolved == keep or resolved in keep.parents:
            return f"it is or contains {keep}, which this run also writes"
    return None


def check_output_dir(target: str | os.PathLike, overwrite: bool = False, what: str = "--out",
                     protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Refuse an output folder before any work starts; returns the target as a Path.

    Refused: a protected path (``.``, ``..``, root, home, a parent of the working directory, or equal to or a
    parent of any path in ``protect``); a file where a folder is expected; an existing non-empty folder without
    ``overwrite``; with ``overwrite``, a non-empty folder tinylm did not write; a location that cannot be written.
    """
    target = Path(target).expanduser()
    reason = _protected(target, protect)
    if reason:
        raise TinyLMError(f"{what} {target} is refused: {reason}; name a new folder for the output")
    if target.exists() and not target.is_dir():
        raise TinyLMError(f"{what} {target} is a file, not a folder; name a new folder for the output")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise TinyLMError(f"{what} {target} exists and is not empty; name a new folder, or pass --overwrite "
                              "to replace a folder tinylm wrote")
        if not is_tinylm_dir(target):
            raise TinyLMError(f"{what} {target} was not written by tinylm (no {MARKER} marker); tinylm never "
                              "replaces it, even with --overwrite; name a new folder")
    _check_writable_parent(target, what)
    return target


def check_output_file(target: str | os.PathLike, overwrite: bool = True, what: str = "--output") -> Path:
    """Refuse an output file before any work starts (a folder in its place, an unwritable location)."""
    target = Path(target).expanduser()
    if target.is_dir():
        raise TinyLMError(f"{what} {target} is a folder; name a file")
    if target.exists() and not overwrite:
        raise TinyLMError(f"{what} {target} exists; name a new file or pass --overwrite")
    _check_writable_parent(target, what)
    if target.exists() and not os.access(target, os.W_OK):
        raise TinyLMError(f"{what} {target} cannot be written (read-only file); choose a writable location")
    return target


def _check_writable_parent(target: Path, what: str) -> None:
    parent = _existing_ancestor(target.parent)
    if not parent.is_dir():
        raise TinyLMError(f"{what} {target} cannot be created: {parent} is a file; choose another location")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise TinyLMError(f"{what} {target} cannot be written ({parent} is read-only); choose a writable location")


def _existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# Temp names carry the writer's pid, so a later write can tell a dead writer's leftovers from a live one's:
#   .<name>.tinylm-tmp.<pid>.<random>   a folder or file being written
#   .<name>.tinylm-old.<pid>            the replaced folder, between the swap and its removal
TEMP, OLD = "tinylm-tmp", "tinylm-old"


def clean_stale(target: str | os.PathLike) -> None:
    """Remove what a killed write to ``target`` left behind; a live process's temp files are kept."""
    target = Path(target)
    if not target.parent.is_dir():
        return
    for kind in (TEMP, OLD):
        prefix = f".{target.name}.{kind}."
        for leftover in target.parent.iterdir():
            if not leftover.name.startswith(prefix):
                continue
            pid = leftover.name[len(prefix):].split(".", 1)[0]
            if pid.isdigit() and int(pid) != os.getpid() and _alive(int(pid)):
                continue  # another live process is writing it right now
            if leftover.is_dir() and not leftover.is_symlink():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def atomic_dir(target: str | os.PathLike, overwrite: bool = False, what: str = "--out",
               protect: Iterable[str | os.PathLike] = ()) -> Iterator[Path]:
    """Yield an empty temp folder; on success it becomes ``target`` (marked as tinylm's), on error it is removed.

    An existing non-empty ``target`` is replaced only with ``overwrite=True`` and only when tinylm wrote it;
    ``protect`` names paths the target may neither be nor contain (see ``check_output_dir``).
    """
    target = check_output_dir(target, overwrite, what, protect)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{TEMP}.{os.getpid()}.", dir=target.parent))
    try:
        yield tmp
        (tmp / MARKER).write_text("written by tinylm; `--overwrite` may replace this folder\n")
        _umask_modes(tmp)
        check_output_dir(target, overwrite, what, protect)  # the target may have appeared while we worked
        if target.exists():
            old = target.with_name(f".{target.name}.{OLD}.{os.getpid()}")
            os.replace(target, old)
            try:
                os.replace(tmp, target)
            except BaseException:
                os.replace(old, target)  # put the previous folder back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def atomic_file(target: str | os.PathLike, mode: str = "w") -> Iterator:
    """Open a temp file beside ``target``; it replaces ``target`` (mode 0644) only if the block succeeds."""
    target = Path(target)
    if target.is_dir():
        raise TinyLMError(f"{target} is a folder; name a file")
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.{TEMP}.{os.getpid()}.", dir=target.parent)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
        _umask_modes(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
