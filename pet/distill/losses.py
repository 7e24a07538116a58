"""PET's two training objectives, as ``loss_fn(model, batch) -> (loss_sum, logs)``.

Both plug into the shared :class:`~pet.training.trainer.Trainer`, which divides
the returned sum by the number of non-pad target tokens of the whole update.
So every term below is a **sum over non-pad target tokens** and reads, after
that division, as a per-target-token average. Padding never contributes: the
positions are selected with an explicit mask before any loss is computed.

Warm-up on the simplified task (:class:`WarmupLoss`, teacher = the baseline)
    For each target token the teacher's prediction gives one of four labels

    ====  ====================  ===========================================
    0     correct & confident   teacher argmax == gold and p_max > 0.9
    1     correct & unsure      teacher argmax == gold and p_max <= 0.9
    2     wrong & confident     teacher argmax != gold and p_max > 0.7
    3     wrong & unsure        teacher argmax != gold and p_max <= 0.7
    ====  ====================  ===========================================

    (thresholds ``distill.confident_correct`` / ``distill.confident_wrong``).
    The student's 4-way distribution comes from its own softmax over the
    vocabulary, with p = p_S(gold) and m = max_v p_S(v):
    [m·p, (1−m)·p, m·(1−p), (1−m)·(1−p)] (it sums to 1). The loss is the
    label-smoothed NLL of the label under that distribution
    (``distill.warmup_label_smoothing``), with gradients flowing into the
    student (the original ran this forward under ``no_grad`` and produced
    all-zero labels, so its warm-up trained nothing). Labels live in their own
    tensor next to a boolean mask: no class id doubles as the padding index.

Distillation (:class:`DistillationLoss`, teacher = the tiny teacher)
    L = (1−α)·CE + α·T²·KL(p_T^T ‖ p_S^T) + β·H

    * CE: label-smoothed cross-entropy against the gold token
      (``optim.label_smoothing``), exactly as :mod:`pet.training.criterion`.
    * KL: between the teacher's and the student's softmax at temperature T,
      summed over the vocabulary and over non-pad target tokens, multiplied by
      T² so its gradient keeps the scale of the CE term whatever T is (the
      original lacked T² and summed over padding too).
    * H: hidden-state loss. For each matched pair (student effective depth i,
      teacher layer j) both states are L2-normalised per position and compared
      by the mean squared difference over channels (``F.mse_loss``'s element
      mean, as the original). It is averaged over the non-pad positions of the
      side (source positions for the encoder, target positions for the
      decoder), over the side's matched pairs, and over the two sides; this
      mean is then multiplied by the batch's non-pad target tokens so that it is
      a token sum like CE and KL. After the trainer's division β therefore
      multiplies a number in [0, 4/C] per token that does not depend on
      sentence length, batch size, or how many layers are matched. For unit
      vectors the element-mean MSE is (2 − 2·cos)/C, so with C = 240..320 and
      β = 50 the hidden term is at most ~0.8 per token.

The teacher is frozen (``requires_grad_(False)``), kept in eval mode (no
dropout) and run under ``torch.no_grad()``.

With β = 0 the same loss is SRP's KD from the unpruned model
(``pruning.kd_alpha``, ``pruning.kd_temperature``): no layer map and no
student to check. With α = β = 0 it needs no teacher (``teacher=None``) and is
the label-smoothed CE alone; ``kd_kl`` and ``kd_hidden`` are logged whenever a
teacher runs.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pet.errors import ConfigError
from pet.training.criterion import LN2, label_smoothed_nll_loss

NUM_WARMUP_CLASSES = 4
WARMUP_CLASS_NAMES = ("correct_confident", "correct_unsure", "wrong_confident", "wrong_unsure")


# --------------------------------------------------------------------- helpers
def freeze(model: nn.Module) -> nn.Module:
    """Teacher mode: eval (no dropout), no parameter takes gradients."""
    model.eval()
    model.requires_grad_(False)
    return model


def _unwrap(model: nn.Module) -> nn.Module:
    """The TransformerModel inside a DDP wrapper (for its spec)."""
    return getattr(model, "module", model)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 − exp(x)) for x <= 0, finite (and with finite gradients) at x = 0."""
    return torch.log((-torch.expm1(x)).clamp_min(1e-12))


# ----------------------------------------------------------------- warm-up
def warmup_labels(
    teacher_logits: Tensor, target: Tensor, confident_correct: float = 0.9, confident_wrong: float = 0.7
) -> Tensor:
    """4-class label per position from the teacher's logits (..., V) and gold (...).

    Computed for every position, padding included; callers mask padding out
    with their own boolean mask (labels are never compared to the pad index).
    """
    probs = F.softmax(teacher_logits.float(), dim=-1)
    p_max, pred = probs.max(dim=-1)
    correct = pred.eq(target)
    confident = torch.where(correct, p_max > confident_correct, p_max > confident_wrong)
    # 0 correct&confident, 1 correct&unsure, 2 wrong&confident, 3 wrong&unsure
    return (~correct).long() * 2 + (~confident).long()


