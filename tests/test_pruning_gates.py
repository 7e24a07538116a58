"""Pruning-safe architecture: c = 1 is the plain model; gates map to weights."""

import pytest
import torch

from pet.errors import CheckpointError, ConfigError
from pet.pruning.gates import (
    check_prunable,
    dim_ownership,
    gate_groups,
    groups_for,
    load_plain_state,
    meta_model,
    to_gated,
)
from pet.pruning.rate import parameter_count
from pet.pruning.removal import max_output_difference
from tests.conftest import random_batch, small_model
from tests.pruning_helpers import UNEVEN


@pytest.mark.parametrize("layernorm", ["weighted", "unweighted"])
def test_gated_model_with_c_one_computes_the_plain_model(layernorm):
    plain = small_model(**UNEVEN).eval()
    gated = to_gated(plain, layernorm).eval()
    assert gated.spec.gated and gated.spec.layernorm == layernorm
    batch = random_batch()
    # float32: only the reduction order of the LayerNorm statistics differs.
    assert max_output_difference(plain, gated, [batch]) < 1e-5
    # float64: the same function, to rounding.
    assert max_output_difference(plain.double(), gated.double(), [batch]) < 1e-12


def test_plain_state_dict_loads_into_gated_model_and_nothing_else_is_missing():
    plain = small_model(**UNEVEN)
    gated = to_gated(plain)
    fresh = type(gated)(gated.spec)
    load_plain_state(fresh, plain.state_dict())
    for name, value in plain.state_dict().items():
        assert torch.equal(fresh.state_dict()[name], value)
    assert all(torch.all(fresh.get_buffer(g.name) == 1) for g in gate_groups(fresh))
    broken = dict(plain.state_dict())
    broken.pop("encoder.layers.0.ffn.fc1.weight")
    with pytest.raises(CheckpointError):
        load_plain_state(type(gated)(gated.spec), broken)


def test_gated_input_is_refused():
    with pytest.raises(CheckpointError):
        to_gated(to_gated(small_model()))


def test_gate_groups_cover_every_connectivity_buffer():
    gated = to_gated(small_model(**UNEVEN))
    names = {g.name for g in gate_groups(gated)}
    buffers = {n for n, _ in gated.named_buffers() if n.rsplit(".", 1)[-1].startswith("c_")}
    assert names == buffers
    assert {g.kind for g in groups_for(gated, "emb")} == {"emb"}
    assert {g.kind for g in groups_for(gated, "heads_ffn")} == {"qk", "vo", "fc"}


@pytest.mark.parametrize("overrides", [
    UNEVEN,
    dict(share_decoder_input_output_embed=False),
    dict(encoder_layer_order=[0, 1, 0, 1], encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"],
         decoder_layer_order=[0, 1, 0, 1], decoder_share_query=True),
])
def test_ownership_counts_every_parameter_once(overrides):
    model = small_model(**overrides)
    assert parameter_count(dim_ownership(model), {}) == model.num_parameters()
    meta = meta_model(model.spec)
    assert parameter_count(dim_ownership(meta), {}) == model.num_parameters()


def test_shared_query_and_permuted_roles_allow_only_width_pruning():
    model = to_gated(small_model(encoder_layer_order=[0, 1, 0, 1], encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"],
                                 decoder_share_query=True))
    own = dim_ownership(model)
    check_prunable(own, groups_for(model, "emb"))
    with pytest.raises(ConfigError):
        check_prunable(own, groups_for(model, "heads_ffn"))
