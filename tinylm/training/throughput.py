"""Tokens/s and model FLOPs utilisation (MFU), logged during training.

MFU = achieved model FLOP/s ÷ the device's peak, with FLOPs from ``ModelConfig.flops_per_token`` (6N + 12·L·d·T).
The peak is a setting; by default it is the datasheet dense peak for known GPUs and, on CPU, a matmul peak
measured once on this machine (so CPU MFU means "fraction of what a big fp32 matmul reaches here").
"""

from __future__ import annotations

import time
from functools import lru_cache

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops

# Dense datasheet peaks in FLOP/s for the GPUs the paper-scale checks run on, by (device-name fragment, dtype).
# Other GPUs use Lightning's table (``get_available_flops``); it is not used for these because it does not
# recognise a plain "NVIDIA H200" and lists the H200's sparse bf16 figure (2 PFLOP/s, twice the dense peak).
GPU_PEAK_FLOPS = {
    ("H200", torch.bfloat16): 989e12, ("H100", torch.bfloat16): 989e12,
    ("H200", torch.float32): 67e12, ("H100", torch.float32): 67e12,
}


@lru_cache(maxsize=None)
def measured_matmul_peak(device: str = "cpu", dtype: torch.dtype = torch.float32, size: int = 2048) -> float:
    """FLOP/s of a square matmul on this device (best of a few), the ceiling for dense training."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(5):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The dense peak MFU divides by: the datasheet on known GPUs, a measured matmul otherwise (and on CPU)."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for (fragment, peak_dtype), peak in GPU_PEAK_FLOPS.items():
            if fragment in name and peak_dtype == dtype:
                return peak
        return get_available_flops(device, dtype) or measured_matmul_peak("cuda", dtype, 8192)
    return measured_matmul_peak("cpu", torch.float32)


class SpeedMonitor(L.Callback):
    """Logs ``perf/tokens_per_s`` and ``perf/mfu`` over a window of optimizer steps (all devices together)."""

    def __init__(self, window: int = 10, peak: float | None = None) -> None:
        self.window, self.peak = window, peak
        self._start: float | None = None
        self._tokens = 0
        self._steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if self._start is None:
            self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._tokens += batch["input_ids"].numel() * trainer.world_size
        self._steps += 1
        if self._steps < self.window:
            return
        elapsed = time.perf_counter() - self._start
        tokens_per_s = self._tokens / elapsed
        config = pl_module.net.config
        flops_per_s = tokens_per_s * config.flops_per_token(batch["input_ids"].shape[1])
        dtype = torch.bfloat16 if "bf16" in str(trainer.precision) else torch.float32
        peak = self.peak or peak_flops(pl_module.device, dtype) * trainer.world_size
        pl_module.log_dict({"perf/tokens_per_s": tokens_per_s, "perf/mfu": flops_per_s / peak}, rank_zero_only=True)
        self._start, self._tokens, self._steps = time.perf_counter(), 0, 0
