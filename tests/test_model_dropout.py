import pytest
import torch
import torch.nn.functional as F

from pet.models.dropout import dropout
from tests.conftest import random_batch, small_model


@pytest.mark.parametrize("p", [0.1, 0.3, 0.7])
def test_keeps_each_element_with_probability_one_minus_p_and_rescales_it(p):
    torch.manual_seed(0)
    x = torch.full((400_000,), 2.0)
    y = dropout(x, p, training=True)
    kept = y != 0
    # 400k Bernoulli draws: the kept share is within 5 standard deviations of 1 - p.
    assert abs(kept.float().mean().item() - (1 - p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 2.0 / (1 - p)))


def test_gradient_is_the_same_mask_and_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 32, requires_grad=True)
    y = dropout(x, 0.3, training=True)
    y.sum().backward()
    expected = torch.where(y.detach() != 0, torch.full_like(x, 1 / 0.7), torch.zeros_like(x))
    torch.testing.assert_close(x.grad, expected)


def test_is_the_identity_in_eval_and_at_p_zero():
    x = torch.randn(8, 5)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x


def test_p_one_zeroes_everything_as_f_dropout_does():
    x = torch.randn(8, 5)
    torch.testing.assert_close(dropout(x, 1.0, training=True), F.dropout(x, 1.0, True))


def test_training_is_reproducible_from_the_seed_and_the_generator_state():
    """The mask comes from torch's default generator: the same seed gives the same
    training loss, and restoring a saved RNG state (what a resumed checkpoint does)
    replays the same masks."""
    model = small_model(dropout=0.3).train()
    batch = random_batch()

    def loss() -> float:
        logits, _, _ = model(batch.src_tokens, batch.prev_output_tokens)
        return logits.sum().item()

    torch.manual_seed(5)
    first = loss()
    state = torch.get_rng_state()
    second = loss()
    torch.manual_seed(5)
    assert loss() == first
    torch.set_rng_state(state)
    assert loss() == second
    assert first != second  # the masks do differ between steps
