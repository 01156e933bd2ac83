"""What every reproduce experiment shares: scales, the command line, and the results folder.

An experiment module ``reproduce/<id>.py`` defines

    def run(scale: str, seeds: int, out: Path) -> dict

which trains/evaluates at that scale and returns a JSON-able dict with at least
``{"table": <markdown str>, "rows": [...], "paper": {...}, "verdicts": [...], "figures": [<file names>]}``.
``write_results`` stores it as ``<out>/<id>/results.json`` and ``table.md`` (figures are written by the
experiment into the same folder). Tables always put the paper's number beside ours, with its reliability tag
([P] printed, [R] official repo, [D] derived, [?] third-party), and "n/a" where the paper has none.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable

import torch

SCALES = ("smoke", "small", "paper")
DEFAULT_SEEDS = {"smoke": 1, "small": 2, "paper": 3}
OUT_HELP = "results folder (default: results for small and paper scale; runs/smoke for smoke, which must not " \
           "overwrite the committed results)"


RESULTS = Path("results")  # the committed small-scale results and REPORT.md


def default_out(scale: str) -> Path:
    """Where results go unless ``--out`` says otherwise: smoke runs prove the pipeline and stay out of the
    committed ``results/``."""
    return Path("runs") / "smoke" if scale == "smoke" else RESULTS


def shown(text: str | Path) -> str:
    """Text as it may appear in committed results: paths under the home folder are written ``~/...``."""
    return str(text).replace(str(Path.home()) + "/", "~/")


def _portable(value: Any) -> Any:
    if isinstance(value, str):
        return shown(value)
    if isinstance(value, dict):
        return {key: _portable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_portable(item) for item in value]
    return value


def experiment_dir(out: Path, experiment: str) -> Path:
    folder = Path(out) / experiment
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def hardware() -> str:
    if torch.cuda.is_available():
        return f"{torch.cuda.device_count()}× {torch.cuda.get_device_name(0)}"
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def write_results(out: Path, experiment: str, result: dict[str, Any], scale: str, seeds: int, seconds: float) -> Path:
    folder = experiment_dir(out, experiment)
    record = {"experiment": experiment, "scale": scale, "seeds": seeds, "wall_seconds": round(seconds, 1),
              "hardware": hardware(), **_portable(result)}
    (folder / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    header = f"# {experiment} ({scale} scale, {seeds} seed(s), {seconds:.0f} s on {hardware()})\n\n"
    (folder / "table.md").write_text(header + record.get("table", "") + "\n")
    return folder


def save_figure(figure, folder: Path, name: str, dpi: int = 120) -> str:
    """Write a matplotlib figure atomically as ``folder/name`` (PNG), close it, and return ``name``."""
    import matplotlib.pyplot as plt

    from tinylm.io import atomic_file

    with atomic_file(Path(folder) / name, "wb") as handle:
        figure.savefig(handle, format="png", dpi=dpi)
    plt.close(figure)
    return name


def fmt(value: float | None, digits: int = 2) -> str:
    """A number for a table, or "n/a" when unknown."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def main(experiment: str, run: Callable[[str, int, Path], dict], argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog=f"python -m reproduce {experiment}")
    parser.add_argument("--scale", choices=SCALES, default="smoke")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default: 1 smoke, 2 small, 3 paper)")
    parser.add_argument("--out", type=Path, default=None, help=OUT_HELP)
    args = parser.parse_args(argv)
    seeds = args.seeds or DEFAULT_SEEDS[args.scale]
    out = args.out or default_out(args.scale)
    start = time.perf_counter()
    result = run(args.scale, seeds, out)
    folder = write_results(out, experiment, result, args.scale, seeds, time.perf_counter() - start)
    print(result.get("table", ""))
    print(f"\nreproduce: {experiment} results in {folder}")
    return result
