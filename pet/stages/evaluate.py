"""stage=evaluate: beam-search a split, score BLEU (tokenized and sacreBLEU)."""

from __future__ import annotations

import logging

from omegaconf import DictConfig

from pet.checkpoint import model_from_checkpoint
from pet.generation.translate import translate_dataset
from pet.stages.common import StageResult, finish_stage, setup_stage
from pet.stages.lifecycle import tracked_run

log = logging.getLogger(__name__)


def run(cfg: DictConfig) -> StageResult:
    setup = setup_stage(cfg, checkpoint=True, missing_checkpoint=(
        "stage=evaluate needs init_from=<checkpoint .pt> (e.g. a run's checkpoint_best.pt)"))
    rd, data, device = setup.run_dir, setup.data, setup.device
    model = model_from_checkpoint(setup.checkpoint).to(device).eval()
    split = cfg.generation.split
    raw = data.text_path(split, data.tgt_lang, "raw")
    if raw is None:
        log.warning("%s keeps no raw %s.%s: no sacreBLEU/chrF (they score against the untouched reference text; "
                    "see data.raw_source)", data.path, split, data.tgt_lang)
    with tracked_run(cfg) as tracker:
        res = translate_dataset(
            model,
            data.split(split),
            data.src_dict,
            data.tgt_dict,
            cfg.generation,
            device,
            out_path=rd / f"generate-{split}.txt",
            references=data.lines(split, data.tgt_lang, "raw") if raw is not None else None,
            lowercase=bool(cfg.data.lowercase),
        )
        metrics = {
            "bleu": res.bleu,
            "sacrebleu": res.sacrebleu,
            "sentences_per_s": res.sentences_per_second,
            "tokens_per_s": res.tokens_per_second,
            "decode_seconds": res.seconds,
            "sentences": res.n_sentences,
            "truncated_sources": res.n_truncated,
            "parameters": model.num_parameters(),
        }
        if res.sacrebleu is not None:
            metrics["chrf"] = res.chrf
        else:
            metrics.pop("sacrebleu")
        tracker.set_tags({"sacrebleu_signature": res.sacrebleu_signature or "", "chrf_signature": res.chrf_signature or ""})
        for name in (f"generate-{split}.txt", "hyp.detok.txt", "ref.raw.txt"):
            tracker.log_artifact(rd / name)  # the outputs and the references they were scored against
        log.info("%s (tokenized BLEU with BPE removed): %s", split, res.summary())
        result = StageResult(
            stage="evaluate",
            metric_name="bleu",
            metric=res.bleu,
            checkpoint=str(cfg.init_from),
            metrics={**metrics, "sacrebleu_signature": res.sacrebleu_signature, "chrf_signature": res.chrf_signature,
                     "references": str(raw) if raw is not None else None},
        )
        return finish_stage(cfg, result, tracker)
