"""`tsmojo pretrain` runs from scratch, checkpoints, and resumes from its own checkpoint."""

import json
import shutil
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch

from tests.helpers import random_walks, tiny_model
from tsmojo import TSMojoModel
from tsmojo.config import TSMojoConfig
from tsmojo.lightning_module import MODEL_CONFIG_KEY, TSMojoLightningModule, batch_loss, teacher_prediction
from tsmojo.pretrain import PretrainConfig, ThroughputAndExport, resumed_model_config


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tsmojo.pretrain", *args], capture_output=True, text=True, timeout=600)


def test_pretrain_from_scratch_then_resume(tmp_path) -> None:
    run_dir = tmp_path / "run"
    first = run("--tiny", "--max-steps", "6", "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    summary = json.loads((run_dir / "model" / "training_summary.json").read_text())
    assert summary["steps"] == 6
    model_after_first = TSMojoModel.from_pretrained(run_dir / "model")

    second = run("--tiny", "--max-steps", "10", "--run-dir", str(run_dir), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((run_dir / "model" / "training_summary.json").read_text())
    assert summary["steps"] == 10  # continued from step 6, not restarted
    assert summary["thread_seconds_total"] >= summary["wall_seconds_total"] > 0
    model_after_second = TSMojoModel.from_pretrained(run_dir / "model")
    changed = any(
        not torch.equal(a, b)
        for a, b in zip(model_after_first.state_dict().values(), model_after_second.state_dict().values())
    )
    assert changed
    logs = sorted((run_dir / "logs").glob("from_step_*/metrics.csv"))
    assert [p.parent.name for p in logs] == ["from_step_0", "from_step_6"]  # one log per run, none overwritten
    first_log = logs[0].read_text()
    assert "train_loss" in first_log and "val_wql" in first_log  # validation ran at step 5

    # Resuming a finished run trains nothing and exports its weights again (the committed state
    # of a long run keeps the checkpoint only).
    (run_dir / "model" / "model.safetensors").unlink()
    third = run("--tiny", "--max-steps", "10", "--run-dir", str(run_dir), "--resume")
    assert third.returncode == 0, third.stderr[-3000:]
    assert json.loads((run_dir / "model" / "training_summary.json").read_text())["steps"] == 10
    exported = TSMojoModel.from_pretrained(run_dir / "model")
    pairs = zip(exported.state_dict().values(), model_after_second.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_run_resumed_in_a_folder_of_another_name_keeps_checkpointing_to_last_ckpt(tmp_path) -> None:
    # A fork copies a run's folder under a new name. Lightning does not take the copied last.ckpt
    # for its own and used to write the periodic checkpoints to last-v1.ckpt, so a fork stopped by
    # hand resumed from where it had started.
    config = tmp_path / "recipe.yaml"
    config.write_text("checkpoint_minutes: 0.00001\n")  # a checkpoint after every step
    first_dir, fork_dir = tmp_path / "run", tmp_path / "fork"
    first = run("--tiny", "--config", str(config), "--max-steps", "3", "--run-dir", str(first_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(first_dir, fork_dir)
    fork = run("--tiny", "--config", str(config), "--max-steps", "6", "--run-dir", str(fork_dir), "--resume")
    assert fork.returncode == 0, fork.stderr[-3000:]
    assert sorted(p.name for p in (fork_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    assert torch.load(fork_dir / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6


def test_a_stop_file_stops_the_run_cleanly_and_is_removed(tmp_path) -> None:
    model = TSMojoModel(TSMojoConfig.tiny())
    stop_file = tmp_path / "STOP"
    exporter = ThroughputAndExport(tmp_path / "model", None, export_minutes=60.0, summary={}, stop_file=stop_file)
    trainer = SimpleNamespace(global_step=3, world_size=1, should_stop=False)
    module = SimpleNamespace(model=model, log=lambda *args, **kwargs: None)
    batch = {"context": torch.zeros(2, 8)}
    exporter.on_train_batch_end(trainer, module, None, batch, 0)
    assert not trainer.should_stop
    stop_file.touch()
    exporter.on_train_batch_end(trainer, module, None, batch, 1)
    assert trainer.should_stop

    # End to end: a stale request is removed at the start, and a run stopped by one ends with its
    # checkpoint and export, and without the file.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "STOP").touch()
    finished = run("--tiny", "--max-steps", "3", "--run-dir", str(run_dir))
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "removed a stale" in finished.stdout and not (run_dir / "STOP").exists()
    assert json.loads((run_dir / "model" / "training_summary.json").read_text())["steps"] == 3


def test_resume_without_checkpoint_fails_clearly(tmp_path) -> None:
    result = run("--tiny", "--max-steps", "2", "--run-dir", str(tmp_path / "none"), "--resume")
    assert result.returncode != 0 and "no checkpoint" in result.stderr


def test_unknown_task_mix_field_fails_clearly(tmp_path) -> None:
    config = tmp_path / "recipe.yaml"
    config.write_text("task_mix:\n  covariate_weight: 3.0\n")
    result = run("--tiny", "--config", str(config), "--max-steps", "1", "--run-dir", str(tmp_path / "run"))
    assert result.returncode != 0 and "unknown TaskMix fields ['covariate_weight']" in result.stderr


def test_init_from_a_model_starts_a_new_schedule_on_its_weights(tmp_path) -> None:
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first = run("--tiny", "--max-steps", "4", "--run-dir", str(first_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    start = TSMojoModel.from_pretrained(first_dir / "model")

    second = run("--tiny", "--max-steps", "3", "--run-dir", str(second_dir), "--init-from", str(first_dir / "model"))
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((second_dir / "model" / "training_summary.json").read_text())
    first_summary = json.loads((first_dir / "model" / "training_summary.json").read_text())
    assert summary["steps_before"] == 4 and summary["steps"] == 7  # a 3-step schedule after 4 steps
    assert summary["series_seen_total"] > first_summary["series_seen_total"]
    assert summary["init_from"] == str(first_dir / "model")

    # The run started from the loaded weights: they moved, but far less than the distance from them
    # to a fresh random initialisation.
    after = TSMojoModel.from_pretrained(second_dir / "model")
    torch.manual_seed(123)
    fresh = TSMojoModel(start.config)
    moved = sum((a - b).abs().sum() for a, b in zip(after.state_dict().values(), start.state_dict().values()))
    fresh_distance = sum((a - b).abs().sum() for a, b in zip(fresh.state_dict().values(), start.state_dict().values()))
    assert 0 < moved < 0.5 * fresh_distance


def test_init_from_an_unknown_model_fails_naming_the_bundled_ones(tmp_path) -> None:
    result = run("--tiny", "--max-steps", "1", "--run-dir", str(tmp_path / "run"), "--init-from", "tsmojo-nano")
    assert result.returncode != 0
    assert "--init-from" in result.stderr
    assert "'tsmojo-nano' is neither a directory nor a bundled model" in result.stderr
    assert "tsmojo-mini-v9" in result.stderr


def test_resume_rebuilds_the_model_the_checkpoint_holds_whatever_the_recipe_says(tmp_path) -> None:
    # A run started with --init-from takes its model's settings, which its recipe does not
    # repeat; --resume must rebuild that model, not the recipe's.
    recipe, run_dir = tmp_path / "recipe.yaml", tmp_path / "run"
    recipe.write_text("model: {seasonal_hint: true, num_layers: 3}\n")
    first = run("--tiny", "--config", str(recipe), "--max-steps", "3", "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    saved = TSMojoConfig.from_dict(checkpoint[MODEL_CONFIG_KEY])
    assert saved.seasonal_hint and saved.num_layers == 3

    second = run("--tiny", "--max-steps", "5", "--run-dir", str(run_dir), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    resumed = TSMojoModel.from_pretrained(run_dir / "model")
    assert resumed.config == saved
    assert json.loads((run_dir / "model" / "training_summary.json").read_text())["steps"] == 5


def test_checkpoints_without_model_settings_resume_from_their_init_from_model(tmp_path) -> None:
    start = tiny_model(seasonal_hint=True, num_layers=3)
    start.save_pretrained(tmp_path / "start")
    recipe = PretrainConfig(model={"chunk_size": 8})
    config = resumed_model_config({}, recipe, str(tmp_path / "start"))
    assert config == TSMojoConfig.from_dict({**start.config.to_dict(), "chunk_size": 8})
    assert resumed_model_config({}, recipe, None) == TSMojoConfig(chunk_size=8)
    assert resumed_model_config({MODEL_CONFIG_KEY: start.config.to_dict()}, recipe, None) == start.config


def test_init_from_and_resume_are_exclusive(tmp_path) -> None:
    result = run("--tiny", "--run-dir", str(tmp_path / "r"), "--resume", "--init-from", str(tmp_path))
    assert result.returncode != 0 and "--init-from" in result.stderr


def test_ranks_draw_disjoint_parts_of_the_same_stream() -> None:
    from tsmojo.data.tasks import TaskSampler
    from tsmojo.pretrain import PretrainConfig, PretrainStream

    config = PretrainConfig(tokens_per_batch=200, max_batch_size=16, horizon=16)
    single = PretrainStream(TaskSampler(), config, patch_size=8, start_step=3)
    ranks = [PretrainStream(TaskSampler(), config, patch_size=8, start_step=3, rank=r, world_size=2) for r in (0, 1)]
    expected = [single.batch(i)["context"] for i in range(6, 10)]  # steps 3 and 4 of two ranks: batches 6..9
    drawn = [next(iter(ranks[0]))["context"], next(iter(ranks[1]))["context"]]
    iterators = [iter(ranks[0]), iter(ranks[1])]
    [next(it) for it in iterators]
    drawn += [next(iterators[0])["context"], next(iterators[1])["context"]]
    for got, want in zip(drawn, expected):
        torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("rank", [0, 1])
def test_data_workers_draw_the_same_stream_in_the_same_order(rank: int) -> None:
    from torch.utils.data import DataLoader

    from tsmojo.data.tasks import TaskSampler
    from tsmojo.pretrain import PretrainConfig, PretrainStream

    config = PretrainConfig(tokens_per_batch=200, max_batch_size=16, horizon=16)
    stream = PretrainStream(TaskSampler(), config, patch_size=8, start_step=5, rank=rank, world_size=2)
    expected = [stream.batch((5 + i) * 2 + rank)["context"] for i in range(7)]
    loader = DataLoader(stream, batch_size=None, num_workers=3)
    drawn = [batch["context"] for _, batch in zip(range(7), loader)]
    for got, want in zip(drawn, expected, strict=True):
        torch.testing.assert_close(got, want, equal_nan=True)


def test_stream_draws_one_scale_window_per_group() -> None:
    from tsmojo.data.tasks import TaskMix, TaskSampler
    from tsmojo.pretrain import PretrainConfig, PretrainStream

    choices = [16, 32, 0]
    config = PretrainConfig(tokens_per_batch=400, max_batch_size=32, horizon=16, scale_windows=choices)
    stream = PretrainStream(TaskSampler(mix=TaskMix(group_row_share=0.5)), config, patch_size=8)
    batches = [stream.batch(i) for i in range(4)]
    drawn = torch.cat([b["scale_windows"] for b in batches])
    assert set(drawn.tolist()) == set(choices)
    for batch in batches:
        for group in batch["group_ids"].unique():
            assert batch["scale_windows"][batch["group_ids"] == group].unique().numel() == 1
    torch.testing.assert_close(stream.batch(2)["scale_windows"], batches[2]["scale_windows"])
    plain = PretrainStream(TaskSampler(), PretrainConfig(tokens_per_batch=400, horizon=16), patch_size=8)
    assert "scale_windows" not in plain.batch(0)


def test_two_process_ddp_on_cpu(tmp_path) -> None:
    run_dir = tmp_path / "ddp"
    result = run("--tiny", "--max-steps", "4", "--devices", "2", "--precision", "32-true", "--run-dir", str(run_dir))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "model" / "training_summary.json").read_text())
    assert summary["steps"] == 4
    # Both ranks' series are counted: each of the 4 steps trained on at least 16 rows per rank.
    assert summary["series_seen_total"] >= 2 * 4 * 16
    assert result.stdout.count("pretrain: 4 steps") == 1  # only rank 0 reports and exports
    TSMojoModel.from_pretrained(run_dir / "model")


def test_a_step_with_non_finite_gradients_is_skipped() -> None:
    torch.manual_seed(0)
    module = TSMojoLightningModule(TSMojoModel(TSMojoConfig.tiny()), learning_rate=1e-2)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=1e-2)
    context = random_walks(4, 64)

    def step(poison: bool) -> bool:
        """One backward and optimizer step; True if any weight moved."""
        before = [p.detach().clone() for p in module.model.parameters()]
        optimizer.zero_grad()
        module.model(context, future_target=context[:, -8:]).loss.backward()
        if poison:
            next(module.model.parameters()).grad[0] = float("nan")
        module.on_before_optimizer_step(optimizer)
        optimizer.step()
        return any(not torch.equal(a, p) for a, p in zip(before, module.model.parameters(), strict=True))

    assert not step(poison=True) and module.skipped_steps == 1
    assert step(poison=False) and module.skipped_steps == 1
    assert all(torch.isfinite(p).all() for p in module.model.parameters())


def test_non_finite_weights_stop_the_run_before_anything_is_saved(tmp_path) -> None:
    model = TSMojoModel(TSMojoConfig.tiny())
    with torch.no_grad():
        next(model.parameters())[0] = float("inf")
    exporter = ThroughputAndExport(tmp_path / "model", max_seconds=None, export_minutes=0.0, summary={})
    trainer = SimpleNamespace(global_step=7, world_size=1)
    with pytest.raises(RuntimeError, match="non-finite at step 7"):
        exporter.on_train_batch_end(trainer, SimpleNamespace(model=model), None, {}, 0)
    assert not (tmp_path / "model").exists()


def test_seasonal_copy_weights_favour_series_seasonal_naive_copies() -> None:
    from tsmojo.lightning_module import batch_loss, seasonal_copy_weights

    generator = torch.Generator().manual_seed(0)
    steps = torch.arange(256, dtype=torch.float32)
    cycle = torch.sin(2 * torch.pi * steps / 24)
    periodic = cycle + 0.01 * torch.randn(256, generator=generator)  # seasonal naive copies it
    noise = torch.randn(256, generator=generator)  # no period to copy
    walk = torch.randn(256, generator=generator).cumsum(0)  # one-step naive wins: no extra weight
    covariate = torch.randn(256, generator=generator)
    context = torch.stack([periodic, noise, walk, covariate])
    future = torch.stack([cycle[:16], *torch.randn(3, 16, generator=generator)])
    batch = {
        "context": context,
        "future": future,
        "roles": torch.tensor([0, 0, 0, 1]),
        "group_ids": torch.tensor([0, 1, 2, 2]),
    }
    model = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True))

    weights = seasonal_copy_weights(model, batch, exponent=1.0, max_weight=100.0)
    assert weights[0] > 10 * weights[1]  # one-step error ~0.26, seasonal error ~0.01
    assert weights[1] == pytest.approx(weights[2].item())  # neither has a cycle to copy
    assert weights[:3].mean() == pytest.approx(1.0)  # normalised over target rows only
    capped = seasonal_copy_weights(model, batch, exponent=1.0, max_weight=1.5)
    assert capped[0] == pytest.approx(1.5) and capped[1] == pytest.approx(weights[1].item())
    torch.testing.assert_close(seasonal_copy_weights(model, batch, 0.0, 10.0), torch.ones(4))

    plain, _ = batch_loss(model, batch)
    favoured, _ = batch_loss(model, batch, seasonal_weight_exponent=1.0)
    assert not torch.isclose(plain, favoured)
    unweighted, _ = batch_loss(model, batch, weighted=False, seasonal_weight_exponent=1.0)
    torch.testing.assert_close(unweighted, plain)


def test_lr_scales_train_named_weights_faster_and_reject_unknown_prefixes() -> None:
    torch.manual_seed(0)
    model = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True, hint_shortcut=True))
    with torch.no_grad():  # a trained gate, so that its input weights receive gradients
        model.hint_gate.bias.fill_(0.5)
    module = TSMojoLightningModule(model, learning_rate=1e-3, warmup_steps=1, lr_scales={"hint_gate.": 20.0})
    optimizer = module.configure_optimizers()["optimizer"]
    assert sorted(group["lr"] for group in optimizer.param_groups) == pytest.approx([1e-3, 2e-2])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    t = torch.arange(96, dtype=torch.float32)
    context = torch.sin(2 * torch.pi * t / 12)[None].repeat(4, 1) + 0.1 * random_walks(4, 96)
    model(context[:, :-16], future_target=context[:, -16:]).loss.backward()
    optimizer.step()
    moved = {name: (p.detach() - before[name]).abs().max().item() for name, p in model.named_parameters()}
    # AdamW's first step moves every weight with a gradient by about its learning rate
    assert moved["hint_gate.bias"] == pytest.approx(2e-2, rel=0.05)
    assert max(v for name, v in moved.items() if not name.startswith("hint_gate.")) < 1.5e-3
    with pytest.raises(ValueError, match="hint_gat\\."):
        TSMojoLightningModule(model, lr_scales={"hint_gat.": 20.0})


def test_trainable_hint_gate_trains_the_gate_alone() -> None:
    torch.manual_seed(0)
    model = TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True, hint_shortcut=True))
    module = TSMojoLightningModule(model, learning_rate=1e-2, warmup_steps=1, trainable="hint_gate")
    optimizer = module.configure_optimizers()["optimizer"]
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    t = torch.arange(112, dtype=torch.float32)
    context = torch.sin(2 * torch.pi * t / 12)[None].repeat(4, 1) + 0.1 * random_walks(4, 112)
    model(context[:, :-16], future_target=context[:, -16:]).loss.backward()
    optimizer.step()
    moved = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert moved == {"hint_gate.weight", "hint_gate.bias"}
    with pytest.raises(ValueError, match="hint_shortcut"):
        TSMojoLightningModule(TSMojoModel(TSMojoConfig.tiny(seasonal_hint=True)), trainable="hint_gate")
    with pytest.raises(ValueError, match="trainable"):
        TSMojoLightningModule(model, trainable="gate")


def test_ema_decay_validates_and_exports_the_moving_average(tmp_path) -> None:
    torch.manual_seed(0)
    model = TSMojoModel(TSMojoConfig.tiny())
    module = TSMojoLightningModule(model, learning_rate=1e-2, warmup_steps=1, ema_decay=0.5)
    optimizer = module.configure_optimizers()["optimizer"]
    context = random_walks(4, 112)
    expected = None
    for step in range(4):
        optimizer.zero_grad()
        model(context[:, :-16], future_target=context[:, -16:]).loss.backward()
        optimizer.step()
        module.on_train_batch_end(None, None, step)
        current = model.embed.out.weight.detach().clone()
        # the first update copies; then the decay ramps as (1 + n) / (10 + n), capped at 0.5
        decay = min(0.5, (1 + step) / (10 + step))
        expected = current if expected is None else decay * expected + (1 - decay) * current
    averaged = module.averaged_model.embed.out.weight
    torch.testing.assert_close(averaged, expected)
    assert not torch.allclose(averaged, model.embed.out.weight)
    with pytest.raises(ValueError, match="ema_decay"):
        TSMojoLightningModule(model, ema_decay=1.0)

    config, run_dir = tmp_path / "recipe.yaml", tmp_path / "run"
    config.write_text("ema_decay: 0.5\n")
    for steps, resume in (("4", ()), ("6", ("--resume",))):
        result = run("--tiny", "--config", str(config), "--max-steps", steps, "--run-dir", str(run_dir), *resume)
        assert result.returncode == 0, result.stderr[-3000:]
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    exported = TSMojoModel.from_pretrained(run_dir / "model").state_dict()
    torch.testing.assert_close(exported["embed.out.weight"], state["ema.module.embed.out.weight"])
    assert not torch.allclose(exported["embed.out.weight"], state["model.embed.out.weight"])
    assert int(state["ema.n_averaged"]) == 6  # the average went on across the resume


def test_a_compacted_checkpoint_resumes(tmp_path) -> None:
    config, run_dir = tmp_path / "recipe.yaml", tmp_path / "run"
    config.write_text("ema_decay: 0.9\n")
    first = run("--tiny", "--config", str(config), "--max-steps", "4", "--run-dir", str(run_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    full = torch.load(last, map_location="cpu", weights_only=False)
    compacted = run("--compact", "--run-dir", str(run_dir))
    assert compacted.returncode == 0 and "compacted" in compacted.stdout, compacted.stderr[-3000:]
    small = torch.load(last, map_location="cpu", weights_only=False)
    moments = next(iter(small["optimizer_states"][0]["state"].values()))
    assert moments["exp_avg"].dtype == torch.bfloat16
    assert small["state_dict"]["ema.module.embed.out.weight"].dtype == torch.bfloat16
    for name, weight in full["state_dict"].items():  # the trained weights are kept exactly
        if name.startswith("model."):
            assert torch.equal(small["state_dict"][name], weight)
    second = run("--tiny", "--config", str(config), "--max-steps", "6", "--run-dir", str(run_dir), "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    assert json.loads((run_dir / "model" / "training_summary.json").read_text())["steps"] == 6
    missing = run("--compact", "--run-dir", str(tmp_path / "none"))
    assert missing.returncode != 0 and "no checkpoint" in missing.stderr


def distillation_batch() -> dict[str, torch.Tensor]:
    t = torch.arange(112, dtype=torch.float32)
    series = torch.sin(2 * torch.pi * t / 12)[None].repeat(6, 1) + 0.2 * random_walks(6, 112)
    return {
        "context": series[:, :-16],
        "future": series[:, -16:],
        "roles": torch.tensor([0, 0, 0, 0, 0, 1]),
        "group_ids": torch.tensor([0, 1, 2, 3, 4, 4]),
    }


def test_distillation_weighs_the_truth_against_the_teachers_mean_forecast() -> None:
    torch.manual_seed(0)
    student, teachers = tiny_model(seed=0), [tiny_model(seed=1), tiny_model(seed=2)]
    batch = distillation_batch()
    plain, quantile_loss = batch_loss(student, batch)
    unweighted, _ = batch_loss(student, batch, teachers=teachers, distill_weight=0.0)
    assert torch.equal(plain, unweighted)

    patches = min(student.config.max_output_patches, 16 // student.config.patch_size)
    mean_forecast = teacher_prediction(teachers, batch, patches, torch.full_like(batch["future"], float("nan")))
    own = student(batch["context"], group_ids=batch["group_ids"], roles=batch["roles"], num_output_patches=patches)
    assert own.prediction is not None
    # The distance is read on target rows only: the covariate row (role 1) counts for nothing.
    distance = (own.prediction - mean_forecast).abs().mean(-1)[:5].mean()
    mixed, reported = batch_loss(student, batch, teachers=teachers, distill_weight=0.25)
    assert torch.equal(reported, quantile_loss)  # the logged quantile loss stays the truth's
    assert mixed.item() == pytest.approx((plain + 0.25 * (distance - quantile_loss)).item(), rel=1e-5)

    # A student that is its own teacher is at distance zero: only the truth's part is left.
    alone, _ = batch_loss(student, batch, teachers=[student], distill_weight=1.0)
    assert alone.item() == pytest.approx((plain - quantile_loss).item(), abs=1e-6)


def test_the_best_teacher_target_follows_per_row_the_teacher_closest_to_the_truth() -> None:
    teachers = [tiny_model(seed=1), tiny_model(seed=2), tiny_model(seed=3)]
    batch = distillation_batch()
    known = torch.full_like(batch["future"], float("nan"))
    patches = min(teachers[0].config.max_output_patches, 16 // teachers[0].config.patch_size)
    best = teacher_prediction(teachers, batch, patches, known, target="best")
    outputs = [
        t(batch["context"], group_ids=batch["group_ids"], roles=batch["roles"], num_output_patches=patches)
        for t in teachers
    ]
    context = batch["context"].float()
    loc, scale = teachers[0].scale_stats(context)
    picked = []
    for row in range(5):  # the target rows; row 5 is a covariate
        only_row = torch.zeros(6)
        only_row[row] = 1.0
        losses = [
            t.quantile_loss(o.prediction, batch["future"], batch["roles"], loc, scale, only_row).item()
            for t, o in zip(teachers, outputs, strict=True)
        ]
        winner = min(range(3), key=losses.__getitem__)
        picked.append(winner)
        assert torch.allclose(best[row], outputs[winner].prediction[row], atol=1e-5)
    assert len(set(picked)) > 1  # the rows do not all follow one teacher
    mean = teacher_prediction(teachers, batch, patches, known)
    assert torch.allclose(mean, torch.stack([o.prediction for o in outputs]).mean(0), atol=1e-5)
    with pytest.raises(ValueError, match="distill target"):
        teacher_prediction(teachers, batch, patches, known, target="median")
    with pytest.raises(ValueError, match="distill_target"):
        TSMojoLightningModule(teachers[0], teachers=teachers[1:], distill_weight=0.5, distill_target="worst")


def test_a_distilled_student_moves_toward_its_teachers() -> None:
    torch.manual_seed(0)
    student, teacher = tiny_model(seed=0), tiny_model(seed=1)
    module = TSMojoLightningModule(student, learning_rate=3e-3, warmup_steps=1, teachers=[teacher], distill_weight=1.0)
    optimizer = module.configure_optimizers()["optimizer"]
    batch = distillation_batch()
    known = torch.full_like(batch["future"], float("nan"))

    def distance() -> float:
        with torch.no_grad():
            own = student(batch["context"], group_ids=batch["group_ids"], roles=batch["roles"], num_output_patches=1)
            assert own.prediction is not None
            return (own.prediction - teacher_prediction([teacher], batch, 1, known)).abs().mean().item()

    before = distance()
    for _ in range(30):
        optimizer.zero_grad()
        module.training_step(batch, 0).backward()
        optimizer.step()
    assert distance() < 0.5 * before
    # Teachers never train and are not part of the module's state: checkpoints hold the student only.
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(name.startswith(("model.", "ema.")) for name in module.state_dict())


def test_teachers_must_forecast_the_students_quantile_levels() -> None:
    student = TSMojoModel(TSMojoConfig.tiny())
    other = TSMojoModel(TSMojoConfig.tiny(quantiles=[0.1, 0.5, 0.9]))
    with pytest.raises(ValueError, match="quantile levels"):
        TSMojoLightningModule(student, teachers=[other], distill_weight=0.5)
    with pytest.raises(ValueError, match="distill_weight"):
        TSMojoLightningModule(student, teachers=[student], distill_weight=1.5)


def test_pretrain_distills_from_the_models_its_recipe_names(tmp_path) -> None:
    teacher_dir = tmp_path / "teacher"
    first = run("--tiny", "--max-steps", "3", "--run-dir", str(teacher_dir))
    assert first.returncode == 0, first.stderr[-3000:]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"distill_from: [{teacher_dir / 'model'}]\ndistill_weight: 0.5\n")
    student_dir = tmp_path / "student"
    second = run("--tiny", "--config", str(recipe), "--max-steps", "3", "--run-dir", str(student_dir))
    assert second.returncode == 0, second.stderr[-3000:]
    summary = json.loads((student_dir / "model" / "training_summary.json").read_text())
    assert summary["pretrain_config"]["distill_from"] == [str(teacher_dir / "model")]
    assert summary["steps"] == 3
