"""What a result records about the code and machine that produced it: the git commit of the tinylm checkout (and
whether it had uncommitted changes), the versions of the stack, threads and hardware. ``reproduce``'s results and
``tinylm pro``'s report both carry it, so a number can be traced to the code that made it."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import lightning
import torch

import tinylm

CHECKOUT = Path(tinylm.__file__).resolve().parents[1]  # the source tree tinylm runs from (a git clone, or site-packages)


def git_state(root: Path = CHECKOUT, outside: tuple[Path, ...] = ()) -> tuple[str | None, bool | None]:
    """``(commit, dirty)`` of the git checkout at ``root``; ``(None, None)`` when it is not one (an installed
    wheel). Changes under the ``outside`` folders (the results being written) do not count as dirty; untracked,
    not-ignored files do, since an uncommitted module can be imported by the run."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout

    try:
        commit = git("rev-parse", "HEAD").strip()
        top = Path(git("rev-parse", "--show-toplevel").strip()).resolve()
    except (OSError, subprocess.CalledProcessError):
        return None, None
    excludes = []
    for folder in outside:
        folder = Path(folder).resolve()
        if top in folder.parents:  # results inside the checkout (results/): what the run writes is not code
            excludes.append(f":(exclude){folder.relative_to(top).as_posix()}")
    status = git("status", "--porcelain", "--untracked-files=normal", "--", ".", *excludes) if excludes else \
        git("status", "--porcelain", "--untracked-files=normal")
    return commit, bool(status.strip())


def hardware() -> str:
    """The accelerator a run used, in words: the GPUs, or the CPU, the vector instructions torch's kernels use on it
    and its torch threads (two CPUs that differ there may round differently, and a run from random init can
    amplify that)."""
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}× {torch.cuda.get_device_name(0)}"
    return f"CPU ({cpu_name()}, {torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)"


def cpu_name() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo), else its architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The versions, threads and hardware a result was computed with."""
    return {"torch_threads": torch.get_num_threads(), "hardware": hardware(),
            "versions": {"tinylm": tinylm.__version__, "python": platform.python_version(), "torch": torch.__version__,
                         "lightning": lightning.__version__}}


def run_provenance(outside: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Commit, dirty flag, versions, threads and hardware of this process, for a report to record."""
    commit, dirty = git_state(CHECKOUT, outside)
    return {"commit": commit, "dirty": dirty, **environment()}
