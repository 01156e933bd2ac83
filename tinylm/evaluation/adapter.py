"""The ``tinylm`` model for EleutherAI lm-evaluation-harness.

Scoring follows lm-eval's ``hf`` backend so the two agree on the same model dir (a test holds them to it):
context/continuation split by ``TemplateLM`` (trailing spaces move into the continuation, the pair is
encoded whole and split at the context's length), inputs truncated on the left to ``max_length``.
What is different is only how the work is done:

* requests whose inputs agree up to the position that predicts the first continuation token (the choices of
  one multiple-choice question) run that context once, into a KV cache, and every continuation from a copy
  of it — on a long passage with four choices that is about a quarter of the tokens. Groups where this saves
  little (short context, long continuations) go to the plain path;
* the plain path sorts requests by length and right-pads them into batches;
* the output head and the fp32 log-softmax run on the positions that are read, never on the whole sequence —
  on a small model the head is a large share of the compute.

BOS follows the tokenizer's own setting (``add_bos``: True for LLaMA's SentencePiece, False for SmolLM2's
byte-level BPE), which is what the ``hf`` backend does, so numbers are comparable with anyone's lm-eval run.
With BOS, an empty context is BOS alone and rolling windows start from BOS; without it (or with
``add_bos_token=False``), bare text is encoded and EOS is the empty-context prefix — EOS is the document
separator tinylm's packed training stream uses. Rolling loglikelihood encodes the text without BOS and lets
the window prefix supply it; the ``hf`` backend encodes it with BOS and then prefixes another one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from tinylm.artifacts import builtin
from tinylm.artifacts.model_dir import load_model_dir
from tinylm.errors import TinyLMError
from tinylm.model import KVCache, Transformer
from tinylm.model.generate import generate_ragged
from tinylm.tokenizer import Tokenizer, load_tokenizer

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@register_model("tinylm")
class TinyLMEval(TemplateLM):
    """An lm-eval ``LM`` over a tinylm ``Transformer``.

    Args:
        pretrained: a model dir (path) or an in-memory ``Transformer``.
        tokenizer: a ``Tokenizer`` or a path to one; defaults to the model dir's tokenizer.
        batch_size: sequences per forward pass.
        max_length: context window; defaults to the model's ``max_seq_len``.
        device: where to run; defaults to CUDA when available (an in-memory model stays where it is).
        dtype: weight dtype when loading a model dir (``float32``, ``bfloat16``, ``float16``).
        add_bos_token: start every context with BOS; None follows the tokenizer (see the module docstring).
        use_cache: decode ``generate_until`` with the KV cache (False recomputes the whole prefix each step).
        share_contexts: score a context shared by several continuations once (False scores every request whole;
            the results agree to float tolerance).
        max_gen_toks: default number of generated tokens when a task gives none.
        attention: attention backend when loading a model dir.
    """

    def __init__(
        self,
        pretrained: str | os.PathLike | Transformer | None = None,
        tokenizer: Tokenizer | str | os.PathLike | None = None,
        batch_size: int | str = 16,
        max_length: int | None = None,
        device: str | None = None,
        dtype: str = "float32",
        add_bos_token: bool | str | None = None,
        use_cache: bool | str = True,
        share_contexts: bool | str = True,
        max_gen_toks: int = 256,
        attention: str = "sdpa",
        **unused: Any,
    ) -> None:
        super().__init__()
        pretrained = getattr(pretrained, "_orig_mod", pretrained)  # a torch.compile'd model scores as its original
        if isinstance(pretrained, Transformer):
            model = pretrained
            if device is not None:
                model = model.to(device)
        elif isinstance(pretrained, (str, os.PathLike)):
            if dtype not in _DTYPES:
                raise TinyLMError(f"dtype {dtype!r} is not supported; choose one of {', '.join(_DTYPES)}")
            # lm-eval's --model_args pretrained=... is an edge: a built-in name is resolved here
            model, dir_tokenizer = load_model_dir(builtin.resolve(pretrained), attention=attention,
                                                  dtype=_DTYPES[dtype])
            tokenizer = tokenizer if tokenizer is not None else dir_tokenizer
            model = model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        else:
            raise TinyLMError("tinylm eval model: give pretrained=<model dir> or an in-memory Transformer")
        if tokenizer is None:
            raise TinyLMError("tinylm eval model: no tokenizer; the model dir has no tokenizer.model, pass tokenizer=")
        self.tokenizer = tokenizer if isinstance(tokenizer, Tokenizer) else load_tokenizer(tokenizer)
        if self.tokenizer.vocab_size > model.config.vocab_size:
            raise TinyLMError(f"tokenizer has {self.tokenizer.vocab_size} pieces but the model only "
                              f"{model.config.vocab_size} rows; use the tokenizer the model was trained with")
        try:
            self.batch_size = int(batch_size)
        except ValueError:
            raise TinyLMError(f"batch_size must be an integer, got {batch_size!r}") from None
        self.model = model
        self._device = next(model.parameters()).device
        self.max_length = int(max_length or model.config.max_seq_len)
        self.add_bos_token = (_flag(add_bos_token) if add_bos_token is not None
                              else bool(getattr(self.tokenizer, "add_bos", True)))
        self.use_cache = _flag(use_cache)
        self.share_contexts = _flag(share_contexts)
        self.max_gen_toks = int(max_gen_toks)

    # ---- tokenisation (TemplateLM's encode-pair logic uses these) ---------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_id
        return bos if self.add_bos_token and bos is not None else self.tokenizer.eos_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        bos = self.add_bos_token if add_special_tokens is None else add_special_tokens
        return self.tokenizer.encode_one(string, bos=bos)

    def tok_decode(self, tokens: list[int]) -> str:
        return self.tokenizer.decode(tokens)

    # ---- scoring ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _loglikelihood_tokens(
        self, requests: list[tuple[Any, list[int], list[int]]], disable_tqdm: bool = False, **kwargs: Any
    ) -> list[tuple[float, bool]]:
        inputs, targets = [], []
        for _, context, continuation in requests:
            whole = (context + continuation)[-(self.max_length + 1):]
            inputs.append(whole[:-1])
            targets.append(whole[-min(len(continuation), len(whole) - 1):])
        shared, plain = _share_contexts(inputs, targets) if self.share_contexts else ([], list(range(len(requests))))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        bar = tqdm(total=len(requests), disable=disable_tqdm or not requests, desc="tinylm loglikelihood")

        def record(indices: list[int], results: list[tuple[float, bool]]) -> None:
            for i, result in zip(indices, results):
                out[i] = result
                if requests[i][0] is not None:
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], result)
            bar.update(len(indices))

        was_training = self.model.training
        self.model.eval()
        try:
            plain.sort(key=lambda i: -len(inputs[i]))  # similar lengths share a batch: little padding
            for start in range(0, len(plain), self.batch_size):
                batch = plain[start:start + self.batch_size]
                record(batch, self._score_batch([inputs[i] for i in batch], [targets[i] for i in batch]))
            shared.sort(key=lambda group: -group.prefix_length)
            for start in range(0, len(shared), self.batch_size):
                groups = shared[start:start + self.batch_size]
                record([i for g in groups for i in g.members], self._score_shared(groups, inputs, targets))
        finally:
            self.model.train(was_training)
            bar.close()
        return out

    def _score_batch(self, inputs: list[list[int]], targets: list[list[int]]) -> list[tuple[float, bool]]:
        """Each input whole in one right-padded batch; the head runs on the target positions only."""
        ids = self._pad(inputs)
        rows, cols = [], []
        for r, (x, y) in enumerate(zip(inputs, targets)):
            rows += [r] * len(y)
            cols += range(len(x) - len(y), len(x))  # position p predicts token p + 1
        hidden = self.model(ids, return_hidden=True)
        picked = hidden[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
        return self._read_out(picked, targets)

    def _score_shared(self, groups: list["_SharedContext"], inputs: list[list[int]],
                      targets: list[list[int]]) -> list[tuple[float, bool]]:
        """Each group's context runs once (the groups' contexts batched, right-padded, into a KV cache); then
        the group's continuations run together from a copy of that context's cache.

        Right padding is safe for both passes: attention is causal, so no real position sees a pad.
        """
        config, dtype = self.model.config, next(self.model.parameters()).dtype
        prefixes = [inputs[g.members[0]][:g.prefix_length] for g in groups]
        tails_follow = any(len(targets[i]) > 1 for g in groups for i in g.members)
        contexts = (KVCache.empty(config, len(groups), max(map(len, prefixes)), self.device, dtype)
                    if tails_follow else None)  # one-token continuations read the context's last position only
        context_hidden = self.model(self._pad(prefixes), cache=contexts, return_hidden=True)
        picked, order = [], []
        for j, group in enumerate(groups):
            p = group.prefix_length
            last = context_hidden[j, p - 1:p]  # predicts every member's first continuation token
            for start in range(0, len(group.members), self.batch_size):
                members = group.members[start:start + self.batch_size]
                tails = [inputs[i][p:] for i in members]
                width = max(map(len, tails))
                if width == 0:  # one-token continuations: the context's last position is all they read
                    picked += [last] * len(members)
                    order += members
                    continue
                cache = KVCache.empty(config, len(members), p + width, self.device, dtype)
                for layer in range(config.num_layers):
                    cache.keys[layer][:, :, :p] = contexts.keys[layer][j:j + 1, :, :p]
                    cache.values[layer][:, :, :p] = contexts.values[layer][j:j + 1, :, :p]
                cache.length = p
                tail_hidden = self.model(self._pad(tails), cache=cache, return_hidden=True)
                picked += [torch.cat([last, tail_hidden[r, :len(tail)]]) for r, tail in enumerate(tails)]
                order += members
        results = dict(zip(order, self._read_out(torch.cat(picked), [targets[i] for i in order])))
        return [results[i] for g in groups for i in g.members]

    def _read_out(self, picked: torch.Tensor, targets: list[list[int]]) -> list[tuple[float, bool]]:
        """Sum of target log-probabilities and whether each target was the greedy pick, from the hidden states
        ``picked`` (one row per target token, in order); the head and an fp32 log-softmax run on these rows only."""
        logprobs = F.log_softmax(self.model.lm_head(picked).float(), dim=-1)
        want = torch.tensor([t for y in targets for t in y], device=self.device)
        token_lp = logprobs.gather(-1, want[:, None])[:, 0].tolist()
        greedy = (logprobs.argmax(-1) == want).tolist()
        results, at = [], 0
        for y in targets:
            results.append((float(sum(token_lp[at:at + len(y)])), all(greedy[at:at + len(y)])))
            at += len(y)
        return results

    def _pad(self, rows: list[list[int]]) -> torch.Tensor:
        """Right-padded (len(rows), longest) ids on the model's device."""
        ids = torch.full((len(rows), max(map(len, rows))), self.tokenizer.pad_id, dtype=torch.long)
        for r, row in enumerate(rows):
            ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        return ids.to(self.device)

    def loglikelihood_rolling(self, requests: list, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for index, (text,) in enumerate(req.args for req in requests):
            tokens = self.tok_encode(text, add_special_tokens=False)
            for context, target in map(make_disjoint_window, get_rolling_token_windows(
                    token_list=tokens, prefix_token=self.prefix_token_id, max_seq_len=self.max_length,
                    context_len=1)):
                windows.append((None, context, target))
                owner.append(index)
        totals = [0.0] * len(requests)
        for index, (logprob, _) in zip(owner, self._loglikelihood_tokens(windows, disable_tqdm=disable_tqdm)):
            totals[index] += logprob
        for req, total in zip(requests, totals):
            self.cache_hook.add_partial("loglikelihood_rolling", req.args, total)
        return totals

    # ---- generation ------------------------------------------------------------------------------
    @torch.no_grad()
    def generate_until(self, requests: list, disable_tqdm: bool = False) -> list[str]:
        """Greedy decoding; each row is cut at the first stop string (EOS text always stops).

        Requests with the same token budget decode together in left-padded batches of similar prompt length;
        stop strings cut the text afterwards, so the budget is the only setting that shapes a batch.
        """
        out: list[str] = [""] * len(requests)
        prepared = []
        for index, (context, gen_kwargs) in enumerate(req.args for req in requests):
            gen_kwargs = dict(gen_kwargs or {})
            if gen_kwargs.get("do_sample"):
                raise TinyLMError("tinylm decodes greedily; run the task with do_sample=false")
            until = gen_kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            new = int(gen_kwargs.get("max_gen_toks", self.max_gen_toks))
            if new >= self.max_length:
                raise TinyLMError(f"max_gen_toks={new} leaves no room for a context in max_length={self.max_length}")
            prompt = self.tok_encode(context)[-(self.max_length - new):]
            prepared.append((new, index, prompt, until, context, gen_kwargs))
        prepared.sort(key=lambda p: (p[0], -len(p[2])))  # one budget at a time, longest prompts first
        was_training = self.model.training
        self.model.eval()
        bar = tqdm(total=len(prepared), disable=disable_tqdm or not prepared, desc="tinylm generate_until")
        try:
            groups: dict[int, list] = {}
            for item in prepared:
                groups.setdefault(item[0], []).append(item)
            for new, items in groups.items():
                for start in range(0, len(items), self.batch_size):
                    chunk = items[start:start + self.batch_size]
                    rows = generate_ragged(self.model, [p[2] for p in chunk], new, eos_id=self.eot_token_id,
                                           batch_size=self.batch_size, use_cache=self.use_cache)
                    for (_, index, _, until, context, gen_kwargs), row in zip(chunk, rows):
                        out[index] = _cut(self.tok_decode(_before(row, self.eot_token_id)), until)
                        self.cache_hook.add_partial("generate_until", (context, gen_kwargs), out[index])
                    bar.update(len(chunk))
        finally:
            self.model.train(was_training)
            bar.close()
        return out


@dataclass
class _SharedContext:
    """Requests whose inputs agree up to the position that predicts their first continuation token."""

    prefix_length: int
    members: list[int]


# Sharing a context pays when it saves a quarter of the tokens, and, where continuations need a pass of their
# own, more tokens than that extra forward pass costs (per-pass overhead: one kernel launch per op per layer).
SHARE_BELOW = 0.75
PASS_COST_TOKENS = 128


def _share_contexts(inputs: list[list[int]], targets: list[list[int]]) -> tuple[list[_SharedContext], list[int]]:
    """Split requests into groups worth scoring from one shared context and requests scored whole.

    A long passage with several choices (C3, BoolQ, HellaSwag) is shared; a short question with a few
    choices (ARC, PIQA) is cheaper in the plain batch, which needs fewer forward passes.
    """
    by_context: dict[tuple[int, ...], list[int]] = {}
    for i, (x, y) in enumerate(zip(inputs, targets)):
        by_context.setdefault(tuple(x[:len(x) - len(y) + 1]), []).append(i)
    shared, plain = [], []
    for context, members in by_context.items():
        longest_tail = max(len(targets[i]) for i in members) - 1
        whole = sum(len(inputs[i]) for i in members)
        saved = whole - (len(context) + len(members) * longest_tail)
        if len(members) > 1 and saved >= (1 - SHARE_BELOW) * whole and (longest_tail == 0 or saved > PASS_COST_TOKENS):
            shared.append(_SharedContext(len(context), members))
        else:
            plain += members
    return shared, plain


def _before(tokens: list[int], stop: int) -> list[int]:
    return tokens[:tokens.index(stop)] if stop in tokens else tokens


def _cut(text: str, until: list[str]) -> str:
    for stop in until:
        if stop and stop in text:
            text = text[:text.index(stop)]
    return text


def _flag(value: bool | str) -> bool:
    """lm-eval passes model_args as strings ("add_bos_token=False")."""
    return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")
