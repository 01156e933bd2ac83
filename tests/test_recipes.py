"""Every recipe under recipes/ parses and instantiates (litgpt's config-hub test); the paper recipe builds its
1B model on the meta device."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml

from tinylm.data.datamodule import TextDataModule
from tinylm.model import ModelConfig
from tinylm.training.lm import LanguageModel
from tinylm.training.runs import RunCLI, RunLogger

ROOT = Path(__file__).resolve().parents[1] / "recipes"
# recipes/pro/ holds `tinylm pro` configs (a function command); tests/pro/test_pro.py parses those
RECIPES = sorted(p for p in ROOT.rglob("*.yaml") if p.relative_to(ROOT).parts[0] != "pro")
CPU_OVERRIDES = ["--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.num_nodes", "1",
                 "--trainer.strategy", "auto", "--trainer.precision", "32-true"]


def instantiate(recipe: Path, *extra: str) -> RunCLI:
    wants_gpu = yaml.safe_load(recipe.read_text()).get("trainer", {}).get("accelerator") == "gpu"
    args = ["--config", str(recipe), *(CPU_OVERRIDES if wants_gpu else []), *extra]
    return RunCLI(LanguageModel, TextDataModule, subclass_mode_model=True, run=False, args=args,
                        save_config_callback=None, parser_kwargs={"default_env": False})


def test_there_are_recipes():
    assert any(r.name == "quickstart.yaml" for r in RECIPES)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_recipe_parses_and_instantiates(recipe):
    cli = instantiate(recipe)
    assert isinstance(cli.model, L.LightningModule) and isinstance(cli.datamodule, TextDataModule)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_one_setting_moves_everything_a_run_writes(recipe, tmp_path):
    raw = yaml.safe_load(recipe.read_text())["trainer"]
    assert "logger" not in raw  # a recipe that pins the logger's save_dir would not move with the root
    cli = instantiate(recipe, "--trainer.default_root_dir", str(tmp_path / "elsewhere"))
    logger = cli.trainer.logger
    assert isinstance(logger, RunLogger) and Path(logger.log_dir) == tmp_path / "elsewhere" / "logs" / "version_0"


def test_paper_recipe_is_pangu_pi_1b_pro_on_the_meta_device():
    recipe = next(r for r in RECIPES if r.name == "pangu-pi-1b-pro.yaml")
    raw = yaml.safe_load(recipe.read_text())
    assert raw["trainer"]["precision"] == "bf16-mixed" and "FSDPStrategy" in raw["trainer"]["strategy"]["class_path"]
    assert raw["trainer"]["num_nodes"] > 1
    strategy = raw["trainer"]["strategy"]
    module, _, name = strategy["class_path"].rpartition(".")
    accepted = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    assert set(strategy["init_args"]) <= set(accepted)  # the GPU-only strategy is not built here, so check its args
    cli = instantiate(recipe)
    model = cli.model
    assert model.config == ModelConfig.from_preset("pangu-pi-1b-pro")
    with torch.device("meta"):
        model.configure_model()
    assert all(p.device.type == "meta" for p in model.net.parameters())
    assert sum(p.numel() for p in model.net.parameters()) == model.config.num_params()
    assert 0.98e9 < model.config.num_params() < 1.0e9
