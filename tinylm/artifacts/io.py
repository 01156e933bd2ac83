"""Safe, atomic file-system writes: never destroy what tinylm did not write.

Every folder tinylm writes is built in a temp path beside the target, gets a ``.tinylm`` marker file, and is
renamed into place only when complete; the folder it replaces is moved aside only then, and removed last. An
existing target is replaced only with ``overwrite=True`` *and* only when it carries that marker (or is empty) —
never because of what else it holds. ``.``, ``..``, the filesystem root, the home folder and any parent of the
working directory are never targets, and neither is anything that is, contains or lies inside one of the
command's own inputs (``inputs=``). ``check_output_dir`` / ``check_output_file`` run these checks up front, so
every command refuses a bad output before it reads or writes anything; temp folders and files left by a killed
write (``.<name>.tinylm-tmp.<pid>.*``, ``.<name>.tinylm-old.<pid>``) are cleaned at the next write to the same
target. A symlinked target is written through: the link keeps pointing at the new result. Files and folders get
the usual modes (0644 / 0755).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from tinylm.errors import TinyLMError

MARKER = ".tinylm"  # present in every folder tinylm wrote; only such folders may be overwritten
STAMP = "written by tinylm"  # near the start of every stamped text file tinylm wrote (eval's results)
FILE_MODE, DIR_MODE = 0o644, 0o755


def sha256_file(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks (model weights need not fit in memory twice)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def default_cache_dir() -> str:
    """Where tinylm caches packed corpora, converted built-in models and experiment runs: ``$TINYLM_CACHE``, else
    ``~/.cache/tinylm``."""
    return os.environ.get("TINYLM_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "tinylm"))


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


Paths = Iterable["str | os.PathLike | None"]


def is_tinylm_dir(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder that tinylm wrote: it holds the marker, which only tinylm writes."""
    return (Path(path) / MARKER).is_file()


def input_path(spec: "str | os.PathLike | None") -> Path | None:
    """The local path an input spec reads (a glob's fixed folder part), or None for hub names and the like."""
    if spec is None:
        return None
    text = os.fspath(spec)
    if not text or text == "builtin" or text.startswith(("builtin:", "hf:", "s3://", "gs://", "http://", "https://")):
        return None  # read from the installed package or a remote store, never a place tinylm writes
    fixed = text.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
    return Path(fixed if fixed == text else os.path.dirname(fixed) or ".").expanduser()


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _protected(target: Path, protect: Paths = (), inputs: Paths = ()) -> str | None:
    """Why ``target`` may never be written as a whole, or None."""
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if target.name in ("", ".", "..") or resolved == cwd:
        return "it is the working directory or its parent"
    if resolved == Path(resolved.anchor) or resolved == Path.home().resolve():
        return "it is the filesystem root or the home folder"
    if resolved in cwd.parents:
        return "it contains the working directory"
    if (spec := _overlapping_input(target, inputs)) is not None:
        return f"it is, contains or lies inside {spec}, an input of this command; write the output elsewhere"
    for keep in protect:
        if keep is not None and _within(Path(keep).expanduser().resolve(), resolved):
            return f"it is or contains {Path(keep).expanduser().resolve()}, which this run also writes"
    return None


def _overlapping_input(target: Path, inputs: Paths) -> str | None:
    """The first input that ``target`` is, contains or lies inside (as the user named it), or None."""
    resolved = target.resolve()
    for spec in inputs:
        read = input_path(spec)
        if read is not None and (_within(resolved, read.resolve()) or _within(read.resolve(), resolved)):
            return str(spec)
    return None


def check_apart(target: str | os.PathLike, inputs: Paths, what: str) -> None:
    """Refuse an output location (e.g. a run's root, which may already exist) that is, contains or lies inside
    one of the command's inputs."""
    target = Path(target).expanduser()
    if (spec := _overlapping_input(target, inputs)) is not None:
        raise TinyLMError(f"{what} {target} is refused: it is, contains or lies inside {spec}, an input of this "
                          "command; write the output elsewhere")


