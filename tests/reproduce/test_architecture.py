"""Architecture study: the shape sampler and grid stay inside the budget, Spearman equals scipy's, the reproduce
scripts write their tables and figures, and the depth/width recipes are the grid's shapes."""

from __future__ import annotations

import json
import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import scipy.stats
import yaml

from reproduce.shapes import EXACT_UP_TO, grid, rank, sample, spearman
from tinylm.errors import TinyLMError
from tinylm.model import ModelConfig
from tinylm.model.shapes import ShapeSpace, expansion_rate, feasible_shapes

REPO = Path(__file__).resolve().parents[2]


def random_space(rng: random.Random) -> ShapeSpace:
    head_dim = rng.choice([8, 16, 32, 64])
    embeddings = rng.random() < 0.5
    low_width = head_dim * rng.randint(1, 8)
    low_depth = rng.randint(1, 6)
    low_rate = rng.uniform(0.5, 3.0)
    return ShapeSpace(
        budget=rng.randint(50_000, 50_000_000), tolerance=rng.uniform(0.02, 0.2), embeddings=embeddings,
        vocab_size=rng.randint(500, 50_000) if embeddings else None,
        depth=(low_depth, low_depth + rng.randint(0, 30)), width=(low_width, low_width + head_dim * rng.randint(0, 40)),
        expansion=(low_rate, low_rate + rng.uniform(0, 3)), head_dim=head_dim, ffn_multiple=rng.choice([8, 16, 64]),
    )


def assert_in_space(config: ModelConfig, space: ShapeSpace) -> None:
    counted = config.num_params(embeddings=space.embeddings)
    assert abs(counted - space.budget) <= space.tolerance * space.budget
    assert config.hidden_size % space.head_dim == 0 and config.head_dim == space.head_dim
    assert config.num_heads * config.head_dim == config.hidden_size
    assert space.depth[0] <= config.num_layers <= space.depth[1]
    assert space.width[0] <= config.hidden_size <= space.width[1]
    assert space.expansion[0] <= expansion_rate(config) <= space.expansion[1]
    assert config.intermediate_size % space.ffn_multiple == 0
    assert config.vocab_size == space.vocab_size


def test_sampled_shapes_stay_inside_the_budget_over_many_seeds():
    rng = random.Random(0)
    sampled = 0
    for seed in range(300):
        space = random_space(rng)
        available = len(feasible_shapes(space))
        if not available:
            continue
        configs = sample(space, min(available, 8), seed=seed)
        for config in configs:
            assert_in_space(config, space)
        assert len({(c.num_layers, c.hidden_size) for c in configs}) == len(configs)  # distinct shapes
        assert sample(space, len(configs), seed=seed) == configs  # seeded
        sampled += len(configs)
    assert sampled > 500  # the random spaces were not all empty


def test_feasible_shapes_equal_brute_force_enumeration():
    space = ShapeSpace(budget=400_000, tolerance=0.08, embeddings=True, vocab_size=1000, depth=(1, 6), width=(16, 160),
                       expansion=(1.0, 4.0), head_dim=16, ffn_multiple=8)
    brute: dict[tuple[int, int], list[int]] = {}
    for depth in range(1, 7):
        for width in range(16, 161, 16):
            for ffn in range(8, 4 * width + 1, 8):
                config = ModelConfig(vocab_size=1000, hidden_size=width, num_layers=depth, num_heads=width // 16,
                                     intermediate_size=ffn)
                if ffn >= width and abs(config.num_params() - 400_000) <= 0.08 * 400_000:
                    brute.setdefault((depth, width), []).append(ffn)
    assert feasible_shapes(space) == brute


def test_sampling_more_shapes_than_fit_is_an_error():
    space = ShapeSpace(budget=150_000, tolerance=0.1, depth=(1, 8), width=(32, 128), head_dim=8, ffn_multiple=8)
    with pytest.raises(TinyLMError, match="shapes fit a budget.*ask for fewer"):
        sample(space, len(feasible_shapes(space)) + 1)


