"""The ``tinylm pro`` command: the five stages in order, each a resumable folder under ``--out`` (see
``tinylm.pro``)."""

from __future__ import annotations

import json
import re
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from tinylm.artifacts import builtin
from tinylm.artifacts.cache import digest
from tinylm.artifacts.convert import convert_gguf, gguf_config, gguf_reader
from tinylm.artifacts.io import atomic_file
from tinylm.artifacts.model_dir import load_config
from tinylm.data.corpus import resolve
from tinylm.errors import TinyLMError
from tinylm.evaluation.tasks import ABLATION_TASKS
from tinylm.inherit.importance import CRITERIA
from tinylm.model import ModelConfig
from tinylm.pro.compaction import compact_stage
from tinylm.pro.data import read_jsonl, write_sample
from tinylm.pro.inheritance import inherit_model
from tinylm.pro.report import SHORT_NAMES, model_name, score_model, tokenizer_line, write_pro_report
from tinylm.pro.stages import RUN_FILE, check_run_out, fingerprint_dir, run_stage, stage_record, start_run
from tinylm.pro.target import describe, parse_budget, read_target, write_shape
from tinylm.pro.training import train_arm

STAGES = ("tokenizer", "architecture", "inherit", "train", "report")
PAPER_COVERAGE = 0.9786  # the paper's 48k pieces cover 97.86% of its corpus [P]
PAPER_TASKS = list(ABLATION_TASKS)  # the paper's ablation trio (a copy: jsonargparse shows it as the default)
# The code that computes each stage (modules, or packages standing for every file under them): its version is part
# of the stage's key, so a changed line in any of them redoes the stage, and through the key chain every later one.
CODE: dict[str, tuple[str, ...]] = {
    "source": ("tinylm.artifacts.convert", "tinylm.artifacts.model_dir"),
    "tokenizer": ("tinylm.pro.compaction", "tinylm.vocab", "tinylm.tokenizer", "tinylm.data.corpus",
                  "tinylm.artifacts.model_dir"),
    "architecture": ("tinylm.pro.target", "tinylm.model.config", "tinylm.model.shapes", "tinylm.inherit.plan"),
    "data": ("tinylm.pro.data", "tinylm.data.corpus", "tinylm.tokenizer"),
    "inherit": ("tinylm.pro.inheritance", "tinylm.pro.data", "tinylm.inherit", "tinylm.model", "tinylm.training.fit",
                "tinylm.artifacts.model_dir"),
    "train": ("tinylm.pro.training", "tinylm.pro.distill", "tinylm.training", "tinylm.model", "tinylm.data",
              "tinylm.artifacts.model_dir"),
    "report": ("tinylm.pro.report", "tinylm.pro.data", "tinylm.model", "tinylm.evaluation", "tinylm.tokenizer",
               "tinylm.artifacts.model_dir"),
}


