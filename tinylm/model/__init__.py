"""The model: its shape (``config``), the decoder (``transformer``), the fused loss (``loss``), greedy generation
with a KV cache (``generate``) and held-out scoring (``scoring``). The names most code needs are here."""

from tinylm.model.config import PRESET_ARGS, PRESETS, ModelConfig
from tinylm.model.loss import cross_entropy, linear_cross_entropy
from tinylm.model.transformer import ATTENTION_BACKENDS, KVCache, Masks, Transformer

__all__ = ["ATTENTION_BACKENDS", "PRESET_ARGS", "PRESETS", "KVCache", "Masks", "ModelConfig", "Transformer",
           "cross_entropy", "linear_cross_entropy"]
