"""Typed schemas for every config group.

Hydra merges the YAML files under ``pet/conf/`` onto these dataclasses (the options of stages with a group of their own are in :mod:`pet.config.stage_options`), so a typo in
a key or a value of the wrong type fails at composition time. Values with a
closed set of choices are checked by :func:`pet.config.validate.validate` before
any work starts, which turns them into one readable error line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from omegaconf import MISSING

from pet.config.stage_options import AverageConfig, ExportConfig, ReportConfig, TranslateConfig


@dataclass
class ModelConfig:
    """Shape and regularisation of an encoder-decoder Transformer.

    Defaults are fairseq's ``transformer_iwslt_de_en``. A pruned or shared model
    has a richer shape than these fields express; that shape travels in the
    checkpoint (``pet.models.spec.TransformerSpec``), never in this config.
    """

    name: str = MISSING
    encoder_layers: int = 6
    decoder_layers: int = 6
    encoder_embed_dim: int = 512
    decoder_embed_dim: int = 512
    encoder_ffn_dim: int = 1024
    decoder_ffn_dim: int = 1024
    encoder_heads: int = 4
    decoder_heads: int = 4
    dropout: float = 0.3
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    max_positions: int = 1024
    share_decoder_input_output_embed: bool = True
    # Layer reuse (PET): the physical layer used at each effective depth. Empty
    # means one physical layer per depth (a plain Transformer).
    encoder_layer_order: list[int] = field(default_factory=list)
    decoder_layer_order: list[int] = field(default_factory=list)
    # Role of the encoder's three attention projections at each effective depth,
    # as a permutation of "qkv": "kvq" means the matrix stored as q_proj serves
    # as the key, k_proj as the value and v_proj as the query.
    encoder_attention_roles: list[str] = field(default_factory=list)
    # Decoder self- and cross-attention share one query projection.
    decoder_share_query: bool = False
    # A checkpoint whose exact layer shapes (e.g. a pruned model's uneven ones)
    # stage=pretrain builds instead of the fields above, randomly initialised:
    # the dense baseline of a pruned shape.
    shape_from: Optional[str] = None


@dataclass
class DataConfig:
    """Where a corpus comes from and how it becomes token ids."""

    name: str = MISSING
    # iwslt14: fairseq's prepare-iwslt14.sh recipe from the raw de-en archive;
    # parallel_text: a user's raw train/valid/test files; preprocessed: files
    # already tokenized and BPE-segmented (only dictionaries and ids are built);
    # demo: a generated German->English number/date corpus.
    kind: str = "preprocessed"
    src_lang: str = "de"
    tgt_lang: str = "en"
    # Folder, tarball or URL the raw or preprocessed text is read from.
    source: Optional[str] = None
    # kind=preprocessed: the untouched text of those sentences (raw
    # {split}.{lang} files, or IWSLT *.xml test files), which sacreBLEU and
    # chrF score against. Without it they are not reported.
    raw_source: Optional[str] = None
    # Lowercase after tokenization (fairseq's IWSLT recipe does). The model
    # then writes lowercase, so sacreBLEU/chrF score case-insensitively (their
    # signature says case:lc). data.lowercase=false keeps case, and scores it.
    # For kind=preprocessed it states whether the given text is lowercased.
    lowercase: bool = True
    moses_escape: bool = True
    bpe_merges: int = 10000
    # Training pairs longer than this (tokens) or with a length ratio above
    # max_len_ratio are dropped, as Moses' clean-corpus-n.perl does.
    max_train_len: int = 175
    max_len_ratio: float = 1.5
    # iwslt14: every n-th training line becomes validation data.
    valid_every: int = 23
    # Dictionary size is padded to a multiple of this (fairseq default 8).
    dict_padding_factor: int = 8
    dict_threshold: int = 0
    # demo corpus sizes
    demo_train_size: int = 6000
    demo_valid_size: int = 300
    demo_test_size: int = 300
    seed: int = 1
    # Only needed where no prepared data exists (stage=summary without data).
    src_vocab_size: Optional[int] = None
    tgt_vocab_size: Optional[int] = None


@dataclass
class OptimConfig:
    """Adam with decoupled weight decay and fairseq's inverse-sqrt schedule."""

    lr: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.98])
    eps: float = 1e-8
    weight_decay: float = 1e-4
    warmup_updates: int = 4000
    warmup_init_lr: float = 1e-7
    clip_norm: float = 0.0
    label_smoothing: float = 0.1
    # scheduler: inverse_sqrt | constant (training from scratch)
    scheduler: str = "inverse_sqrt"
    # Stages that continue a trained model with a fresh optimizer (prune,
    # finetune): constant = linear warm-up over continue_warmup_updates to
    # continue_lr, then constant; pretrain = the from-scratch schedule above.
    continue_scheduler: str = "constant"
    # null: the rate the input checkpoint's training had reached at its end
    continue_lr: Optional[float] = None
    continue_warmup_updates: int = 100


