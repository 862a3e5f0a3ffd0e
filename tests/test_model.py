"""Behaviour of TSMojoModel: scaling, padding and batch independence, groups, NaN, persistence."""

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from tests.helpers import random_walks, tiny_model
from tsmojo import TSMojoConfig, TSMojoModel
from tsmojo.layers import GroupLayout, select_memory
from tsmojo.model import FORECAST_MARGIN, FUTURE_COVARIATE, PAST_COVARIATE, TARGET, rows_per_pass


@settings(max_examples=12, deadline=None)
@given(a=st.floats(1e-3, 1e4), b=st.floats(-1e5, 1e5))
def test_forecasts_are_equivariant_to_positive_affine_maps(a: float, b: float) -> None:
    model = tiny_model()
    moved_input = (a * random_walks(3, 37).double() + b).float()
    # The series float32 keeps of the moved one, in the original units: with a small `a` and a
    # large `b` the moved series loses digits, and the model can only be equivariant on what is left.
    x = (moved_input.double() - b) / a
    # A row float32 rounds to a constant has no spread; its scale falls back to its magnitude,
    # which a shift changes, so equivariance holds only for rows with some spread left.
    assume(bool((moved_input.std(-1) > 0).all()))
    base = model.forecast(x.float(), 11)
    moved = model.forecast(moved_input, 11)
    expected = a * base.double() + b
    tolerance = 1e-4 * (a * base.double().abs().max() + abs(b)) + 1e-6
    assert (moved.double() - expected).abs().max() <= tolerance


def test_forecast_of_a_series_does_not_depend_on_its_batch() -> None:
    model = tiny_model()
    alone = random_walks(1, 23, seed=1)
    others = random_walks(5, 70, seed=2)
    batch = torch.full((6, 70), float("nan"))
    batch[0, -23:] = alone[0]
    batch[1:] = others
    together = model.forecast(batch, 10)[0]
    single = model.forecast(alone, 10)[0]
    torch.testing.assert_close(together, single, atol=1e-5, rtol=1e-5)


def test_passes_keep_groups_whole_in_order_of_first_appearance() -> None:
    groups = torch.tensor([5, 2, 5, 7, 2, 9, 9, 9, 1])
    one_token = torch.ones(len(groups), dtype=torch.long)
    passes = rows_per_pass(groups, one_token, tokens_per_pass=3)
    assert [p.tolist() for p in passes] == [[0, 2], [1, 4, 3], [5, 6, 7], [8]]
    oversized = rows_per_pass(groups, one_token, tokens_per_pass=2)  # group 9 (three rows) gets a pass of its own
    assert [5, 6, 7] in [p.tolist() for p in oversized]
    assert sorted(torch.cat(oversized).tolist()) == list(range(len(groups)))


def test_passes_never_mix_lengths() -> None:
    """A group counts as its longest row; groups of one length share passes, shortest first."""
    groups = torch.tensor([0, 1, 1, 2, 3, 4])
    tokens = torch.tensor([40, 20, 40, 20, 20, 40])
    passes = rows_per_pass(groups, tokens, tokens_per_pass=1000)
    assert [p.tolist() for p in passes] == [[3, 4], [0, 1, 2, 5]]
    tight = rows_per_pass(groups, tokens, tokens_per_pass=120)  # group 1 holds 2 x 40 tokens
    assert [p.tolist() for p in tight] == [[3, 4], [0, 1, 2], [5]]