def four_way_log_probs(student_logits: Tensor, target: Tensor) -> Tensor:
    """log [m·p, (1−m)·p, m·(1−p), (1−m)·(1−p)] from logits (N, V), gold (N,).

    p = p_S(gold), m = max_v p_S(v), both from the student's own softmax; the
    computation stays in log space, so it is stable when p or m reach 1.
    """
    lprobs = F.log_softmax(student_logits.float(), dim=-1)
    log_p = lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    log_m = lprobs.max(dim=-1).values
    log_1mp, log_1mm = log1mexp(log_p), log1mexp(log_m)
    return torch.stack([log_m + log_p, log_1mm + log_p, log_m + log_1mp, log_1mm + log_1mp], dim=-1)


class WarmupLoss:
    """PET warm-up: the student learns the teacher's 4-class token labels."""

    def __init__(
        self,
        teacher: nn.Module,
        padding_idx: int,
        confident_correct: float = 0.9,
        confident_wrong: float = 0.7,
        label_smoothing: float = 0.1,
    ):
        self.teacher = freeze(teacher)
        self.pad = padding_idx
        self.confident_correct = confident_correct
        self.confident_wrong = confident_wrong
        self.eps = label_smoothing

    def __call__(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, float]]:
        mask = batch.target.ne(self.pad)
        target = batch.target[mask]
        self.teacher.eval()
        with torch.no_grad():
            t_logits, _, _ = self.teacher(batch.src_tokens, batch.prev_output_tokens)
            labels = warmup_labels(t_logits[mask], target, self.confident_correct, self.confident_wrong)
        s_logits, _, _ = model(batch.src_tokens, batch.prev_output_tokens)
        s_logits = s_logits[mask]
        four = four_way_log_probs(s_logits, target)
        # The rows are non-pad already and labels are 0..3: nothing to ignore.
        loss, nll4 = label_smoothed_nll_loss(four, labels, self.eps, ignore_index=-1)
        with torch.no_grad():
            nll = -F.log_softmax(s_logits.float(), dim=-1).gather(-1, target.unsqueeze(-1)).sum()
            counts = torch.bincount(labels, minlength=NUM_WARMUP_CLASSES).tolist()
            agree = four.argmax(-1).eq(labels).sum().item()
        logs = {"loss": loss.item(), "warmup_nll": nll4.item(), "nll_loss": nll.item()}
        # The trainer reports every log as sum / ntokens / ln 2 (bits per token);
        # pre-multiplying counts by ln 2 makes these read as fractions of tokens.
        logs["warmup_acc"] = agree * LN2
        for name, c in zip(WARMUP_CLASS_NAMES, counts):
            logs[f"label_{name}"] = c * LN2
        return loss, logs


# ------------------------------------------------------------ distillation
def default_layer_map(student_depth: int, teacher_depth: int) -> list[list[int]]:
    """Evenly spaced: student depth i <-> teacher layer ceil((i+1)·Lt/Ls) − 1.

    4 student depths over 6 teacher layers: [[0,1],[1,2],[2,4],[3,5]] — the
    student's last state is matched to the teacher's last.
    """
    return [[i, math.ceil((i + 1) * teacher_depth / student_depth) - 1] for i in range(student_depth)]


def resolve_layer_map(
    side: str, configured: Sequence[Sequence[int]], student_depth: int, teacher_depth: int
) -> list[tuple[int, int]]:
    pairs = [list(p) for p in configured] if configured else default_layer_map(student_depth, teacher_depth)
    out = []
    for pair in pairs:
        if len(pair) != 2:
            raise ConfigError(f"distill.{side}_layer_map entries are [student_depth, teacher_layer] pairs, got {pair}")
        i, j = int(pair[0]), int(pair[1])
        if not (0 <= i < student_depth and 0 <= j < teacher_depth):
            raise ConfigError(
                f"distill.{side}_layer_map pair {pair} is out of range: the student has {student_depth} "
                f"{side} depths, the teacher {teacher_depth} layers (both counted from 0)"
            )
        out.append((i, j))
    return out


def hidden_state_mse(
    student_states: Sequence[Tensor], teacher_states: Sequence[Tensor], pairs: Sequence[tuple[int, int]], mask: Tensor
) -> Tensor:
    """Mean over pairs and non-pad positions of the element-mean squared
    difference between L2-normalised states (B, T, C); mask (B, T) True = real."""
    n = mask.sum().clamp_min(1)
    total = student_states[0].new_zeros((), dtype=torch.float32)
    for i, j in pairs:
        s = F.normalize(student_states[i][mask].float(), p=2, dim=-1)
        t = F.normalize(teacher_states[j][mask].float(), p=2, dim=-1)
        total = total + (s - t).pow(2).mean(dim=-1).sum() / n
    return total / max(len(pairs), 1)


