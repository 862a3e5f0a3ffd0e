"""tsmojo.tasks: predict's inputs parsed into tasks, and the model's quantiles turned into the requested ones."""

from __future__ import annotations

import numpy as np
import pytest

from tsmojo.model import FUTURE_COVARIATE, PAST_COVARIATE, TARGET
from tsmojo.tasks import interpolate_quantiles, mean_weights, parse_inputs, parse_task


def test_inputs_of_every_shape_become_tasks():
    x = np.arange(10.0)
    assert [t.target.shape for t in parse_inputs(x)] == [(1, 10)]
    assert [t.target.shape for t in parse_inputs(np.stack([x, x]))] == [(1, 10), (1, 10)]
    assert [t.target.shape for t in parse_inputs(np.zeros((2, 3, 10)))] == [(3, 10), (3, 10)]
    assert len(parse_inputs({"target": x})) == 1


def test_covariates_and_roles():
    x = np.arange(10.0)
    task = parse_task({"target": x, "past_covariates": {"p": x, "k": x}, "future_covariates": {"k": np.ones(4)}}, 0)
    assert task.past.shape == (1, 10) and task.known.shape == (1, 10) and task.known_future.shape == (1, 4)
    assert task.roles().tolist() == [TARGET, PAST_COVARIATE, FUTURE_COVARIATE] and task.num_rows == 3
    # T + H values in future_covariates: history then future
    joined = parse_task({"target": x, "future_covariates": {"k": np.arange(14.0)}}, 0)
    np.testing.assert_array_equal(joined.known_future, [[10.0, 11.0, 12.0, 13.0]])
    # training: only the target's span is needed, extra future values are dropped
    training = parse_task({"target": x, "future_covariates": {"k": np.arange(10.0)}}, 0, training=True)
    assert training.known.shape == (1, 10) and training.known_future.shape == (1, 0)


def test_categorical_covariate_is_target_mean_encoded():
    task = parse_task({"target": [1.0, 3.0, 5.0, 7.0], "past_covariates": {"c": ["a", "b", "a", "b"]}}, 0)
    np.testing.assert_array_equal(task.past, [[3.0, 5.0, 3.0, 5.0]])


def test_errors_name_the_input():
    with pytest.raises(ValueError, match="input 3: unknown keys"):
        parse_task({"target": [1.0], "covariates": {}}, 3)
    with pytest.raises(ValueError, match="input 0: target is not numeric"):
        parse_task(["a", "b"], 0)


def test_quantile_interpolation_and_mean_weights():
    levels = [0.1, 0.5, 0.9]
    values = np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(interpolate_quantiles(values, levels, [0.05, 0.3, 0.5, 0.7, 0.95]), [1, 1.5, 2, 3, 4])
    weights = mean_weights(levels)
    np.testing.assert_allclose(weights, [0.1 + 0.2, 0.2 + 0.2, 0.2 + 0.1])
    assert weights.sum() == pytest.approx(1.0)
