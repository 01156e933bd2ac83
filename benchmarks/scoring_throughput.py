"""Multi-round scoring pass vs training step, in tokens/s (target: scoring ≥ 2.5× faster).

The scoring pass (``tinylm.training.rounds.score_samples``: eval mode, no grad, larger batches, consecutive blocks
sliced straight from the packed stream) is what ``MultiRoundTraining`` runs over the whole training set at the
end of every round; the training step is forward + backward + AdamW at the training batch size. Speed does not
depend on the weights or the text, so both run on a random model over a random token stream.

    python benchmarks/scoring_throughput.py [--preset tiny] [--seq_len 256] [--batch_size 8] [--score_batch_size 32]
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np
import torch

from tinylm.model import ModelConfig, Transformer, cross_entropy
from tinylm.training.optim import adamw
from tinylm.training.rounds import score_samples


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--vocab_size", type=int, default=8000)
    parser.add_argument("--seq_len", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--score_batch_size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU), as with precision bf16-mixed")
    args = parser.parse_args()

    device = torch.device(args.device)
    config = ModelConfig.from_preset(args.preset, vocab_size=args.vocab_size, max_seq_len=max(args.seq_len, 512))
    torch.manual_seed(0)
    net = Transformer(config).to(device)
    context = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.bf16 else contextlib.nullcontext
    blocks = args.steps * args.batch_size
    stream = np.random.default_rng(0).integers(0, args.vocab_size, size=blocks * args.seq_len + 1).astype(np.uint16)

    # training steps (two warm-up steps not timed)
    optimizer = adamw(net, 1e-4, (0.9, 0.95), 1e-8, 0.1)
    net.train()
    batch = torch.from_numpy(stream[: args.batch_size * args.seq_len + 1].astype(np.int64)).to(device)
    inputs, labels = batch[:-1].view(args.batch_size, -1), batch[1:].view(args.batch_size, -1)

    def step() -> None:
        with context():
            loss = cross_entropy(net(inputs), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    train_tps = args.steps * args.batch_size * args.seq_len / (time.perf_counter() - start)

    # the scoring pass over the same number of tokens (one warm-up batch not timed)
    net.eval()
    score_samples(net, stream, args.seq_len, 0, args.score_batch_size, args.score_batch_size, device, context)
    sync(device)
    start = time.perf_counter()
    score_samples(net, stream, args.seq_len, 0, blocks, args.score_batch_size, device, context)
    sync(device)
    score_tps = blocks * args.seq_len / (time.perf_counter() - start)

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; model {args.preset} ({config.num_params() / 1e6:.2f}M params, vocab {args.vocab_size}), "
          f"seq_len {args.seq_len}{', bf16 autocast' if args.bf16 else ', fp32'}")
    print(f"training step  (batch {args.batch_size:>3}, fwd+bwd+AdamW): {train_tps:12,.0f} tokens/s")
    print(f"scoring pass   (batch {args.score_batch_size:>3}, eval, no grad): {score_tps:12,.0f} tokens/s")
    ratio = score_tps / train_tps
    print(f"scoring / training: {ratio:.2f}×  (target ≥ 2.5×: {'met' if ratio >= 2.5 else 'NOT met'})")


if __name__ == "__main__":
    main()