def kd_kl_sum(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Σ_rows KL(softmax(t/T) ‖ softmax(s/T)) over rows (N, V), without T²."""
    s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(s, t, reduction="sum", log_target=True)


class DistillationLoss:
    """L = (1−α)·CE + α·T²·KL + β·H over non-pad positions (see module doc)."""

    def __init__(
        self,
        teacher: Optional[nn.Module],
        padding_idx: int,
        alpha: float = 0.1,
        beta: float = 50.0,
        temperature: float = 10.0,
        label_smoothing: float = 0.1,
        encoder_layer_map: Sequence[Sequence[int]] = (),
        decoder_layer_map: Sequence[Sequence[int]] = (),
        student: Optional[nn.Module] = None,
    ):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"kd alpha must be in [0, 1], got {alpha}")
        if temperature <= 0:
            raise ValueError(f"kd temperature must be > 0, got {temperature}")
        if beta < 0:
            raise ValueError(f"kd beta must be >= 0, got {beta}")
        if teacher is None and (alpha > 0 or beta > 0):
            raise ValueError(f"DistillationLoss with alpha={alpha}, beta={beta} needs a teacher")
        self.teacher = freeze(teacher) if teacher is not None else None
        self.pad = padding_idx
        self.alpha, self.beta, self.temperature = float(alpha), float(beta), float(temperature)
        self.eps = label_smoothing
        self.enc_pairs: list[tuple[int, int]] = []
        self.dec_pairs: list[tuple[int, int]] = []
        if self.beta > 0:
            if student is None:
                raise ValueError("DistillationLoss with beta > 0 needs the student to check layer maps")
            ss, ts = _unwrap(student).spec, _unwrap(teacher).spec
            for side in ("encoder", "decoder"):
                s_dim, t_dim = getattr(ss, side).embed_dim, getattr(ts, side).embed_dim
                if s_dim != t_dim:
                    raise ConfigError(
                        f"distill.beta={self.beta} matches hidden states, but the student's {side} is {s_dim} wide "
                        f"and the teacher's {t_dim}; distil from a teacher of the student's widths (the tiny "
                        "teacher, model=pet_tiny_teacher) or set distill.beta=0"
                    )
            self.enc_pairs = resolve_layer_map("encoder", encoder_layer_map, ss.encoder.depth, ts.encoder.depth)
            self.dec_pairs = resolve_layer_map("decoder", decoder_layer_map, ss.decoder.depth, ts.decoder.depth)

    def terms(self, model: nn.Module, batch) -> dict[str, Tensor]:
        """The unweighted token sums: ce, nll, and with a teacher kl (already × T²)
        and hidden."""
        want_states = self.beta > 0
        mask = batch.target.ne(self.pad)
        ntokens = mask.sum()
        if self.teacher is not None:
            self.teacher.eval()
            with torch.no_grad():
                t_logits, t_enc, t_dec = self.teacher(
                    batch.src_tokens, batch.prev_output_tokens, return_states=want_states
                )
        s_logits, s_enc, s_dec = model(batch.src_tokens, batch.prev_output_tokens, return_states=want_states)
        target = batch.target[mask]
        s_sel = s_logits[mask]
        ce, nll = label_smoothed_nll_loss(F.log_softmax(s_sel.float(), dim=-1), target, self.eps, self.pad)
        out = {"ce": ce, "nll": nll}
        if self.teacher is None:
            return out
        out["kl"] = kd_kl_sum(s_sel, t_logits[mask], self.temperature) * self.temperature**2
        hidden = ce.new_zeros(())
        if want_states:
            src_mask = batch.src_tokens.ne(self.pad)
            sides = []
            if self.enc_pairs:
                sides.append(hidden_state_mse(s_enc.states, t_enc.states, self.enc_pairs, src_mask))
            if self.dec_pairs:
                sides.append(hidden_state_mse(s_dec, t_dec, self.dec_pairs, mask))
            if sides:
                hidden = torch.stack(sides).mean() * ntokens
        out["hidden"] = hidden
        return out

    def __call__(self, model: nn.Module, batch) -> tuple[Tensor, dict[str, float]]:
        t = self.terms(model, batch)
        if self.teacher is None:
            loss = t["ce"]
        else:
            loss = (1.0 - self.alpha) * t["ce"] + self.alpha * t["kl"] + self.beta * t["hidden"]
        logs = {"loss": loss.item(), "nll_loss": t["nll"].item(), "kd_ce": t["ce"].item()}
        if self.teacher is not None:
            logs["kd_kl"] = t["kl"].item()
            # bits like the others would be meaningless for an MSE: undo the
            # trainer's / ln 2 so train_kd_hidden is the per-token mean itself.
            logs["kd_hidden"] = t["hidden"].item() * LN2
        return loss, logs