@pytest.mark.parametrize("short_length", [23, 300])
def test_bf16_forecast_of_a_series_does_not_depend_on_a_longer_series_in_its_batch(short_length) -> None:
    """In bf16 too: a series never shares a pass with longer ones, so a long series in the batch
    changes neither its padding nor which kernels run for it (a dense attention below 64 tokens,
    the chunked one above: their bf16 roundings differ)."""
    model = tiny_model()
    short = random_walks(1, short_length, seed=1)
    long = random_walks(1, 3000, seed=2)
    batch = torch.full((2, 3000), float("nan"))
    batch[0, -short_length:] = short[0]
    batch[1] = long[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        together = model.forecast(batch, 10)[0]
        alone = model.forecast(short, 10)[0]
    assert torch.equal(together, alone)


def test_forecasts_do_not_depend_on_the_tokens_per_pass() -> None:
    model = tiny_model()
    x = random_walks(7, 60)
    groups = torch.tensor([0, 1, 0, 2, 2, 3, 1])
    roles = torch.tensor([TARGET, TARGET, FUTURE_COVARIATE, TARGET, PAST_COVARIATE, TARGET, TARGET])
    future = torch.randn(7, 12)
    one_pass = model.forecast(x, 12, groups, roles, future, tokens_per_pass=10**9)
    row_by_row = model.forecast(x, 12, groups, roles, future, tokens_per_pass=1)
    torch.testing.assert_close(row_by_row, one_pass, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length", [3, 13, 20])
def test_a_context_within_one_window_gives_the_same_forecast_without_chunk_padding(length) -> None:
    """A row whose tokens (context, register, future) all fit in one window reads no fading-band or
    memory key, so the chunk alignment that padding buys cannot matter: the model leaves such a
    context unpadded, and the output equals that of the same context padded to whole chunks."""
    model = tiny_model(window=8, memory_topk=2, memory_size=4)  # patch 4, chunk 4: blocks of 16 points
    num_future = 2
    assert model.padded_context_length(length, num_future) == -(-length // 4) * 4  # whole patches only
    x = random_walks(3, length, seed=4)
    padded = torch.cat([torch.full((3, 32 - length), float("nan")), x], dim=1)
    assert model.padded_context_length(32, num_future) == 32  # 8 patches + 3 tokens > window: whole chunks
    unpadded_out = model(x, num_output_patches=num_future).quantiles
    padded_out = model(padded, num_output_patches=num_future).quantiles
    torch.testing.assert_close(unpadded_out, padded_out, atol=1e-5, rtol=1e-5)


def test_a_context_beyond_one_window_is_padded_to_whole_chunks() -> None:
    model = tiny_model(window=8)
    assert model.padded_context_length(21, 2) == 32  # 6 patches + register + 2 future = 9 tokens > 8
    assert model.padded_context_length(20, 2) == 20  # 5 + 1 + 2 = 8 tokens: one window
    assert model.padded_context_length(0, 2) == 4  # an empty context still gets one patch


def test_left_padding_with_nan_changes_nothing() -> None:
    model = tiny_model()
    x = random_walks(2, 30)
    padded = torch.cat([torch.full((2, 41), float("nan")), x], dim=1)
    torch.testing.assert_close(model.forecast(x, 8), model.forecast(padded, 8), atol=1e-5, rtol=1e-5)


def test_groups_are_isolated_and_members_interact() -> None:
    model = tiny_model()
    x = random_walks(4, 40)
    groups = torch.tensor([0, 0, 1, 1])
    base = model.forecast(x, 8, group_ids=groups)
    changed = x.clone()
    changed[3] = random_walks(1, 40, seed=9)[0]  # a different shape (affine maps are scaled away)
    after = model.forecast(changed, 8, group_ids=groups)
    torch.testing.assert_close(after[:2], base[:2], atol=1e-6, rtol=0)  # other group untouched
    assert (after[2] - base[2]).abs().max() > 1e-4  # its partner in group 1 reacts


def test_known_future_covariates_are_read_and_past_covariates_future_is_ignored() -> None:
    model = tiny_model()
    x = random_walks(2, 40)
    groups = torch.tensor([0, 0])
    future = torch.randn(2, 8)
    known = torch.tensor([TARGET, FUTURE_COVARIATE])
    base = model.forecast(x, 8, groups, known, future)
    assert (model.forecast(x, 8, groups, known, future * 5)[0] - base[0]).abs().max() > 1e-4
    past = torch.tensor([TARGET, PAST_COVARIATE])
    base_past = model.forecast(x, 8, groups, past, future)
    torch.testing.assert_close(model.forecast(x, 8, groups, past, future * 5), base_past)


def test_missing_values_give_finite_forecasts() -> None:
    model = tiny_model()
    x = random_walks(3, 48)
    x[0, 5:17] = float("nan")  # whole missing patches inside the context
    x[1, ::3] = float("nan")
    x[2, :40] = float("nan")  # long leading gap
    q = model.forecast(x, 12)
    assert torch.isfinite(q).all()
    assert (q[..., 1:] >= q[..., :-1]).all()  # sorted quantiles


def test_constant_and_single_point_series() -> None:
    model = tiny_model()
    assert torch.isfinite(model.forecast(torch.full((1, 20), 5.0), 4)).all()
    assert torch.isfinite(model.forecast(torch.tensor([[3.0]]), 4)).all()


def test_long_horizon_unrolls_and_starts_like_the_short_one() -> None:
    model = tiny_model()
    x = random_walks(2, 50)
    short = model.forecast(x, model.config.horizon)
    long = model.forecast(x, 3 * model.config.horizon + 3)
    assert long.shape == (2, 3 * model.config.horizon + 3, len(model.config.quantiles))
    torch.testing.assert_close(long[:, : model.config.horizon], short)


def test_loss_ignores_covariate_rows_and_missing_targets() -> None:
    model = tiny_model()
    x = random_walks(2, 32)
    roles = torch.tensor([TARGET, PAST_COVARIATE])
    target = torch.randn(2, 8)
    first = model(x, torch.tensor([0, 0]), roles, future_target=target).quantile_loss
    target2 = target.clone()
    target2[1] = 100.0
    target2[0, 3] = float("nan")
    target_nan_only = target.clone()
    target_nan_only[0, 3] = float("nan")
    second = model(x, torch.tensor([0, 0]), roles, future_target=target2).quantile_loss
    third = model(x, torch.tensor([0, 0]), roles, future_target=target_nan_only).quantile_loss
    torch.testing.assert_close(second, third)
    assert torch.isfinite(first) and torch.isfinite(second)


def test_target_weights_give_a_weighted_mean_of_the_rows_losses() -> None:
    model = tiny_model()
    x, target, groups = random_walks(2, 32), torch.randn(2, 8), torch.tensor([0, 1])
    per_row = [model(x[i : i + 1], future_target=target[i : i + 1]).quantile_loss for i in range(2)]
    weighted = model(x, groups, future_target=target, target_weights=torch.tensor([3.0, 1.0])).quantile_loss
    torch.testing.assert_close(weighted, (3 * per_row[0] + per_row[1]) / 4)
    unweighted = model(x, groups, future_target=target).quantile_loss
    torch.testing.assert_close(unweighted, (per_row[0] + per_row[1]) / 2)


def test_loss_backpropagates_to_every_parameter() -> None:
    model = tiny_model().train()
    x = random_walks(4, 64)
    loss = model(x, torch.tensor([0, 0, 1, 2]), future_target=torch.randn(4, 8)).loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing


def test_save_and_load_round_trip(tmp_path) -> None:
    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = TSMojoModel.from_pretrained(tmp_path)
    x = random_walks(2, 30)
    torch.testing.assert_close(loaded.forecast(x, 6), model.forecast(x, 6), atol=0, rtol=0)
    (tmp_path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        TSMojoModel.from_pretrained(tmp_path)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        TSMojoConfig(d_model=10, num_heads=3)
    with pytest.raises(ValueError, match="unknown"):
        TSMojoConfig.from_dict({"d_model": 16, "bogus": 1})
    with pytest.raises(ValueError, match="num_output_patches"):
        tiny_model()(random_walks(1, 10), num_output_patches=5)


@pytest.mark.parametrize(
    ("length", "chunk", "topk", "size"),
    [(23, 4, 2, 3), (157, 3, 2, 5), (40, 5, 4, 2), (9, 4, 1, 8)],  # up to 53 chunks; topk > size; size > pool
)
def test_memory_holds_top_innovation_tokens_from_earlier_chunks_only(length, chunk, topk, size) -> None:
    torch.manual_seed(0)
    innovation = torch.rand(2, length)
    candidate = torch.rand(2, length) > 0.2
    memory = select_memory(innovation, candidate, chunk, topk, size)
    assert memory.shape == (2, math.ceil(length / chunk), size)
    for b in range(2):
        for c in range(memory.shape[1]):
            slots = [int(m) for m in memory[b, c] if m >= 0]
            assert all(m < c * chunk and candidate[b, m] for m in slots)
            # Expected: per earlier chunk its top-k candidates, then the best `size` overall.
            pool = []
            for source in range(c):
                positions = [p for p in range(source * chunk, min(length, (source + 1) * chunk)) if candidate[b, p]]
                pool += sorted(positions, key=lambda p: -innovation[b, p])[:topk]
            expected = sorted(pool, key=lambda p: -innovation[b, p])[:size]
            assert sorted(slots) == sorted(expected)


def test_group_layout_cost_follows_group_sizes_not_batch() -> None:
    ids = torch.tensor([7] * 5 + list(range(100, 1100)) + [3, 3])
    layout = GroupLayout.from_group_ids(ids)
    shapes = sorted(tuple(b.shape) for b in layout.buckets)
    assert shapes == [(1, 2), (1, 8)]  # singletons need no attention; one pair; one group of 5 padded to 8
    rows = torch.cat([b[b >= 0] for b in layout.buckets]).sort().values
    assert rows.tolist() == [0, 1, 2, 3, 4, 1005, 1006]


def test_memory_changes_the_output_for_long_contexts() -> None:
    model = tiny_model(memory_size=3)
    no_memory = tiny_model(memory_size=0)
    no_memory.load_state_dict(model.state_dict())
    x = random_walks(1, 200)
    assert (model.forecast(x, 8) - no_memory.forecast(x, 8)).abs().max() > 1e-6


@pytest.mark.parametrize("output_from", [0, 1, 9, 16, 38, 39])
def test_block_output_tail_matches_the_full_block(output_from: int) -> None:
    """A block asked for positions >= output_from (the model's last block) gives those rows of the
    full computation, and the same gradients to every input and parameter."""
    from tsmojo.layers import BMojoBlock

    config = TSMojoConfig.tiny(chunk_size=4, window=3, memory_size=3)
    torch.manual_seed(0)
    block = BMojoBlock(config)
    batch, length = 4, 39
    x = torch.randn(batch, length, config.d_model)
    valid = torch.rand(batch, length) > 0.2
    valid[1, :10] = False  # left padding
    observed = valid.clone()
    layouts = {
        "singletons": GroupLayout.from_group_ids(torch.arange(batch)),
        "groups": GroupLayout.from_group_ids(torch.tensor([0, 0, 1, 0])),
    }
    for name, layout in layouts.items():
        results = []
        for start in (0, output_from):
            block.zero_grad(set_to_none=True)
            inputs = x.clone().requires_grad_()
            out, innovation_loss = block(inputs, valid, valid, observed, layout, start)
            tail = out[:, output_from - start :]
            (tail.pow(2).sum() + innovation_loss).backward()
            grads = {key: p.grad.clone() for key, p in block.named_parameters() if p.grad is not None}
            results.append((tail.detach(), innovation_loss.detach(), inputs.grad, grads))
        (full, full_loss, full_input_grad, full_grads), (tail, loss, input_grad, grads) = results
        assert tail.shape == (batch, length - output_from, config.d_model), name
        torch.testing.assert_close(tail, full, rtol=1e-5, atol=1e-6, msg=name)
        torch.testing.assert_close(loss, full_loss, msg=name)
        torch.testing.assert_close(input_grad, full_input_grad, rtol=1e-4, atol=1e-6, msg=name)
        assert grads.keys() <= full_grads.keys(), name  # with no position left, q's weights get no gradient
        for key, full_grad in full_grads.items():
            grad = grads.get(key, torch.zeros_like(full_grad))
            torch.testing.assert_close(grad, full_grad, rtol=1e-4, atol=1e-6, msg=f"{name}: {key}")


def test_per_row_scale_windows_set_each_rows_scaling() -> None:
    """``scale_windows`` (how pretraining draws several scalings): a row's forecast equals the
    forecast of a model whose ``scale_window`` is that row's window, 0 meaning the whole context,
    and the default is the config's window."""
    model = tiny_model(scale_window=24)
    context = random_walks(3, 80, seed=4)
    context[1, :50] += 40.0  # a level shift that a long window and a short one scale differently
    windows = torch.tensor([8, 24, 0])
    with torch.no_grad():
        per_row = model(context, scale_windows=windows).quantiles
        default = model(context).quantiles
        torch.testing.assert_close(model(context, scale_windows=torch.full((3,), 24)).quantiles, default)
        for row, window in enumerate(windows.tolist()):
            model.config.scale_window = window
            torch.testing.assert_close(per_row[row], model(context).quantiles[row])
    assert not torch.allclose(per_row[0], default[0])


def test_quantiles_stay_within_the_margin_of_the_context_and_the_loss_reads_them_unbounded(monkeypatch) -> None:
    import tsmojo.model

    model = tiny_model()
    context = random_walks(3, 64)
    target = random_walks(3, model.config.patch_size, seed=1)
    loc, scale = model.scale_stats(context)
    furthest = model.to_model_space(context, loc, scale).abs().amax(1)
    free = model(context, future_target=target)
    monkeypatch.setattr(tsmojo.model, "FORECAST_MARGIN", 0.0)
    bounded = model(context, future_target=target)
    within = model.to_model_space(bounded.quantiles, loc[..., None], scale[..., None]).abs()
    assert (within <= furthest[:, None, None] * (1 + 1e-5)).all()
    assert not torch.equal(free.quantiles, bounded.quantiles)  # a random model strays beyond its context
    assert torch.equal(free.loss, bounded.loss)  # training never sees the bound


def test_a_constant_context_that_jumps_once_gets_bounded_quantiles() -> None:
    from tsmojo.bundled import BUNDLED_DIR

    # Unbounded, tsmojo-mini-v8 gave this context a 90% quantile of 218,429 over 48 steps.
    model = TSMojoModel.from_pretrained(BUNDLED_DIR / "tsmojo-mini-v8")
    context = torch.cat([torch.full((1, 200), 10.0), torch.tensor([[20.0]])], dim=1)
    quantiles = model.forecast(context, 48)
    loc, scale = model.scale_stats(context)
    furthest = model.to_model_space(context, loc, scale).abs().max()
    ceiling = loc + scale * torch.sinh(furthest + FORECAST_MARGIN)
    assert quantiles.max() <= ceiling * (1 + 1e-4) and quantiles.max() < 1_000
