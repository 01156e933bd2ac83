"""Shared-context scoring: a context run once with every continuation from its KV cache equals scoring each
request whole (to float tolerance, with identical greedy flags and accuracies), at any batch size."""

from __future__ import annotations

import pytest
from lm_eval.api.instance import Instance

from tinylm.evaluation.adapter import TinyLMEval, _share_contexts
from tinylm.evaluation.datasets import has_benchmark

needs_data = pytest.mark.skipif(not has_benchmark("c3"),
                                reason="offline benchmarks not found (set TINYLM_EVAL_DATA)")


@pytest.fixture(scope="module")
def model_dir(model_dir_factory):
    return model_dir_factory("debug")


def _agree(a: list[tuple[float, bool]], b: list[tuple[float, bool]], tolerance: float = 1e-4) -> None:
    assert len(a) == len(b)
    for (x, greedy_x), (y, greedy_y) in zip(a, b):
        assert x == pytest.approx(y, abs=tolerance) and greedy_x == greedy_y


def _picks(results: list[tuple[float, bool]], sizes: list[int]) -> list[int]:
    out, at = [], 0
    for n in sizes:
        out.append(max(range(n), key=lambda i: results[at + i][0]))
        at += n
    return out


# A passage with choices that share leading words, a short Chinese question, one-token choices, an empty context,
# a context with a single continuation, and a context longer than max_length (left truncation cuts each request
# differently).
PASSAGE = "The cat sat by the warm fire all evening and purred. " * 12
CHOICES = [(PASSAGE + "\nQuestion: which animal purrs?\nAnswer:", [" a cat", " a cat that sleeps", " a dog", " the sea"]),
           ("文章：今天天气很好，我们去公园散步吧！\n问题：天气怎么样？\n答案：", ["很好", "不好", "下雨了"]),
           ("The answer is", [" A", " B"]),
           ("", ["In the beginning", "And God said"]),
           ("Lonely context", [" with one continuation"]),
           ("word " * 400, [" end", " the end of it all", " finally"])]


def _requests() -> list[Instance]:
    args = [(context, choice) for context, choices in CHOICES for choice in choices]
    return [Instance("loglikelihood", {}, a, i) for i, a in enumerate(args)]


def test_shared_equals_whole_on_edge_cases(model_dir):
    whole = TinyLMEval(model_dir, batch_size=4, max_length=256, share_contexts=False)
    for batch_size in (1, 3, 16):
        shared = TinyLMEval(model_dir, batch_size=batch_size, max_length=256)
        _agree(shared.loglikelihood(_requests()), whole.loglikelihood(_requests()))


def _inputs_and_targets(lm: TinyLMEval, instances: list[Instance]) -> tuple[list[list[int]], list[list[int]]]:
    """What the adapter scores: each pair encoded as lm-eval splits it, left-truncated to max_length."""
    encoded = [lm._encode_pair(*i.args) for i in instances]
    return ([(c + x)[-(lm.max_length + 1):][:-1] for c, x in encoded],
            [x[-min(len(x), len(c + x) - 1):] for c, x in encoded])


def test_grouping_shares_multiple_choice_contexts(model_dir):
    lm = TinyLMEval(model_dir, max_length=256)
    requests = [r for r in _requests() if r.args[0]]  # an empty context is lm-eval's own case (BOS alone)
    inputs, targets = _inputs_and_targets(lm, requests)
    shared, plain = _share_contexts(inputs, targets)
    assert sorted([i for g in shared for i in g.members] + plain) == list(range(len(requests)))
    assert [0, 1, 2, 3] in [g.members for g in shared]  # the four choices run their passage once
    assert [7, 8] in [g.members for g in shared]  # one-token choices: one pass, no continuation pass
    assert {4, 5, 6} <= set(plain)  # a short question is cheaper scored whole
    assert 9 in plain  # a context with one continuation has nothing to share
    for group in shared:  # a group's inputs agree up to the position that predicts the first target token
        assert len({tuple(inputs[i][:group.prefix_length]) for i in group.members}) == 1
        assert all(len(inputs[i]) - len(targets[i]) + 1 == group.prefix_length for i in group.members)


@needs_data
def test_shared_equals_whole_on_c3_requests(model_dir):
    """C3's real requests (long dialogues, four choices): same log-likelihoods, same picks, any batch size."""
    from tinylm.evaluation.tasks import load_tasks

    (task,) = load_tasks(["c3"])
    task.build_all_requests(limit=8, rank=0, world_size=1)
    instances = task.instances
    sizes = [sum(1 for i in instances if i.doc_id == doc) for doc in sorted({i.doc_id for i in instances})]
    whole = TinyLMEval(model_dir, batch_size=8, share_contexts=False).loglikelihood(instances, disable_tqdm=True)
    shared = TinyLMEval(model_dir, batch_size=8)
    groups, _ = _share_contexts(*_inputs_and_targets(shared, instances))
    assert sum(len(g.members) for g in groups) >= 0.75 * len(instances)  # all but those cut by max_length
    batched = shared.loglikelihood(instances, disable_tqdm=True)
    one = TinyLMEval(model_dir, batch_size=1).loglikelihood(instances, disable_tqdm=True)
    _agree(batched, whole)
    _agree(one, batched, tolerance=1e-5)
    assert _picks(batched, sizes) == _picks(whole, sizes) == _picks(one, sizes)
