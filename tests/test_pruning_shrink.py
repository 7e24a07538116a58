"""Selective regularization: schedules end at exactly 0; frozen units do not move."""

import math

import pytest
import torch

from pet.pruning.gates import dim_ownership, gate_buffer, gate_groups
from pet.pruning.shrink import ShrinkHook, ShrinkSchedule, steps_in_period
from pet.training.criterion import LabelSmoothedCrossEntropy
from tests.conftest import random_batch
from tests.pruning_helpers import FakeTrainer, gated_small, random_selection


def selected_values(model, selection):
    return torch.cat([gate_buffer(model, n)[torch.tensor(i)] for n, i in selection.items() if i])


def unselected_values(model, selection):
    out = []
    for g in gate_groups(model):
        mask = torch.ones(g.size, dtype=torch.bool)
        mask[torch.tensor(selection.get(g.name, []), dtype=torch.long)] = False
        out.append(gate_buffer(model, g)[mask])
    return torch.cat(out)


@pytest.mark.parametrize("kind", ["arithmetic", "geometric"])
@pytest.mark.parametrize("unit", ["step", "epoch"])
def test_schedule_reaches_exactly_zero_at_the_end_of_the_period(kind, unit):
    _, model = gated_small()
    selection = random_selection(model)
    epochs, per_epoch, update_freq = 3, 7, 2
    hook = ShrinkHook(model, gate_groups(model), selection, kind, unit, epochs, final_value=1e-5)
    trainer = FakeTrainer(model, batches_per_epoch=per_epoch, update_freq=update_freq)
    hook.on_fit_start(trainer)
    total = epochs * math.ceil(per_epoch / update_freq) if unit == "step" else epochs
    assert hook.schedule.total == total
    first = 1.0 if unit == "step" else hook.schedule.value(1)  # per epoch: epoch 1 trains at value(1)
    assert torch.all(selected_values(model, selection) == first)
    seen = []
    for _epoch in range(epochs):
        for _ in range(math.ceil(per_epoch / update_freq)):
            hook.after_backward(trainer)  # no optimizer step in this test
            hook.after_update(trainer)
            seen.append(float(selected_values(model, selection)[0]))
        hook.on_epoch_end(trainer)
        seen.append(float(selected_values(model, selection)[0]))
    values = selected_values(model, selection)
    assert torch.all(values == 0.0), "c must be exactly 0 at the end of the period"
    assert torch.all(unselected_values(model, selection) == 1.0)
    assert all(a >= b for a, b in zip(seen, seen[1:])), "c never grows"
    # Exactly 0 only at the very end: after the last update (unit=step), or
    # from the start of the last epoch (unit=epoch: its updates train at 0).
    steps = math.ceil(per_epoch / update_freq)
    assert sum(v == 0.0 for v in seen) == (2 if unit == "step" else steps + 2)
    assert hook.complete


@pytest.mark.parametrize("kind", ["arithmetic", "geometric"])
def test_per_epoch_shrinking_trains_epoch_e_at_its_value(kind):
    """Epoch e of P trains at value(e): the last epoch at the final level, and
    a one-epoch period is not one epoch at c = 1 (one-shot pruning)."""
    for epochs in (1, 3):
        _, model = gated_small()
        selection = random_selection(model)
        hook = ShrinkHook(model, gate_groups(model), selection, kind, "epoch", epochs, final_value=1e-5)
        trainer = FakeTrainer(model, batches_per_epoch=4)
        hook.on_fit_start(trainer)
        during = []
        for _ in range(epochs):
            hook.after_backward(trainer)
            hook.after_update(trainer)
            during.append(float(selected_values(model, selection)[0]))
            hook.on_epoch_end(trainer)
        expected = [hook.schedule.value(e) for e in range(1, epochs + 1)]
        assert during == pytest.approx(expected)
        assert during[-1] == 0.0 and (epochs == 1 or during[0] < 1.0)


def test_schedule_values():
    a = ShrinkSchedule("arithmetic", "step", 10)
    assert [a.value(k) for k in (0, 5, 9, 10, 11)] == [1.0, 0.5, pytest.approx(0.1), 0.0, 0.0]
    g = ShrinkSchedule("geometric", "epoch", 4, final_value=1e-4)
    assert g.value(2) == pytest.approx(1e-2)
    assert g.value(3) == pytest.approx(1e-3) and g.value(4) == 0.0
    assert ShrinkSchedule("oneshot", "step", 10).value(0) == 0.0


