"""Options of the stages that have a config group of their own: report,
translate, average, export (``pet/conf/<group>/default.yaml`` holds their
defaults; :mod:`pet.config.schema` puts them into the root config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class ReportConfig:
    """stage=report: a table and plots over a sweep's jobs (pet.sweep.report)."""

    # The multirun folder (outputs/sweeps/<run_name>), or an MLflow parent run
    # read from tracking.uri; one of the two.
    sweep_dir: Optional[str] = None
    parent_run_id: Optional[str] = None
    # y axis of the plots and Pareto fronts; jobs without it fall back to their
    # main metric (result.json metric_name)
    metric: str = "bleu"
    maximize: Optional[bool] = None  # null: lower is better for *loss*/*ppl*/latency names
    # Metric columns; empty = bleu, parameters, flops_per_tgt_token,
    # latency_ms_b*, ct2_<quantization>_latency_ms_b*, ct2_<quantization>_mb,
    # then every other numeric metric the jobs report
    columns: list[str] = field(default_factory=list)
    params_key: str = "parameters"
    latency_key: Optional[str] = None  # null: latency_ms_b1, else the smallest batch present
    # report.md/.csv/.png go here; null = <sweep_dir>/report (or the run dir)
    output_dir: Optional[str] = None
    log_to_mlflow: bool = True  # attach the files to the sweep's parent run
    # Time each completed job's checkpoint where its result has no latency,
    # FLOPs or size (beam generation.beam, threads trainer.num_threads), and
    # in CTranslate2 int8 (ms/sentence, size on disk) where ctranslate2 is installed
    measure: bool = False
    latency_batch_sizes: list[int] = field(default_factory=lambda: [1])
    latency_length: int = 25
    latency_repeats: int = 3


@dataclass
class TranslateConfig:
    """stage=translate: raw text in, translations out (pet.stages.translate).

    Beam size, maximum length and batch sizes are generation's (generation.beam,
    max_len_a/b, max_tokens, max_sentences).
    """

    # One raw sentence per line (UTF-8); null: standard input.
    input: Optional[str] = None
    # One translation per input line, in input order; null: standard output.
    # With nbest > 1: "<input line number, from 0>\t<score>\t<translation>"
    # lines, best first (score: length-normalised log-probability, base 2).
    output: Optional[str] = None
    nbest: int = 1
    # Length penalty (hypothesis score / length^lenpen); null: generation.lenpen
    lenpen: Optional[float] = None
    # pet: init_from is a pet checkpoint (.pt); ctranslate2: init_from is a
    # folder exported for CTranslate2 (it holds the text pipeline's files).
    backend: str = "pet"
    # ctranslate2 only: the compute type the model is loaded with.
    compute_type: str = "default"


@dataclass
class AverageConfig:
    """stage=average: the element-wise mean of a run's last or best checkpoints
    (pet.checkpoint_average), written as checkpoint_avg.pt in that run's folder."""

    # Average the last n epoch checkpoints (checkpoint<epoch>.pt, kept by
    # trainer.keep_last_epochs); 0 = not this selection.
    last_epochs: int = 0
    # Average the n best checkpoints (checkpoint.best_<metric>_<value>.pt, kept
    # by trainer.keep_best_checkpoints); 0 = not this selection.
    best: int = 0
    # loss | bleu: which best checkpoints; null = the kind the run folder holds
    metric: Optional[str] = None
    # Where to write the average; null = <run folder>/checkpoint_avg.pt
    output: Optional[str] = None


@dataclass
class ExportConfig:
    """stage=export: a checkpoint as a CTranslate2 model folder (pet.export).

    The folder holds the engine's files (model.bin, config.json, vocabularies),
    pet_layout.json, the text pipeline's files and export.json. Decoding
    settings of the check come from generation (beam, max_len_a/b, lenpen).
    """

    # ctranslate2 (the only format so far)
    format: str = "ctranslate2"
    # float32 | int8 | int8_float32: weights as written (int8: ~4x smaller,
    # loads as int8 by default; the engine can still load it as another type)
    quantization: str = "float32"
    # Output folder; null = <run folder>/ct2-<quantization>
    dir: Optional[str] = None
    # Sentences of check_split (the first n) translated by pet and by the
    # float32 export; the export fails below min_identical identical best
    # translations. 0 = no check.
    check_sentences: int = 100
    check_split: str = "valid"
    min_identical: float = 0.99
    # Time the exported folder and pet's eager loop on the same model,
    # interleaved: speed_length source tokens decoded for exactly speed_length
    # steps, beam generation.beam, trainer.num_threads threads, median of
    # speed_repeats rounds at each of speed_batch_sizes.
    measure_speed: bool = True
    speed_batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    speed_length: int = 25
    speed_repeats: int = 3
    # Without ctranslate2 installed: skip the export with a log line saying how
    # to install it (no result.json, so a later run exports), instead of failing.
    optional: bool = False
