"""Parameter inheritance (docs/paper.md §2): initialise a small model from a larger one.

Pick the layers (``layers``), score heads, FFN neurons and hidden channels (``importance``: L1, L2, Taylor; or
learn hard-concrete masks with ``MaskLearner``), turn the scores into a uniform ``Plan`` and fold-and-slice it
into a small dense model dir (``materialize``). ``pipeline.inherit`` runs the whole path, once, for ``tinylm inherit``,
``tinylm pro`` and ``reproduce``. Learned masks are read by ``learned`` (plain tensors); only ``MaskLearner`` itself
needs Lightning, so it loads on first use.
"""

from tinylm.inherit.importance import CRITERIA, Importance, calibration_blocks, importance
from tinylm.inherit.layers import STRATEGIES, bits_per_byte, layer_skip_scores, select_layers
from tinylm.inherit.learned import learned_importance, load_masks
from tinylm.inherit.materialize import materialize, materialize_state, save_inherited
from tinylm.inherit.pipeline import Calibration, Inherited, inherit, needs_masks
from tinylm.inherit.plan import Plan, resolve_target

__all__ = ["CRITERIA", "STRATEGIES", "Calibration", "Importance", "Inherited", "MaskLearner", "Plan", "bits_per_byte",
           "calibration_blocks", "importance", "inherit", "layer_skip_scores", "learned_importance", "load_masks",
           "materialize", "materialize_state", "needs_masks", "resolve_target", "save_inherited", "select_layers"]


def __getattr__(name: str):
    # MaskLearner is Lightning training code: imported on first use, so reading masks or scores stays light
    if name == "MaskLearner":
        from tinylm.inherit.mask_learner import MaskLearner

        return MaskLearner
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