def test_grid_picks_the_closest_width_and_rejects_points_outside_the_budget():
    space = ShapeSpace(budget=1_000_000_000, tolerance=0.1, embeddings=True, vocab_size=48000, depth=(6, 40),
                       width=(1024, 3072), expansion=(1.5, 4.0), head_dim=128, ffn_multiple=256)
    configs = grid(space, [12, 20], [8 / 3])
    assert [(c.num_layers, c.hidden_size, c.intermediate_size) for c in configs] == [(12, 2304, 6144),
                                                                                     (20, 1792, 4864)]
    for config in configs:
        distance = abs(space.params(config) - space.budget)
        for width in range(1024, 3073, 128):  # no other width (same depth and rate) is closer to the budget
            other = ModelConfig(vocab_size=48000, hidden_size=width, num_layers=config.num_layers,
                                num_heads=width // 128, intermediate_size=round(8 / 3 * width / 256) * 256)
            assert abs(other.num_params() - space.budget) >= distance
    with pytest.raises(TinyLMError, match="grid point depth=40.*drop the point or widen"):
        grid(space, [40], [8 / 3])


# the architecture scales' spaces, and the (depth, width, FFN) shapes they sampled and gridded when the solver lived
# in reproduce/shapes.py, before tinylm pro shared it
SCALE_SHAPES = {
    "smoke": (ShapeSpace(budget=150_000, tolerance=0.1, depth=(1, 8), width=(32, 128), expansion=(1.0, 4.0),
                         head_dim=8, ffn_multiple=8, max_seq_len=512), 6, (1, 2, 4, 8),
              [(7, 56, 64), (3, 72, 136), (6, 56, 80), (3, 80, 112), (1, 104, 336), (2, 96, 144)],
              [(1, 112, 296), (2, 80, 216), (4, 56, 152), (8, 40, 104)]),
    "small": (ShapeSpace(budget=800_000, tolerance=0.12, depth=(2, 16), width=(64, 256), expansion=(1.0, 4.0),
                         head_dim=16, ffn_multiple=16, max_seq_len=512), 8, (2, 4, 8, 16),
              [(7, 80, 320), (15, 64, 208), (7, 112, 192), (2, 192, 512), (5, 96, 368), (9, 96, 208), (9, 80, 240),
               (7, 96, 256)],
              [(2, 176, 464), (4, 128, 336), (8, 96, 256), (16, 64, 176)]),
    "paper": (ShapeSpace(budget=1_000_000_000, tolerance=0.1, embeddings=True, vocab_size=48000, depth=(6, 40),
                         width=(1024, 3072), expansion=(1.5, 4.0), head_dim=128, ffn_multiple=256), 20,
              (8, 12, 16, 20, 24, 28, 32, 36),
              [(21, 1920, 4608), (23, 1664, 4608), (8, 2432, 8704), (16, 1920, 5632), (27, 1792, 2816),
               (26, 1664, 4864), (22, 1792, 4352), (18, 1664, 6400), (26, 1408, 5632), (20, 1792, 4608),
               (31, 1664, 3328), (14, 2304, 5632), (27, 1664, 3840), (11, 2560, 6656), (17, 1792, 6912),
               (10, 2304, 7680), (33, 1536, 4096), (15, 2560, 3840), (28, 1920, 3072), (38, 1536, 3328)],
              [(8, 2816, 7424), (12, 2304, 6144), (16, 2048, 5376), (20, 1792, 4864), (24, 1664, 4352),
               (28, 1536, 4096), (32, 1536, 4096), (36, 1408, 3840)]),
}


@pytest.mark.parametrize("scale", SCALE_SHAPES)
def test_the_scales_sample_and_grid_the_shapes_they_did_before_the_solver_was_shared(scale):
    space, configs, depths, sampled, gridded = SCALE_SHAPES[scale]

    def shapes(found: list[ModelConfig]) -> list[tuple[int, int, int]]:
        return [(c.num_layers, c.hidden_size, c.intermediate_size) for c in found]

    assert shapes(sample(space, configs)) == sampled
    assert shapes(grid(space, depths, [8 / 3])) == gridded
    assert all(c.num_kv_heads == c.num_heads and c.max_seq_len == space.max_seq_len for c in sample(space, configs))


def test_bad_spaces_are_errors():
    with pytest.raises(TinyLMError, match="needs vocab_size"):
        ShapeSpace(budget=1000, embeddings=True)
    with pytest.raises(TinyLMError, match="depth range"):
        ShapeSpace(budget=1000, depth=(8, 2))
    with pytest.raises(TinyLMError, match="no multiple of head_dim"):
        ShapeSpace(budget=1000, width=(65, 100), head_dim=64)


def test_rank_averages_ties_like_scipy():
    rng = random.Random(1)
    for _ in range(50):
        values = [rng.randint(0, 5) for _ in range(rng.randint(1, 30))]
        assert rank(values) == pytest.approx(list(scipy.stats.rankdata(values)))


def test_spearman_equals_scipy_with_ties_and_edge_cases():
    """Beyond EXACT_UP_TO pairs: scipy's spearmanr (t approximation), ties included."""
    rng = random.Random(2)
    for trial in range(200):
        n = rng.randint(EXACT_UP_TO + 1, 40)
        x = [rng.randint(0, 6) if trial % 2 else rng.random() for _ in range(n)]
        y = [rng.random() + (0.1 * x[i] if trial % 3 else 0) for i in range(n)]
        expected = scipy.stats.spearmanr(x, y)
        rho, p = spearman(x, y)
        assert rho == pytest.approx(expected.statistic, abs=1e-12)
        assert p == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-15)
    assert all(math.isnan(v) for v in spearman([1, 1, 1], [1, 2, 3]))
    assert all(math.isnan(v) for v in spearman([1, 2], [2, 1]))
    with pytest.raises(TinyLMError, match="different lengths"):
        spearman([1, 2, 3], [1, 2])


