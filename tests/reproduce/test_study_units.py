"""reproduce.cache.study_units: the units of a long study are computed once, kept beside the results with what
they ran on, resumed by a later run, and shared by processes that run the same study at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from reproduce import cache
from reproduce.cache import study_units, units_summary
from reproduce.report import core_seconds, units_rows
from tinylm.artifacts.provenance import hardware
from tinylm.errors import TinyLMError

REPO = Path(__file__).resolve().parents[2]


def counting_jobs(names, calls):
    def job(name):
        def compute():
            calls.append(name)
            return {"value": len(name)}
        return compute
    return {name: job(name) for name in names}


def test_units_are_computed_once_and_resumed(tmp_path):
    calls = []
    first = study_units(tmp_path, "study", "k1", counting_jobs(["a-seed0", "b-seed0"], calls), log=lambda _: None)
    assert calls == ["a-seed0", "b-seed0"]
    assert list(first) == ["a-seed0", "b-seed0"] and first["a-seed0"]["value"] == 7
    ran = first["a-seed0"]["ran"]
    assert set(ran) == {"commit", "dirty", "torch_threads", "hardware", "seconds"} and ran["torch_threads"] >= 1
    assert ran["hardware"] == hardware()  # units of one study may run on several machines
    assert json.loads((tmp_path / "units" / "study-k1" / "a-seed0.json").read_text()) == first["a-seed0"]

    again = study_units(tmp_path, "study", "k1", counting_jobs(["a-seed0", "b-seed0", "a-seed1"], calls),
                        log=lambda _: None)
    assert calls == ["a-seed0", "b-seed0", "a-seed1"]  # only the new unit ran
    assert again["b-seed0"] == first["b-seed0"]
    study_units(tmp_path, "study", "k2", counting_jobs(["a-seed0"], calls), log=lambda _: None)
    assert calls[-1] == "a-seed0"  # another key (changed code or setting) recomputes
    summary = units_summary(again)
    assert summary["count"] == 3 and len(summary["commits"]) == 1


def test_a_failed_unit_leaves_neither_record_nor_claim(tmp_path):
    def broken():
        raise RuntimeError("out of memory")

    with pytest.raises(RuntimeError):
        study_units(tmp_path, "study", "k", {"a": broken}, log=lambda _: None)
    assert list((tmp_path / "units" / "study-k").iterdir()) == []


def claim(folder: Path, name: str, pid: int) -> None:
    """A claim as another tinylm process leaves it, in a units folder tinylm wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder.parent / ".tinylm").write_text("written by tinylm")
    (folder / f"{name}.claim").write_text(json.dumps({"host": socket.gethostname(), "pid": pid}))


def test_a_unit_another_live_process_holds_is_waited_for_not_computed(tmp_path, monkeypatch):
    monkeypatch.setattr(cache, "POLL_SECONDS", 0.05)
    folder = tmp_path / "units" / "study-k"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        claim(folder, "a", holder.pid)
        written = {"value": "from the other process", "ran": {"commit": None}}
        timer = threading.Timer(0.5, lambda: (folder / "a.json").write_text(json.dumps(written)))
        timer.start()
        calls, said = [], []
        done = study_units(tmp_path, "study", "k", counting_jobs(["a", "b"], calls), log=said.append)
        timer.join()
    finally:
        holder.kill()
        holder.wait()
    assert calls == ["b"]  # passed over "a", computed "b", then waited
    assert done["a"] == written and list(done) == ["a", "b"]
    assert said == [f"  waiting for unit a: process {holder.pid} on {socket.gethostname()} is computing it"]


def test_a_claim_whose_process_died_is_taken_over(tmp_path):
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
    claim(tmp_path / "units" / "study-k", "a", int(finished.stdout))
    calls = []
    done = study_units(tmp_path, "study", "k", counting_jobs(["a"], calls), log=lambda _: None)
    assert calls == ["a"] and done["a"]["value"] == 1
    assert not (tmp_path / "units" / "study-k" / "a.claim").exists()


