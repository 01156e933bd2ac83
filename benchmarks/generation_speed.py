"""Generation throughput of the depth/width variants with the KV cache (the paper's speed protocol).

The variants are those of ``reproduce.speed`` at a scale: equal parameter budget, depths from the scale's list,
widths solved for the budget at expansion 8/3. Weights are random (speed does not depend on them: greedy
decoding without an end token always runs the full length). Protocol reported for the paper: batch 20, 2-token
prefix, 510 new tokens, fp16 on one GPU.

    python benchmarks/generation_speed.py [--scale small] [--device cpu] [--dtype float32] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo root, for `reproduce`

from reproduce.architecture import SCALES  # noqa: E402
from reproduce.shapes import decode_throughput, grid  # noqa: E402
from reproduce.speed import PROTOCOL  # noqa: E402
from tinylm.model import Transformer  # noqa: E402


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", choices=sorted(SCALES), default="small")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=("float32", "float16", "bfloat16"), default=None,
                        help="default: float16 on a GPU, float32 on the CPU")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--batch-size", type=int, default=PROTOCOL["batch_size"])
    parser.add_argument("--prefix", type=int, default=PROTOCOL["prefix"])
    parser.add_argument("--new-tokens", type=int, default=PROTOCOL["new_tokens"])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per variant; the best is kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype or ("float16" if args.device.startswith("cuda") else "float32"))
    scale = SCALES[args.scale]
    space = scale.space
    print(f"# generation speed: {args.scale} variants, {args.device} {dtype}, {torch.get_num_threads()} CPU "
          f"thread(s); batch {args.batch_size}, {args.prefix}-token prefix, {args.new_tokens} new tokens\n")
    print("| variant | depth | width | heads | FFN | params (all) | tokens/s | ms/step |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for config in grid(space, scale.speed_depths, [scale.speed_expansion]):
        config = config.with_vocab(space.vocab_size or scale.vocab_size)
        config.max_seq_len = max(config.max_seq_len, args.prefix + args.new_tokens)
        torch.manual_seed(0)
        model = Transformer(config).to(device=args.device, dtype=dtype)
        speed = decode_throughput(model, args.batch_size, args.prefix, args.new_tokens, args.repeats)
        row = {"depth": config.num_layers, "width": config.hidden_size, "heads": config.num_heads,
               "ffn": config.intermediate_size, "params": config.num_params(), "tokens_per_s": speed,
               "ms_per_step": 1000 * args.batch_size / speed}
        rows.append(row)
        print(f"| L{row['depth']}-d{row['width']} | {row['depth']} | {row['width']} | {row['heads']} | {row['ffn']} | "
              f"{row['params']:,} | {speed:.0f} | {row['ms_per_step']:.2f} |", flush=True)
        del model
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}, indent=2))
    return rows


if __name__ == "__main__":
    main()
