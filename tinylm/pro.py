"""``tinylm pro``: from a pretrained LLaMA checkpoint to a tiny "Pro" model, the paper's four formulas in order.

    1-tokenizer     count the source tokenizer on --data, keep the top-k pieces covering ``coverage`` of the
                    tokens (the paper's 97.86%), remap the source's embedding/head rows: the *compact source*
    2-architecture  the target shape: a preset, a shape file, or a parameter budget solved by the depth rule
    3-inherit       layers (both-ends) and widths (Taylor) of the compact source: the *inherited* model
    4-train         multi-round training (2 rounds, the second on the hardest 50%) at the paper's batch-size lr
                    rule, and on the same tokens a scratch baseline (and, with ``distill``, a distilled arm)
    5-report        held-out bits per byte and benchmark scores of each model; ``<out>/report.md`` + figure

Every stage writes its own folder under ``--out`` atomically, with ``stage.json`` recording a hash of
everything it was built from (settings, data fingerprints and the hash of the stage before). A rerun skips a
stage whose folder holds the same hash, so a killed run resumes at the first stage it had not finished, and a
changed setting redoes only the stages it reaches. A GGUF source is first converted into ``0-source``.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import statistics
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.io import MARKER, atomic_dir, atomic_file, check_output_dir, is_tinylm_dir
from tinylm.lm import LanguageModel
from tinylm.model import PRESETS, ModelConfig, Transformer, cross_entropy

STAGES = ("tokenizer", "architecture", "inherit", "train", "report")
RUN_FILE = "pro.json"  # marks a folder as a tinylm pro run (resumable)
STAGE_FILE = "stage.json"
PAPER_COVERAGE = 0.9786  # the paper's 48k pieces cover 97.86% of its corpus [P]
PAPER_DEPTH, PAPER_BUDGET = 20, 1e9  # about 20 layers is the paper's choice at 1B [P]
DEPTH_EXPONENT = 0.2  # depth = 20 × (budget / 1B)^0.2: 8 layers at 10M, 13 at 100M
PAPER_TASKS = ["arc_easy", "hellaswag", "c3"]  # the paper's ablation trio
_VERSION = 1  # bump when a stage's output format changes, so old runs are redone


# ---- stages: a folder per stage, skipped when its recorded input hash matches --------------------------------
def digest(inputs: Any) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:16]


def stage_record(folder: Path) -> dict[str, Any] | None:
    """The ``stage.json`` of a finished stage folder, or None."""
    path = folder / STAGE_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except json.JSONDecodeError:
        return None


def run_stage(folder: Path, inputs: dict[str, Any], build: Callable[[Path], dict[str, Any]],
              force: bool = False) -> dict[str, Any]:
    """Build ``folder`` (atomically) unless it already holds a stage built from the same ``inputs``.

    ``build(tmp)`` writes into a temp folder and returns a JSON-able result (paths relative to the folder);
    the returned record carries ``result``, ``hash`` and ``folder``.
    """
    key = digest({"v": _VERSION, **inputs})
    record = stage_record(folder)
    if record is not None and record.get("hash") == key and not force:
        print(f"tinylm pro: {folder.name}: skipped (done; inputs unchanged, hash {key})", flush=True)
        return {**record, "folder": folder}
    print(f"tinylm pro: {folder.name}: running", flush=True)
    start = time.perf_counter()
    folder.parent.mkdir(parents=True, exist_ok=True)
    with atomic_dir(folder, overwrite=True, what=f"stage folder {folder.name}") as tmp:
        result = build(tmp)
        record = {"stage": folder.name, "hash": key, "inputs": inputs, "result": result,
                  "seconds": round(time.perf_counter() - start, 1)}
        (tmp / STAGE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"tinylm pro: {folder.name}: done in {record['seconds']:.0f} s", flush=True)
    return {**record, "folder": folder}


def fingerprint_dir(folder: Path) -> str:
    """A cheap identity of a model dir's content: names, sizes and modification times of its files."""
    entries = sorted(f"{p.name}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in folder.iterdir() if p.is_file())
    return digest([str(folder.resolve()), entries])


def prepare_out(out: str, overwrite: bool) -> Path:
    """A new or empty folder becomes a run; a previous ``tinylm pro`` run is resumed; anything else is refused."""
    path = Path(out).expanduser()
    if (path / RUN_FILE).is_file() and is_tinylm_dir(path):
        check_output_dir(path, overwrite=True)  # still refuses ., .., home and parents of the working dir
        return path
    if path.is_dir() and any(path.iterdir()):
        what = "was not written by tinylm" if not is_tinylm_dir(path) else "holds tinylm output that is not a " \
                                                                            "`tinylm pro` run"
        raise TinyLMError(f"--out {path} exists, is not empty and {what}; name a new folder (a previous "
                          "`tinylm pro` --out is resumed)")
    check_output_dir(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / MARKER).write_text("written by tinylm; `--overwrite` may replace this folder\n")
    return path


# ---- stage 2: the target shape ----------------------------------------------------------------------------
def paper_depth(budget: float) -> int:
    """Layers for a parameter budget: 20 at 1B (the paper's deeper-and-narrower choice), fewer below."""
    return max(2, round(PAPER_DEPTH * (budget / PAPER_BUDGET) ** DEPTH_EXPONENT))


def parse_budget(text: str) -> int | None:
    """``10M``, ``1.5B``, ``500k``, ``10e6`` or ``10000000`` as a parameter count; None if it is no number."""
    text = str(text).strip().replace("_", "").replace(",", "")
    scale = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9}.get(text[-1:].lower(), 1.0)
    number = text[:-1] if scale != 1.0 else text
    try:
        value = float(number) * scale
    except ValueError:
        return None
    return int(value) if math.isfinite(value) and value > 0 else None


def kv_heads_for(num_heads: int, source: ModelConfig) -> int | None:
    """The fewest KV heads that keep whole groups no larger than the source's (inheritance keeps heads whole)."""
    group = source.num_heads // source.num_kv_heads
    for kv in range(1, source.num_kv_heads + 1):
        if num_heads % kv == 0 and num_heads // kv <= group:
            return kv
    return None