SHARED = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    from reproduce import cache
    cache.POLL_SECONDS = 0.05
    out = Path(sys.argv[1])

    def job(name):
        def compute():
            with open(out / "computed.log", "a") as log:
                log.write(f"{name} {os.getpid()}\\n")
            time.sleep(0.3)
            return {"name": name, "pid": os.getpid()}
        return compute

    (out / f"ready-{os.getpid()}").touch()  # start together: both must find free units
    while len(list(out.glob("ready-*"))) < 2:
        time.sleep(0.01)
    names = [f"arm{a}-seed{s}" for s in range(3) for a in range(3)]
    done = cache.study_units(out, "study", "k", {n: job(n) for n in names}, log=lambda _: None)
    print(json.dumps({n: r["pid"] for n, r in done.items()}))
""")


def test_two_processes_share_one_study(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-c", SHARED, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                                text=True) for _ in range(2)]
    results = [json.loads(worker.communicate(timeout=120)[0]) for worker in workers]
    assert all(worker.returncode == 0 for worker in workers)
    computed = (tmp_path / "computed.log").read_text().split()
    names = computed[0::2]
    assert sorted(names) == sorted(results[0]) and len(names) == 9  # every unit computed exactly once
    assert results[0] == results[1]  # both assembled the same study
    assert len(set(computed[1::2])) == 2  # and both did some of the work
    assert not list((tmp_path / "units").rglob("*.claim"))


def test_the_report_lists_the_units_a_rerun_resumes_from(tmp_path):
    assert units_rows(tmp_path) == []  # nothing kept: no section
    study_units(tmp_path, "inherit-runs", "k", counting_jobs(["scratch-seed0", "l1-seed0"], []), log=lambda _: None)
    rows = units_rows(tmp_path)
    assert any(row.startswith("| inherit-runs-k | 2 | 0.00 | `") for row in rows)


def test_a_units_folder_tinylm_did_not_write_is_refused(tmp_path):
    (tmp_path / "units").mkdir()
    (tmp_path / "units" / "mine.claim").write_text("the user's file")
    with pytest.raises(TinyLMError, match="not written by tinylm"):
        study_units(tmp_path, "study", "k", counting_jobs(["a"], []), log=lambda _: None)
    assert (tmp_path / "units" / "mine.claim").read_text() == "the user's file"


def test_a_study_costs_its_units_not_the_wall_time_of_its_last_process():
    # two processes ran the study for an hour of wall time each: two core-hours, as its units add up
    units = {"count": 4, "commits": ["c"], "core_seconds": 7200.0}
    assert core_seconds({"wall_seconds": 3600.0, "torch_threads": 1, "units": units}) == 7200.0
    assert core_seconds({"wall_seconds": 3600.0, "torch_threads": 2}) == 7200.0  # no units: wall × threads
    # inheritance's gentle cut keeps its own units inside its section: the study costs both
    gentle = {"child": {}, "units": {"count": 6, "commits": ["c"], "core_seconds": 3600.0}}
    assert core_seconds({"wall_seconds": 60.0, "units": units, "gentle": gentle}) == 10800.0


def test_a_unit_names_cache_paths_portably(tmp_path, monkeypatch):
    """Units are committed: a path under this machine's cache is written ``$TINYLM_CACHE/...``, never the machine's."""
    monkeypatch.setenv("TINYLM_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "cache" / "ladder" / "seed0" / "base"
    done = study_units(tmp_path / "out", "study", "k", {"seed0": lambda: {"model_dir": str(model)}},
                       log=lambda _: None)
    assert done["seed0"]["model_dir"] == "$TINYLM_CACHE/ladder/seed0/base"
    assert str(tmp_path) not in next((tmp_path / "out" / "units").glob("study-k/seed0.json")).read_text()
