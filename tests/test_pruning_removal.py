"""Physical removal preserves outputs, for every kind of unit at once."""

import pytest
import torch
import torch.nn.functional as F

from pet.pruning.gates import gate_buffer, to_gated
from pet.pruning.removal import RemovalError, max_output_difference, remove_pruned, verify_removal
from tests.conftest import random_batch, small_model
from tests.pruning_helpers import gated_small, random_selection, zero_selected

BATCHES = [random_batch(seed=0), random_batch(bsz=3, src_len=12, tgt_len=10, seed=1)]


@pytest.mark.parametrize("layernorm", ["weighted", "unweighted"])
@pytest.mark.parametrize("seed", [0, 1])
def test_removal_preserves_teacher_forced_logprobs(layernorm, seed):
    plain, gated = gated_small(layernorm, seed=seed)
    selection = random_selection(gated, "all", keep=0.45, seed=seed)
    zero_selected(gated, selection)
    small = remove_pruned(gated)
    assert small.num_parameters() < 0.5 * plain.num_parameters()
    assert not small.spec.gated and small.spec.layernorm == layernorm
    assert max_output_difference(gated, small, BATCHES) < 1e-5
    # In float64 removal is exact up to rounding: the verdict the prune stage uses.
    exact, fp32 = verify_removal(gated, small, BATCHES, tolerance=1e-10)
    assert exact < 1e-10 and fp32 < 1e-5
    assert next(gated.parameters()).dtype == torch.float32  # the check works on copies
    # Uneven shapes really happened, and original scales were kept.
    enc, dec = small.spec.encoder, small.spec.decoder
    assert enc.embed_dim < 32 and dec.embed_dim < 48
    assert enc.embed_scale_dim == 32 and enc.norm_width == 32 and dec.norm_width == 48
    assert len(set(l.ffn_dim for l in enc.layers + dec.layers)) > 1
    att = enc.layers[0].self_attn
    assert att.qk_dim < 8 and att.scale_dim == 8


def test_removal_preserves_incremental_decoding():
    _, gated = gated_small("weighted", seed=3)
    zero_selected(gated, random_selection(gated, "all", keep=0.5, seed=3))
    small = remove_pruned(gated)
    batch = BATCHES[0]
    with torch.no_grad():
        enc = small.encoder(batch.src_tokens)
        cache: dict = {}
        steps = [small.decoder(batch.prev_output_tokens[:, : t + 1], enc, cache=cache)[0] for t in range(batch.prev_output_tokens.size(1))]
        full, _, _ = gated(batch.src_tokens, batch.prev_output_tokens)
    mask = batch.target.ne(1)
    inc = F.log_softmax(torch.cat(steps, 1), -1)[mask]
    torch.testing.assert_close(inc, F.log_softmax(full, -1)[mask], atol=1e-5, rtol=0)


def test_removal_with_untied_output_projection():
    plain = small_model(share_decoder_input_output_embed=False).eval()
    gated = to_gated(plain).eval()
    zero_selected(gated, random_selection(gated, "all", keep=0.5))
    small = remove_pruned(gated)
    assert small.decoder.output_projection.weight.shape[1] == small.spec.decoder.embed_dim
    assert max_output_difference(gated, small, BATCHES) < 1e-5


def test_width_pruning_of_a_model_with_shared_layers():
    plain = small_model(encoder_layer_order=[0, 1, 0, 1], encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"],
                        decoder_layer_order=[0, 1, 0, 1], decoder_share_query=True).eval()
    gated = to_gated(plain).eval()
    zero_selected(gated, random_selection(gated, "emb", keep=0.8))
    small = remove_pruned(gated)
    layer = small.decoder.layers[0]
    assert layer.encoder_attn.q_proj is layer.self_attn.q_proj
    assert max_output_difference(gated, small, BATCHES) < 1e-5


@pytest.mark.parametrize("layernorm", ["weighted", "unweighted"])
def test_two_removals_in_a_row_preserve_outputs(layernorm):
    """Stage 1 (width) then a fresh gated model of its result, stage 2 (heads, FFN)."""
    plain, gated = gated_small(layernorm)
    zero_selected(gated, random_selection(gated, "emb", keep=0.8))
    stage1 = remove_pruned(gated)
    gated2 = to_gated(stage1, layernorm).eval()
    assert max_output_difference(stage1, gated2, BATCHES) < 1e-5
    zero_selected(gated2, random_selection(gated2, "heads_ffn", keep=0.6))
    stage2 = remove_pruned(gated2)
    assert max_output_difference(gated2, stage2, BATCHES) < 1e-5
    assert stage2.spec.encoder.embed_dim == stage1.spec.encoder.embed_dim
    assert stage2.spec.encoder.position_dims == stage1.spec.encoder.position_dims


def test_removal_refuses_unfinished_shrinking():
    _, gated = gated_small()
    with torch.no_grad():
        gate_buffer(gated, "encoder.layers.0.ffn.c_fc")[0] = 0.3
    with pytest.raises(RemovalError):
        remove_pruned(gated)