def shape_for_budget(budget: int, source: ModelConfig, vocab_size: int) -> ModelConfig:
    """The paper's rule at any budget: depth from ``paper_depth``, then the width (whole heads of the source's
    size, FFN at the source's expansion rate) whose total parameter count lands closest to the budget."""
    depth = min(paper_depth(budget), source.num_layers)
    expansion = source.intermediate_size / source.hidden_size
    candidates = []
    for heads in range(1, source.num_heads + 1):
        kv = kv_heads_for(heads, source)
        if kv is None:
            continue
        width = heads * source.head_dim
        ffn = min(source.intermediate_size, max(16, round(expansion * width / 16) * 16))
        candidates.append(replace(source, vocab_size=vocab_size, hidden_size=width, num_layers=depth,
                                  num_heads=heads, num_kv_heads=kv, head_dim=source.head_dim, intermediate_size=ffn))
    best = min(candidates, key=lambda c: abs(c.num_params() - budget))
    if abs(best.num_params() - budget) > 0.5 * budget:
        smallest = min(c.num_params() for c in candidates)
        raise TinyLMError(f"no shape of the source's heads lands near a budget of {budget:,} parameters with a "
                          f"{vocab_size:,}-piece vocabulary (the smallest {depth}-layer shape has {smallest:,}); "
                          "give a larger budget, a lower --coverage or a smaller --vocab_size")
    return best


