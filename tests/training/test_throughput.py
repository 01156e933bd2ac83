import torch

from tinylm.training import throughput


def test_known_gpus_use_the_dense_datasheet_peak(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    assert throughput.peak_flops(torch.device("cuda"), torch.bfloat16) == 989e12  # dense, not the sparse 2e15


def test_other_gpus_fall_back_to_lightnings_table(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert throughput.peak_flops(torch.device("cuda"), torch.bfloat16) == 312e12


def test_cpu_peak_is_a_measured_matmul():
    peak = throughput.peak_flops(torch.device("cpu"), torch.float32)
    assert peak == throughput.measured_matmul_peak("cpu", torch.float32) and 1e8 < peak < 1e14
