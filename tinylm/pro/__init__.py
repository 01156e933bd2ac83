"""``tinylm pro``: from a pretrained LLaMA checkpoint to a tiny "Pro" model, the paper's four formulas in order.

    1-tokenizer     count the source tokenizer on --data, keep the top-k pieces covering ``coverage`` of the
                    tokens (the paper's 97.86%), remap the source's embedding/head rows: the *compact source*
    2-architecture  the target shape: a preset, a shape file, or a parameter budget solved by the depth rule
    3-inherit       layers (both-ends) and widths (Taylor) of the compact source: the *inherited* model
    4-train         multi-round training (2 rounds, the second on the hardest 50%) at the paper's batch-size lr
                    rule, and on the same tokens a scratch baseline (and, with ``distill``, a distilled arm); with
                    ``--seeds N`` every arm trains once per seed (``<arm>-seed<seed>``)
    5-report        held-out bits per byte and benchmark scores of each model, Pro − scratch seed by seed (mean,
                    95% t interval, paired p; one seed is reported as one draw); ``<out>/report.md`` + figure

Every stage writes its own folder under ``--out`` atomically, with ``stage.json`` recording a key of everything
it was built from (settings, data fingerprints, the key of the stage before, and the version of the code that
computes it: ``command.CODE``). A rerun skips a stage whose folder holds the same key, so a killed run resumes at
the first stage it had not finished, and a changed setting or changed code redoes only the stages it reaches. A
GGUF source is first converted into ``0-source``.

Files, one idea each: ``command`` (the command, stage by stage), ``stages`` (resumable stage folders),
``compaction`` (1), ``target`` (2), ``data`` (the training sample and held-out text), ``inheritance`` (3),
``training`` and ``distill`` (4), ``report`` (5).
"""

from tinylm.pro.command import PAPER_COVERAGE, PAPER_TASKS, STAGES, pro
from tinylm.pro.data import interleave, token_stream
from tinylm.pro.target import kv_heads_for, paper_depth, parse_budget, read_target, shape_for_budget

__all__ = ["PAPER_COVERAGE", "PAPER_TASKS", "STAGES", "interleave", "kv_heads_for", "paper_depth",
           "parse_budget", "pro", "read_target", "shape_for_budget", "token_stream"]
