"""SRP's KD during the pruning period and finetuning is DistillationLoss at β = 0:

loss = (1 − α)·label-smoothed CE + α·T²·Σ_non-pad KL(p_teacher^T ‖ p_student^T),

with the CE exactly the trainer's own (:class:`LabelSmoothedCrossEntropy`), no
hidden-state term, and no teacher run at all when α = 0.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pet.distill.losses import DistillationLoss
from pet.training.criterion import LabelSmoothedCrossEntropy
from tests.conftest import random_batch, small_model

PAD = 1


def formula(student, teacher, batch, alpha: float, temperature: float, label_smoothing: float) -> torch.Tensor:
    """The pruning KD loss written out in float64 from its definition."""
    with torch.no_grad():
        s, _, _ = student(batch.src_tokens, batch.prev_output_tokens)
        t, _, _ = teacher(batch.src_tokens, batch.prev_output_tokens)
    ce, _ = LabelSmoothedCrossEntropy(label_smoothing, PAD).from_logits(s.double(), batch.target)
    s_lp = F.log_softmax(s.double() / temperature, dim=-1)
    t_lp = F.log_softmax(t.double() / temperature, dim=-1)
    kl = (t_lp.exp() * (t_lp - s_lp)).sum(-1).masked_fill(batch.target.eq(PAD), 0.0).sum()
    return (1.0 - alpha) * ce + alpha * temperature**2 * kl


@pytest.mark.parametrize("alpha, temperature", [(0.5, 2.0), (1.0, 1.0), (0.25, 10.0)])
def test_pruning_kd_is_the_ce_and_kl_formula_with_no_hidden_term(alpha, temperature):
    student = small_model(seed=0, dropout=0.0).eval()
    teacher = small_model(seed=1, encoder_layers=3, decoder_layers=3, encoder_embed_dim=48, dropout=0.0)
    batch = random_batch(seed=2)
    assert batch.target.eq(PAD).any()
    loss_fn = DistillationLoss(teacher, PAD, alpha=alpha, beta=0.0, temperature=temperature, label_smoothing=0.1)
    loss, logs = loss_fn(student, batch)
    expected = formula(student, teacher, batch, alpha, temperature, 0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert set(logs) == {"loss", "nll_loss", "kd_ce", "kd_kl", "kd_hidden"} and logs["kd_hidden"] == 0.0


def test_pruning_kd_without_alpha_is_the_trainers_ce_and_runs_no_teacher():
    student = small_model(seed=0, dropout=0.0).eval()
    batch = random_batch(seed=3)
    loss, logs = DistillationLoss(None, PAD, alpha=0.0, beta=0.0, temperature=2.0, label_smoothing=0.1)(student, batch)
    ce, ce_logs = LabelSmoothedCrossEntropy(0.1, PAD)(student, batch)
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
    assert logs["nll_loss"] == pytest.approx(ce_logs["nll_loss"], rel=1e-6)
    assert set(logs) == {"loss", "nll_loss", "kd_ce"}


def test_a_teacher_is_required_when_a_term_uses_it_and_bad_weights_are_refused():
    with pytest.raises(ValueError, match="needs a teacher"):
        DistillationLoss(None, PAD, alpha=0.5, beta=0.0)
    with pytest.raises(ValueError, match="alpha"):
        DistillationLoss(small_model(), PAD, alpha=1.5, beta=0.0)
    with pytest.raises(ValueError, match="temperature"):
        DistillationLoss(small_model(), PAD, alpha=0.5, beta=0.0, temperature=0.0)
