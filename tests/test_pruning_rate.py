"""The compression-rate solver lands within 1 % of the request."""

import math

import pytest
import torch

from pet.errors import ConfigError
from pet.models.spec import spec_from_config
from pet.pruning.gates import dim_ownership, gate_groups, groups_for, meta_model, to_gated
from pet.pruning.rate import Polynomial, chain_target, parameter_count, plan, plan_for_ratio, polynomial
from pet.pruning.removal import remove_pruned
from pet.pruning.selection import select_for_rate
from tests.conftest import model_config, small_model
from tests.pruning_helpers import zero_selected

SHAPES = {
    # fairseq transformer_iwslt_de_en with the standard dictionaries
    "iwslt": (dict(encoder_embed_dim=512, decoder_embed_dim=512, encoder_ffn_dim=1024, decoder_ffn_dim=1024,
                   encoder_layers=6, decoder_layers=6), 8848, 6632),
    "small": (dict(encoder_embed_dim=256, decoder_embed_dim=256, encoder_ffn_dim=512, decoder_ffn_dim=512,
                   encoder_layers=3, decoder_layers=3), 6000, 6000),
    "uneven": (dict(encoder_embed_dim=64, decoder_embed_dim=96, encoder_ffn_dim=96, decoder_ffn_dim=160,
                    encoder_layers=2, decoder_layers=3, decoder_heads=8), 120, 100),
}


def achieved(model, targets, rate, seed=0):
    own, groups = dim_ownership(model), gate_groups(model)
    target = chain_target(own, groups, targets, rate)
    pruned = groups_for(model, targets)
    g = torch.Generator().manual_seed(seed)
    scores = {x.name: torch.rand(x.size, generator=g) for x in pruned}
    sel = select_for_rate(own, pruned, scores, target_parameters=target.target_parameters).selection
    count = parameter_count(own, {x.name: x.size - len(sel[x.name]) for x in pruned})
    return target, count, parameter_count(own, {})


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("rate", [0.75, 0.5, 0.25])
def test_single_stage_rate_within_one_percent(shape, rate):
    kw, vs, vt = SHAPES[shape]
    model = meta_model(spec_from_config(model_config(**kw), vs, vt))
    target, count, total = achieved(model, "all", rate)
    assert target.target_parameters == pytest.approx(rate * total)
    assert abs(count / (rate * total) - 1) < 0.01


@pytest.mark.parametrize("shape", list(SHAPES))
def test_width_only_stage_uses_the_single_stage_keep_ratio(shape):
    kw, vs, vt = SHAPES[shape]
    model = meta_model(spec_from_config(model_config(**kw), vs, vt))
    single = chain_target(dim_ownership(model), gate_groups(model), "all", 0.5)
    target, count, total = achieved(model, "emb", 0.5)
    assert target.keep_ratio == pytest.approx(single.keep_ratio)
    assert 0.5 < target.target_rate < 1
    assert abs(count / target.target_parameters - 1) < 0.01


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("targets", ["all", "emb"])
@pytest.mark.parametrize("rate", [0.5, 0.25])
def test_residual_widths_move_at_most_two_units_from_the_keep_ratio(shape, targets, rate):
    """The width fine-tuning of the plan moves each stream by up to two dimensions
    from what the keep ratio gives it, not more (two equal streams stay within 4)."""
    kw, vs, vt = SHAPES[shape]
    model = meta_model(spec_from_config(model_config(**kw), vs, vt))
    own, groups = dim_ownership(model), gate_groups(model)
    pruned = groups_for(model, targets)
    planned = plan(own, pruned, chain_target(own, groups, targets, rate).target_parameters)
    base, _ = plan_for_ratio(pruned, planned.keep_ratio)
    for g in (g for g in pruned if g.kind == "emb"):
        assert abs(planned.counts[g.name] - base[g.name]) <= 2, g.name


def test_quadratic_solution_is_the_design_formula():
    model = meta_model(spec_from_config(model_config(**SHAPES["iwslt"][0]), 8848, 6632))
    own = dim_ownership(model)
    poly = polynomial(own, [g.name for g in gate_groups(model)])
    n = parameter_count(own, {})
    assert poly.constant == 0 and poly.quadratic + poly.linear == n
    r = poly.solve(0.5 * n)
    assert poly.quadratic * r * r + poly.linear * r == pytest.approx(0.5 * n)
    assert Polynomial(0.0, 10.0, 0.0).solve(5.0) == pytest.approx(0.5)


def test_two_stage_chain_ends_at_the_requested_rate():
    plain = small_model(encoder_embed_dim=64, decoder_embed_dim=64, encoder_ffn_dim=128, decoder_ffn_dim=128,
                        src_vocab=200, tgt_vocab=200).eval()
    n0 = plain.num_parameters()
    history = []
    model = plain
    for targets in ("emb", "heads_ffn"):
        gated = to_gated(model)
        origin = meta_model(plain.spec)
        t = chain_target(dim_ownership(origin), gate_groups(origin), targets, 0.4, history=history)
        groups = groups_for(gated, targets)
        scores = {g.name: torch.rand(g.size) for g in groups}
        sel = select_for_rate(dim_ownership(gated), groups, scores, target_parameters=t.target_parameters).selection
        zero_selected(gated, sel)
        model = remove_pruned(gated)
        history.append({"targets": targets, "emb_level": t.emb_level, "heads_ffn_level": t.heads_ffn_level})
        assert abs(model.num_parameters() / t.target_parameters - 1) < 0.01
        if targets == "emb":
            assert model.spec.encoder.layers[0].ffn_dim == 128  # stage 1 touches the width only
    assert abs(model.num_parameters() / (0.4 * n0) - 1) < 0.01


def test_iterations_remove_one_minus_r_to_the_one_over_k_each():
    model = meta_model(spec_from_config(model_config(**SHAPES["small"][0]), 6000, 6000))
    own, groups = dim_ownership(model), gate_groups(model)
    one = chain_target(own, groups, "all", 0.3)
    first = chain_target(own, groups, "all", 0.3, iteration=1, iterations=3)
    assert first.emb_level == pytest.approx(one.keep_ratio ** (1 / 3))
    hist = [{"targets": "all", "emb_level": first.emb_level, "heads_ffn_level": first.heads_ffn_level}]
    second = chain_target(own, groups, "all", 0.3, iteration=2, iterations=3, history=hist)
    assert second.heads_ffn_level / first.heads_ffn_level == pytest.approx(one.keep_ratio ** (1 / 3))
    last = chain_target(own, groups, "all", 0.3, iteration=3, iterations=3, history=hist)
    assert last.target_parameters == pytest.approx(0.3 * parameter_count(own, {}))
    assert math.isclose(last.emb_level, one.keep_ratio)


def test_unreachable_rate_is_a_config_error():
    model = meta_model(spec_from_config(model_config(**SHAPES["small"][0]), 6000, 6000))
    with pytest.raises(ConfigError, match="below what"):
        chain_target(dim_ownership(model), gate_groups(model), "heads_ffn", 0.3)
