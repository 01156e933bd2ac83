"""The local lm-eval tasks ship inside the package: a wheel holds every task YAML, an installed wheel finds them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
TASKS = REPO / "tinylm" / "evaluation" / "tasks"


def _build_wheel(tmp_path: Path) -> Path:
    """``pip wheel . --no-deps`` on a copy of the sources (an in-tree build would leave build/ in the repo)."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "tinylm", source / "tinylm", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                    "--quiet", "--wheel-dir", str(tmp_path / "dist")], check=True)
    (wheel,) = (tmp_path / "dist").glob("tinylm-*.whl")
    return wheel


def test_wheel_holds_every_task_yaml(tmp_path):
    expected = sorted(path.name for path in TASKS.glob("*.yaml"))
    assert len(expected) >= 20 and "c3.yaml" in expected and "paper_final.yaml" in expected
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        shipped = sorted(Path(name).name for name in wheel.namelist() if name.startswith("tinylm/evaluation/tasks/")
                         and name.endswith(".yaml"))
    assert shipped == expected


@pytest.mark.slow
def test_installed_wheel_finds_the_local_tasks(tmp_path):
    """A non-editable install into a fresh venv (sharing this one's packages) lists and loads the local tasks."""
    wheel = _build_wheel(tmp_path)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    python = venv / "bin" / "python"
    # --system-site-packages sees this venv's site-packages only through the base interpreter; point at it directly
    site = next(p for p in sys.path if p.endswith("site-packages"))
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True)
    probe = ("import sys; sys.path.append(%r); import tinylm.evaluation.tasks as t; "
             "print(t.EVAL_DIR); print(','.join(t.local_task_names())); "
             "print(type(t.load_tasks(['snownlp_sentiment'])[0]).__name__)" % site)
    out = subprocess.run([str(python), "-c", probe], check=True, capture_output=True, text=True, cwd=tmp_path,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}).stdout.splitlines()
    assert str(venv) in out[0] and str(REPO) not in out[0]  # the installed copy, not this source tree
    assert set(out[1].split(",")) == {path.stem for path in TASKS.glob("*.yaml")}
    assert out[2] == "ConfigurableTask"