def test_steps_are_counted_from_the_sampler():
    _, model = gated_small()
    assert steps_in_period(FakeTrainer(model, batches_per_epoch=11, update_freq=4), 2) == 2 * 3


def frozen_masks(model, selection):
    own = dim_ownership(model)
    masks = {}
    for name, p in own.params.items():
        m = torch.zeros_like(p, dtype=torch.bool)
        for dim, group in enumerate(own.owners[name]):
            idx = selection.get(group, []) if group else []
            if idx:
                m.index_fill_(dim, torch.tensor(idx), True)
        masks[name] = m
    return own, masks


@pytest.mark.parametrize("kind", ["arithmetic", "oneshot"])
def test_frozen_units_do_not_move_under_adamw_with_weight_decay(kind):
    _, model = gated_small(dropout=0.0)
    model.train()
    selection = random_selection(model, keep=0.5, seed=2)
    hook = ShrinkHook(model, gate_groups(model), selection, kind, "step", 1)
    trainer = FakeTrainer(model, batches_per_epoch=6, weight_decay=0.5, lr=1e-2)
    own, masks = frozen_masks(model, selection)
    before = {n: p.detach().clone() for n, p in own.params.items()}
    ce = LabelSmoothedCrossEntropy(0.1, 1)
    hook.on_fit_start(trainer)
    for step in range(4):
        loss, _ = ce(model, random_batch(seed=step))
        loss.backward()
        hook.after_backward(trainer)
        trainer.optimizer.step()
        trainer.optimizer.zero_grad(set_to_none=True)
        hook.after_update(trainer)
    moved = 0
    for name, p in own.params.items():
        m = masks[name]
        assert torch.equal(p.detach()[m], before[name][m]), f"frozen entries of {name} moved"
        state = trainer.optimizer.state[p]
        assert torch.all(state["exp_avg"][m] == 0) and torch.all(state["exp_avg_sq"][m] == 0)
        moved += int((p.detach()[~m] != before[name][~m]).sum())
    assert moved > 0.5 * sum(int((~m).sum()) for m in masks.values()), "the rest keeps training"


def shrink_updates(hook, n):
    for _ in range(n):
        hook.after_backward(None)
        hook.after_update(None)


def started_hook(model, selection, updates):
    """A per-step arithmetic hook over a one-epoch period of 8 updates, ``updates`` of them made."""
    hook = ShrinkHook(model, gate_groups(model), selection, "arithmetic", "step", 1)
    hook.on_fit_start(FakeTrainer(model, batches_per_epoch=8))
    shrink_updates(hook, updates)
    return hook


def test_hook_state_resumes_the_schedule():
    _, model = gated_small()
    selection = random_selection(model)
    state = started_hook(model, selection, 3).state_dict()
    _, fresh = gated_small()
    resumed = ShrinkHook(fresh, gate_groups(fresh), selection, "arithmetic", "step", 1)
    resumed.load_state_dict(state)
    assert resumed.done == 3 and resumed.schedule.total == 8
    torch.testing.assert_close(selected_values(fresh, selection), selected_values(model, selection))
    assert float(selected_values(fresh, selection)[0]) == pytest.approx(1 - 3 / 8)


def test_a_run_resumed_on_another_world_size_still_ends_its_period_at_zero():
    """An epoch-long period is 8 updates on 1 rank, 4 on 2: resumed half-way
    in, shrinking goes on from the same fraction and ends at 0 with the period."""
    _, model = gated_small()
    selection = random_selection(model)
    hook = started_hook(model, selection, 4)
    _, fresh = gated_small()
    resumed = ShrinkHook(fresh, gate_groups(fresh), selection, "arithmetic", "step", 1)
    resumed.load_state_dict(hook.state_dict())
    two_ranks = FakeTrainer(fresh, batches_per_epoch=8)
    two_ranks.world_size = 2
    resumed.on_fit_start(two_ranks)
    assert (resumed.done, resumed.schedule.total) == (2, 4)
    assert float(selected_values(fresh, selection)[0]) == pytest.approx(0.5)
    shrink_updates(resumed, 2)
    assert resumed.complete and float(selected_values(fresh, selection).abs().max()) == 0.0