def pro(
    source: str,
    target: str,
    data: list[str] | str = "builtin",
    out: str = "runs/pro",
    stages: list[str] | str = "all",
    coverage: float = PAPER_COVERAGE,
    vocab_size: int | None = None,
    layers: str = "both-ends",
    criterion: str = "taylor",
    calibration_size: int = 16,
    mask_steps: int = 100,
    tokens: int = 300_000,
    rounds: int = 2,
    rate: float = 0.5,
    seq_len: int = 128,
    batch_size: int = 8,
    lr: float = 1e-3,
    lr_scaling_bs0: int = 2048,
    lr_scaling_r: float = 0.5,
    min_lr_ratio: float = 0.1,
    warmup: float = 0.05,
    scratch: bool = True,
    distill: float = 0.0,
    tasks: list[str] = PAPER_TASKS,  # noqa: B006 — jsonargparse reads the default from the signature
    eval_limit: int | None = 50,
    eval_data_dir: str | None = None,
    heldout_chars: int = 60_000,
    val_every: int = 50,
    text_field: str = "text",
    seed: int = 1234,
    seeds: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """From a pretrained LLaMA checkpoint to a tiny Pro model: compact tokenizer, architecture, inheritance,
    multi-round training, report. Each stage is a folder under --out and is skipped when already done.

    Args:
        source: the pretrained model: a model dir (tinylm's or a Hugging Face LLaMA folder), a .gguf file, or
            builtin:smollm2-135m.
        target: the tiny shape: a parameter budget (10M, 1.5B: shape by the paper's depth rule), a preset name
            (tiny, small ...), or a YAML/JSON file or inline mapping of shape fields (hidden_size, num_layers,
            num_heads, num_kv_heads, intermediate_size).
        data: text sources for counting, calibration, training and the held-out set: builtin, files/dirs/globs
            of .txt/.jsonl/.parquet, or hf:<name>.
        out: the run folder; an existing `tinylm pro` run there is resumed.
        stages: stages to run (tokenizer, architecture, inherit, train, report), or all; a later stage needs the
            earlier ones done.
        coverage: share of the counted tokens the kept pieces must cover (the paper's 0.9786).
        vocab_size: keep exactly this many pieces instead (overrides coverage).
        layers: source layers to keep: both-ends | first | last | uniform | learned | a list like 0,1,29.
        criterion: width importance: taylor | l1 | l2 | learned (learned trains hard-concrete masks first).
        calibration_size: calibration blocks for Taylor's gradients.
        mask_steps: optimizer steps of the mask learner (criterion or layers learned only).
        tokens: training tokens of each arm over all rounds (round 0 sees a sample of --data of
            tokens / (1 + (rounds − 1) × rate) tokens once; later rounds re-train on its hardest share).
        rounds: training rounds (1 = a single pass).
        rate: sampling rate of each later round (the paper's 0.5).
        seq_len: tokens per training block.
        batch_size: blocks per optimizer step.
        lr: lr0 of the paper's rule lr = (bs / bs0)^r × lr0 (scaled to tiny models with bs0); the rule's three
            settings are named as in tinylm fit (--model.lr, --model.lr_scaling_bs0, --model.lr_scaling_r).
        lr_scaling_bs0: bs0 of the rule, in tokens per step (the paper's 1M belongs to 1B models).
        lr_scaling_r: r of the rule (the paper recommends 0.5).
        min_lr_ratio: the cosine schedule's floor as a fraction of the peak lr.
        warmup: fraction of the steps spent in linear warmup.
        scratch: also train the target shape from a random init on the same tokens (the baseline).
        distill: weight of a logit-KL term from the compact source (0 = off); adds a distilled arm trained on
            the same tokens as the Pro arm, so the report says whether it helps.
        tasks: benchmark tasks for the report (the paper's ablation trio); [] for none.
        eval_limit: documents per task (None: all).
        eval_data_dir: benchmark files (default $TINYLM_EVAL_DATA); missing files are reported as n/a.
        heldout_chars: characters of held-out text for bits per byte, spread over the sources.
        val_every: every val_every-th document of each source is held out (never trained on).
        text_field: the text column of jsonl/parquet sources.
        seed: seeds the training sample, calibration, the random init scored in the report and the first
            training seed.
        seeds: train every arm this many times, with seeds seed, seed + 1, ...: each changes the data order, the
            rounds' draws and the scratch init (the compact tokenizer, shape, sample and inherited model are drawn
            once). The report gives each seed's held-out bpb and the mean Pro − scratch difference with its 95% t
            interval and paired p; one seed is one draw, with no interval.
        overwrite: redo every stage of a previous run in --out.
    """
    wanted = _stages(stages)
    _check_settings(coverage, vocab_size, tokens, rounds, rate, seq_len, batch_size, lr, lr_scaling_bs0, distill,
                    val_every, heldout_chars, criterion, seeds)
    specs = [data] if isinstance(data, str) else list(data)
    if not specs:
        raise TinyLMError("--data is empty; give at least one text source (e.g. builtin)")
    # Everything is checked before anything is written: the run folder, the source, the data and the target.
    run = check_run_out(out, overwrite, inputs=[source, *specs, eval_data_dir])
    data_ids = [s.fingerprint for spec in specs for s in resolve(spec, text_field)]
    source_config = _source_config(source)
    budget = parse_budget(target)
    if budget is None:
        read_target(target, source_config, source_config.vocab_size)
    elif budget >= source_config.num_params():
        raise TinyLMError(f"--target {target} is not smaller than the source ({source_config.num_params():,} "
                          "parameters); inheritance only shrinks a model, give a smaller budget")
    start_run(run)
    settings = {k: v for k, v in locals().items() if k not in ("wanted", "specs", "run", "source_config", "budget",
                                                               "data_ids")}
    with atomic_file(run / RUN_FILE) as handle:
        json.dump({"command": "tinylm pro", "settings": settings}, handle, indent=2, default=str)
    source_dir = _source_dir(source, run, overwrite)
    source_id = fingerprint_dir(source_dir)
    done: dict[str, dict[str, Any]] = {}

    def need(name: str) -> bool:
        return name in wanted

    def stop_after(name: str) -> bool:  # nothing wanted beyond this stage
        return all(STAGES.index(w) <= STAGES.index(name) for w in wanted)

    def results() -> dict[str, Any]:
        return {name: record["result"] for name, record in done.items() if record}

    def upstream(name: str, folder: Path) -> dict[str, Any]:
        record = stage_record(folder)
        if record is None:
            raise TinyLMError(f"stage {name} has not run in {run} yet; run it first (--stages {name} or all)")
        return {**record, "folder": folder}

    def stage(name: str, folder: Path, inputs: dict[str, Any], build: Callable[[Path], dict[str, Any]],
              wanted_by: tuple[str, ...] | None = None, code: str | None = None) -> dict[str, Any]:
        """Run (or skip) the stage when one of ``wanted_by`` (default: itself) is wanted, else read its folder;
        ``code`` names its entry in ``CODE`` (default: the stage's name)."""
        if any(need(n) for n in wanted_by or (name,)):
            return run_stage(folder, inputs, build, CODE[code or name], overwrite)
        return upstream(name, folder)

    # 1. compact tokenizer --------------------------------------------------------------------------------
    inputs = {"source": source_id, "data": data_ids, "coverage": coverage, "vocab_size": vocab_size,
              "val_every": val_every, "text_field": text_field}
    folder = run / "1-tokenizer"
    done["tokenizer"] = stage("tokenizer", folder, inputs, lambda tmp: compact_stage(
        tmp, source_dir, specs, coverage, vocab_size, val_every, text_field))
    compact = done["tokenizer"]["folder"] / "source"
    print(f"tinylm pro: compact tokenizer: {tokenizer_line(done['tokenizer']['result'])}", flush=True)

    if stop_after("tokenizer"):
        return results()

    # 2. architecture -------------------------------------------------------------------------------------
    target_file = Path(target) if Path(str(target)).is_file() else None
    inputs = {"after": done["tokenizer"]["hash"], "target": str(target),
              "target_file": target_file.read_text() if target_file else None}
    folder = run / "2-architecture"
    done["architecture"] = stage("architecture", folder, inputs,
                                 lambda tmp: write_shape(tmp, target, load_config(compact)))
    shape = ModelConfig(**done["architecture"]["result"]["config"])
    print(f"tinylm pro: target shape ({done['architecture']['result']['how']}): {describe(shape)}", flush=True)

    if stop_after("architecture"):
        return results()

    # the training sample (also the calibration text) and the held-out documents -------------------------
    per_pass = round(tokens / (1 + (rounds - 1) * rate))  # round 0 sees the sample once, later rounds a share
    inputs = {"after": done["tokenizer"]["hash"], "data": data_ids, "train_tokens": per_pass,
              "heldout_chars": heldout_chars, "val_every": val_every, "seed": seed}
    folder = run / "data"
    done["data"] = stage("inherit", folder, inputs, lambda tmp: write_sample(
        tmp, specs, text_field, val_every, compact, per_pass, heldout_chars, seed), wanted_by=("inherit", "train"),
        code="data")

    # 3. inherit ------------------------------------------------------------------------------------------
    inputs = {"after": done["architecture"]["hash"], "layers": layers, "criterion": criterion,
              "data": done["data"]["hash"],
              "calibration_size": calibration_size, "seq_len": seq_len, "seed": seed,
              "mask_steps": mask_steps if "learned" in (layers, criterion) else None}
    folder = run / "3-inherit"
    sample = done["data"]["folder"]
    done["inherit"] = stage("inherit", folder, inputs, lambda tmp: inherit_model(
        tmp, compact, shape, sample, layers, criterion, calibration_size, mask_steps, seq_len, batch_size, seed))
    inherited = done["inherit"]["folder"] / "model"

    if stop_after("inherit"):
        return results()

    # 4. train --------------------------------------------------------------------------------------------
    # every arm once per seed (data order, the rounds' draws, scratch init); each (arm, seed) is a stage of its own,
    # seeds in the outer loop, so a killed multi-seed run keeps its finished pairs and resumes at the next arm
    train_dir = run / "4-train"
    recipe = {"rounds": rounds, "rate": rate, "seq_len": seq_len, "batch_size": batch_size, "lr": lr,
              "lr_scaling_bs0": lr_scaling_bs0, "lr_scaling_r": lr_scaling_r, "min_lr_ratio": min_lr_ratio,
              "warmup": warmup}
    arms = {"pro": inherited}
    if scratch:
        arms["scratch"] = None
    if distill > 0:
        arms["distill"] = inherited
    run_seeds = [seed + offset for offset in range(seeds)]
    trained: dict[str, dict[int, dict[str, Any]]] = {arm: {} for arm in arms}
    for run_seed in run_seeds:
        seeded = {**recipe, "seed": run_seed}
        for arm, init in arms.items():
            name = f"{arm}-seed{run_seed}"
            folder = train_dir / name
            inputs = {"data": done["data"]["hash"], "init": done["inherit"]["hash"] if init else "random",
                      "shape": asdict(shape), "recipe": seeded, "distill": distill if arm == "distill" else 0.0,
                      "teacher": done["tokenizer"]["hash"] if arm == "distill" else None}
            build = (lambda tmp, work, arm=arm, init=init, seeded=seeded: train_arm(
                tmp, arm, shape, init, done["data"]["folder"], compact, seeded, distill, work))
            record = run_stage(folder, inputs, build, CODE["train"], overwrite, resumable=True) if need("train") \
                else stage_record(folder)
            if record is not None:
                done[name] = trained[arm][run_seed] = {**record, "folder": folder}
                print(f"tinylm pro: {arm} model dir (seed {run_seed}): {folder / 'model'}", flush=True)

    if stop_after("train"):
        return results()

    # 5. report -------------------------------------------------------------------------------------------
    heldout = read_jsonl(done["data"]["folder"] / "heldout.jsonl")
    evaluation = {"tasks": list(tasks), "eval_limit": eval_limit, "eval_data_dir": eval_data_dir,
                  "heldout": done["data"]["hash"], "seq_len": seq_len}
    # name -> (model dir or None for a random init, its key, its scoring folder)
    models = {"source": (source_dir, source_id, "source"),
              "compact source": (compact, done["tokenizer"]["hash"], "compact-source"),
              "random init": (None, digest([asdict(shape), seed]), "random-init"),
              "inherited (step 0)": (inherited, done["inherit"]["hash"], "inherited")}
    for arm, by_seed in trained.items():  # every seed's model, benchmarks included
        for run_seed, record in by_seed.items():
            slug = re.sub(r"[^A-Za-z0-9]+", "-", SHORT_NAMES[arm]).strip("-")
            models[model_name(arm, run_seed)] = (record["folder"] / "model", record["hash"], f"{slug}-seed{run_seed}")
    scores = {}
    for name, (path, key, slug) in models.items():
        record = run_stage(run / "5-report" / slug, {"model": key, **evaluation},
                           lambda tmp, path=path: score_model(path, compact, shape, seed, heldout, seq_len,
                                                           list(tasks), eval_limit, eval_data_dir),
                           CODE["report"], overwrite)
        scores[name] = record["result"]
    report = write_pro_report(run, str(source), done, scores, trained, shape, list(tasks), tokens, recipe, run_seeds,
                              eval_limit)
    print(f"tinylm pro: report -> {run / 'report.md'}", flush=True)
    return report


def _stages(stages: list[str] | str) -> list[str]:
    names = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
    if names == ["all"]:
        return list(STAGES)
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise TinyLMError(f"--stages {','.join(names) or '(empty)'}: choose from {', '.join(STAGES)} or all")
    return names


def _check_settings(coverage: float, vocab_size: int | None, tokens: int, rounds: int, rate: float, seq_len: int,
                    batch_size: int, lr: float, lr_scaling_bs0: int, distill: float, val_every: int, heldout_chars: int,
                    criterion: str, seeds: int) -> None:
    if not 0 < coverage <= 1:
        raise TinyLMError(f"--coverage {coverage} must be a share in (0, 1], e.g. the paper's 0.9786")
    if vocab_size is not None and vocab_size < 300:
        raise TinyLMError(f"--vocab_size {vocab_size} is too small: the special and 256 byte pieces are always kept")
    if tokens < 1 or rounds < 1 or not 0 < rate <= 1:
        raise TinyLMError(f"--tokens {tokens}, --rounds {rounds}, --rate {rate}: need tokens ≥ 1, rounds ≥ 1 and a "
                          "rate in (0, 1]")
    if seq_len < 8 or batch_size < 1 or lr <= 0 or lr_scaling_bs0 < 1:
        raise TinyLMError(f"--seq_len {seq_len}, --batch_size {batch_size}, --lr {lr}, --lr_scaling_bs0 "
                          f"{lr_scaling_bs0} must be positive (seq_len at least 8)")
    if not 0 <= distill <= 1:
        raise TinyLMError(f"--distill {distill} must be a weight in [0, 1] (0 = off)")
    if val_every < 2 or heldout_chars < 1:
        raise TinyLMError(f"--val_every {val_every} must be at least 2 and --heldout_chars positive")
    if seeds < 1:
        raise TinyLMError(f"--seeds {seeds} must be at least 1 (with 2 or more the report gives the Pro − scratch "
                          "difference an interval and a p-value)")
    if criterion not in (*CRITERIA, "learned"):
        raise TinyLMError(f"--criterion {criterion!r}: choose one of {', '.join((*CRITERIA, 'learned'))}")


def _source_config(source: str) -> ModelConfig:
    """The source's config, read without writing anything into the run (a GGUF's header is enough)."""
    if str(source).lower().endswith(".gguf"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise TinyLMError(f"--source {path} does not exist; give a .gguf file, a model dir or "
                              "builtin:smollm2-135m")
        return gguf_config(gguf_reader(path))
    directory = builtin.resolve(source)
    if not (directory / "config.json").is_file():
        raise TinyLMError(f"--source {source} is not a model dir (no config.json); give a model dir, a .gguf file "
                          "or builtin:smollm2-135m")
    return load_config(directory)


def _source_dir(source: str, run: Path, overwrite: bool) -> Path:
    """The source as a model dir: a built-in is converted once into the cache, a GGUF into ``0-source``."""

    if str(source).lower().endswith(".gguf"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise TinyLMError(f"--source {path} does not exist; give a .gguf file, a model dir or "
                              "builtin:smollm2-135m")
        stat = path.stat()
        record = run_stage(run / "0-source", {"gguf": [str(path.resolve()), stat.st_size, stat.st_mtime_ns]},
                           lambda tmp: {"model": str(convert_gguf(path, tmp / "model").relative_to(tmp))},
                           CODE["source"], overwrite)
        return record["folder"] / "model"
    directory = builtin.resolve(source)
    if not (directory / "config.json").is_file():
        raise TinyLMError(f"--source {source} is not a model dir (no config.json); give a model dir, a .gguf file "
                          "or builtin:smollm2-135m")
    return directory
