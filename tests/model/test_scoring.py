"""``tinylm.model.scoring``: one loop equals a direct cross-entropy, and every caller gives the numbers it gave before.

The "before" references below are the loops each caller had before they shared ``block_nll`` (copied verbatim in
spirit: same slicing, same reductions), so a change in any caller's numbers fails here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tinylm.errors import TinyLMError
from tinylm.inherit.importance import _loss_gradients
from tinylm.inherit.layers import bits_per_byte, layer_skip_scores
from tinylm.model import ModelConfig, Transformer, cross_entropy
from tinylm.model.scoring import block_nll, stream_blocks, token_nll
from tinylm.training.lm import LanguageModel
from tinylm.training.rounds import score_blocks, score_samples

VOCAB, SEQ = 61, 12


@pytest.fixture(scope="module")
def net() -> Transformer:
    torch.manual_seed(0)
    return Transformer(ModelConfig.from_preset("debug", vocab_size=VOCAB)).eval()


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return np.random.default_rng(1).integers(0, VOCAB, size=SEQ * 9 + 1).astype(np.uint16)


@pytest.fixture(scope="module")
def token_bytes() -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(2).integers(1, 5, size=VOCAB))


def blocks_of(stream: np.ndarray) -> torch.Tensor:
    return torch.stack([torch.from_numpy(stream[i * SEQ: (i + 1) * SEQ + 1].astype(np.int64)) for i in range(9)])


def test_block_nll_equals_a_direct_cross_entropy(net, stream, token_bytes):
    blocks = blocks_of(stream)
    with torch.no_grad():
        logits = net(blocks[:, :-1])
    direct = F.cross_entropy(logits.flatten(0, 1), blocks[:, 1:].flatten(), reduction="none").view(9, SEQ)
    halves = [blocks[:5], blocks[5:]]
    for given, batch_size in ((blocks, None), (blocks, 4), (halves, None), (halves, 2)):
        got = block_nll(net, given, token_bytes, batch_size=batch_size)
        assert got.nll == pytest.approx(direct.sum().item(), rel=1e-5)
        assert got.tokens == 9 * SEQ
        assert got.bytes == token_bytes[blocks[:, 1:]].sum().item()
        torch.testing.assert_close(got.block_loss, direct.mean(1), rtol=1e-5, atol=1e-6)
        assert got.loss == pytest.approx(direct.mean().item(), rel=1e-5)
        assert got.bits_per_byte == pytest.approx(direct.sum().item() / (math.log(2) * got.bytes), rel=1e-5)


def test_forward_kwargs_reach_the_model_and_no_gradient_is_kept(net, stream):
    blocks = blocks_of(stream)
    with torch.no_grad():
        skipped = cross_entropy(net(blocks[:, :-1], skip_layers=[1]), blocks[:, 1:], reduction="sum").item()
    got = block_nll(net, blocks, forward={"skip_layers": [1]})
    assert got.nll == pytest.approx(skipped, rel=1e-5)
    assert got.nll != pytest.approx(block_nll(net, blocks).nll, rel=1e-3)
    assert token_nll(net, blocks[:2, :-1], blocks[:2, 1:]).requires_grad  # Taylor's gradients flow through it
    assert not got.block_loss.requires_grad


def test_empty_input_scores_nothing_and_bpb_refuses_it(net, token_bytes):
    got = block_nll(net, [], token_bytes)
    assert got.tokens == 0 and got.block_loss.numel() == 0
    with pytest.raises(TinyLMError, match="no held-out bytes"):
        bits_per_byte(net, [], token_bytes)


def test_stream_blocks_make_every_token_after_the_first_a_target_once():
    for length in (0, 1, 2, SEQ, SEQ + 1, 3 * SEQ + 1, 3 * SEQ + 5):
        tokens = torch.arange(length) % VOCAB
        blocks = stream_blocks(tokens, SEQ)
        assert [t for block in blocks for t in block[:, 1:].flatten().tolist()] == tokens[1:].tolist()
        whole, rest = divmod(max(length - 1, 0), SEQ)  # whole blocks in one tensor, then the rest on its own
        assert [tuple(block.shape) for block in blocks] == [(whole, SEQ + 1)] * (whole > 0) + [(1, rest + 1)] * (rest > 0)


# ---- each caller, against the loop it had before --------------------------------------------------------------
def old_bits_per_byte(model, blocks, token_bytes, **forward):
    nll, num_bytes = 0.0, 0.0
    with torch.no_grad():
        for block in blocks:
            nll += cross_entropy(model(block[:, :-1], **forward), block[:, 1:], reduction="sum").item()
            num_bytes += token_bytes[block[:, 1:]].sum().item()
    return nll / (math.log(2) * num_bytes)


def test_layer_skipping_gives_the_numbers_it_gave_before(net, stream, token_bytes):
    blocks = list(blocks_of(stream).split(4))
    assert bits_per_byte(net, blocks, token_bytes) == pytest.approx(old_bits_per_byte(net, blocks, token_bytes),
                                                                    rel=1e-6)
    scores = layer_skip_scores(net, blocks, token_bytes, spans=(1,))
    n = net.config.num_layers
    want = [old_bits_per_byte(net, blocks, token_bytes, skip_layers=range(s, s + 1)) for s in range(n)]
    assert scores[1] == pytest.approx(want, rel=1e-6)


def old_mean_losses(model, rows):
    with torch.no_grad():
        return cross_entropy(model(rows[:, :-1]), rows[:, 1:], reduction="none").mean(dim=1).float()


def test_round_scoring_gives_the_numbers_it_gave_before(net, stream):
    blocks = blocks_of(stream)
    torch.testing.assert_close(score_samples(net, stream, SEQ, 2, 9, batch_size=3), old_mean_losses(net, blocks[2:]),
                               rtol=1e-6, atol=1e-6)
    picked = np.array([7, 0, 4])
    torch.testing.assert_close(score_blocks(net, stream, SEQ, picked, batch_size=2),
                               torch.cat([old_mean_losses(net, blocks[[7, 0]]), old_mean_losses(net, blocks[[4]])]),
                               rtol=1e-6, atol=1e-6)
    assert score_samples(net, stream, SEQ, 4, 4, batch_size=3).numel() == 0


def test_taylor_calibration_gradients_are_the_ones_before(net, stream):
    calibration = blocks_of(stream)[:5]
    got = _loss_gradients(net, calibration, batch_size=2)
    net.zero_grad(set_to_none=True)
    total = calibration[:, 1:].numel()
    for chunk in calibration.split(2):
        (cross_entropy(net(chunk[:, :-1]), chunk[:, 1:], reduction="sum") / total).backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(got[name], p.grad, rtol=1e-5, atol=1e-7)
    net.zero_grad(set_to_none=True)


def test_validation_sums_are_the_ones_before(net, stream, token_bytes):
    module = LanguageModel(net.config)
    module.configure_model()
    module.net.load_state_dict(net.state_dict())
    module.register_buffer("token_bytes", token_bytes, persistent=False)
    module.eval()
    blocks = blocks_of(stream)
    with torch.no_grad():
        for i, rows in enumerate(blocks.split(4)):
            module.validation_step({"input_ids": rows[:, :-1], "labels": rows[:, 1:]}, i)
    assert module.val_nll.compute().item() == pytest.approx(
        sum(cross_entropy(net(rows[:, :-1]), rows[:, 1:], reduction="sum").item() for rows in blocks.split(4)),
        rel=1e-5)
    assert module.val_tokens.compute().item() == blocks[:, 1:].numel()
    assert module.val_bytes.compute().item() == token_bytes[blocks[:, 1:]].sum().item()


def old_pro_heldout_nll(model, tokens, seq_len, batch_size=8):
    """``tinylm pro``'s report before it shared ``block_nll``: windows of the stream, the last one padded."""
    windows = [tokens[i: i + seq_len + 1] for i in range(0, len(tokens) - 1, seq_len)]
    nll = 0.0
    with torch.no_grad():
        for first in range(0, len(windows), batch_size):
            batch = windows[first: first + batch_size]
            width = max(len(w) for w in batch)
            rows = torch.stack([F.pad(w, (0, width - len(w)), value=-100) for w in batch])
            logits = model(rows[:, :-1].clamp(min=0))
            nll += F.cross_entropy(logits.float().flatten(0, 1), rows[:, 1:].flatten(), ignore_index=-100,
                                   reduction="sum").item()
    return nll


def test_pro_heldout_bpb_scores_the_loss_it_did_before_over_the_scored_tokens_bytes(net, stream, token_bytes):
    """The same summed loss as pro's own loop had; the bytes are now the scored tokens' (``token_bytes``), where pro
    counted the documents' UTF-8 bytes (equal for byte-level BPE; SentencePiece's dummy prefix adds one a document)."""
    tokens = torch.from_numpy(stream[: 4 * SEQ + 5].astype(np.int64))
    got = block_nll(net, stream_blocks(tokens, SEQ), token_bytes, batch_size=8)
    assert got.nll == pytest.approx(old_pro_heldout_nll(net, tokens, SEQ), rel=1e-6)
    assert got.tokens == len(tokens) - 1 and got.bytes == token_bytes[tokens[1:]].sum().item()