def test_small_samples_get_the_exact_permutation_p_value():
    """Up to EXACT_UP_TO pairs the p-value is scipy's exact permutation test over all pairings."""
    rng = random.Random(3)
    for trial in range(30):
        n = rng.randint(3, 6)
        x = [rng.random() for _ in range(n)]
        y = [rng.random() + x[i] * (trial % 3) for i in range(n)]
        exact = scipy.stats.permutation_test((x,), lambda a, y=y: scipy.stats.spearmanr(a, y).statistic,
                                             permutation_type="pairings", n_resamples=math.inf)
        rho, p = spearman(x, y)
        assert rho == pytest.approx(scipy.stats.spearmanr(x, y).statistic, abs=1e-12)
        assert p == pytest.approx(exact.pvalue, rel=1e-9)
    # a perfect order of four points: 2 of the 24 pairings are as extreme, not p = 0 as the t approximation says
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == (1.0, pytest.approx(1 / 12))
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == (-1.0, pytest.approx(1 / 12))
    assert spearman(list(range(EXACT_UP_TO)), list(range(EXACT_UP_TO)))[1] == pytest.approx(2 / math.factorial(9))


def check_architecture_results(folder: Path) -> dict:
    record = json.loads((folder / "results.json").read_text())
    rows = record["rows"]
    for factor in ("depth", "width", "expansion"):
        expected = scipy.stats.spearmanr([r[factor] for r in rows], [r["bpb"] for r in rows])
        stats = record["spearman"][factor]
        assert stats["rho_bpb"] == pytest.approx(expected.statistic, abs=1e-12)
        assert stats["rho_quality"] == pytest.approx(-expected.statistic, abs=1e-12)
        assert stats["p"] == pytest.approx(spearman([r[factor] for r in rows], [r["bpb"] for r in rows])[1])
    table = (folder / "table.md").read_text()
    assert "0.528 [?]" in table and "lower is better" in table
    for name in record["figures"]:
        assert (folder / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(record["figures"]) == ["score_vs_depth.png", "score_vs_expansion.png", "score_vs_width.png"]
    return record


def test_reproduce_scripts_on_a_tiny_setting(corpus_dir, tmp_path):
    """The code path of ``--scale smoke`` on an even smaller setting: tables, Spearman and figures."""
    from reproduce import architecture, speed
    from reproduce.experiment import Options
    from reproduce.runner import run

    tiny = replace(
        architecture.SCALES["smoke"],
        space=ShapeSpace(budget=20_000, tolerance=0.15, depth=(1, 4), width=(16, 64), head_dim=8, ffn_multiple=8,
                         max_seq_len=64),
        configs=4, steps=3, batch_size=2, seq_len=32, val_batches=2, vocab_size=4000, sources=(str(corpus_dir),),
        speed_depths=(1, 3), speed_new_tokens=6,
    )
    folder, _ = run(replace(architecture.EXPERIMENT, scales={"smoke": tiny}), Options(out=tmp_path))
    record = check_architecture_results(folder)
    assert len(record["rows"]) == 4 and all(row["tokens"] == 3 * 2 * 32 for row in record["rows"])
    assert record["settings"]["budget_counts_embeddings"] is False

    _, result = run(replace(speed.EXPERIMENT, scales={"smoke": tiny}), Options(out=tmp_path))
    assert [row["depth"] for row in result["rows"]] == [1, 3]
    assert all(len(row["cpu_fp32_runs"]) == speed.REPEATS and row["cpu_fp32"] > 0 and math.isfinite(row["bpb"])
               for row in result["rows"])
    (finding,) = result["findings"]  # deeper is slower: the speed-up per timed round, bootstrapped over rounds
    shallow, deep = result["rows"][0]["cpu_fp32_runs"], result["rows"][-1]["cpu_fp32_runs"]
    assert finding["kind"] == "threshold" and finding["data"]["n"] == speed.REPEATS
    assert finding["data"]["value"] == pytest.approx(sum(s / d - 1 for s, d in zip(shallow, deep)) / speed.REPEATS)
    assert finding["data"]["low"] <= finding["data"]["value"] <= finding["data"]["high"]
    assert "shortened from the paper's 510" in result["table"]
    assert (tmp_path / "speed" / "speed_vs_score.png").is_file()


@pytest.mark.slow
def test_reproduce_architecture_smoke_scale(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-m", "reproduce", "architecture", "--scale", "smoke", "--out", str(tmp_path)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=900)
    check_architecture_results(tmp_path / "architecture")


@pytest.mark.parametrize("path", sorted((REPO / "recipes" / "architecture").glob("*.yaml")), ids=lambda p: p.stem)
def test_depth_width_recipes_are_the_grid_shapes(path):
    from reproduce.speed import SCALES  # the recipes are the speed table's variants

    scale_name = path.stem.split("-")[0]
    scale = SCALES[scale_name]
    recipe = yaml.safe_load(path.read_text())
    config = ModelConfig(**recipe["model"]["init_args"]["config"])
    assert [config] == grid(scale.space, [config.num_layers], [scale.speed_expansion])
    assert recipe["trainer"]["max_steps"] == scale.steps
    data = recipe["data"]
    assert (data["seq_len"], data["batch_size"], data["vocab_size"]) == (scale.seq_len, scale.batch_size,
                                                                        scale.vocab_size)
    assert recipe["model"]["init_args"]["lr"] == scale.lr and recipe["model"]["init_args"]["min_lr"] == scale.min_lr
