"""The covariate hint: each target's regression on its group's known-future covariates."""

import torch

from tests.helpers import random_walks
from tsmojo import TSMojoConfig, TSMojoModel
from tsmojo.covariate_hint import covariate_regression
from tsmojo.layers import GroupLayout
from tsmojo.model import FUTURE_COVARIATE, PAST_COVARIATE, TARGET


def test_a_linear_relationship_is_recovered_over_the_horizon() -> None:
    generator = torch.Generator().manual_seed(0)
    steps, context_steps = 120, 100
    drivers = torch.randn(2, steps, generator=generator)
    target = 2.0 * drivers[0] - 0.5 * drivers[1] + 1.0
    other = torch.randn(steps, generator=generator)  # a target of another group, alone
    values = torch.stack([target, drivers[0], drivers[1], other, torch.randn(steps, generator=generator)])
    values[[0, 3, 4], context_steps:] = float("nan")  # only the known-future covariates have a future
    roles = torch.tensor([TARGET, FUTURE_COVARIATE, FUTURE_COVARIATE, TARGET, PAST_COVARIATE])
    layout = GroupLayout.from_group_ids(torch.tensor([0, 0, 0, 1, 1]))
    fitted = covariate_regression(values, context_steps, roles, layout, window=1000)
    torch.testing.assert_close(fitted[0], target, atol=0.02, rtol=0.02)
    assert torch.isnan(fitted[1:]).all()  # covariates, and a target whose group has no known future


def test_missing_covariate_values_leave_gaps_and_too_few_steps_no_fit() -> None:
    steps, context_steps = 60, 50
    values = torch.randn(2, steps)
    values[0, context_steps:] = float("nan")
    values[1, 10:20] = float("nan")
    roles = torch.tensor([TARGET, FUTURE_COVARIATE])
    layout = GroupLayout.from_group_ids(torch.tensor([0, 0]))
    fitted = covariate_regression(values, context_steps, roles, layout, window=1000)
    assert torch.isnan(fitted[0, 10:20]).all() and torch.isfinite(fitted[0, 20:]).all()
    assert torch.isnan(covariate_regression(values, context_steps, roles, layout, window=8)).all()


def test_the_hint_starts_silent_and_reaches_the_target_through_training() -> None:
    config = TSMojoConfig.tiny(covariate_hint=True)
    model = TSMojoModel(config)
    plain = TSMojoModel(TSMojoConfig.tiny())
    missing, unexpected = plain.load_state_dict(model.state_dict(), strict=False)
    assert not missing and all(k.startswith("covariate_hint_embed.") for k in unexpected)
    context = random_walks(3, 40)
    groups, roles = torch.tensor([0, 0, 1]), torch.tensor([TARGET, FUTURE_COVARIATE, TARGET])
    future = torch.randn(3, 8)
    with torch.no_grad():
        torch.testing.assert_close(
            model(context, groups, roles, future).quantiles, plain(context, groups, roles, future).quantiles
        )
    loss = model(context, groups, roles, future, future_target=future).loss
    loss.backward()
    assert model.covariate_hint_embed.out.weight.grad.abs().sum() > 0
