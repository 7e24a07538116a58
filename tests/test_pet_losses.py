"""PET objectives: warm-up labels and loss, KD terms, padding, scales."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from pet.distill.losses import (
    DistillationLoss,
    WarmupLoss,
    default_layer_map,
    four_way_log_probs,
    hidden_state_mse,
    kd_kl_sum,
    warmup_labels,
)
from pet.errors import ConfigError
from pet.training.criterion import LabelSmoothedCrossEntropy
from tests.conftest import random_batch, small_model

PAD = 1
SRC_V, TGT_V = 40, 48


def student_model(seed: int = 1, **kw):
    shape = dict(
        encoder_layers=2,
        decoder_layers=2,
        encoder_layer_order=[0, 1, 0, 1],
        decoder_layer_order=[0, 1, 0, 1],
        encoder_attention_roles=["qkv", "qkv", "kvq", "kvq"],
        decoder_share_query=True,
        dropout=0.0,
    )
    return small_model(SRC_V, TGT_V, seed=seed, **{**shape, **kw})


def teacher_model(seed: int = 2, **kw):
    return small_model(SRC_V, TGT_V, seed=seed, encoder_layers=3, decoder_layers=3, **kw)


# ------------------------------------------------------------------ warm-up
def test_warmup_labels_follow_the_four_class_definition():
    # rows: correct & p_max .95 | correct & .8 | wrong & .75 | wrong & .6
    probs = torch.tensor(
        [[0.95, 0.05, 0.0], [0.8, 0.2, 0.0], [0.75, 0.25, 0.0], [0.6, 0.4, 0.0]]
    ) + 1e-9
    logits = probs.log()
    target = torch.tensor([0, 0, 1, 1])
    assert warmup_labels(logits, target).tolist() == [0, 1, 2, 3]
    # thresholds are configurable
    assert warmup_labels(logits, target, confident_correct=0.7, confident_wrong=0.8).tolist() == [0, 0, 3, 3]
    # no class is the padding index by construction: labels and masks are separate
    assert set(warmup_labels(logits, target).tolist()) == {0, 1, 2, 3}


def test_student_four_way_distribution_sums_to_one_and_matches_formula():
    torch.manual_seed(0)
    logits = torch.randn(6, 11) * 3
    target = torch.randint(0, 11, (6,))
    four = four_way_log_probs(logits, target)
    probs = F.softmax(logits, -1)
    p = probs.gather(-1, target[:, None]).squeeze(-1)
    m = probs.max(-1).values
    expected = torch.stack([m * p, (1 - m) * p, m * (1 - p), (1 - m) * (1 - p)], -1)
    torch.testing.assert_close(four.exp(), expected, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(four.exp().sum(-1), torch.ones(6))
    # stable where the student is certain: m = p = 1 gives finite values and gradients
    sure = torch.tensor([[50.0, -50.0, -50.0]], requires_grad=True)
    out = four_way_log_probs(sure, torch.tensor([0]))
    out[0, 0].backward()
    assert torch.isfinite(sure.grad).all()


def test_warmup_loss_decreases_with_gradients_reaching_only_the_student():
    teacher = teacher_model()
    student = student_model()
    batch = random_batch(SRC_V, TGT_V, bsz=6, seed=3)
    loss_fn = WarmupLoss(teacher, PAD, label_smoothing=0.1)
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    losses = []
    for step in range(20):
        loss, logs = loss_fn(student, batch)
        opt.zero_grad()
        loss.backward()
        if step == 0:
            grads = [p.grad for p in student.parameters()]
            assert all(g is not None for g in grads)
            assert sum(float(g.abs().sum()) for g in grads) > 0
            assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
            assert not teacher.training
            fractions = [logs[k] for k in logs if k.startswith("label_")]
            assert sum(fractions) == pytest.approx(batch.ntokens * math.log(2))
        opt.step()
        losses.append(loss.item())
    # A random teacher labels every token "wrong & unsure", which an untrained
    # student already nearly predicts, and label smoothing over 4 classes keeps
    # the floor well above 0: a steady, modest descent is what learning looks like.
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(b < a for a, b in zip(losses[:3], losses[1:4])), losses


def test_warmup_loss_ignores_padding_positions():
    teacher, student = teacher_model(), student_model()
    batch = random_batch(SRC_V, TGT_V, seed=4)
    loss_fn = WarmupLoss(teacher, PAD)
    base, _ = loss_fn(student, batch)
    # Changing what the decoder sees *after* a sentence ended (pad inputs at pad
    # targets) changes only padded positions: the loss must not move.
    pad_pos = batch.target.eq(PAD)
    assert pad_pos.any()
    poked = random_batch(SRC_V, TGT_V, seed=4)
    poked.prev_output_tokens = batch.prev_output_tokens.masked_fill(pad_pos, 7)
    other, _ = loss_fn(student, poked)
    torch.testing.assert_close(base, other)


# ----------------------------------------------------------------------- KD
class FixedLogits(torch.nn.Module):
    """A 'model' returning given logits and states: tests the loss arithmetic alone."""

    def __init__(self, logits, enc_states=None, dec_states=None, spec=None):
        super().__init__()
        self.logits, self.enc_states, self.dec_states = logits, enc_states, dec_states
        self.spec = spec

    def forward(self, src, prev, return_states=False):
        from pet.models.transformer import EncoderOut

        enc = EncoderOut(torch.zeros(1), src.eq(PAD), self.enc_states)
        return self.logits, enc, self.dec_states


def kd_setup(alpha=0.1, beta=50.0, temperature=10.0, seed=0):
    teacher = small_model(SRC_V, TGT_V, seed=seed + 10, encoder_layers=3, decoder_layers=3, dropout=0.0)
    student = student_model(seed=seed, encoder_layers=2, decoder_layers=2)
    loss_fn = DistillationLoss(teacher, PAD, alpha=alpha, beta=beta, temperature=temperature,
                               label_smoothing=0.1, student=student)
    return loss_fn, student, teacher


def test_kd_with_alpha_and_beta_zero_is_exactly_label_smoothed_ce():
    loss_fn, student, _ = kd_setup(alpha=0.0, beta=0.0)
    batch = random_batch(SRC_V, TGT_V, seed=5)
    loss, logs = loss_fn(student, batch)
    ce, _ = LabelSmoothedCrossEntropy(0.1, PAD)(student, batch)
    assert loss.item() == pytest.approx(ce.item(), rel=1e-6)
    assert logs["kd_ce"] == pytest.approx(ce.item(), rel=1e-6)


def test_kl_term_is_temperature_squared_times_the_kl_over_non_pad_tokens():
    for temperature in (1.0, 2.0, 10.0):
        loss_fn, student, teacher = kd_setup(alpha=1.0, beta=0.0, temperature=temperature)
        batch = random_batch(SRC_V, TGT_V, seed=6)
        loss, logs = loss_fn(student, batch)
        with torch.no_grad():
            s, _, _ = student(batch.src_tokens, batch.prev_output_tokens)
            t, _, _ = teacher(batch.src_tokens, batch.prev_output_tokens)
        mask = batch.target.ne(PAD)
        p_t = F.softmax(t / temperature, -1)
        kl = (p_t * (p_t.log() - F.log_softmax(s / temperature, -1))).sum(-1)[mask].sum()
        assert loss.item() == pytest.approx(temperature**2 * kl.item(), rel=1e-4)
        assert logs["kd_kl"] == pytest.approx(temperature**2 * kl.item(), rel=1e-4)


def test_kd_loss_ignores_padding():
    g = torch.Generator().manual_seed(0)
    batch = random_batch(SRC_V, TGT_V, seed=7)
    mask = batch.target.ne(PAD)
    b, t = batch.target.shape
    s_logits, t_logits = torch.randn(b, t, TGT_V, generator=g), torch.randn(b, t, TGT_V, generator=g)
    s_dec = [torch.randn(b, t, 24, generator=g) for _ in range(4)]
    t_dec = [torch.randn(b, t, 24, generator=g) for _ in range(6)]
    s_enc = [torch.randn(b, batch.src_tokens.size(1), 32, generator=g) for _ in range(4)]
    t_enc = [torch.randn(b, batch.src_tokens.size(1), 32, generator=g) for _ in range(6)]
    spec_s, spec_t = student_model(decoder_embed_dim=24).spec, small_model(
        SRC_V, TGT_V, encoder_layers=6, decoder_layers=6, decoder_embed_dim=24).spec

    def loss_for(s_logits, t_logits, s_enc, t_enc, s_dec, t_dec):
        teacher = FixedLogits(t_logits, t_enc, t_dec, spec_t)
        student = FixedLogits(s_logits, s_enc, s_dec, spec_s)
        fn = DistillationLoss(teacher, PAD, alpha=0.5, beta=50.0, temperature=2.0, student=student)
        return fn(student, batch)[0]

    base = loss_for(s_logits, t_logits, s_enc, t_enc, s_dec, t_dec)
    junk = lambda x, m: x.masked_fill(~m[..., None], 1e4) if x.dim() == 3 else x  # noqa: E731
    src_mask = batch.src_tokens.ne(PAD)
    assert (~mask).any() and (~src_mask).any()
    changed = loss_for(
        junk(s_logits, mask), junk(t_logits, mask),
        [junk(x, src_mask) for x in s_enc], [junk(x, src_mask) for x in t_enc],
        [junk(x, mask) for x in s_dec], [junk(x, mask) for x in t_dec],
    )
    assert torch.isfinite(base)
    torch.testing.assert_close(base, changed)
    # and a change at a real position does move it
    moved = s_logits.clone()
    row, col = mask.nonzero()[0].tolist()
    moved[row, col, 5] += 3.0
    assert not torch.allclose(loss_for(moved, t_logits, s_enc, t_enc, s_dec, t_dec), base)


def test_hidden_term_is_zero_for_identical_states_and_beta_scales_linearly():
    g = torch.Generator().manual_seed(1)
    states = [torch.randn(2, 5, 8, generator=g) for _ in range(4)]
    mask = torch.ones(2, 5, dtype=torch.bool)
    assert hidden_state_mse(states, [s * 3.0 for s in states], [(i, i) for i in range(4)], mask).item() == pytest.approx(0.0, abs=1e-7)
    # element-mean MSE of unit vectors: opposite vectors give 4 / C
    opposite = hidden_state_mse(states, [-s for s in states], [(0, 0)], mask)
    assert opposite.item() == pytest.approx(4 / 8, rel=1e-5)

    batch = random_batch(SRC_V, TGT_V, seed=8)
    values = {}
    for beta in (0.0, 1.0, 50.0):
        loss_fn, student, _ = kd_setup(alpha=0.3, beta=beta)
        values[beta] = loss_fn(student, batch)[0].item()
    h = values[1.0] - values[0.0]
    assert h > 0
    assert values[50.0] - values[0.0] == pytest.approx(50 * h, rel=1e-4)
    # a student distilled from itself has no hidden loss (same states)
    student = student_model(seed=3)
    same = student_model(seed=3)
    fn = DistillationLoss(same, PAD, alpha=0.0, beta=50.0, student=student,
                          encoder_layer_map=[[i, i] for i in range(4)], decoder_layer_map=[[i, i] for i in range(4)])
    assert fn.terms(student.eval(), batch)["hidden"].item() == pytest.approx(0.0, abs=1e-6)


def test_teacher_is_frozen_and_gets_no_gradient():
    loss_fn, student, teacher = kd_setup()
    teacher.train()  # even if someone flips it back
    loss, _ = loss_fn(student, random_batch(SRC_V, TGT_V))
    loss.backward()
    assert not teacher.training
    assert all(p.grad is None for p in teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_default_layer_map_and_width_check():
    assert default_layer_map(4, 6) == [[0, 1], [1, 2], [2, 4], [3, 5]]
    assert default_layer_map(6, 6) == [[i, i] for i in range(6)]
    teacher = small_model(SRC_V, TGT_V, encoder_embed_dim=64)
    with pytest.raises(ConfigError, match="encoder is 32 wide"):
        DistillationLoss(teacher, PAD, beta=1.0, student=student_model())
    DistillationLoss(teacher, PAD, beta=0.0, student=student_model())  # logits only: fine
    with pytest.raises(ConfigError, match="out of range"):
        DistillationLoss(teacher_model(), PAD, beta=1.0, student=student_model(), decoder_layer_map=[[0, 3]])


def test_kl_sum_helper_is_zero_for_equal_logits():
    x = torch.randn(4, 9)
    assert kd_kl_sum(x, x.clone(), 10.0).item() == pytest.approx(0.0, abs=1e-6)
