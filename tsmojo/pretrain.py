"""``tsmojo pretrain``: resumable CPU pretraining on synthetic and real (pretrain-only) series.

    tsmojo pretrain --max-time 10m --run-dir runs/pretrain            # from scratch
    tsmojo pretrain --max-time 2h --run-dir runs/pretrain --resume    # continue, train more
    tsmojo pretrain --init-from tsmojo/checkpoints/tsmojo-mini --max-steps 2000 --run-dir runs/more
                                      # a new schedule from a model's weights; the data stream goes on

Checkpoints (Lightning, for resuming) go to RUN_DIR/checkpoints every few minutes; the model
itself is exported as safetensors + config.json to RUN_DIR/model (or --export-dir) at every
checkpoint and at the end. To stop a run early and cleanly (a final checkpoint and export, as at
--max-time), create the file RUN_DIR/STOP: the run stops after its current step and removes it.
Metrics are logged to RUN_DIR/logs/from_step_N/metrics.csv, one folder per run so a resumed run
never overwrites the learning curve of the previous ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from tsmojo.bundled import model_directory
from tsmojo.config import TSMojoConfig
from tsmojo.data.real import load_pretrain_panels, load_pretrain_series
from tsmojo.data.tasks import TaskMix, TaskSampler
from tsmojo.hardware import default_precision
from tsmojo.lightning_module import MODEL_CONFIG_KEY, BatchList, TSMojoLightningModule
from tsmojo.model import TRAINING_SUMMARY_FILE, TSMojoModel, read_training_summary


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run. Load from YAML with ``--config``."""

    model: dict = field(default_factory=dict)  # overrides of TSMojoConfig fields
    task_mix: dict = field(default_factory=dict)  # overrides of TaskMix fields (tsmojo/data/tasks.py)
    seed: int = 0
    horizon: int = 64
    tokens_per_batch: int = 9000  # batch size adapts to the context length to keep step cost flat
    max_batch_size: int = 512
    # Context lengths (time steps) by stage: each entry {until: step, lengths: [...], weights: [...]}
    # applies to steps before `until`; the last entry applies to every later step.
    context_curriculum: list = field(default_factory=lambda: [
        {"until": 1500, "lengths": [64, 128, 256, 512], "weights": [0.15, 0.25, 0.3, 0.3]},
        {"until": 4000, "lengths": [128, 256, 512, 1024, 2048], "weights": [0.1, 0.2, 0.3, 0.25, 0.15]},
        {"until": 0, "lengths": [256, 512, 1024, 2048, 4096, 8192], "weights": [0.1, 0.2, 0.25, 0.2, 0.15, 0.1]},
    ])  # fmt: skip
    # Scale windows (time steps; 0: the whole context) drawn uniformly per group of rows for each
    # training batch, so that one model reads several scalings; None: the model's scale_window.
    scale_windows: list | None = None
    # Each target row's loss is weighted by how much better seasonal naive predicts its context
    # than one-step naive, to this power (tsmojo.lightning_module.seasonal_copy_weights); 0: unweighted.
    seasonal_weight_exponent: float = 0.0
    learning_rate: float = 1e-3
    # Learning-rate multipliers by weight-name prefix, e.g. {"hint_gate.": 20.0} for a gate that
    # --init-from adds at zero (TSMojoLightningModule.parameter_groups).
    lr_scales: dict = field(default_factory=dict)
    # Which weights train (TSMojoLightningModule.set_trainable): "all", "head" (the quantile head
    # and the last block) or "hint_gate" (the hint shortcut's gate alone, on a frozen model).
    trainable: str = "all"
    # Decay of the moving average of the weights that validation scores and exports hold
    # (TSMojoLightningModule.averaged_model); 0: no average, the trained weights themselves.
    ema_decay: float = 0.0
    # Distillation: model directories or bundled names whose quantile forecasts the training
    # loss also follows, with weight distill_weight against 1 - distill_weight on the truth
    # (tsmojo.lightning_module.batch_loss). Empty: the truth alone.
    distill_from: list = field(default_factory=list)
    distill_weight: float = 0.5
    # Which of the teachers' forecasts a row follows (tsmojo.lightning_module.teacher_prediction):
    # "mean", their mean, or "best", the one closest to the row's future.
    distill_target: str = "mean"
    weight_decay: float = 0.01
    warmup_steps: int = 300
    max_steps: int = 6000
    use_real_series: bool = True
    validation_every: int = 250
    validation_batches: int = 4
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    threads: int = 2
    # Processes building training batches beside the step (DataLoader workers; --data-workers
    # overrides it). Any count draws the same stream in the same order, so a run may change it
    # on resume: one is enough for a CPU step, a GPU step outruns one.
    data_workers: int = 1

    @classmethod
    def from_yaml(cls, path: str | Path) -> PretrainConfig:
        return cls(**(yaml.safe_load(Path(path).read_text()) or {}))


