"""Pretraining data: reproducible, well-formed, and never drawn from the evaluation set."""

import hashlib

import numpy as np
import pandas as pd
import pytest

from tsmojo.data.real import assert_not_eval, load_pretrain_series, pretrain_files, shared_datasets_dir
from tsmojo.data.synthetic import GENERATORS
from tsmojo.data.tasks import TaskMix, TaskSampler
from tsmojo.model import FUTURE_COVARIATE, TARGET
from tsmojo.pretrain import PretrainConfig, PretrainStream

SHARED = shared_datasets_dir()
needs_shared = pytest.mark.skipif(not (SHARED / "eval").is_dir(), reason=f"shared datasets not found at {SHARED}")


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_generators_are_finite_seeded_and_varied(name: str) -> None:
    first = GENERATORS[name](np.random.default_rng(3), 16, 200)
    again = GENERATORS[name](np.random.default_rng(3), 16, 200)
    assert first.shape == (16, 200) and np.isfinite(first).all()
    np.testing.assert_array_equal(first, again)
    assert np.std(first, axis=1).min() > 0 or name == "intermittent"
    assert len({row.tobytes() for row in first}) == 16


def test_batches_are_reproducible_and_contain_every_task_kind() -> None:
    config = PretrainConfig(use_real_series=False)
    stream = PretrainStream(TaskSampler(), config, patch_size=16)
    a, b = stream.batch(7), stream.batch(7)
    for key in a:
        np.testing.assert_array_equal(a[key].numpy(), b[key].numpy())
    assert not np.array_equal(stream.batch(8)["future"].numpy()[:4], a["future"].numpy()[:4])
    roles, groups = a["roles"].numpy(), a["group_ids"].numpy()
    assert (roles == TARGET).any() and (roles == FUTURE_COVARIATE).any()
    assert np.bincount(groups).max() >= 2  # some multivariate / covariate groups
    assert np.isfinite(a["context"].numpy()).any(axis=1).all()  # no empty row
    assert np.isfinite(a["future"].numpy()).all()


def test_targets_of_covariate_groups_carry_the_configured_loss_weight() -> None:
    sampler = TaskSampler(mix=TaskMix(covariate_target_weight=3.0, group_row_share=0.5))
    batch = sampler.sample(np.random.default_rng(1), 64, 128, 16)
    roles, groups, weights = batch["roles"].numpy(), batch["group_ids"].numpy(), batch["target_weights"].numpy()
    with_covariates = np.isin(groups, groups[roles != TARGET])
    assert with_covariates.any() and (~with_covariates).any()
    np.testing.assert_array_equal(weights, np.where(with_covariates, 3.0, 1.0))
    plain = TaskSampler().sample(np.random.default_rng(1), 64, 128, 16)
    assert (plain["target_weights"].numpy() == 1.0).all()


def test_a_short_real_series_gives_contexts_of_many_lengths() -> None:
    # A real series shorter than the window used to enter whole, so its context length was always
    # its length minus the horizon: a fingerprint of any dataset whose series share one length.
    series = [np.linspace(1.0, 50.0, 104) + np.sin(np.arange(104)), np.arange(90, dtype=float) + 5.0]
    mix = TaskMix(real_share=1.0, mixup_share=0.0, group_row_share=0.0, short_context_share=0.0, missing_share=0.0)
    sampler = TaskSampler(series, mix)
    lengths = []
    for seed in range(20):
        batch = sampler.sample(np.random.default_rng(seed), 32, 256, 64)
        context, future = batch["context"].numpy(), batch["future"].numpy()
        assert np.isfinite(future).all()  # the horizon is always real data
        lengths += np.isfinite(context).sum(axis=1).tolist()
    counts = np.bincount(lengths)
    assert counts.max() < 0.25 * len(lengths)  # no length dominates
    assert min(lengths) >= 8 and len(set(lengths)) > 20
    assert max(lengths) == 40  # the whole history stays possible


@needs_shared
def test_training_sources_never_touch_the_evaluation_set() -> None:
    eval_dir = SHARED / "eval"
    with pytest.raises(ValueError, match="evaluation set"):
        assert_not_eval(eval_dir / "m4_hourly" / "data.parquet")
    files = pretrain_files()
    assert files and all(eval_dir.resolve() not in f.resolve().parents for f in files)
    eval_names = {p.name for p in eval_dir.iterdir()}
    assert not eval_names & {f.parent.name for f in files}

    def fingerprint(values: np.ndarray) -> str:
        return hashlib.sha1(np.round(values[np.isfinite(values)], 6).tobytes()).hexdigest()

    training = {fingerprint(v) for v in load_pretrain_series(min_length=1)}
    for path in sorted(eval_dir.glob("*/data.parquet")):
        frame = pd.read_parquet(path).sort_values(["unique_id", "ds"])
        for uid, group in frame.groupby("unique_id"):
            assert fingerprint(group["y"].to_numpy(float)) not in training, f"eval series {path.parent.name}/{uid}"


def test_validation_cases_keep_their_order_so_their_batches_keep_their_seeds() -> None:
    from tsmojo.pretrain import validation_cases

    names = list(validation_cases())
    assert names == ["periodic", "flat_ending", "long_context", "covariates", "steady_trend", "noisy_seasonal"]
