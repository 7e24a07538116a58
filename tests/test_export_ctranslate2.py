"""CTranslate2 export: plain, two-stage-pruned and PET models translate as pet does.

Every test compares pet's beam search with the export's on 100 sentences
(best translations token for token, their scores) and teacher-forced
log-probs token by token. The plain model is trained for a few dozen steps
on a synthetic task (reverse the source, map each token), so that many of its
translations end with their own </s>; the pruned models are cut from it; the
PET student has random weights, so that most of its translations run to the
length limit, where pet and the engine apply different rules that the export's
translator reconciles.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

ctranslate2 = pytest.importorskip("ctranslate2")

from pet.export import CT2Translator, ExportError, check_exactness, compare_with_pet, convert, measure_ct2_latency  # noqa: E402
from pet.export.ctranslate2 import LAYOUT_FILE, build_spec  # noqa: E402
from pet.export.translator import read_vocabulary  # noqa: E402
from pet.pruning.gates import gate_groups, set_gates, to_gated  # noqa: E402
from pet.pruning.removal import remove_pruned  # noqa: E402
from tests.conftest import small_model  # noqa: E402
from tests.test_pet_model import small_student  # noqa: E402

SRC_V, TGT_V = 40, 48
DECODING = dict(beam=5, max_len_a=1.2, max_len_b=10, lenpen=1.0)


def symbols(n: int, prefix: str) -> list[str]:
    return ["<s>", "<pad>", "</s>", "<unk>"] + [f"{prefix}{i}" for i in range(4, n)]


SRC, TGT = symbols(SRC_V, "s"), symbols(TGT_V, "t")


def task(n: int, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Sources of 3-9 tokens; targets: the source reversed, each token mapped."""
    g = torch.Generator().manual_seed(seed)
    src, tgt = [], []
    for _ in range(n):
        s = torch.randint(4, SRC_V, (int(torch.randint(3, 10, (1,), generator=g)),), generator=g).tolist()
        src.append(s)
        tgt.append([(7 * x) % (TGT_V - 4) + 4 for x in reversed(s)])
    return src, tgt


def _pad(rows: list[list[int]]) -> torch.Tensor:
    out = torch.full((len(rows), max(map(len, rows))), 1)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r)
    return out


