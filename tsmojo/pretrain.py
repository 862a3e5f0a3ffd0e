"""``tsmojo pretrain``: resumable CPU pretraining on synthetic and real (pretrain-only) series.

    tsmojo pretrain --max-time 10m --run-dir runs/pretrain            # from scratch
    tsmojo pretrain --max-time 2h --run-dir runs/pretrain --resume    # continue, train more
    tsmojo pretrain --init-from tsmojo/checkpoints/tsmojo-mini --max-steps 2000 --run-dir runs/more
                                      # a new schedule from a model's weights; the data stream goes on

Checkpoints (Lightning, for resuming) go to RUN_DIR/checkpoints every few minutes; the model
itself is exported as safetensors + config.json to RUN_DIR/model (or --export-dir) at every
checkpoint and at the end. Metrics are logged to RUN_DIR/logs/from_step_N/metrics.csv, one
folder per run so a resumed run never overwrites the learning curve of the previous ones.
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
from torch.utils.data import DataLoader, IterableDataset

from tsmojo.config import TSMojoConfig
from tsmojo.data.real import load_pretrain_series
from tsmojo.data.tasks import TaskSampler
from tsmojo.lightning_module import TSMojoLightningModule
from tsmojo.model import TSMojoModel


@dataclass
class PretrainConfig:
    """Everything that defines a pretraining run. Load from YAML with ``--config``."""

    model: dict = field(default_factory=dict)  # overrides of TSMojoConfig fields
    seed: int = 0
    horizon: int = 64
    tokens_per_batch: int = 9000  # batch size adapts to the context length to keep step cost flat
    max_batch_size: int = 512
    short_curriculum_steps: int = 1500  # contexts up to 512 first, up to 1024 afterwards
    learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 300
    max_steps: int = 6000
    use_real_series: bool = True
    validation_every: int = 250
    validation_batches: int = 4
    checkpoint_minutes: float = 5.0
    log_every: int = 10
    threads: int = 2

    @classmethod
    def from_yaml(cls, path: str | Path) -> PretrainConfig:
        return cls(**(yaml.safe_load(Path(path).read_text()) or {}))


def context_length_for(step: int, rng: np.random.Generator, config: PretrainConfig) -> int:
    """Curriculum: short contexts early, long ones later (as Chronos-2 does)."""
    if step < config.short_curriculum_steps:
        return int(rng.choice([64, 128, 256, 512], p=[0.15, 0.25, 0.3, 0.3]))
    return int(rng.choice([128, 256, 512, 1024], p=[0.15, 0.25, 0.35, 0.25]))


class PretrainStream(IterableDataset):
    """Endless stream of batches; batch ``i`` depends only on (seed, i), so runs are reproducible
    and a resumed run continues the sequence instead of repeating it."""

    def __init__(self, sampler: TaskSampler, config: PretrainConfig, patch_size: int, start_step: int = 0) -> None:
        self.sampler, self.config, self.patch_size, self.start_step = sampler, config, patch_size, start_step

    def batch(self, index: int) -> dict:
        rng = np.random.default_rng([self.config.seed, index])
        context_length = context_length_for(index, rng, self.config)
        tokens = context_length // self.patch_size + 1 + math.ceil(self.config.horizon / self.patch_size)
        batch_size = min(self.config.max_batch_size, max(16, self.config.tokens_per_batch // tokens))
        return self.sampler.sample(rng, batch_size, context_length, self.config.horizon)

    def __iter__(self):
        index = self.start_step
        while True:
            yield self.batch(index)
            index += 1


def validation_batches(sampler: TaskSampler, config: PretrainConfig) -> list[dict]:
    """Held-out synthetic batches (a seed no training batch uses), context 512."""
    batches = []
    for i in range(config.validation_batches):
        rng = np.random.default_rng([10_000 + config.seed, i])
        batches.append(sampler.sample(rng, 128, 512, config.horizon))
    return batches


class ThroughputAndExport(pl.Callback):
    """Logs series/s, stops at the wall-clock budget, exports safetensors at each checkpoint."""

    def __init__(self, export_dir: Path, max_seconds: float | None, export_minutes: float, summary: dict) -> None:
        self.export_dir, self.max_seconds, self.export_seconds = export_dir, max_seconds, export_minutes * 60
        self.summary = summary
        self.start = self.last_export = time.time()
        self.series = 0
        self.window_start, self.window_series = time.time(), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        size = int(batch["context"].shape[0])
        self.series += size
        self.window_series += size
        if trainer.global_step % 20 == 0:
            now = time.time()
            module.log("series_per_second", self.window_series / max(now - self.window_start, 1e-9))
            self.window_start, self.window_series = now, 0
        if time.time() - self.last_export > self.export_seconds:
            self.export(trainer, module)
        if self.max_seconds is not None and time.time() - self.start > self.max_seconds:
            trainer.should_stop = True

    def on_train_end(self, trainer, module) -> None:
        self.export(trainer, module)

    def export(self, trainer, module) -> None:
        self.last_export = time.time()
        module.model.save_pretrained(self.export_dir)
        elapsed = time.time() - self.start
        summary = dict(self.summary)
        summary["steps"] = summary.get("steps_before", 0) + int(trainer.global_step)
        summary["series_seen_total"] = summary.get("series_seen_total", 0) + self.series
        summary["wall_seconds_total"] = summary.get("wall_seconds_total", 0.0) + elapsed
        # Each run adds its own thread count: runs resumed with other settings must not rescale the past.
        summary["thread_seconds_total"] = summary.get("thread_seconds_total", 0.0) + elapsed * torch.get_num_threads()
        summary["series_per_second_this_run"] = self.series / max(elapsed, 1e-9)
        (self.export_dir / "training_summary.json").write_text(json.dumps(summary, indent=2))


_TOTALS = ("series_seen_total", "wall_seconds_total", "thread_seconds_total")


def _read_summary(model_dir: Path) -> dict:
    path = Path(model_dir) / "training_summary.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h', '1h30m' or plain seconds -> seconds."""
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhd])", text)
    if not parts or "".join(a + b for a, b in parts) != text:
        raise argparse.ArgumentTypeError(f"cannot read duration {text!r}; use e.g. 90s, 10m, 2h, 1h30m")
    return sum(float(v) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for v, u in parts)


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(prog="tsmojo pretrain", description=__doc__,
                                               formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, help="YAML file with PretrainConfig fields")
    parser.add_argument("--run-dir", type=Path, default=Path("runs/pretrain"), help="checkpoints, logs, export")
    parser.add_argument("--export-dir", type=Path, help="where to write the safetensors model (default RUN_DIR/model)")
    parser.add_argument("--max-time", type=parse_duration, help="wall-clock budget of this run, e.g. 10m or 2h")
    parser.add_argument("--max-steps", type=int, help="total optimizer steps (also the LR schedule length)")
    parser.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.ckpt")
    parser.add_argument(
        "--init-from",
        type=Path,
        help="start from the weights of this model directory with a fresh optimizer and LR schedule; "
        "the data stream continues after the steps that model was trained for",
    )
    parser.add_argument("--seed", type=int)
    parser.add_argument("--tiny", action="store_true", help="a tiny model and batches, for smoke tests")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.init_from and args.resume:
        raise SystemExit("--init-from starts a new schedule and --resume continues one: pass only one")
    config = PretrainConfig.from_yaml(args.config) if args.config else PretrainConfig()
    if args.seed is not None:
        config.seed = args.seed
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.tiny:
        config.model = TSMojoConfig.tiny(**{"patch_size": 8, **config.model}).to_dict()
        config.tokens_per_batch, config.max_batch_size, config.horizon = 200, 16, 16
        config.validation_batches, config.validation_every, config.use_real_series = 1, 5, False
        config.log_every = 1
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
    if args.init_from:
        model = TSMojoModel.from_pretrained(args.init_from).train()  # loaded for inference, in eval mode
        clash = {k: v for k, v in config.model.items() if getattr(model.config, k) != v}
        if clash:
            raise SystemExit(f"--init-from: {args.init_from} does not have the configured model settings {clash}")
        source = _read_summary(args.init_from)
        carried = {"steps_before": int(source.get("steps", 0)), "init_from": str(args.init_from),
                   **{k: source[k] for k in _TOTALS if k in source}}
    else:
        model = TSMojoModel(TSMojoConfig(**config.model))
    module = TSMojoLightningModule(model, config.learning_rate, config.weight_decay, config.warmup_steps,
                                   config.max_steps)
    real = load_pretrain_series(min_length=config.horizon + 16) if config.use_real_series else []
    sampler = TaskSampler(real)
    start_step = 0
    if args.resume:
        start_step = int(torch.load(last, map_location="cpu", weights_only=True)["global_step"])
        previous = _read_summary(export_dir)
        carried = {k: previous[k] for k in (*_TOTALS, "steps_before", "init_from") if k in previous}
    summary: dict = {"parameters": sum(p.numel() for p in model.parameters()), "seed": config.seed,
                     "real_series": len(real), "pretrain_config": dataclasses.asdict(config), **carried}
    stream = PretrainStream(sampler, config, model.config.patch_size, carried.get("steps_before", 0) + start_step)
    train_loader = DataLoader(stream, batch_size=None, num_workers=1, persistent_workers=True,
                              prefetch_factor=4)
    val_loader = DataLoader(validation_batches(sampler, config), batch_size=None)

    checkpoint = pl.callbacks.ModelCheckpoint(dirpath=checkpoint_dir, save_last=True, save_top_k=0,
                                              train_time_interval=timedelta(minutes=config.checkpoint_minutes))
    exporter = ThroughputAndExport(export_dir, args.max_time, config.checkpoint_minutes, summary)
    trainer = pl.Trainer(
        accelerator="cpu", devices=1, max_steps=config.max_steps, max_epochs=-1,
        val_check_interval=config.validation_every, check_val_every_n_epoch=None,
        logger=pl.loggers.CSVLogger(run_dir, name="logs", version=f"from_step_{start_step}"),
        callbacks=[checkpoint, exporter], enable_progress_bar=False, gradient_clip_val=1.0,
        log_every_n_steps=config.log_every, num_sanity_val_steps=0, deterministic=False,
    )
    started = time.time()
    trainer.fit(module, train_loader, val_loader, ckpt_path=str(last) if args.resume else None)
    checkpoint_path = checkpoint_dir / "last.ckpt"
    trainer.save_checkpoint(checkpoint_path)
    print(f"pretrain: {trainer.global_step} steps, {exporter.series} series in {time.time() - started:.0f}s "
          f"({exporter.series / max(time.time() - started, 1e-9):.1f} series/s); model -> {export_dir}; "
          f"checkpoint -> {checkpoint_path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
