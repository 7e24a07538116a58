"""Turn a fairseq ``transformer`` checkpoint into a pet checkpoint.

Why: the core benchmark compares two systems that each train *and* decode.
When their BLEU differs, decoding fairseq's own model with pet's beam search
tells the two apart: if pet's search on fairseq's weights scores what
``fairseq-generate`` scores, the searches agree and the gap is in the trained
weights (seed-level noise at a short budget), not in pet's decoding.

Only what the benchmark trains is supported: post-LN encoder-decoder with
tied decoder input/output embeddings, sinusoidal positions, regular shapes.
The dictionaries must be the ones pet prepared for the same corpus (fairseq
and pet build identical ones from the same files; this is checked).

    python benchmarks/fairseq_checkpoint.py FAIRSEQ.pt PET_CORPUS_DIR OUT.pt [--src-lang de --tgt-lang en]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]

# fairseq key (after the encoder./decoder. prefix) -> pet key
_RENAMES = [
    (r"^embed_tokens\.", "embed.embed_tokens."),
    (r"^layers\.(\d+)\.fc([12])\.", r"layers.\1.ffn.fc\2."),
]
_DROPPED = re.compile(r"(\.version$|embed_positions\.|^decoder\.output_projection\.weight$)")


def convert_state_dict(fairseq_model: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in fairseq_model.items():
        if _DROPPED.search(key):
            continue
        side, rest = key.split(".", 1)
        for pattern, repl in _RENAMES:
            rest = re.sub(pattern, repl, rest)
        out[f"{side}.{rest}"] = value
    return out


def convert(fairseq_path: Path, corpus_dir: Path, src_lang: str, tgt_lang: str) -> dict[str, Any]:
    from pet.data.dictionary import Dictionary
    from pet.models.spec import spec_from_config
    from pet.models.transformer import TransformerModel

    # fairseq 0.12 pickles an argparse.Namespace next to the weights.
    os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    ckpt = torch.load(fairseq_path, map_location="cpu", weights_only=False)
    a = ckpt["cfg"]["model"]
    if not a.share_decoder_input_output_embed:
        raise SystemExit(f"{fairseq_path}: only tied decoder embeddings are supported")
    src_dict = Dictionary.load(corpus_dir / f"dict.{src_lang}.txt")
    tgt_dict = Dictionary.load(corpus_dir / f"dict.{tgt_lang}.txt")
    shape = argparse.Namespace(
        encoder_layers=a.encoder_layers, decoder_layers=a.decoder_layers,
        encoder_embed_dim=a.encoder_embed_dim, decoder_embed_dim=a.decoder_embed_dim,
        encoder_ffn_dim=a.encoder_ffn_embed_dim, decoder_ffn_dim=a.decoder_ffn_embed_dim,
        encoder_heads=a.encoder_attention_heads, decoder_heads=a.decoder_attention_heads,
        encoder_layer_order=[], decoder_layer_order=[], encoder_attention_roles=[], decoder_share_query=False,
        dropout=a.dropout, attention_dropout=a.attention_dropout, activation_dropout=a.activation_dropout,
        max_positions=a.max_source_positions, share_decoder_input_output_embed=True,
    )
    spec = spec_from_config(shape, len(src_dict), len(tgt_dict))
    model = TransformerModel(spec)
    state = convert_state_dict(ckpt["model"])
    for side, d in (("encoder", src_dict), ("decoder", tgt_dict)):
        rows = state[f"{side}.embed.embed_tokens.weight"].size(0)
        if rows != len(d):
            raise SystemExit(f"{fairseq_path}: {side} has {rows} embeddings but pet's dictionary {len(d)} types; "
                             f"prepare the same corpus with pet first ({corpus_dir})")
    model.load_state_dict(state, strict=True)  # strict: every pet tensor has a fairseq source
    return {"spec": spec.to_dict(), "model": model.state_dict(),
            "src_dict": src_dict.to_list(), "tgt_dict": tgt_dict.to_list(), "converted_from": str(fairseq_path)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fairseq_checkpoint", type=Path)
    ap.add_argument("corpus_dir", type=Path, help="pet's prepared corpus (holds dict.<lang>.txt)")
    ap.add_argument("out", type=Path)
    ap.add_argument("--src-lang", default="de")
    ap.add_argument("--tgt-lang", default="en")
    args = ap.parse_args()
    sys.path.insert(0, str(REPO))
    from pet.checkpoint import save_checkpoint

    save_checkpoint(convert(args.fairseq_checkpoint, args.corpus_dir, args.src_lang, args.tgt_lang), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
