"""What a result records about the machine: enough to tell two CPUs whose kernels may round differently apart."""

from __future__ import annotations

import pytest
import torch

from tinylm.artifacts import provenance


@pytest.mark.skipif(torch.cuda.is_available(), reason="names the GPUs instead")
def test_a_cpu_is_named_with_its_model_vector_instructions_and_threads(monkeypatch):
    monkeypatch.setattr(provenance, "cpu_name", lambda: "Example CPU 9000")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert provenance.hardware() == f"CPU (Example CPU 9000, AVX2, {torch.get_num_threads()} threads)"


def test_the_cpu_name_comes_from_the_machine():
    name = provenance.cpu_name()
    assert name and "\n" not in name