@dataclass
class TrainerConfig:
    max_tokens: int = 4096
    max_sentences: Optional[int] = None
    # Training batches hold a multiple of this many pairs where the budget allows
    # (fairseq's --required-batch-size-multiple, default 8).
    batch_size_multiple: int = 8
    update_freq: int = 1
    max_epoch: int = 0  # 0 = unbounded
    max_update: int = 0  # 0 = unbounded
    max_time_minutes: float = 0.0  # wall-clock budget; 0 = unbounded
    patience: int = 0  # epochs without improvement of best_checkpoint_metric; 0 = off
    # The patience count restarts only when the metric has gained more than this
    # since the count last restarted (validation loss in bits per token, or BLEU
    # points; small gains add up, as Keras' min_delta): a run stops once
    # `patience` epochs gained no more than this in all. checkpoint_best.pt still
    # follows every improvement. 0 = any improvement (fairseq's --patience).
    patience_min_delta: float = 0.0
    validate_bleu: bool = False
    # What checkpoint_best.pt, checkpoint.best_*.pt and patience follow: loss
    # (validation loss, lower is better) | bleu (beam-search BLEU on the
    # validation split, capped at generation.max_examples sentences; higher is better)
    best_checkpoint_metric: str = "loss"
    save_interval_updates: int = 0  # also checkpoint every n updates; 0 = per epoch only
    # Keep checkpoint<epoch>.pt of the last n completed epochs (fairseq's
    # --keep-last-epochs), the inputs of checkpoint averaging; 0 = none.
    keep_last_epochs: int = 0
    # Keep the n best epoch-end checkpoints as checkpoint.best_<metric>_<value>.pt
    # (fairseq's --keep-best-checkpoints), for averaging the n best; 0 = none.
    keep_best_checkpoints: int = 0
    log_interval: int = 50
    # Also log at least this often (seconds), so a slow run is never silent.
    log_seconds: float = 60.0
    seed: int = 1
    # auto | cpu | cuda
    device: str = "auto"
    amp: bool = True  # mixed precision, used only on CUDA
    # CPU threads; 0 = SLURM_CPUS_PER_TASK when set, else torch's default
    num_threads: int = 0
    progress_bar: str = "auto"  # auto | tqdm | none
    # Retrain from scratch instead of resuming checkpoint_last.pt.
    reset: bool = False


@dataclass
class GenerationConfig:
    beam: int = 5
    max_len_a: float = 1.2
    max_len_b: int = 10
    lenpen: float = 1.0
    max_tokens: int = 8000
    max_sentences: int = 128
    split: str = "test"
    # Score at most this many sentences (0 = all); for quick checks.
    max_examples: int = 0
    sacrebleu: bool = True


@dataclass
class TrackingConfig:
    # mlflow | none
    backend: str = "mlflow"
    uri: str = MISSING
    experiment: str = "pet"
    artifact_location: Optional[str] = None
    run_name: Optional[str] = None
    parent_run_id: Optional[str] = None
    tags: dict[str, str] = field(default_factory=dict)


@dataclass
class PathsConfig:
    root: str = MISSING
    output_root: str = MISSING
    data_root: str = MISSING
    run_dir: str = MISSING
    shared_data: str = MISSING


@dataclass
class PipelineStep:
    name: str = MISSING
    overrides: list[str] = field(default_factory=list)


@dataclass
class StageConfig:
    # prepare | pretrain | evaluate | summary | prune | finetune | distill | pipeline | report
    # | translate | average | export
    name: str = MISSING
    # For stage=pipeline: the steps, each a list of overrides on top of this
    # job's own; each step runs in <run_dir>/<step name>.
    steps: list[PipelineStep] = field(default_factory=list)
    # Overrides every step starts from (this job's own command line and the
    # step's overrides win): a pipeline's shared settings, kept out of the
    # global config so that they change nothing outside the pipeline.
    step_defaults: list[str] = field(default_factory=list)


@dataclass
class ShrinkConfig:
    """How selected connectivity parameters go to zero (SRP, pet.pruning.shrink).

    The original's sa/sg/ea/eg are type x unit: arithmetic|geometric per step|epoch.
    """

    # arithmetic (c = 1 - k/N) | geometric (c = final_value^(k/N)) | oneshot
    # (c = 0 at the selection point: the no-regularization ablation)
    type: str = "geometric"
    # step: N = optimizer updates of the period, counted from the real batch
    # sampler; epoch: N = pruning.pruning_period
    unit: str = "step"
    # geometric: value reached at the end of the period, then set to exactly 0
    final_value: float = 1e-5