def context_length_for(step: int, rng: np.random.Generator, config: PretrainConfig) -> int:
    """Curriculum: short contexts early, long ones later (as Chronos-2 does). Batches shrink as
    contexts grow (``tokens_per_batch``), and the linear-cost blocks keep a long-context step's
    cost per token flat, so the late stages reach 8,192 points at the price of shorter ones."""
    stages = config.context_curriculum
    stage = next((s for s in stages[:-1] if step < s["until"]), stages[-1])
    weights = np.asarray(stage["weights"], dtype=float)
    return int(rng.choice(stage["lengths"], p=weights / weights.sum()))


class PretrainStream(IterableDataset):
    """Endless stream of batches; batch ``i`` depends only on (seed, i), so runs are reproducible
    and a resumed run continues the sequence instead of repeating it. Under data parallelism,
    rank ``r`` of ``w`` takes batches ``i * w + r``: disjoint parts of the same stream. Read by a
    DataLoader with ``n`` workers, worker ``k`` builds every ``n``-th of the rank's batches from the
    ``k``-th on; the loader takes one batch from each worker in turn, so the order is unchanged."""

    def __init__(
        self,
        sampler: TaskSampler,
        config: PretrainConfig,
        patch_size: int,
        start_step: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.sampler, self.config, self.patch_size, self.start_step = sampler, config, patch_size, start_step
        self.rank, self.world_size = rank, world_size

    def batch(self, index: int) -> dict:
        rng = np.random.default_rng([self.config.seed, index])
        context_length = context_length_for(index // self.world_size, rng, self.config)
        tokens = context_length // self.patch_size + 1 + math.ceil(self.config.horizon / self.patch_size)
        batch_size = min(self.config.max_batch_size, max(16, self.config.tokens_per_batch // tokens))
        batch = self.sampler.sample(rng, batch_size, context_length, self.config.horizon)
        if self.config.scale_windows:
            choices = torch.tensor(self.config.scale_windows, dtype=torch.long)
            groups = batch["group_ids"]
            picks = torch.from_numpy(rng.integers(len(choices), size=int(groups.max()) + 1))
            batch["scale_windows"] = choices[picks][groups]
        return batch

    def __iter__(self):
        worker = get_worker_info()
        worker_id, num_workers = (worker.id, worker.num_workers) if worker is not None else (0, 1)
        step = self.start_step + worker_id
        while True:
            yield self.batch(step * self.world_size + self.rank)
            step += num_workers


def validation_cases() -> dict[str, tuple[TaskMix, int]]:
    """Held-out synthetic cases the training log tracks apart, as (task mix, context length):
    exact periodic copies, flat endings after motion, long contexts, energy and weather covariate
    tasks, trends that hold, and stable cycles under heavy noise."""
    plain = TaskMix(real_share=0.0, mixup_share=0.0, group_row_share=0.0, short_context_share=0.0, missing_share=0.0)
    return {
        "periodic": (dataclasses.replace(plain, generator_weights={"periodic_pattern": 1.0}), 1024),
        "flat_ending": (dataclasses.replace(plain, generator_weights={"flat_ending": 1.0}), 512),
        "long_context": (TaskMix(), 4096),
        "covariates": (
            dataclasses.replace(plain, group_row_share=1.0, group_task_weights=(0, 0, 0, 0.5, 0.5, 0)),
            2048,
        ),
        # Last: each case's batch is seeded by its position, so earlier cases keep their numbers.
        "steady_trend": (dataclasses.replace(plain, generator_weights={"steady_trend": 1.0}), 512),
        "noisy_seasonal": (dataclasses.replace(plain, generator_weights={"noisy_seasonal": 1.0}), 256),
    }


def validation_batches(sampler: TaskSampler, config: PretrainConfig) -> list[dict]:
    """Held-out batches, from seeds no training batch uses: ``config.validation_batches`` of the
    default training mix (``TaskMix()``, whatever the run's ``task_mix``, so that runs compare) at
    context 512 (logged as ``val_loss``), then one batch per validation case (``val_loss/<case>``)."""
    batches = []
    default_sampler = TaskSampler(sampler.real_series, TaskMix(), sampler.real_panels)
    for i in range(config.validation_batches):
        rng = np.random.default_rng([10_000 + config.seed, i])
        batches.append(default_sampler.sample(rng, 128, 512, config.horizon))
    longest = max(max(stage["lengths"]) for stage in config.context_curriculum)
    for i, (name, (mix, context_length)) in enumerate(validation_cases().items()):
        context_length = min(context_length, longest)
        rng = np.random.default_rng([20_000 + config.seed, i])
        case_sampler = TaskSampler(sampler.real_series, mix, sampler.real_panels)
        size = max(16, min(128, config.tokens_per_batch * 4 // (context_length // 16 + 5)))
        batches.append({**case_sampler.sample(rng, size, context_length, config.horizon), "case": name})
    return batches


class PretrainData(pl.LightningDataModule):
    """The training stream and the validation batches. Built when the trainer knows its rank,
    so every DDP process draws its own part of the stream."""

    def __init__(self, sampler: TaskSampler, config: PretrainConfig, patch_size: int, start_step: int) -> None:
        super().__init__()
        self.sampler, self.config, self.patch_size, self.start_step = sampler, config, patch_size, start_step

    def train_dataloader(self) -> DataLoader:
        if self.trainer is None:
            raise RuntimeError("the training stream is built by a trainer (it needs the process's rank)")
        rank, world_size = self.trainer.global_rank, self.trainer.world_size
        stream = PretrainStream(self.sampler, self.config, self.patch_size, self.start_step, rank, world_size)
        # Workers build batches while the step runs: data never waits on the model or back.
        workers = self.config.data_workers
        return DataLoader(stream, batch_size=None, num_workers=workers, persistent_workers=True, prefetch_factor=4)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(BatchList(validation_batches(self.sampler, self.config)), batch_size=None)


STOP_FILE = "STOP"  # created in a run directory, it stops the run cleanly after the current step


class ThroughputAndExport(pl.Callback):
    """Logs series/s, stops at the wall-clock budget or when ``stop_file`` exists, exports
    safetensors at each checkpoint."""

    def __init__(
        self,
        export_dir: Path,
        max_seconds: float | None,
        export_minutes: float,
        summary: dict,
        stop_file: Path | None = None,
    ) -> None:
        self.export_dir, self.max_seconds, self.export_seconds = export_dir, max_seconds, export_minutes * 60
        self.stop_file = stop_file
        self.summary = summary
        self.start = self.last_export = time.time()
        self.series = 0
        self.window_start, self.window_series = time.time(), 0
        self.exported = False

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        # Lightning runs checkpoint callbacks last, so this stops the run before a checkpoint or
        # an export could overwrite the last good weights with broken ones.
        if not all(bool(torch.isfinite(p).all()) for p in module.model.parameters()):
            raise RuntimeError(
                f"weights became non-finite at step {trainer.global_step}; the last checkpoint and export "
                "hold the weights before it"
            )
        size = torch.tensor(float(batch["context"].shape[0]))
        if trainer.world_size > 1:  # every rank counts every rank's series, and stops together
            size = trainer.strategy.reduce(size, reduce_op="sum")
        self.series += int(size)
        self.window_series += int(size)
        if trainer.global_step % 20 == 0:
            now = time.time()
            module.log("series_per_second", self.window_series / max(now - self.window_start, 1e-9))
            self.window_start, self.window_series = now, 0
        if time.time() - self.last_export > self.export_seconds:
            self.export(trainer, module)
        stop = self.max_seconds is not None and time.time() - self.start > self.max_seconds
        stop = stop or (self.stop_file is not None and self.stop_file.exists())
        if trainer.world_size > 1:
            stop = trainer.strategy.reduce_boolean_decision(stop, all=False)
        if stop:
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        self.export(trainer, module)

    def export(self, trainer, module) -> None:
        self.last_export, self.exported = time.time(), True
        if not trainer.is_global_zero:
            return
        module.averaged_model.save_pretrained(self.export_dir)
        elapsed = time.time() - self.start
        summary = dict(self.summary)
        summary["steps"] = summary.get("steps_before", 0) + int(trainer.global_step)
        summary["series_seen_total"] = summary.get("series_seen_total", 0) + self.series
        summary["wall_seconds_total"] = summary.get("wall_seconds_total", 0.0) + elapsed
        # Each run adds its own thread count: runs resumed with other settings must not rescale the past.
        threads = torch.get_num_threads() * trainer.world_size
        summary["thread_seconds_total"] = summary.get("thread_seconds_total", 0.0) + elapsed * threads
        summary["series_per_second_this_run"] = self.series / max(elapsed, 1e-9)
        (self.export_dir / TRAINING_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))


_TOTALS = ("series_seen_total", "wall_seconds_total", "thread_seconds_total")


def resumed_model_config(checkpoint: dict, config: PretrainConfig, init_from: str | None) -> TSMojoConfig:
    """The settings of the model a checkpoint holds, for ``--resume``.

    Checkpoints record them (``MODEL_CONFIG_KEY``). Older ones do not; for those, a run started
    with ``--init-from`` (named in its last export's summary) takes that model's settings under
    the recipe's, as its start did, and any other run the recipe's alone.
    """
    if MODEL_CONFIG_KEY in checkpoint:
        return TSMojoConfig.from_dict(checkpoint[MODEL_CONFIG_KEY])
    if init_from:
        source = TSMojoConfig.load(model_directory(init_from) / "config.json")
        return TSMojoConfig.from_dict({**source.to_dict(), **config.model})
    return TSMojoConfig(**config.model)


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '1h30m' or plain seconds -> seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise argparse.ArgumentTypeError(f"cannot read duration {text!r}; use e.g. 90s, 10m, 2h, 1h30m")
    return sum(float(v) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for v, u in parts)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="tsmojo pretrain", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", type=Path, help="YAML file with PretrainConfig fields")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/pretrain"), help="checkpoints, logs, export")
    parser.add_argument("--export-dir", type=Path, help="where to write the safetensors model (default RUN_DIR/model)")
    parser.add_argument("--max-time", type=parse_duration, help="wall-clock budget of this run, e.g. 10m or 2h")
    parser.add_argument("--max-steps", type=int, help="total optimizer steps (also the LR schedule length)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.ckpt")
    parser.add_argument(
        "--init-from",
        help="start from the weights of this model (a directory or a bundled model's name) with a fresh "
        "optimizer and LR schedule; "
        "the data stream continues after the steps that model was trained for",
    )
    parser.add_argument(
        "--precision",
        choices=["32-true", "bf16-mixed"],
        help="Lightning precision (default: bf16-mixed where the CPU or GPU has native bf16, else 32-true)",
    )
    parser.add_argument("--accelerator", choices=["cpu", "gpu"], default="cpu", help="where the steps run")
    parser.add_argument("--devices", type=int, default=1, help="processes (CPU) or GPUs per node; >1 runs DDP")
    parser.add_argument("--num-nodes", type=int, default=1, help="nodes of a multi-node DDP run (torchrun, SLURM)")
    parser.add_argument("--seed", type=int)
    parser.add_argument(
        "--data-workers", type=int, help="processes building batches (default: the config's data_workers, 1)"
    )
    parser.add_argument(
        "--compact",
        action="store_true",
        help="rewrite RUN_DIR/checkpoints/last.ckpt smaller (optimizer moments and weight average in bf16) and exit",
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batches, for smoke tests")
    return parser


def compact_checkpoint(path: Path) -> tuple[int, int]:
    """Rewrites the Lightning checkpoint at ``path`` with AdamW's moments and the moving average of
    the weights in bfloat16; returns its size in bytes before and after.

    This is the state a run spanning several sessions commits between them: the trained weights
    stay float32, and ``--resume`` reads the rest back as float32 (the optimizer and the average
    cast what they load to their weights' dtype), so a resumed run loses one bf16 rounding of
    its moments and average, once."""
    before = path.stat().st_size
    state = torch.load(path, map_location="cpu", weights_only=False)

    def to_bf16(value):
        return value.to(torch.bfloat16) if torch.is_tensor(value) and value.dtype == torch.float32 else value

    for optimizer in state.get("optimizer_states", []):
        for moments in optimizer["state"].values():
            moments.update({k: v if k == "step" else to_bf16(v) for k, v in moments.items()})
    weights = state["state_dict"]
    weights.update({k: to_bf16(v) for k, v in weights.items() if k.startswith("ema.module.")})
    torch.save(state, path)
    return before, path.stat().st_size


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.compact:
        last = args.run_dir / "checkpoints" / "last.ckpt"
        if not last.is_file():
            raise SystemExit(f"--compact: no checkpoint at {last}")
        before, after = compact_checkpoint(last)
        print(f"pretrain: {last} compacted, {before / 1e6:.1f} MB -> {after / 1e6:.1f} MB")
        return 0
    if args.init_from and args.resume:
        raise SystemExit("--init-from starts a new schedule and --resume continues one: pass only one")
    config = PretrainConfig.from_yaml(args.config) if args.config else PretrainConfig()
    # Checked before the model is built and the real data loaded, which take a while.
    unknown = sorted(set(config.task_mix) - {f.name for f in dataclasses.fields(TaskMix)})
    if unknown:
        raise SystemExit(f"task_mix: unknown TaskMix fields {unknown} (see tsmojo/data/tasks.py)")
    if args.seed is not None:
        config.seed = args.seed
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.data_workers is not None:
        config.data_workers = args.data_workers
    if config.data_workers < 1:
        raise SystemExit(f"data_workers must be at least 1, got {config.data_workers}")
    if args.tiny:
        config.model = TSMojoConfig.tiny(**{"patch_size": 8, **config.model}).to_dict()
        config.tokens_per_batch, config.max_batch_size, config.horizon = 200, 16, 16
        config.validation_batches, config.validation_every, config.use_real_series = 1, 5, False
        config.log_every = 1
        config.context_curriculum = [{"until": 0, "lengths": [64, 128, 256], "weights": [0.4, 0.4, 0.2]}]
    torch.set_num_threads(config.threads)
    pl.seed_everything(config.seed, workers=True, verbose=False)

    run_dir = args.run_dir
    checkpoint_dir, export_dir = run_dir / "checkpoints", args.export_dir or run_dir / "model"
    last = checkpoint_dir / "last.ckpt"
    if args.resume and not last.is_file():
        raise SystemExit(f"--resume: no checkpoint at {last}")
    export_dir.mkdir(parents=True, exist_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "pretrain_config.yaml").write_text(yaml.safe_dump(dataclasses.asdict(config)))

    carried: dict = {}  # totals of earlier runs: from this run's last export, or from the --init-from model
    start_step = 0
    if args.resume:
        checkpoint = torch.load(last, map_location="cpu", weights_only=True)
        start_step = int(checkpoint["global_step"])
        previous = read_training_summary(export_dir)
        carried = {k: previous[k] for k in (*_TOTALS, "steps_before", "init_from") if k in previous}
        model = TSMojoModel(resumed_model_config(checkpoint, config, carried.get("init_from")))
    elif args.init_from:
        try:
            source_dir = model_directory(args.init_from)
        except FileNotFoundError as error:
            raise SystemExit(f"--init-from: {error}") from error
        loaded = TSMojoModel.from_pretrained(source_dir)
        # Settings that leave every weight's shape alone (scaling window, rotary periods, context
        # limits, memory sizes) may change with the new schedule; a shape change cannot load.
        # Turning a hint on adds its embedding, which starts at zero.
        model = TSMojoModel(TSMojoConfig.from_dict({**loaded.config.to_dict(), **config.model}))
        try:
            missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        except RuntimeError as error:
            raise SystemExit(
                f"--init-from: {args.init_from} cannot take the model settings {config.model}: {error}"
            ) from error
        added = [k for k in missing if not k.startswith(("hint_embed.", "covariate_hint_embed.", "hint_gate."))]
        if added or unexpected:
            raise SystemExit(f"--init-from: {args.init_from} lacks weights {added} or has extra weights {unexpected}")
        model.train()
        source = read_training_summary(source_dir)
        carried = {
            "steps_before": int(source.get("steps", 0)),
            "init_from": str(args.init_from),
            **{k: source[k] for k in _TOTALS if k in source},
        }
    else:
        model = TSMojoModel(TSMojoConfig(**config.model))
    module = TSMojoLightningModule(
        model,
        config.learning_rate,
        config.weight_decay,
        config.warmup_steps,
        config.max_steps,
        trainable=config.trainable,
        seasonal_weight_exponent=config.seasonal_weight_exponent,
        lr_scales=config.lr_scales,
        ema_decay=config.ema_decay,
        teachers=[TSMojoModel.from_pretrained(model_directory(path)) for path in config.distill_from],
        distill_weight=config.distill_weight if config.distill_from else 0.0,
        distill_target=config.distill_target,
    )
    real = load_pretrain_series(min_length=config.horizon + 16) if config.use_real_series else []
    panels = load_pretrain_panels() if config.use_real_series else []
    sampler = TaskSampler(real, TaskMix(**config.task_mix), panels)
    summary: dict = {
        "parameters": sum(p.numel() for p in model.parameters()),
        "seed": config.seed,
        "real_series": len(real),
        "real_panels": len(panels),
        "pretrain_config": dataclasses.asdict(config),
        **carried,
    }
    stream_start = carried.get("steps_before", 0) + start_step
    data = PretrainData(sampler, config, model.config.patch_size, stream_start)
    device = torch.device("cuda" if args.accelerator == "gpu" else "cpu")
    precision = args.precision or default_precision(device)
    summary["precision"] = precision

    checkpoint = pl.callbacks.ModelCheckpoint(
        dirpath=checkpoint_dir,
        save_last=True,
        save_top_k=0,
        train_time_interval=timedelta(minutes=config.checkpoint_minutes),
        # A resumed copy of a run under another folder name (a fork) holds a last.ckpt that
        # Lightning does not take for its own; with a version counter it would checkpoint to
        # last-v1.ckpt and leave last.ckpt, the one --resume reads, at the fork's start.
        enable_version_counter=False,
    )
    stop_file = run_dir / STOP_FILE
    if stop_file.exists():  # left by a run that was asked to stop and did not get to remove it
        stop_file.unlink()
        print(f"pretrain: removed a stale {stop_file}")
    exporter = ThroughputAndExport(export_dir, args.max_time, config.checkpoint_minutes, summary, stop_file)
    distributed = args.devices * args.num_nodes > 1
    trainer = pl.Trainer(
        accelerator=args.accelerator,
        devices=args.devices,
        num_nodes=args.num_nodes,
        strategy="ddp" if distributed else "auto",
        precision=precision,
        max_steps=config.max_steps,
        max_epochs=-1,
        val_check_interval=config.validation_every,
        check_val_every_n_epoch=None,
        logger=pl.loggers.CSVLogger(run_dir, name="logs", version=f"from_step_{start_step}"),
        callbacks=[checkpoint, exporter],
        enable_progress_bar=False,
        gradient_clip_val=1.0,
        log_every_n_steps=config.log_every,
        num_sanity_val_steps=0,
        deterministic=False,
        use_distributed_sampler=False,
    )
    started = time.time()
    trainer.fit(module, datamodule=data, ckpt_path=str(last) if args.resume else None)
    if not exporter.exported:  # a resumed run that had already reached max_steps trains no step
        exporter.export(trainer, module)
    checkpoint_path = checkpoint_dir / "last.ckpt"
    trainer.save_checkpoint(checkpoint_path)
    if trainer.is_global_zero:
        stop_file.unlink(missing_ok=True)  # the request is served: the next --resume trains on
        print(
            f"pretrain: {trainer.global_step} steps, {exporter.series} series in {time.time() - started:.0f}s "
            f"({exporter.series / max(time.time() - started, 1e-9):.1f} series/s); model -> {export_dir}; "
            f"checkpoint -> {checkpoint_path}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
