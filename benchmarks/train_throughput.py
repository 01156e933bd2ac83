"""Training-step throughput of tinylm vs. transformers' LlamaForCausalLM on identical configs.

One step = forward + backward + AdamW, fp32, seq 256, micro-batch 8. The two implementations are run
interleaved (A, B, A, B, ...) so machine noise hits both alike; the median step time is reported, with MFU
against a matmul peak measured in the same run. On a GPU it also measures the PanGu-π-1B Pro shape in bf16 at
seq 2048 with the sdpa and xformers backends.

    python benchmarks/train_throughput.py [--steps 12] [--compile] [--out results/benchmarks/train_throughput.md]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from tinylm.model import ModelConfig, Transformer, cross_entropy, linear_cross_entropy
from tinylm.training.throughput import measured_matmul_peak, peak_flops

CONFIGS = {
    "tiny": ModelConfig(vocab_size=8000, hidden_size=256, num_layers=8, num_heads=4, intermediate_size=688),
    "deep-narrow": ModelConfig(vocab_size=8000, hidden_size=192, num_layers=20, num_heads=3, intermediate_size=512),
    "small": ModelConfig(vocab_size=16000, hidden_size=512, num_layers=8, num_heads=8, intermediate_size=1376),
}


def hf_model(config: ModelConfig, ours: Transformer):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**{k: v for k, v in config.to_hf().items() if k != "architectures"},
                                         attn_implementation="sdpa"))
    model.load_state_dict(ours.state_dict())  # same weights: same work
    return model


def make_step(model, optimizer, batch, labels, is_hf: bool):
    head = getattr(model, "_orig_mod", model).lm_head.weight

    def step() -> None:
        if is_hf:  # transformers' model: logits, then the same float32 cross-entropy
            loss = cross_entropy(model(batch).logits, labels)
        else:  # what LanguageModel.training_step does: hidden states, then the fused head + loss
            loss = linear_cross_entropy(model(batch, return_hidden=True), head, labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def timed(step, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def compare_cpu(steps: int, warmup: int, compile_model: bool, seq: int = 256, batch_size: int = 8) -> list[dict]:
    rows = []
    for name, config in CONFIGS.items():
        torch.manual_seed(0)
        ours = Transformer(config)
        theirs = hf_model(config, ours)
        if compile_model:
            ours = torch.compile(ours)
        batch = torch.randint(0, config.vocab_size, (batch_size, seq))
        labels = torch.randint(0, config.vocab_size, (batch_size, seq))
        runs = {}
        for label, model, is_hf in (("tinylm", ours, False), ("transformers", theirs, True)):
            optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=False)
            runs[label] = (make_step(model, optimizer, batch, labels, is_hf), [])
        for i in range(warmup + steps):  # interleaved
            for step, times in runs.values():
                elapsed = timed(step, torch.device("cpu"))
                if i >= warmup:
                    times.append(elapsed)
        flops_per_step = config.flops_per_token(seq) * batch_size * seq
        peak = measured_matmul_peak("cpu", torch.float32)
        medians = {label: statistics.median(times) for label, (_, times) in runs.items()}
        rows.append({
            "config": name, "params_M": config.num_params() / 1e6,
            **{f"{label}_tok_s": batch_size * seq / t for label, t in medians.items()},
            **{f"{label}_mfu": flops_per_step / t / peak for label, t in medians.items()},
            "speedup": medians["transformers"] / medians["tinylm"],
        })
    return rows


def gpu_step_time(config: ModelConfig, backend: str, steps: int, warmup: int, batch_size: int = 4) -> float:
    """Median seconds of one bf16-autocast training step of ``config`` on the GPU."""
    torch.manual_seed(0)
    model = Transformer(config, attention=backend).cuda()
    batch = torch.randint(0, config.vocab_size, (batch_size, 2048), device="cuda")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = cross_entropy(model(batch), batch)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return statistics.median([timed(step, torch.device("cuda")) for _ in range(warmup + steps)][warmup:])


def gpu_pangu(steps: int, warmup: int, batch_size: int = 4) -> list[dict]:
    config = ModelConfig.from_preset("pangu-pi-1b-pro")
    rows = []
    for backend in ("sdpa", "xformers"):
        try:
            seconds = gpu_step_time(config, backend, steps, warmup, batch_size)
            tokens = batch_size * 2048
            rows.append({"backend": backend, "tok_s": tokens / seconds,
                         "mfu": config.flops_per_token(2048) * tokens / seconds
                         / peak_flops(torch.device("cuda"), torch.bfloat16)})
        except Exception as err:  # noqa: BLE001 — report an unavailable backend instead of failing the run
            rows.append({"backend": backend, "error": f"{type(err).__name__}: {err}"[:200]})
        torch.cuda.empty_cache()
    return rows


def markdown(cpu_rows: list[dict], gpu_rows: list[dict]) -> str:
    lines = [
        f"CPU: {torch.get_num_threads()} threads, fp32, seq 256, micro-batch 8, matmul peak "
        f"{measured_matmul_peak('cpu', torch.float32) / 1e9:.0f} GFLOP/s (measured)\n",
        "| config | params | tinylm tok/s | transformers tok/s | speedup | tinylm MFU | transformers MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in cpu_rows:
        lines.append(f"| {r['config']} | {r['params_M']:.1f}M | {r['tinylm_tok_s']:.0f} | {r['transformers_tok_s']:.0f} "
                     f"| {r['speedup']:.2f}× | {100 * r['tinylm_mfu']:.0f}% | {100 * r['transformers_mfu']:.0f}% |")
    if gpu_rows:
        lines += ["", f"GPU ({torch.cuda.get_device_name(0)}): PanGu-π-1B Pro, bf16 autocast, seq 2048, batch 4", "",
                  "| backend | tok/s | MFU |", "|---|---|---|"]
        for r in gpu_rows:
            lines.append(f"| {r['backend']} | {r.get('tok_s', 0):.0f} | {100 * r.get('mfu', 0):.1f}% |"
                         if "error" not in r else f"| {r['backend']} | {r['error']} | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the tinylm model")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    cpu_rows = compare_cpu(args.steps, args.warmup, args.compile)
    gpu_rows = gpu_pangu(args.steps, args.warmup) if torch.cuda.is_available() else []
    table = markdown(cpu_rows, gpu_rows)
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
