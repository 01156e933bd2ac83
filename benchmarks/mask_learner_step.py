"""MaskLearner training-step time vs a plain LanguageModel step on the same source shape (goal ≤ 1.3×), and
Taylor importance time and peak memory vs model size.

    python benchmarks/mask_learner_step.py [--presets tiny small] [--steps 10] [--seq-len 256] [--batch-size 8]

Steps are timed directly (forward + backward + optimizer), outside Lightning, after warm-up steps. Peak memory is
CUDA's max allocated on a GPU and, on CPU, in a fresh process, the peak RSS (reset through /proc/self/clear_refs)
above the RSS just before the model is built (so it includes the weights: weights + gradients + activations of one calibration batch).
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import torch

from tinylm.inherit import calibration_blocks, importance
from tinylm.inherit.hard_concrete import HardConcrete
from tinylm.model import Masks, ModelConfig, Transformer, cross_entropy

VOCAB = 8000


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_times(model: Transformer, gates: dict[str, HardConcrete], lambdas: dict, ids: Tensor,
               steps: int) -> tuple[float, float]:
    """Median seconds of a plain training step and of a MaskLearner step, interleaved so that load from other
    processes hits both alike. The MaskLearner step is what its training_step does: sample the gates, run the
    masked forward, add one Lagrangian term per mask type, backward, AdamW over weights, log α and λ."""
    weights = torch.optim.AdamW(model.parameters(), lr=1e-5)
    extra = torch.optim.AdamW([g.log_alpha for g in gates.values()] + list(lambdas.values()), lr=1e-5)
    plain, masked = [], []
    for step in range(steps + 2):
        for with_masks, times in ((False, plain), (True, masked)):
            sync(ids.device)
            start = time.perf_counter()
            if with_masks:
                for g in gates.values():
                    g.clamp_()
                masks = Masks(**{n: g.sample() for n, g in gates.items()})
                loss = cross_entropy(model(ids[:, :-1], masks=masks), ids[:, 1:])
                for n, g in gates.items():
                    gap = g.expected_sparsity() - 0.5
                    loss = loss + lambdas[n][0] * gap.mean() + lambdas[n][1] * gap.pow(2).mean()
            else:
                loss = cross_entropy(model(ids[:, :-1]), ids[:, 1:])
            loss.backward()
            weights.step()
            if with_masks:
                extra.step()
            weights.zero_grad(set_to_none=True)
            extra.zero_grad(set_to_none=True)
            sync(ids.device)
            if step >= 2:
                times.append(time.perf_counter() - start)
    return sorted(plain)[len(plain) // 2], sorted(masked)[len(masked) // 2]


Tensor = torch.Tensor


def taylor_cost(preset: str, calibration: int, seq_len: int, batch_size: int) -> tuple[float, float]:
    """Seconds and peak memory (MiB, model weights included) of Taylor importance for one preset."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    base_rss = rss_kib("VmRSS")  # before the model: the peak includes it
    reset_peak_rss()
    model = Transformer(ModelConfig.from_preset(preset, vocab_size=VOCAB, max_seq_len=max(512, seq_len + 1))).to(device)
    blocks = calibration_blocks(torch.randint(0, VOCAB, (calibration * seq_len + 1,)), calibration, seq_len)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = 0
    sync(device)
    start = time.perf_counter()
    importance(model, "taylor", blocks, batch_size=batch_size)
    sync(device)
    seconds = time.perf_counter() - start
    if device.type == "cuda":
        return seconds, (torch.cuda.max_memory_allocated() - base) / 2**20
    return seconds, (rss_kib("VmHWM") - base_rss) / 1024


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (Linux: writing 5 to clear_refs); ru_maxrss cannot be reset."""
    Path("/proc/self/clear_refs").write_text("5")


def rss_kib(field: str) -> int:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--presets", nargs="+", default=["debug", "tiny", "small"])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--calibration", type=int, default=16)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size} × {args.seq_len}")
    print("| source | params | fp32 weights MiB | plain step ms | MaskLearner step ms | ratio | Taylor s | Taylor peak MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for preset in args.presets:
        config = ModelConfig.from_preset(preset, vocab_size=VOCAB, max_seq_len=max(512, args.seq_len + 1))
        model = Transformer(config).to(device)
        shapes = {"hidden": (config.hidden_size,), "heads": (config.num_layers, config.num_heads),
                  "ffn": (config.num_layers, config.intermediate_size), "layers": (config.num_layers,)}
        gates = {n: HardConcrete(s).to(device) for n, s in shapes.items()}
        lambdas = {n: torch.nn.Parameter(torch.zeros(2, device=device)) for n in shapes}
        ids = torch.randint(0, VOCAB, (args.batch_size, args.seq_len + 1), device=device)
        plain, masked = step_times(model, gates, lambdas, ids, args.steps)
        del model, gates, lambdas, ids
        with multiprocessing.get_context("spawn").Pool(1) as pool:  # a fresh process: no freed memory to reuse
            taylor, peak = pool.apply(taylor_cost, (preset, args.calibration, args.seq_len, args.batch_size))
        print(f"| {preset} | {config.num_params() / 1e6:.1f}M | {config.num_params() * 4 / 2**20:.0f} | {plain * 1e3:.1f} | {masked * 1e3:.1f} | "
              f"{masked / plain:.2f}× | {taylor:.2f} | {peak:.0f} |")


if __name__ == "__main__":
    main()
