import torch
import torch.nn.functional as F

from pet.models.spec import TransformerSpec, spec_from_config
from pet.models.transformer import TransformerModel
from tests.conftest import model_config, random_batch, small_model


def test_transformer_iwslt_de_en_has_fairseqs_exact_parameter_count():
    cfg = model_config(
        encoder_embed_dim=512, decoder_embed_dim=512, encoder_ffn_dim=1024, decoder_ffn_dim=1024,
        encoder_layers=6, decoder_layers=6,
    )
    assert TransformerModel(spec_from_config(cfg, 8848, 6632)).num_parameters() == 39_469_056


def test_spec_round_trips_through_a_plain_dict():
    spec = small_model().spec
    assert TransformerSpec.from_dict(spec.to_dict()) == spec


def test_incremental_decoding_matches_full_forward():
    model = small_model().eval()
    batch = random_batch()
    with torch.no_grad():
        full, enc, _ = model(batch.src_tokens, batch.prev_output_tokens)
        cache: dict = {}
        steps = [model.decoder(batch.prev_output_tokens[:, : t + 1], enc, cache=cache)[0] for t in range(batch.prev_output_tokens.size(1))]
    inc = torch.cat(steps, dim=1)
    mask = batch.target.ne(1)
    torch.testing.assert_close(F.log_softmax(inc, -1)[mask], F.log_softmax(full, -1)[mask], atol=1e-5, rtol=1e-5)


def test_reordered_incremental_decoding_matches_full_forward_of_the_reordered_prefixes():
    """Beam search moves cached rows every step (reorder_cache gathers them into a
    buffer one step longer; the next append fills its last slot): each step's
    output must still equal a full forward pass over the prefixes the rows hold."""
    model = small_model().eval()
    batch = random_batch(bsz=3)
    g = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        enc = model.encoder(batch.src_tokens[:1].expand(4, -1))
        prefixes = torch.full((4, 1), 2, dtype=torch.long)
        cache: dict = {}
        for _step in range(6):
            logits, _ = model.decoder(prefixes, enc, cache=cache)
            full, _ = model.decoder(prefixes, enc)
            torch.testing.assert_close(logits[:, -1], full[:, -1], atol=1e-5, rtol=1e-5)
            order = torch.randint(0, 4, (4,), generator=g)  # rows copied, dropped, swapped
            TransformerModel.reorder_cache(cache, order)
            next_tokens = torch.randint(4, 20, (4, 1), generator=g)
            prefixes = torch.cat([prefixes.index_select(0, order), next_tokens], dim=1)
        assert all(e["k"].size(2) == 6 for n, e in cache.items() if n.endswith(".self"))


def test_right_padding_does_not_change_a_sentences_output():
    model = small_model().eval()
    batch = random_batch(bsz=3)
    row = 2  # shorter than the longest source
    n_src = int(batch.src_tokens[row].ne(1).sum())
    n_tgt = int(batch.target[row].ne(1).sum())
    with torch.no_grad():
        padded, _, _ = model(batch.src_tokens, batch.prev_output_tokens)
        alone, _, _ = model(batch.src_tokens[row : row + 1, :n_src], batch.prev_output_tokens[row : row + 1, :n_tgt])
    torch.testing.assert_close(padded[row, :n_tgt], alone[0], atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    model = small_model().eval()
    batch = random_batch()
    changed = batch.prev_output_tokens.clone()
    changed[:, -1] = 5
    with torch.no_grad():
        a, _, _ = model(batch.src_tokens, batch.prev_output_tokens)
        b, _, _ = model(batch.src_tokens, changed)
    torch.testing.assert_close(a[:, :-1], b[:, :-1])


def test_tied_output_projection_is_the_decoder_embedding():
    model = small_model()
    assert model.decoder.output_weight() is model.decoder.embed.embed_tokens.weight


def test_shared_layers_are_one_module_and_counted_once():
    shared = small_model(
        encoder_layer_order=[0, 1, 0, 1],
        encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"],
        decoder_layer_order=[0, 1, 0, 1],
        decoder_share_query=True,
    )
    plain = small_model()
    layer = shared.decoder.layers[0]
    assert layer.encoder_attn.q_proj is layer.self_attn.q_proj
    d = 32
    assert plain.num_parameters() - shared.num_parameters() == 2 * (d * d + d)
    assert shared.encoder.spec.depth == 4
