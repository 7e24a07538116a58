"""Shared fixtures: small random models, synthetic batches, the shared data path."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from pet.config.schema import ModelConfig
from pet.data.batch import Batch
from pet.models.spec import spec_from_config
from pet.models.transformer import TransformerModel

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_IWSLT = SHARED / "data" / "iwslt14"

os.environ.setdefault("PET_ROOT", str(REPO))
# One thread: tests use tiny models, and on a shared 2-core machine two
# spinning OpenMP threads made a tiny step ~25x slower.
torch.set_num_threads(1)


def model_config(**overrides) -> ModelConfig:
    base = dict(
        name="test",
        encoder_layers=2,
        decoder_layers=2,
        encoder_embed_dim=32,
        decoder_embed_dim=32,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        encoder_heads=4,
        decoder_heads=4,
        dropout=0.1,
    )
    base.update(overrides)
    return OmegaConf.structured(ModelConfig(**base))


def small_model(src_vocab: int = 40, tgt_vocab: int = 48, seed: int = 0, **overrides) -> TransformerModel:
    torch.manual_seed(seed)
    return TransformerModel(spec_from_config(model_config(**overrides), src_vocab, tgt_vocab))


def random_batch(src_vocab: int = 40, tgt_vocab: int = 48, bsz: int = 4, src_len: int = 9, tgt_len: int = 7, seed: int = 0) -> Batch:
    """Right-padded batch with ragged lengths, eos-terminated, fairseq conventions."""
    g = torch.Generator().manual_seed(seed)
    pad, eos = 1, 2
    src = torch.full((bsz, src_len), pad)
    tgt = torch.full((bsz, tgt_len), pad)
    prev = torch.full((bsz, tgt_len), pad)
    src_lengths = []
    for i in range(bsz):
        sl = src_len - (i % 3)
        tl = tgt_len - (i % 2) * 2
        src[i, : sl - 1] = torch.randint(4, src_vocab, (sl - 1,), generator=g)
        src[i, sl - 1] = eos
        body = torch.randint(4, tgt_vocab, (tl - 1,), generator=g)
        tgt[i, : tl - 1] = body
        tgt[i, tl - 1] = eos
        prev[i, 0] = eos
        prev[i, 1:tl] = body
        src_lengths.append(sl)
    return Batch(
        ids=torch.arange(bsz),
        src_tokens=src,
        src_lengths=torch.tensor(src_lengths),
        prev_output_tokens=prev,
        target=tgt,
        ntokens=int(tgt.ne(pad).sum()),
    )


@pytest.fixture
def shared_iwslt() -> Path:
    if not (SHARED_IWSLT / "bpe" / "train.de").exists():
        pytest.skip(f"shared IWSLT'14 data not found at {SHARED_IWSLT}")
    return SHARED_IWSLT


def compose_cfg(output_root: Path, *overrides: str):
    """The config a `pet ...` command would run with, rooted in a temp folder."""
    from hydra import compose, initialize_config_dir

    import pet.cli  # noqa: F401  registers the structured schema

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(
            config_name="config",
            overrides=[
                f"paths.output_root={output_root}",
                f"paths.run_dir={output_root}/run",
                "tracking=none",
                "trainer.progress_bar=none",
                *overrides,
            ],
        )


# Small demo corpus shared by the end-to-end tests (prepared once per session).
DEMO_DATA = [
    "data=demo",
    "data.demo_train_size=400",
    "data.demo_valid_size=40",
    "data.demo_test_size=40",
    "data.bpe_merges=200",
]


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    from pet.stages import run_stage

    root = tmp_path_factory.mktemp("demo")
    run_stage(compose_cfg(root, "stage=prepare", *DEMO_DATA))
    return root


# A tiny model and a short prune run on the demo corpus, shared by the pruning tests.
TINY = [*DEMO_DATA, "model=transformer_tiny", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
        "model.encoder_ffn_dim=64", "model.decoder_ffn_dim=64", "trainer.max_tokens=1200",
        "optim.warmup_updates=10", "optim.lr=2e-3", "trainer.log_interval=5", "trainer.device=cpu"]
PRUNE = ["stage=prune", "pruning.pruning_period=1", "pruning.importance_batches=4", "pruning.report_latency=false",
         "pruning.bleu_sentences=8", "generation.beam=2", "pruning.latency_length=8"]


@pytest.fixture(scope="session")
def pretrained(demo_root, tmp_path_factory):
    """A tiny model pretrained one epoch on the demo corpus: the input of prune and finetune tests."""
    from pet.stages import run_stage

    out = tmp_path_factory.mktemp("pre")
    run_stage(compose_cfg(demo_root, *TINY, "stage=pretrain", "trainer.max_epoch=1", f"paths.run_dir={out}"))
    return out / "checkpoint_best.pt"