def check_output_dir(target: str | os.PathLike, overwrite: bool = False, what: str = "--out",
                     protect: Paths = (), inputs: Paths = ()) -> Path:
    """Refuse an output folder before any work starts; returns the target (a symlink's destination) as a Path.

    Refused: a protected path (``.``, ``..``, root, home, a parent of the working directory, equal to or a parent
    of any path in ``protect``, or equal to, a parent of or inside any of the command's ``inputs``); a file where a
    folder is expected; an existing non-empty folder without ``overwrite``; with ``overwrite``, a non-empty folder
    tinylm did not write; a location that cannot be written.
    """
    target = _through_link(Path(target).expanduser())
    reason = _protected(target, protect, inputs)
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
    check_writable(target, what)
    return target


def _through_link(target: Path) -> Path:
    """A symlinked output is written where it points, so the link stays valid and nothing is left beside it."""
    return target.resolve() if target.is_symlink() else target


def stamp(kind: str) -> str:
    """The line a stamped text file carries, so that ``--overwrite`` can tell tinylm's files from a user's."""
    return f"{STAMP} {kind}; --overwrite may replace this file"


def is_tinylm_file(path: str | os.PathLike) -> bool:
    """True when ``path`` is a text file tinylm stamped (``stamp``) near its start."""
    try:
        with open(path, "rb") as handle:
            return STAMP.encode() in handle.read(512)
    except OSError:
        return False


def check_output_file(target: str | os.PathLike, overwrite: bool = True, what: str = "--output",
                      inputs: Paths = (), stamped: bool = False) -> Path:
    """Refuse an output file before any work starts: an input of the command, a folder in its place, an existing
    file without ``overwrite``, an unwritable location; and, for ``stamped`` outputs (text files tinylm stamps),
    an existing file that tinylm did not write, even with ``overwrite``."""
    target = _through_link(Path(target).expanduser())
    reason = _protected(target, (), inputs)
    if reason:
        raise TinyLMError(f"{what} {target} is refused: {reason}")
    if target.is_dir():
        raise TinyLMError(f"{what} {target} is a folder; name a file")
    if target.exists() and not overwrite:
        raise TinyLMError(f"{what} {target} exists; name a new file or pass --overwrite")
    if target.exists() and stamped and not is_tinylm_file(target):
        raise TinyLMError(f"{what} {target} exists and was not written by tinylm; tinylm never replaces it, even "
                          "with --overwrite; name a new file")
    check_writable(target, what)
    if target.exists() and not os.access(target, os.W_OK):
        raise TinyLMError(f"{what} {target} cannot be written (read-only file); choose a writable location")
    return target


def check_writable(target: str | os.PathLike, what: str) -> None:
    """Refuse a location that cannot be written, by trying: permission bits say nothing about /sys or /proc, or
    to root. The probe folder is removed at once."""
    target = Path(target).expanduser()
    parent = _existing_ancestor(target if target.is_dir() else target.parent)
    if not parent.is_dir():
        raise TinyLMError(f"{what} {target} cannot be created: {parent} is a file; choose another location")
    try:
        probe = tempfile.mkdtemp(prefix=f".tinylm-probe.{os.getpid()}.", dir=parent)
    except OSError as err:
        raise TinyLMError(f"{what} {target} cannot be written ({parent}: {err.strerror or err}); choose a writable "
                          "location") from None
    os.rmdir(probe)


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
               protect: Paths = (), inputs: Paths = ()) -> Iterator[Path]:
    """Yield an empty temp folder; on success it becomes ``target`` (marked as tinylm's), on error it is removed.

    An existing non-empty ``target`` is replaced only with ``overwrite=True`` and only when tinylm wrote it, and
    it is moved aside only once the new folder is complete; ``protect`` and ``inputs`` name paths the target may
    not be, contain or (inputs) lie inside (see ``check_output_dir``).
    """
    target = check_output_dir(target, overwrite, what, protect, inputs)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{TEMP}.{os.getpid()}.", dir=target.parent))
    try:
        yield tmp
        (tmp / MARKER).write_text("written by tinylm; `--overwrite` may replace this folder\n")
        _umask_modes(tmp)
        check_output_dir(target, overwrite, what, protect, inputs)  # the target may have appeared while we worked
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