def train(model, steps: int, seed: int = 0, lr: float = 1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for step in range(steps):
        s, t = task(32, seed * 1000 + step)
        logits, _, _ = model(_pad([x + [2] for x in s]), _pad([[2] + x for x in t]))
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), _pad([x + [2] for x in t]).reshape(-1), ignore_index=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def prune_unevenly(model, layernorm: str):
    """Two removals: width (stage 1), then heads and FFN (stage 2) with q/k and
    v/o sizes that differ within and between modules and FFN widths that
    differ between layers."""
    gated = to_gated(model, layernorm).eval()
    g = torch.Generator().manual_seed(1)
    width = {gr.name: torch.randperm(gr.size, generator=g)[: gr.size // 4] for gr in gate_groups(gated) if gr.kind == "emb"}
    set_gates(gated, width, 0.0)
    stage1 = remove_pruned(gated)
    gated = to_gated(stage1, layernorm).eval()
    selection = {}
    for k, gr in enumerate(g for g in gate_groups(gated) if g.kind != "emb"):
        if gr.kind == "fc":
            selection[gr.name] = list(range(0, gr.size, 2 + k % 3))
        else:
            drop = 1 + (k % 3) if gr.kind == "qk" else 2 + (k % 2)  # of 8 per head
            selection[gr.name] = [h * gr.head_dim + j for h in range(gr.heads) for j in range(gr.head_dim - drop, gr.head_dim)]
    set_gates(gated, selection, 0.0)
    return remove_pruned(gated)


@pytest.fixture(scope="module")
def plain():
    return train(small_model(SRC_V, TGT_V, dropout=0.0, decoder_embed_dim=48, decoder_ffn_dim=80), 100)


@pytest.fixture(scope="module")
def student():
    return small_student(dropout=0.0).eval()


@pytest.fixture(scope="module", params=["weighted", "unweighted"])
def pruned(request, plain):
    return prune_unevenly(plain, request.param)


@pytest.fixture(scope="module")
def sources():
    return task(100, seed=12345)[0]


def export(model, tmp_path, quantization="float32", name="ct2"):
    return convert(model, SRC, TGT, tmp_path / name, quantization, {"decoding": DECODING})


def assert_exact(model, folder, sources):
    report = check_exactness(model, CT2Translator(folder, threads=1), sources, SRC, TGT, min_share=0.99, **DECODING)
    assert report.share_identical == 1.0, report.differences
    assert report.max_logprob_difference < 1e-4
    assert report.max_score_difference < 1e-4
    return report


def test_plain_model_translates_identically(plain, sources, tmp_path):
    folder = export(plain, tmp_path)
    report = assert_exact(plain, folder, sources)
    assert 0 < report.length_limited < 90, "translations that end by themselves, and at the limit"
    # No pet code needed: the folder loads with the engine alone, fairseq-style.
    out = ctranslate2.Translator(str(folder)).translate_batch([["s5", "s6", "s7"]], beam_size=5)
    assert out[0].hypotheses[0] and all(t in TGT for t in out[0].hypotheses[0])
    config = json.loads((folder / "config.json").read_text())
    assert config["decoder_start_token"] == "</s>" and config["add_source_eos"] and config["layer_norm_epsilon"] == 1e-5
    assert read_vocabulary(folder, "source")[:4] == ["<s>", "<blank>", "</s>", "<unk>"]


def test_two_stage_pruned_model_translates_identically(pruned, sources, tmp_path):
    spec = pruned.spec
    attns = [a for st in (spec.encoder, spec.decoder) for l in st.layers for a in (l.self_attn, l.cross_attn) if a]
    assert any(a.qk_dim != a.vo_dim for a in attns) and len({(a.qk_dim, a.vo_dim) for a in attns}) > 2
    assert all(a.qk_dim < a.scale_dim for a in attns), "the original attention scale is kept"
    assert len({l.ffn_dim for l in spec.encoder.layers + spec.decoder.layers}) > 2
    assert spec.encoder.embed_dim < spec.encoder.embed_scale_dim == 32
    folder = export(pruned, tmp_path)
    layout = json.loads((folder / LAYOUT_FILE).read_text())
    assert layout["decoder"]["zero_padded_heads"] > 0
    if spec.layernorm == "unweighted":  # exported at the original width, padded with zeros
        assert layout["encoder"]["exported_width"] == spec.encoder.norm_width > spec.encoder.embed_dim
    else:
        assert layout["encoder"]["exported_width"] == spec.encoder.embed_dim
    assert_exact(pruned, folder, sources)


def test_pet_student_translates_identically(student, sources, tmp_path):
    assert student.spec.encoder.layer_order == [0, 1, 0, 1] and student.encoder.roles[2] != "qkv"
    folder = export(student, tmp_path)
    assert assert_exact(student, folder, sources).length_limited > 0
    layout = json.loads((folder / LAYOUT_FILE).read_text())
    assert layout["encoder"]["layers"] == 4 and layout["encoder"]["physical_layers"] == 2
    # Each use is written out, but identical arrays are stored once.
    spec = build_spec(student, SRC, TGT)
    spec.validate()
    per_use_bytes = sum(v.num_bytes() for v in spec.variables().values())
    assert (folder / "model.bin").stat().st_size < 0.85 * per_use_bytes


@pytest.mark.parametrize("scale", ["embeddings", "attention"])
def test_wrong_scales_would_be_caught(pruned, sources, tmp_path, scale):
    """The pruned model's scales are not those of its shapes: writing the
    engine's defaults instead (sqrt of the exported width for embeddings,
    1/sqrt of the exported head size for attention) gives other log-probs,
    which the check reports."""
    spec = build_spec(pruned, SRC, TGT)
    for stack in (spec.encoder, spec.decoder):
        if scale == "embeddings":
            stack.scale_embeddings = True
        for layer in stack.layer:
            for att in (layer.self_attention, getattr(layer, "attention", None)):
                if att is not None and scale == "attention":
                    att.queries_scale = "__optional"
    spec.validate()
    spec.optimize()
    spec.save(str(tmp_path))
    report = compare_with_pet(pruned, CT2Translator(tmp_path, threads=1), sources[:20], SRC, TGT, **DECODING)
    if scale == "embeddings" and pruned.spec.layernorm == "unweighted":
        # Exported at the original width, where the engine's default is the original scale.
        assert report.max_logprob_difference < 1e-4
    else:
        assert report.max_logprob_difference > 1e-2


def test_int8_export_is_smaller_and_still_translates(plain, sources, tmp_path):
    f32, i8 = export(plain, tmp_path), export(plain, tmp_path, "int8", "int8")
    # Weights shrink 4x; at this toy size the float32 position tables (1024 rows) are half the file.
    assert (i8 / "model.bin").stat().st_size < 0.75 * (f32 / "model.bin").stat().st_size
    translator = CT2Translator(i8, threads=1)
    assert translator.translator.compute_type.startswith("int8")
    report = compare_with_pet(plain, translator, sources, SRC, TGT, **DECODING)
    # Measured, not required: this toy model's flat distributions make int8 change
    # most of its translations (a trained IWSLT-size model changes a few per cent).
    assert report.identical > 0 and report.max_logprob_difference < 5


def test_check_fails_clearly_when_the_export_is_another_model(plain, sources, tmp_path):
    other = small_model(SRC_V, TGT_V, seed=5, dropout=0.0, decoder_embed_dim=48, decoder_ffn_dim=80).eval()
    folder = export(other, tmp_path)
    with pytest.raises(ExportError, match="does not reproduce pet's translations"):
        check_exactness(plain, CT2Translator(folder, threads=1), sources[:30], SRC, TGT, **DECODING)


def test_check_fails_when_identical_outputs_score_differently(plain, sources, tmp_path):
    folder = export(plain, tmp_path)
    ok = check_exactness(plain, CT2Translator(folder, threads=1), sources[:20], SRC, TGT, **DECODING)
    assert 0 < ok.max_score_difference < 1e-3
    with pytest.raises(ExportError, match="other scores"):
        check_exactness(plain, CT2Translator(folder, threads=1), sources[:20], SRC, TGT,
                        score_tolerance=ok.max_score_difference / 2, **DECODING)


def test_a_gated_model_is_sliced_first_and_unfinished_shrinking_refused(tmp_path):
    model = small_model(SRC_V, TGT_V, dropout=0.0)
    gated = to_gated(model).eval()
    set_gates(gated, {"encoder.layers.0.ffn.c_fc": [0, 1, 2], "decoder.embed.c_emb": [3]}, 0.0)
    a, b = build_spec(gated, SRC, TGT), build_spec(remove_pruned(gated), SRC, TGT)
    va, vb = a.variables(), b.variables()
    assert va.keys() == vb.keys() and all(np.array_equal(np.asarray(va[k]), np.asarray(vb[k])) for k in va)
    set_gates(gated, {"encoder.layers.0.ffn.c_fc": [5]}, 0.5)
    with pytest.raises(ExportError, match="connectivity"):
        build_spec(gated, SRC, TGT)
    with pytest.raises(ExportError, match="quantization"):
        convert(model, SRC, TGT, tmp_path / "x", "int4")


def test_translate_tokens_and_latency(plain, tmp_path):
    translator = CT2Translator(export(plain, tmp_path), threads=1)
    nbest = translator.translate_tokens([["s5", "s6", "s7", "</s>"], ["s9"]], nbest=3)
    assert [len(h) for h in nbest] == [3, 3]
    assert all(tokens and "</s>" not in tokens for hyps in nbest for tokens, _ in hyps)
    assert all(hyps[0][1] >= hyps[1][1] >= hyps[2][1] for hyps in nbest)
    with pytest.raises(ValueError):
        translator.translate_tokens([["s5"]], beam=2, nbest=3)
    result = measure_ct2_latency(translator, batch_size=2, length=6, beam=2, num_sentences=4, warmup=0, repeats=1)
    assert result.num_sentences == 4 and result.num_batches == 2 and result.fixed_length == 6
    assert result.sentences_per_second > 0 and "ctranslate2" in result.device
