"""The ``tinylm`` model for EleutherAI lm-evaluation-harness.

Scoring follows lm-eval's ``hf`` backend so the two agree on the same model dir (a test holds them to it):
context/continuation split by ``TemplateLM`` (trailing spaces move into the continuation, the pair is
encoded whole and split at the context's length), inputs truncated on the left to ``max_length``.
What is different is only how the work is done: requests are sorted by length, right-padded into batches,
the body runs once per batch and the output head and the fp32 log-softmax run on the continuation
positions alone — on a small model the head is most of the compute.

BOS: every context starts with the tokenizer's BOS (``add_bos_token=True``), which is what the ``hf``
backend does with a LLaMA tokenizer, so numbers are comparable with anyone's lm-eval run. An empty context
is BOS alone, and rolling windows start from BOS. ``add_bos_token=False`` instead encodes bare text and
uses EOS as the empty-context prefix — EOS is the document separator tinylm's packed training stream uses.
Rolling loglikelihood encodes the text without BOS and lets the window prefix supply it; the ``hf``
backend encodes it with BOS and then prefixes another one.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from tqdm import tqdm

from tinylm.errors import TinyLMError
from tinylm.generate import generate
from tinylm.model import Transformer
from tinylm.model_dir import load_model_dir
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
        add_bos_token: start every context with BOS (see the module docstring).
        use_cache: decode ``generate_until`` with the KV cache (False recomputes the whole prefix each step).
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
        add_bos_token: bool | str = True,
        use_cache: bool | str = True,
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
            model, dir_tokenizer = load_model_dir(pretrained, attention=attention, dtype=_DTYPES[dtype])
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
        self.add_bos_token = _flag(add_bos_token)
        self.use_cache = _flag(use_cache)
        self.max_gen_toks = int(max_gen_toks)

    # ---- tokenisation (TemplateLM's encode-pair logic uses these) ---------------------------------
    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def prefix_token_id(self) -> int:
        return self.tokenizer.bos_id if self.add_bos_token else self.tokenizer.eos_id

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
        order = sorted(range(len(requests)), key=lambda i: -len(inputs[i]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        was_training = self.model.training
        self.model.eval()
        try:
            for start in tqdm(range(0, len(order), self.batch_size), disable=disable_tqdm or not order,
                              desc="tinylm loglikelihood"):
                batch = order[start:start + self.batch_size]
                for i, result in zip(batch, self._score_batch([inputs[i] for i in batch], [targets[i] for i in batch])):
                    out[i] = result
                    if requests[i][0] is not None:
                        self.cache_hook.add_partial("loglikelihood", requests[i][0], result)
        finally:
            self.model.train(was_training)
        return out

    def _score_batch(self, inputs: list[list[int]], targets: list[list[int]]) -> list[tuple[float, bool]]:
        width = max(len(x) for x in inputs)
        ids = torch.full((len(inputs), width), self.tokenizer.pad_id, dtype=torch.long)
        rows, cols, flat_targets = [], [], []
        for r, (x, y) in enumerate(zip(inputs, targets)):
            ids[r, :len(x)] = torch.tensor(x)
            rows += [r] * len(y)
            cols += range(len(x) - len(y), len(x))  # position p predicts token p + 1
            flat_targets += y
        hidden = self.model(ids.to(self.device), return_hidden=True)
        picked = hidden[torch.tensor(rows, device=self.device), torch.tensor(cols, device=self.device)]
        logprobs = F.log_softmax(self.model.lm_head(picked).float(), dim=-1)
        want = torch.tensor(flat_targets, device=self.device)
        token_lp = logprobs.gather(-1, want[:, None])[:, 0].tolist()
        greedy = (logprobs.argmax(-1) == want).tolist()
        results, at = [], 0
        for y in targets:
            results.append((float(sum(token_lp[at:at + len(y)])), all(greedy[at:at + len(y)])))
            at += len(y)
        return results

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
        """Greedy decoding; each row is cut at the first stop string (EOS text always stops)."""
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
            prepared.append((len(prompt), new, index, prompt, until, context, gen_kwargs))
        # equal-length prompts with equal budgets share a batch: left-aligned, no padding needed
        prepared.sort(key=lambda p: (-p[0], p[1]))
        was_training = self.model.training
        self.model.eval()
        try:
            groups: dict[tuple[int, int], list] = {}
            for item in prepared:
                groups.setdefault((item[0], item[1]), []).append(item)
            bar = tqdm(total=len(prepared), disable=disable_tqdm or not prepared, desc="tinylm generate_until")
            for (_, new), items in groups.items():
                for start in range(0, len(items), self.batch_size):
                    chunk = items[start:start + self.batch_size]
                    prompt = torch.tensor([p[3] for p in chunk], device=self.device)
                    tokens = generate(self.model, prompt, new, use_cache=self.use_cache, eos_id=self.eot_token_id)
                    for item, row in zip(chunk, tokens.tolist()):
                        text = _cut(self.tok_decode(_before(row, self.eot_token_id)), item[4])
                        out[item[2]] = text
                        self.cache_hook.add_partial("generate_until", (item[5], item[6]), text)
                    bar.update(len(chunk))
            bar.close()
        finally:
            self.model.train(was_training)
        return out


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