@dataclass
class PruningConfig:
    """SRP pruning (pet.pruning, stage=prune).

    compression_rate is the fraction of ALL parameters (embeddings included)
    kept at the end of the chain, measured against the unpruned model the
    chain started from; see pet.pruning.rate for how each stage uses it.
    """

    # emb | heads_ffn | all: which connectivity parameters this stage prunes
    targets: str = "all"
    compression_rate: float = 0.5  # fraction of parameters kept
    # k iterations: iteration i ends at keep ratio r^(i/k) of the chain
    pruning_iter: int = 1
    # which of the pruning_iter iterations this run is; 0 = all of them, one
    # after another in <run_dir>/iter<i> (each from the previous one's result)
    iteration: int = 0
    # epochs of plain training of the input model before importance is taken
    # and the pruning period starts (the original's --warming-up)
    warmup_epochs: int = 0
    # finetune (stage=finetune) also distils from the chain's unpruned origin,
    # with kd_alpha and kd_temperature below
    finetune_kd: bool = False
    pruning_period: int = 2  # epochs of shrinking (0 = remove at once, no training)
    # > 0: the period is this many optimizer updates instead (shrink.unit=step
    # only), for budgets shorter than an epoch or grids on an update budget.
    period_updates: int = 0
    # connectivity-parameter LayerNorm: weighted | unweighted
    layernorm: str = "weighted"
    # importance: gradient (-dL/dc, NLL, eval mode) | gradient_magnitude (|dL/dc|)
    # | random (seeded ablation)
    importance: str = "gradient"
    importance_batches: int = 32  # training batches sampled for -dL/dc
    importance_seed: int = 1
    kd_alpha: float = 0.5  # weight of T^2*KL(teacher || student); CE gets 1-alpha
    # KD teacher: origin (the unpruned model the chain started from, the
    # method's) | previous (this run's input: the last iteration's or stage's result)
    kd_teacher: str = "origin"
    kd_temperature: float = 2.0
    # Removal must preserve teacher-forced log-probs within this, computed in
    # float64 (checked on verify_batches validation batches; the run fails otherwise).
    verify_tolerance: float = 1e-5
    verify_batches: int = 2
    # Report (printed, logged, in result.json): BLEU before/after on the first
    # bleu_sentences of generation.split (0 = all), latency at each batch size
    # (beam generation.beam, synthetic sources of latency_length tokens
    # decoded for exactly latency_length steps), FLOPs of that same work.
    report_bleu: bool = True
    bleu_sentences: int = 500
    report_latency: bool = True
    latency_batch_sizes: list[int] = field(default_factory=lambda: [1, 64])
    latency_length: int = 25
    latency_repeats: int = 3
    latency_threads: int = 0  # 0 = the job's torch threads
    # Also export both models to CTranslate2 (float32, int8) and time them
    # there beside pet's eager loop, in the same interleaved rounds, with the
    # folders' sizes on disk; null = on when report_latency is and ctranslate2
    # is installed (pip install -e ".[serve]"); true without it fails.
    report_engines: Optional[bool] = None


@dataclass
class DistillConfig:
    """PET warm-up and knowledge distillation (pet.distill, stage=distill)."""

    # warmup (4-class task, teacher = baseline) | kd (teacher = tiny teacher) |
    # none (plain label-smoothed CE, no teacher)
    mode: str = "kd"
    # Teacher checkpoint path; inside a pipeline also @<step name>.
    teacher: Optional[str] = None
    # Build the student from model= even when init_from is set (a pipeline
    # step otherwise inherits the previous step's checkpoint as init_from).
    from_scratch: bool = False
    # With init_from a checkpoint of the same model (the warm-up's), carry over
    # its optimizer moments and update count so the LR schedule goes on where
    # the warm-up left it instead of warming up again; trainer.max_update then
    # counts the warm-up's updates too (one budget for warm-up + KD).
    continue_schedule: bool = False
    alpha: float = 0.1  # weight of T^2*KL; CE gets 1-alpha
    beta: float = 50.0  # weight of the hidden-state MSE (per-token mean)
    temperature: float = 10.0
    # [student effective depth, teacher layer] pairs for the hidden-state loss;
    # empty = evenly spaced, ceil((i+1)*Lt/Ls)-1 (4 over 6: 0-1, 1-2, 2-4, 3-5)
    encoder_layer_map: list[list[int]] = field(default_factory=list)
    decoder_layer_map: list[list[int]] = field(default_factory=list)
    # Warm-up label thresholds on the teacher's max probability.
    confident_correct: float = 0.9
    confident_wrong: float = 0.7
    warmup_label_smoothing: float = 0.1


@dataclass
class PetConfig:
    """Root config: one field per config group plus job-level settings."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    stage: StageConfig = field(default_factory=StageConfig)
    pruning: PruningConfig = field(default_factory=PruningConfig)
    shrink: ShrinkConfig = field(default_factory=ShrinkConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    translate: TranslateConfig = field(default_factory=TranslateConfig)
    average: AverageConfig = field(default_factory=AverageConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    # Checkpoint a stage starts from (evaluate, summary, prune, finetune, distill,
    # translate; for average: a run folder or one of its checkpoints).
    init_from: Optional[str] = None
    run_name: str = "run"
    experiment_name: str = "default"
    # Free-form slot Hydra's launchers and experiment files may fill.
    extra: dict[str, Any] = field(default_factory=dict)