def read_target(target: str, source: ModelConfig, vocab_size: int) -> tuple[ModelConfig, str]:
    """The target shape (checked against the compact source) and how it was chosen."""
    from tinylm.inherit.plan import SHAPE_FIELDS, resolve_target

    text = str(target).strip()
    budget = parse_budget(text)
    if budget is not None:
        return shape_for_budget(budget, source, vocab_size), f"budget {budget:,}: {paper_depth(budget)} layers " \
            f"by depth = {PAPER_DEPTH} × (budget / 1B)^{DEPTH_EXPONENT}, width closest to the budget"
    if text in PRESETS:
        from tinylm.model import PRESET_ARGS

        # KV heads only where the preset names them: otherwise they follow the source's grouping, below
        fields = {name: getattr(PRESETS[text], name) for name in SHAPE_FIELDS
                  if name != "num_kv_heads" or name in PRESET_ARGS[text]}
        how = f"preset {text}"
    elif text.startswith("{") or Path(text).suffix in (".yaml", ".yml", ".json"):
        import yaml

        if not text.startswith("{") and not Path(text).is_file():
            raise TinyLMError(f"--target shape file {text} does not exist; give a preset, a shape file or a "
                              "parameter budget such as 10M")
        try:
            fields = yaml.safe_load(text if text.startswith("{") else Path(text).read_text())
        except yaml.YAMLError as err:
            raise TinyLMError(f"--target {text} is not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(fields, dict):
            raise TinyLMError(f"--target {text} holds no mapping of shape fields ({', '.join(SHAPE_FIELDS)})")
        how = f"shape {text}"
    else:
        raise TinyLMError(f"--target {text!r} is neither a parameter budget (e.g. 10M), a preset "
                          f"({', '.join(sorted(PRESETS))}) nor a shape file (.yaml/.json)")
    shape = dict(fields)
    if "num_heads" in shape and "num_kv_heads" not in shape:
        kv = kv_heads_for(int(shape["num_heads"]), source)
        if kv is not None:
            shape["num_kv_heads"] = kv
    return resolve_target(shape, source), how


def describe(config: ModelConfig) -> str:
    return (f"{config.num_layers} layers × {config.hidden_size} wide, {config.num_heads} heads "
            f"({config.num_kv_heads} KV), FFN {config.intermediate_size}, vocab {config.vocab_size:,}: "
            f"{config.num_params() / 1e6:.2f}M parameters, {100 * config.embedding_share():.1f}% in embedding + head")


# ---- data: the training sample and the held-out documents ---------------------------------------------------
def sample_documents(specs: list[str], text_field: str, val_every: int, train_chars: int, heldout_chars: int,
                     seed: int) -> tuple[list[str], list[str]]:
    """A seeded sample of the training documents (at least ``train_chars``, in the drawn order) and the first
    held-out documents of each source (about ``heldout_chars`` in all); held-out documents are every
    ``val_every``-th, as in fit."""
    from tinylm.corpus import resolve

    sources = [s for spec in specs for s in resolve(spec, text_field)]
    sizes, heldout = [], []
    for number, source in enumerate(sources):
        taken = 0
        for index, doc in enumerate(source.documents()):
            if not doc.strip():
                continue
            if index % val_every == val_every - 1:
                if taken < heldout_chars / len(sources):
                    heldout.append(doc)
                    taken += len(doc)
            else:
                sizes.append((number, index, len(doc)))
    total = sum(size for *_, size in sizes)
    if total == 0 or not heldout:
        raise TinyLMError(f"--data {specs} has too few documents for a training sample and a held-out set (every "
                          f"{val_every}th document); give more text")
    order = list(range(len(sizes)))
    random.Random(seed).shuffle(order)
    chosen, chars = set(), 0
    for position in order:
        if chars >= train_chars:
            break
        chosen.add(sizes[position][:2])
        chars += sizes[position][2]
    picked = {(number, index): doc for number, source in enumerate(sources)
              for index, doc in enumerate(source.documents()) if (number, index) in chosen}
    return [picked[sizes[p][:2]] for p in order if sizes[p][:2] in picked], heldout  # in the drawn order


def write_jsonl(path: Path, docs: list[str]) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        for doc in docs:
            handle.write(json.dumps({"text": doc}, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as handle:
        return [json.loads(line)["text"] for line in handle if line.strip()]


# ---- evaluation ---------------------------------------------------------------------------------------------
@torch.no_grad()
def heldout_bpb(model: Transformer, tokenizer, docs: list[str], seq_len: int, batch_size: int = 8) -> float:
    """Bits per UTF-8 byte of the documents: each is tokenized and followed by EOS (as in the packed training
    stream), the stream is scored in windows of ``seq_len``; the byte count is the text's own, so models with
    different tokenizers are compared on the same text."""
    tokens = token_stream(tokenizer, docs)
    windows = [tokens[i : i + seq_len + 1] for i in range(0, len(tokens) - 1, seq_len)]
    model.eval()
    nll = 0.0
    for first in range(0, len(windows), batch_size):
        batch = windows[first : first + batch_size]
        width = max(len(w) for w in batch)
        rows = torch.stack([F.pad(w, (0, width - len(w)), value=-100) for w in batch])
        inputs = rows[:, :-1].clamp(min=0)
        logits = model(inputs)
        nll += F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(), ignore_index=-100,
                               reduction="sum").item()
    return nll / (math.log(2) * sum(len(doc.encode()) for doc in docs))


def benchmark_scores(model: Transformer, tokenizer, tasks: list[str], limit: int | None,
                     data_dir: str | None) -> dict[str, float | None]:
    """Accuracy (acc_norm where lm-eval reports it) ×100 per task, None for a task whose files are missing."""
    if not tasks:
        return {}
    from tinylm.evaluation.adapter import TinyLMEval
    from tinylm.evaluation.command import run_tasks

    try:
        results = run_tasks(TinyLMEval(model, tokenizer=tokenizer, batch_size=16), tasks, limit=limit,
                            data_dir=data_dir, bootstrap_iters=0)["results"]
    except TinyLMError as err:
        print(f"tinylm pro: benchmarks skipped, reported n/a ({err})", flush=True)
        return {task: None for task in tasks}
    scores = {}
    for task in tasks:
        row = results.get(task, {})
        value = row.get("acc_norm,none", row.get("acc,none"))
        scores[task] = 100 * value if isinstance(value, (int, float)) else None
    return scores


# ---- stage 4: training, with an optional logit-KL term from the compact source -----------------------------
class DistilledLanguageModel(LanguageModel):
    """``LanguageModel`` whose loss adds a logit-KL term towards a frozen teacher (Minitron's retraining):
    loss = (1 − distill) · CE + distill · KL(teacher ‖ student). ``train/loss`` stays the CE, comparable with
    undistilled runs; the optimized mix is logged as ``train/objective``.

    Args:
        teacher: the teacher's model dir (same vocabulary as the student).
        distill: weight of the KL term in (0, 1].
        **kwargs: ``LanguageModel``'s arguments.
    """

    def __init__(self, teacher: str, distill: float = 0.5, **kwargs: Any) -> None:
        if not 0 < distill <= 1:
            raise TinyLMError(f"--distill {distill} must be a weight in (0, 1] (0 turns distillation off)")
        super().__init__(**kwargs)
        self._teacher: list[Transformer] = []  # a list keeps it out of the state dict and the optimizer

    def configure_model(self) -> None:
        super().configure_model()
        if not self._teacher:
            from tinylm.model_dir import load_model_dir

            teacher, _ = load_model_dir(self.hparams.teacher, with_tokenizer=False)
            if teacher.config.vocab_size != self.config.vocab_size:
                raise TinyLMError(f"the teacher {self.hparams.teacher} has {teacher.config.vocab_size} vocabulary "
                                  f"rows, the student {self.config.vocab_size}; distill from the compact source")
            self._teacher.append(teacher.requires_grad_(False).eval())

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        teacher = self._teacher[0].to(self.device)
        logits = self.net(batch["input_ids"]).float()
        ce = cross_entropy(logits, batch["labels"])
        with torch.no_grad():
            target = F.log_softmax(teacher(batch["input_ids"]).float(), dim=-1)
        kl = F.kl_div(F.log_softmax(logits, dim=-1).flatten(0, 1), target.flatten(0, 1), log_target=True,
                      reduction="batchmean")
        loss = (1 - self.hparams.distill) * ce + self.hparams.distill * kl
        if not torch.isfinite(loss):
            raise TinyLMError(f"training loss became {loss.item()} at step {self.global_step}; lower lr0")
        self.tokens_seen += batch["input_ids"].numel() * self.trainer.world_size
        self.log("train/loss", ce, prog_bar=True)
        self.log("train/kl", kl)
        self.log("train/objective", loss)
        self.log("train/tokens", float(self.tokens_seen))
        self.log("train/lr", self.optimizers().param_groups[0]["lr"], prog_bar=True)
        return loss


def loss_curve(folder: Path) -> dict[str, list[float]]:
    """Step-wise train loss and the val/bpb points from a training arm's CSV log."""
    import csv

    curve: dict[str, list[float]] = {"step": [], "loss": [], "val_step": [], "val_bpb": []}
    for path in sorted(folder.glob("logs/version_*/metrics.csv")):
        with open(path) as handle:
            for row in csv.DictReader(handle):
                if row.get("train/loss"):
                    curve["step"].append(int(row["step"]))
                    curve["loss"].append(float(row["train/loss"]))
                if row.get("val/bpb"):
                    curve["val_step"].append(int(row["step"]))
                    curve["val_bpb"].append(float(row["val/bpb"]))
    return curve


# ---- the command --------------------------------------------------------------------------------------------
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
    tokens: int = 400_000,
    rounds: int = 2,
    rate: float = 0.5,
    seq_len: int = 128,
    batch_size: int = 8,
    lr0: float = 1e-3,
    bs0: int = 2048,
    lr_r: float = 0.5,
    min_lr_ratio: float = 0.1,
    warmup: float = 0.05,
    scratch: bool = True,
    distill: float = 0.0,
    tasks: list[str] = PAPER_TASKS,  # noqa: B006 — jsonargparse reads the default from the signature
    eval_limit: int | None = 100,
    eval_data_dir: str | None = None,
    heldout_chars: int = 100_000,
    val_every: int = 50,
    text_field: str = "text",
    seed: int = 1234,
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
        lr0: lr0 of the paper's rule lr = (bs / bs0)^r × lr0 (scaled to tiny models with bs0).
        bs0: bs0 of the rule, in tokens per step (the paper's 1M belongs to 1B models).
        lr_r: r of the rule (the paper recommends 0.5).
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
        seed: seeds sampling, calibration, initialization, data order and the rounds' draws.
        overwrite: redo every stage of a previous run in --out.
    """
    wanted = _stages(stages)
    _check_settings(coverage, vocab_size, tokens, rounds, rate, seq_len, batch_size, lr0, bs0, distill, val_every,
                    heldout_chars, criterion)
    specs = [data] if isinstance(data, str) else list(data)
    if not specs:
        raise TinyLMError("--data is empty; give at least one text source (e.g. builtin)")
    run = prepare_out(out, overwrite)
    settings = {k: v for k, v in locals().items() if k not in ("wanted", "specs", "run")}
    with atomic_file(run / RUN_FILE) as handle:
        json.dump({"command": "tinylm pro", "settings": settings}, handle, indent=2, default=str)
    from tinylm.corpus import resolve

    data_ids = [s.fingerprint for spec in specs for s in resolve(spec, text_field)]
    source_dir = _source_dir(source, run, overwrite)
    source_id = fingerprint_dir(source_dir)
    from tinylm.model_dir import load_config

    if parse_budget(target) is None:  # a bad shape is refused now, not after the tokenizer stage
        read_target(target, load_config(source_dir), load_config(source_dir).vocab_size)
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

    # 1. compact tokenizer --------------------------------------------------------------------------------
    inputs = {"source": source_id, "data": data_ids, "coverage": coverage, "vocab_size": vocab_size,
              "val_every": val_every, "text_field": text_field}
    folder = run / "1-tokenizer"
    done["tokenizer"] = (run_stage(folder, inputs, lambda tmp: _compact(tmp, source_dir, specs, coverage, vocab_size,
                                                                         val_every, text_field), overwrite)
                         if need("tokenizer") else upstream("tokenizer", folder))
    compact = done["tokenizer"]["folder"] / "source"
    print(f"tinylm pro: compact tokenizer: {_tokenizer_line(done['tokenizer']['result'])}", flush=True)

    if stop_after("tokenizer"):
        return results()

    # 2. architecture -------------------------------------------------------------------------------------
    target_file = Path(target) if Path(str(target)).is_file() else None
    inputs = {"after": done["tokenizer"]["hash"], "target": str(target),
              "target_file": target_file.read_text() if target_file else None}
    folder = run / "2-architecture"
    done["architecture"] = (run_stage(folder, inputs, lambda tmp: _architecture(tmp, target, load_config(compact)),
                                      overwrite) if need("architecture") else upstream("architecture", folder))
    shape = ModelConfig(**done["architecture"]["result"]["config"])
    print(f"tinylm pro: target shape ({done['architecture']['result']['how']}): {describe(shape)}", flush=True)

    if stop_after("architecture"):
        return results()

    # the training sample (also the calibration text) and the held-out documents -------------------------
    per_pass = round(tokens / (1 + (rounds - 1) * rate))  # round 0 sees the sample once, later rounds a share
    inputs = {"after": done["tokenizer"]["hash"], "data": data_ids, "train_tokens": per_pass,
              "heldout_chars": heldout_chars, "val_every": val_every, "seed": seed}
    folder = run / "data"
    done["data"] = (run_stage(folder, inputs, lambda tmp: _sample(tmp, specs, text_field, val_every, compact, per_pass,
                                                                   heldout_chars, seed),
                              overwrite) if need("inherit") or need("train") else upstream("inherit", folder))

    # 3. inherit ------------------------------------------------------------------------------------------
    inputs = {"after": done["architecture"]["hash"], "layers": layers, "criterion": criterion,
              "data": done["data"]["hash"],
              "calibration_size": calibration_size, "seq_len": seq_len, "seed": seed,
              "mask_steps": mask_steps if "learned" in (layers, criterion) else None}
    folder = run / "3-inherit"
    sample = done["data"]["folder"]
    done["inherit"] = (run_stage(folder, inputs, lambda tmp: _inherit(tmp, compact, shape, sample, layers, criterion,
                                                                       calibration_size, mask_steps, seq_len,
                                                                       batch_size, seed), overwrite)
                       if need("inherit") else upstream("inherit", folder))
    inherited = done["inherit"]["folder"] / "model"

    if stop_after("inherit"):
        return results()

    # 4. train --------------------------------------------------------------------------------------------
    train_dir = run / "4-train"
    recipe = {"rounds": rounds, "rate": rate, "seq_len": seq_len, "batch_size": batch_size, "lr0": lr0, "bs0": bs0,
              "lr_r": lr_r, "min_lr_ratio": min_lr_ratio, "warmup": warmup, "seed": seed}
    arms = {"pro": inherited}
    if scratch:
        arms["scratch"] = None
    if distill > 0:
        arms["distill"] = inherited
    for arm, init in arms.items():
        folder = train_dir / arm
        inputs = {"data": done["data"]["hash"], "init": done["inherit"]["hash"] if init else "random",
                  "shape": asdict(shape), "recipe": recipe, "distill": distill if arm == "distill" else 0.0,
                  "teacher": done["tokenizer"]["hash"] if arm == "distill" else None}
        build = (lambda tmp, arm=arm, init=init: _train(tmp, arm, shape, init, done["data"]["folder"], compact,
                                                         recipe, distill))
        done[arm] = run_stage(folder, inputs, build, overwrite) if need("train") else stage_record(folder)
        if done[arm] is not None:
            done[arm]["folder"] = folder

    if stop_after("train"):
        return results()

    # 5. report -------------------------------------------------------------------------------------------
    heldout = read_jsonl(done["data"]["folder"] / "heldout.jsonl")
    evaluation = {"tasks": list(tasks), "eval_limit": eval_limit, "eval_data_dir": eval_data_dir,
                  "heldout": done["data"]["hash"], "seq_len": seq_len}
    models = {"source": (source_dir, source_id), "compact source": (compact, done["tokenizer"]["hash"]),
              "random init": (None, digest([asdict(shape), seed])), "inherited (step 0)": (inherited,
                                                                                           done["inherit"]["hash"])}
    for arm in arms:
        if done.get(arm):
            models[_ARM_NAMES[arm]] = (done[arm]["folder"] / "model", done[arm]["hash"])
    scores = {}
    for name, (path, key) in models.items():
        folder = run / "5-report" / re.sub(r"[^A-Za-z0-9]+", "-", name.split(" (")[0]).strip("-")
        record = run_stage(folder, {"model": key, **evaluation},
                           lambda tmp, path=path: _evaluate(path, compact, shape, seed, heldout, seq_len,
                                                            list(tasks), eval_limit, eval_data_dir), overwrite)
        scores[name] = record["result"]
    report = write_report(run, str(source), done, scores, arms, shape, list(tasks), tokens, recipe, eval_limit)
    print(f"tinylm pro: report -> {run / 'report.md'}", flush=True)
    return report


_ARM_NAMES = {"pro": "Pro (inherited + rounds)", "scratch": "scratch (same shape, same tokens)",
              "distill": "Pro + distill"}


def _stages(stages: list[str] | str) -> list[str]:
    names = [s.strip() for s in (stages.split(",") if isinstance(stages, str) else stages) if s.strip()]
    if names == ["all"]:
        return list(STAGES)
    unknown = [s for s in names if s not in STAGES]
    if unknown or not names:
        raise TinyLMError(f"--stages {','.join(names) or '(empty)'}: choose from {', '.join(STAGES)} or all")
    return names


def _check_settings(coverage: float, vocab_size: int | None, tokens: int, rounds: int, rate: float, seq_len: int,
                    batch_size: int, lr0: float, bs0: int, distill: float, val_every: int, heldout_chars: int,
                    criterion: str) -> None:
    from tinylm.inherit.importance import CRITERIA

    if not 0 < coverage <= 1:
        raise TinyLMError(f"--coverage {coverage} must be a share in (0, 1], e.g. the paper's 0.9786")
    if vocab_size is not None and vocab_size < 300:
        raise TinyLMError(f"--vocab_size {vocab_size} is too small: the special and 256 byte pieces are always kept")
    if tokens < 1 or rounds < 1 or not 0 < rate <= 1:
        raise TinyLMError(f"--tokens {tokens}, --rounds {rounds}, --rate {rate}: need tokens ≥ 1, rounds ≥ 1 and a "
                          "rate in (0, 1]")
    if seq_len < 8 or batch_size < 1 or lr0 <= 0 or bs0 < 1:
        raise TinyLMError(f"--seq_len {seq_len}, --batch_size {batch_size}, --lr0 {lr0}, --bs0 {bs0} must be "
                          "positive (seq_len at least 8)")
    if not 0 <= distill <= 1:
        raise TinyLMError(f"--distill {distill} must be a weight in [0, 1] (0 = off)")
    if val_every < 2 or heldout_chars < 1:
        raise TinyLMError(f"--val_every {val_every} must be at least 2 and --heldout_chars positive")
    if criterion not in (*CRITERIA, "learned"):
        raise TinyLMError(f"--criterion {criterion!r}: choose one of {', '.join((*CRITERIA, 'learned'))}")


def _source_dir(source: str, run: Path, overwrite: bool) -> Path:
    """The source as a model dir: a built-in is converted once into the cache, a GGUF into ``0-source``."""
    from tinylm.model_dir import resolve_model_dir

    if str(source).lower().endswith(".gguf"):
        path = Path(source).expanduser()
        if not path.is_file():
            raise TinyLMError(f"--source {path} does not exist; give a .gguf file, a model dir or "
                              "builtin:smollm2-135m")
        from tinylm.convert import convert_gguf

        stat = path.stat()
        record = run_stage(run / "0-source", {"gguf": [str(path.resolve()), stat.st_size, stat.st_mtime_ns]},
                           lambda tmp: {"model": str(convert_gguf(path, tmp / "model").relative_to(tmp))},
                           overwrite)
        return record["folder"] / "model"
    directory = resolve_model_dir(source)
    if not (directory / "config.json").is_file():
        raise TinyLMError(f"--source {source} is not a model dir (no config.json); give a model dir, a .gguf file "
                          "or builtin:smollm2-135m")
    return directory


def _command(group: str, name: str) -> Callable[..., Any]:
    """A ``tinylm`` subcommand's function, looked up the way the CLI does (it stays valid as modules move)."""
    import importlib

    from tinylm.cli import COMMANDS

    module, _, function = COMMANDS[group][name].partition(":")
    return getattr(importlib.import_module(module), function)


def _compact(tmp: Path, source_dir: Path, specs: list[str], coverage: float, vocab_size: int | None,
             val_every: int, text_field: str) -> dict[str, Any]:
    """Count, pick k by coverage, compact the tokenizer, remap the source: ``counts/``, ``tokenizer/``, ``source/``.

    The kept pieces always include the special and byte pieces (and pieces that keep BPE merges reachable), so k
    grows by the top pieces those displaced until the kept set covers ``coverage`` (at most six compactions).
    """
    import shutil

    import numpy as np

    _command("tokenizer", "count")(tokenizer=str(source_dir), input=specs, out=str(tmp / "counts"),
                                   val_every=val_every, text_field=text_field)
    frequencies = json.loads((tmp / "counts" / "frequencies.json").read_text())
    counts = np.asarray(frequencies["counts"], dtype=np.float64)
    ranked = np.argsort(-counts, kind="stable")
    curve = np.cumsum(counts[ranked]) / counts.sum()
    k = vocab_size or int(np.searchsorted(curve, coverage - 1e-12) + 1)
    for attempt in range(6):
        k = min(k, len(counts))
        trial = tmp / f"tokenizer-{k}"
        if not trial.exists():
            _command("tokenizer", "compact")(tokenizer=str(source_dir), freq=str(tmp / "counts"), vocab_size=k,
                                             out=str(trial), text_field=text_field)
        record = json.loads((trial / "compact.json").read_text())
        kept = np.asarray(record["id_map"])
        covered = float(counts[kept].sum() / counts.sum())
        if vocab_size or covered >= coverage - 1e-12 or k == len(counts):
            break
        needed = int(np.searchsorted(curve, coverage - 1e-12) + 1)
        # grow by twice the top pieces the kept set still lacks: pieces kept for reachability displace more
        k += 2 * max(1, needed - int(np.isin(ranked[:needed], kept).sum()))
    trial.rename(tmp / "tokenizer")
    for other in tmp.glob("tokenizer-*"):
        shutil.rmtree(other)
    _command("tokenizer", "remap")(model=str(source_dir), tokenizer=str(tmp / "tokenizer"), out=str(tmp / "source"))
    return {"source_vocab": len(counts), "vocab_size": int(len(kept)), "coverage_target": coverage,
            "counted_coverage": covered, "inflation": (record.get("verify") or {}).get("inflation"),
            "compactions": attempt + 1, "counted_tokens": frequencies["tokens"]}


def _tokenizer_line(result: dict[str, Any]) -> str:
    inflation = f", sequences {result['inflation']:.3f}× as long" if result.get("inflation") else ""
    return (f"kept {result['vocab_size']:,} of {result['source_vocab']:,} pieces, covering "
            f"{100 * result['counted_coverage']:.2f}% of the counted tokens "
            f"(target {100 * result['coverage_target']:.2f}%){inflation}")


def _architecture(tmp: Path, target: str, source: ModelConfig) -> dict[str, Any]:
    shape, how = read_target(target, source, source.vocab_size)
    result = {"config": asdict(shape), "how": how, "params": shape.num_params(),
              "body_params": shape.num_params(embeddings=False), "embedding_share": shape.embedding_share(),
              "source_params": source.num_params(), "source_embedding_share": source.embedding_share()}
    (tmp / "shape.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _inherit(tmp: Path, compact: Path, shape: ModelConfig, data_dir: Path, layers: str, criterion: str,
             calibration_size: int, mask_steps: int, seq_len: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Select layers and widths of the compact source (``tinylm inherit``'s path); Taylor's gradients come from
    the training sample, never the held-out text. Writes ``model/``."""
    from tinylm.inherit import (calibration_blocks, importance, learned_importance, load_masks, save_inherited,
                                select_layers)
    from tinylm.model_dir import load_model_dir

    model, tokenizer = load_model_dir(compact)
    provenance: dict[str, Any] = {"parent": str(compact), "criterion": criterion, "layer_strategy": layers,
                                  "seed": seed}
    learned = None
    if "learned" in (layers, criterion):
        masks = _learn_masks(tmp / "masks", compact, shape, data_dir, mask_steps, seq_len, batch_size, seed)
        log_alphas, temperature = load_masks(masks)
        learned = learned_importance(log_alphas, model.config, temperature)
        provenance["masks"] = "masks/model"
    kept = select_layers(layers, model.config.num_layers, shape.num_layers,
                         learned.layer_scores if learned is not None else None)
    if criterion == "learned":
        scores = learned
    else:
        blocks = None
        if criterion == "taylor":
            blocks = calibration_blocks(token_stream(tokenizer, read_jsonl(data_dir / "sample.jsonl")),
                                        calibration_size, seq_len, seed)
            provenance["calibration"] = {"text": "the training sample", "size": calibration_size, "seq_len": seq_len}
        scores = importance(model, criterion, blocks, batch_size=4)
    plan = scores.plan(shape, kept)
    save_inherited(tmp / "model", model.state_dict(), model.config, plan, tokenizer, provenance)
    print(f"tinylm pro: inherited {shape.num_params():,} of {model.config.num_params():,} parameters "
          f"({criterion}, layers {kept})", flush=True)
    return {"model": "model", "layers": kept, "criterion": criterion, "layer_strategy": layers}


def token_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    """Documents as one stream, each followed by EOS (the packed training layout), after a leading EOS."""
    stream = [tokenizer.eos_id]
    for ids in tokenizer.encode(docs):
        stream += ids + [tokenizer.eos_id]
    return torch.tensor(stream, dtype=torch.long)


def _learn_masks(folder: Path, compact: Path, shape: ModelConfig, data_dir: Path, steps: int, seq_len: int,
                 batch_size: int, seed: int) -> str:
    """Train hard-concrete masks towards the target for ``steps`` steps (the learned criterion's input)."""
    from tinylm.datamodule import TextDataModule
    from tinylm.inherit.mask_learner import MaskLearner
    from tinylm.inherit.plan import SHAPE_FIELDS
    from tinylm.train import fit

    target = {name: getattr(shape, name) for name in SHAPE_FIELDS}
    learner = MaskLearner(source=str(compact), target=target, model_dir=str(folder / "model"))
    every = stage_record(data_dir)["result"]["fit_val_every"]
    data = TextDataModule(sources=[str(data_dir / "train.jsonl")], tokenizer=str(compact), seq_len=seq_len,
                          batch_size=batch_size, val_every=every, seed=seed)
    fit(learner, data, folder, max_steps=steps, seed=seed, limit_val_batches=5)
    return str(folder / "model")


def _sample(tmp: Path, specs: list[str], text_field: str, val_every: int, compact: Path, train_tokens: int,
            heldout_chars: int, seed: int) -> dict[str, Any]:
    """``sample.jsonl``: drawn training documents up to ``train_tokens`` compact-tokenizer tokens (Taylor's
    calibration text too); ``train.jsonl``: the sample with held-out documents interleaved so that the
    DataModule's own split (every ``fit_val_every``-th document) holds out exactly those; ``heldout.jsonl``: the
    text the report scores."""
    from tinylm.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(compact)
    counted = json.loads((compact.parent / "counts" / "frequencies.json").read_text())
    # characters to draw: bytes per source token over-estimates characters per compact token, plus a margin
    chars = round(1.2 * train_tokens * counted["bytes"] / max(1, counted["tokens"]))
    drawn, heldout = sample_documents(specs, text_field, val_every, chars, heldout_chars, seed)
    train, total = [], 0
    for doc, ids in zip(drawn, tokenizer.encode(drawn)):
        if total >= train_tokens:
            break
        train.append(doc)
        total += len(ids) + 1  # and its EOS
    docs, every, shared = interleave(train, heldout)
    write_jsonl(tmp / "sample.jsonl", train)
    write_jsonl(tmp / "train.jsonl", docs)
    write_jsonl(tmp / "heldout.jsonl", heldout)
    return {"train_documents": len(train), "train_tokens": total, "train_chars": sum(map(len, train)),
            "heldout_documents": len(heldout), "heldout_bytes": sum(len(d.encode()) for d in heldout),
            "fit_val_every": every, "fit_val_documents": shared}


def interleave(train: list[str], heldout: list[str]) -> tuple[list[str], int, int]:
    """One document list whose every ``every``-th entry is a held-out document and no other is: returns the
    list, ``every`` and how many held-out documents it holds (as many as an exact period allows)."""
    for count in range(len(heldout), 0, -1):
        total = len(train) + count
        every = next((k for k in range(2, total + 1) if total // k == count), None)
        if every is not None:
            rest, held = iter(train), iter(heldout[:count])
            return [next(held) if i % every == every - 1 else next(rest) for i in range(total)], every, count
    raise TinyLMError("no held-out documents to validate on; give more text in --data")


def _train(tmp: Path, arm: str, shape: ModelConfig, init: Path | None, data_dir: Path, compact: Path,
           recipe: dict[str, Any], distill: float) -> dict[str, Any]:
    """Train one arm on the training sample in rounds; writes ``model/`` and ``logs/``."""
    from tinylm.datamodule import TextDataModule
    from tinylm.optim import scaled_lr
    from tinylm.rounds import MultiRoundTraining
    from tinylm.train import fit

    every = stage_record(data_dir)["result"]["fit_val_every"]
    data = TextDataModule(sources=[str(data_dir / "train.jsonl")], tokenizer=str(compact), seq_len=recipe["seq_len"],
                          batch_size=recipe["batch_size"], val_every=every, seed=recipe["seed"])
    data.prepare_data()
    data.setup("fit")
    rounds = MultiRoundTraining(rounds=recipe["rounds"], rate=recipe["rate"], seed=recipe["seed"],
                                out_dir=str(tmp / "rounds"))
    steps = sum(rounds.round_steps(data.num_train_blocks, recipe["batch_size"]))
    batch_tokens = recipe["batch_size"] * recipe["seq_len"]
    lr = scaled_lr(batch_tokens, recipe["lr_r"], recipe["lr0"], recipe["bs0"])
    common = dict(lr=recipe["lr0"], min_lr=lr * recipe["min_lr_ratio"], warmup=recipe["warmup"],
                  lr_scaling_r=recipe["lr_r"], lr_scaling_bs0=recipe["bs0"], model_dir=str(tmp / "model"))
    init_from = None if init is None else str(init)  # the inherited model dir (same shape) or a random init
    if arm == "distill":
        module = DistilledLanguageModel(teacher=str(compact), distill=distill, config=shape, init_from=init_from,
                                        **common)
    else:
        module = LanguageModel(config=shape, init_from=init_from, **common)
    print(f"tinylm pro: training {arm}: {steps} steps × {batch_tokens} tokens in {recipe['rounds']} round(s), "
          f"lr = ({batch_tokens}/{recipe['bs0']})^{recipe['lr_r']} × {recipe['lr0']:g} = {lr:.2e}", flush=True)
    start = time.perf_counter()
    trainer = fit(module, data, tmp, max_steps=steps, seed=recipe["seed"], val_check_interval=max(1, steps // 8),
                  callbacks=[rounds])
    seconds = time.perf_counter() - start
    return {"model": "model", "steps": trainer.global_step, "tokens": module.tokens_seen, "lr": lr,
            "train_blocks": data.num_train_blocks, "seconds": round(seconds, 1),
            "final_val_bpb": float(trainer.callback_metrics.get("val/bpb", float("nan")))}


def _evaluate(path: Path | None, tokenizer_dir: Path, shape: ModelConfig, seed: int, heldout: list[str],
              seq_len: int, tasks: list[str], limit: int | None, data_dir: str | None) -> dict[str, Any]:
    """Held-out bpb and benchmark scores of a model dir (``None``: a seeded random init of the target shape)."""
    from tinylm.model_dir import load_model_dir
    from tinylm.tokenizer import load_tokenizer

    start = time.perf_counter()
    if path is None:
        model = Transformer(shape)
        model.reset_parameters(seed)
    else:
        model, _ = load_model_dir(path, with_tokenizer=False)
    tokenizer = load_tokenizer(tokenizer_dir if path is None else path)
    model.eval()
    bpb = heldout_bpb(model, tokenizer, heldout, seq_len)
    scores = benchmark_scores(model, tokenizer, tasks, limit, data_dir)
    return {"params": model.config.num_params(), "embedding_share": model.config.embedding_share(),
            "vocab_size": model.config.vocab_size, "layers": model.config.num_layers,
            "hidden_size": model.config.hidden_size, "bpb": bpb, "tasks": scores,
            "seconds": round(time.perf_counter() - start, 1)}


# ---- stage 5: the report ------------------------------------------------------------------------------------
def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def write_report(run: Path, source: str, done: dict[str, dict[str, Any]], scores: dict[str, dict[str, Any]], arms: dict,
                 shape: ModelConfig, tasks: list[str], tokens: int, recipe: dict[str, Any],
                 eval_limit: int | None = None) -> dict[str, Any]:
    """``report.md``, ``report.json`` and ``loss_curves.png`` at the top of the run folder."""
    tok = done["tokenizer"]["result"]
    trained = {arm: done[arm]["result"] for arm in arms if done.get(arm)}
    figure = plot_curves(run, {arm: loss_curve(done[arm]["folder"]) for arm in trained}) if trained else None
    header = "| model | layers × width | vocab | params | emb+head | held-out bpb |" + \
        "".join(f" {t} |" for t in tasks) + (" avg |" if tasks else "")
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for name, row in scores.items():
        values = [row["tasks"].get(t) for t in tasks]
        known = [v for v in values if v is not None]
        avg = statistics.fmean(known) if known and len(known) == len(values) else None
        lines.append(f"| {name} | {row['layers']} × {row['hidden_size']} | {row['vocab_size']:,} | "
                     f"{row['params'] / 1e6:.2f}M | {100 * row['embedding_share']:.1f}% | {row['bpb']:.4f} |" +
                     "".join(f" {_fmt(v, 1)} |" for v in values) + (f" {_fmt(avg, 1)} |" if tasks else ""))
    findings = _findings(scores, trained)
    arch = done["architecture"]["result"]
    inherit = done["inherit"]["result"]
    first = next(iter(trained.values()), {})  # every arm trains the same steps and tokens
    text = [
        "# tinylm pro report", "",
        f"Source `{source}`: {_fmt(scores['source']['params'] / 1e6)}M parameters, "
        f"vocab {scores['source']['vocab_size']:,}.",
        "",
        "## The four formulas, in order",
        f"1. **Compact tokenizer**: {_tokenizer_line(tok)}.",
        f"2. **Architecture** ({arch['how']}): {describe(shape)}.",
        f"3. **Inheritance**: layers {inherit['layer_strategy']} {inherit['layers']} of the compact source, width by "
        f"{inherit['criterion']}.",
        f"4. **Multi-round training**: {recipe['rounds']} round(s), later rounds on the hardest {recipe['rate']:.0%} "
        f"of the batches; lr = (bs / bs0)^r × lr0 = ({recipe['batch_size'] * recipe['seq_len']}/{recipe['bs0']})"
        f"^{recipe['lr_r']} × {recipe['lr0']:g}" + (f" = {first['lr']:.2e}" if trained else "") +
        (f"; {first['steps']} steps, {first['tokens']:,} training tokens per arm (asked: {tokens:,})."
         if trained else "."),
        "",
        "## Scores",
        "Held-out bpb: bits per UTF-8 byte on held-out documents of --data (never trained on; lower is better), "
        "comparable across tokenizers. Benchmarks: accuracy ×100 (acc_norm where lm-eval reports it)"
        + (f" on the first {eval_limit} items of each task (one item moves a score by {100 / eval_limit:.0f} points)"
           if eval_limit else "") + "; n/a when the benchmark files are missing. One seed.",
        "", *lines, "",
        "## Findings", *[f"- {line}" for line in findings], "",
    ]
    if figure:
        text += [f"![loss curves]({figure})", ""]
    text += ["## Stage times", "| stage | seconds |", "|---|---|"]
    text += [f"| {name} | {record.get('seconds', 0):.0f} |" for name, record in done.items() if record]
    report = {"scores": scores, "findings": findings, "tokenizer": tok, "architecture": arch,
              "training": trained, "recipe": recipe}
    with atomic_file(run / "report.md") as handle:
        handle.write("\n".join(text) + "\n")
    with atomic_file(run / "report.json") as handle:
        json.dump(report, handle, indent=2, default=str)
    return report


def _findings(scores: dict[str, dict[str, Any]], trained: dict[str, dict[str, Any]]) -> list[str]:
    """What the numbers say, in words chosen by the numbers (one seed: differences are not tested)."""
    bpb = {name: row["bpb"] for name, row in scores.items()}
    start, random_init = bpb["inherited (step 0)"], bpb["random init"]
    verdict = "far below" if start < 0.8 * random_init else "below" if start < random_init else "NOT below"
    said = [f"At step 0 the inherited model is {verdict} a random init of the same shape: {start:.3f} vs "
            f"{random_init:.3f} held-out bpb ({100 * (start - random_init) / random_init:+.1f}%)."]
    pro, scratch = bpb.get(_ARM_NAMES["pro"]), bpb.get(_ARM_NAMES["scratch"])
    if pro is not None and scratch is not None:
        verdict = "ends below" if pro < scratch else "does NOT end below"
        said.append(f"After the same training tokens, Pro {verdict} scratch: {pro:.3f} vs {scratch:.3f} bpb "
                    f"({100 * (pro - scratch) / scratch:+.1f}%).")
    distill = bpb.get(_ARM_NAMES["distill"])
    if pro is not None and distill is not None:
        verdict = "helps" if distill < pro else "does NOT help"
        said.append(f"At equal tokens, the logit-KL term from the compact source {verdict}: {distill:.3f} vs "
                    f"{pro:.3f} bpb without it ({100 * (distill - pro) / pro:+.1f}%); the distilled arm took "
                    f"{trained['distill']['seconds']:.0f} s against {trained['pro']['seconds']:.0f} s "
                    "(the teacher's forward pass).")
    if "compact source" in bpb:
        said.append(f"Compacting the tokenizer moves the source from {bpb['source']:.3f} to "
                    f"{bpb['compact source']:.3f} bpb (pieces it dropped are spelled with kept ones).")
    return said


def plot_curves(run: Path, curves: dict[str, dict[str, list[float]]]) -> str:
    """Training loss (smoothed) and validation bpb of each arm against optimizer steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for arm, curve in curves.items():
        window = max(1, len(curve["loss"]) // 50)
        smooth = [statistics.fmean(curve["loss"][max(0, i - window + 1): i + 1]) for i in range(len(curve["loss"]))]
        left.plot(curve["step"], smooth, label=_ARM_NAMES[arm])
        right.plot(curve["val_step"], curve["val_bpb"], marker="o", label=_ARM_NAMES[arm])
    left.set_xlabel("optimizer step")
    left.set_ylabel("training loss (nats/token, smoothed)")
    right.set_xlabel("optimizer step")
    right.set_ylabel("validation bits/byte")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_file(run / "loss_curves.png", "wb") as handle:
        figure.savefig(handle, format="png", dpi=110)
    plt.close(figure)
    return "loss_curves.png"
