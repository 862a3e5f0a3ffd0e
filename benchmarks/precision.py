"""float32 against bf16 on this CPU: training throughput, inference throughput, learning quality.

    python benchmarks/precision.py train --threads 2 --repeats 6            # series/s per step
    python benchmarks/precision.py train --threads 2 --compile              # adds bf16 + torch.compile
    python benchmarks/precision.py inference --threads 2 --series 4096      # TSMojoPipeline.predict
    python benchmarks/precision.py learning --steps 600                     # two runs from scratch
    python benchmarks/precision.py processes --threads 2 --steps 100        # 1 process x 2 threads vs DDP 2 x 1

``train`` times forward + backward + AdamW of the tsmojo-mini architecture on pretraining
batches of a recipe's last curriculum stage (``--recipe``, default mini_v5: contexts of 64 to
8,192 points), every mode on the same batches, interleaved repeat by repeat so that load on the
machine hits every mode alike. bf16 runs under
``torch.autocast("cpu", torch.bfloat16)``, which is what Lightning's ``bf16-mixed`` does. It
also times the data generation of those batches, to report the share of a step spent in data
(the pretraining loop builds them in a DataLoader worker, overlapped with the step).

``inference`` times ``TSMojoPipeline.predict`` (input parsing and output included) on synthetic
series of 512 points, horizon 24, with the bundled model, per dtype, interleaved.

Both add "chunked kernels" rows: the same code with the short-sequence paths turned off (dense
attention up to ``DENSE_MAX_LENGTH`` tokens, fused attention for inference up to
``FUSED_MAX_LENGTH``, a one-chunk SSD scan up to ``SINGLE_CHUNK_MAX_LENGTH``, and contexts of a
few patches left unpadded, ``TSMojoModel.padded_context_length``), which is how every step ran
before those paths existed. The rest
of the code stays current, so that row is if anything faster than the code before them.

``learning`` runs ``tsmojo pretrain`` from scratch twice (``--precision 32-true`` and
``bf16-mixed``) for ``--steps`` steps on the same data stream and compares the held-out
synthetic validation losses; it plots both curves.

``processes`` runs ``tsmojo pretrain`` end to end per mode: float32 and bf16 in one process with
``--threads`` threads, and bf16 as ``--threads`` DDP processes of one thread each. Small ops scale
poorly over intra-op threads; whole processes do not share them.

Every kind first tunes malloc with ``tsmojo.tune_cpu_allocator()``, as the ``tsmojo`` command lines
do; ``--allocator glibc`` keeps the C library's defaults instead (results then go to
``precision_<kind>_glibc_malloc.*``).

Results go to ``benchmarks/results/precision_<kind>.{csv,md}`` (and ``.png`` for learning).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
import yaml

if TYPE_CHECKING:
    from tsmojo.pretrain import PretrainConfig

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def _bf16(enabled: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


@contextlib.contextmanager
def chunked_kernels_only(enabled: bool = True):
    """Within the block, every sequence runs as it did before the short-sequence paths: the PyTorch
    backend's chunked attention and SSD scan at every length, and contexts padded to whole chunks
    of patches even when all their tokens fit in one window."""
    import tsmojo.kernels.attention as attention
    import tsmojo.kernels.ssd as ssd
    from tsmojo.model import TSMojoModel

    saved = attention.DENSE_MAX_LENGTH, attention.FUSED_MAX_LENGTH, ssd.SINGLE_CHUNK_MAX_LENGTH
    padded_context_length = TSMojoModel.padded_context_length

    def whole_chunks(model: TSMojoModel, length: int, num_future: int) -> int:
        # A window's worth of future tokens never fits in one window with the context: the rule
        # then pads to whole chunks, as it did for every context before.
        return padded_context_length(model, length, model.config.window)

    if enabled:
        attention.DENSE_MAX_LENGTH = attention.FUSED_MAX_LENGTH = ssd.SINGLE_CHUNK_MAX_LENGTH = 0
        TSMojoModel.padded_context_length = whole_chunks  # type: ignore[method-assign]
    try:
        yield
    finally:
        attention.DENSE_MAX_LENGTH, attention.FUSED_MAX_LENGTH, ssd.SINGLE_CHUNK_MAX_LENGTH = saved
        TSMojoModel.padded_context_length = padded_context_length  # type: ignore[method-assign]


def training_batches(count: int, seed: int, config: PretrainConfig) -> list[dict]:
    """Pretraining batches of the recipe ``config``'s last curriculum stage, data seed ``seed``
    (synthetic tasks only, so the benchmark needs no data folder)."""
    from tsmojo.data.tasks import TaskSampler
    from tsmojo.pretrain import PretrainStream

    config = dataclasses.replace(config, seed=seed)
    stream = PretrainStream(TaskSampler(), config, patch_size=16, start_step=10_000)
    batches, seconds = [], []
    for index in range(count):
        start = time.perf_counter()
        batches.append(stream.batch(10_000 + index))
        seconds.append(time.perf_counter() - start)
    for batch, spent in zip(batches, seconds):
        batch["data_seconds"] = spent
    return batches


def bench_train(args: argparse.Namespace) -> pd.DataFrame:
    from tsmojo.config import TSMojoConfig
    from tsmojo.lightning_module import batch_loss
    from tsmojo.model import TSMojoModel
    from tsmojo.pretrain import PretrainConfig

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    recipe = PretrainConfig.from_yaml(REPO / "tsmojo" / "recipes" / f"{args.recipe}.yaml")
    base = TSMojoModel(TSMojoConfig(**recipe.model)).train()  # the recipe's tsmojo-mini architecture
    modes = ["float32, chunked kernels", "float32", "bf16-mixed, chunked kernels", "bf16-mixed"]
    modes += ["bf16-mixed+compile"] if args.compile else []
    models = {mode: copy.deepcopy(base) for mode in modes}
    optimizers = {mode: torch.optim.AdamW(m.parameters(), lr=1e-4) for mode, m in models.items()}
    runners = {mode: models[mode] for mode in modes}
    compile_seconds = None
    if args.compile:
        runners["bf16-mixed+compile"] = torch.compile(models["bf16-mixed+compile"])

    batches = training_batches(args.repeats + 1, seed=args.seed, config=recipe)

    def step(mode: str, batch: dict) -> float:
        optimizer = optimizers[mode]
        optimizer.zero_grad(set_to_none=True)
        start = time.perf_counter()
        with _bf16(mode.startswith("bf16")), chunked_kernels_only(mode.endswith("chunked kernels")):
            loss, _ = batch_loss(runners[mode], batch)
            loss.backward()
        torch.nn.utils.clip_grad_norm_(models[mode].parameters(), 1.0)
        optimizer.step()
        return time.perf_counter() - start

    for mode in modes:  # warm-up; for the compiled mode this is the compilation
        start = time.perf_counter()
        step(mode, batches[0])
        if mode.endswith("compile"):
            compile_seconds = time.perf_counter() - start
    rows = []
    for repeat, batch in enumerate(batches[1:]):
        for mode in modes:
            seconds = step(mode, batch)
            rows.append(dict(mode=mode, repeat=repeat, rows=int(batch["context"].shape[0]),
                             context=int(batch["context"].shape[1]), seconds=seconds,
                             data_seconds=batch["data_seconds"]))  # fmt: skip
    frame = pd.DataFrame(rows)
    summary = frame.groupby("mode", sort=False).agg(
        steps=("seconds", "size"), rows=("rows", "sum"), seconds=("seconds", "sum"),
        data_seconds=("data_seconds", "sum"),
    )  # fmt: skip
    summary["series_per_s"] = summary["rows"] / summary["seconds"]
    summary["speedup"] = summary["series_per_s"] / summary.loc["float32, chunked kernels", "series_per_s"]
    summary["data_share"] = summary["data_seconds"] / (summary["data_seconds"] + summary["seconds"])
    summary = summary.reset_index()
    lines = [
        f"Training step of the tsmojo-mini architecture ({sum(p.numel() for p in base.parameters()):,} parameters), "
        f"{args.threads} thread(s), {args.repeats} batches of the {args.recipe} recipe's last stage (contexts "
        f"{sorted(set(frame['context']))}), every mode on the same batches, interleaved.",
        "",
        "| mode | steps | series | seconds | series/s | vs float32, chunked kernels | data share |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in summary.itertuples():
        lines.append(
            f"| {row.mode} | {row.steps} | {row.rows} | {row.seconds:.2f} | {row.series_per_s:.1f} | "
            f"{row.speedup:.2f}x | {row.data_share:.1%} |"
        )
    if compile_seconds is not None:
        lines += ["", f"torch.compile: first step (compilation) took {compile_seconds:.0f} s."]
    write_report("train", summary, lines, args)
    return summary


def bench_inference(args: argparse.Namespace) -> pd.DataFrame:
    from tsmojo import TSMojoPipeline
    from tsmojo.pipeline import MAX_BATCH_WORKERS

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    t = np.arange(args.context)
    series = [
        50 + 10 * np.sin(2 * np.pi * t / rng.choice([7, 12, 24]) + rng.uniform(0, 6)) + rng.normal(size=args.context)
        for _ in range(args.series)
    ]
    pipelines = {dtype: TSMojoPipeline.from_pretrained(args.model, dtype=dtype) for dtype in ("float32", "bfloat16")}
    for pipeline in pipelines.values():
        pipeline.predict(series[:64], prediction_length=args.horizon, context_length=args.context)
    # (label, dtype, chunked kernels only, most batches side by side); the first is the code the
    # speed issue measured, the last of each dtype what a pipeline does by default.
    modes = []
    for dtype in pipelines:
        modes += [
            (f"{dtype}, chunked kernels, one batch at a time", dtype, True, 1),
            (f"{dtype}, one batch at a time", dtype, False, 1),
            (dtype, dtype, False, MAX_BATCH_WORKERS),
        ]
    rows = []
    for repeat in range(args.repeats):
        for label, dtype, chunked, workers in modes:
            pipelines[dtype].max_batch_workers = workers
            start = time.perf_counter()
            with chunked_kernels_only(chunked):
                pipelines[dtype].predict(series, prediction_length=args.horizon, context_length=args.context)
            rows.append(dict(dtype=label, repeat=repeat, seconds=time.perf_counter() - start))
    frame = pd.DataFrame(rows)
    summary = frame.groupby("dtype", sort=False)["seconds"].median().rename("median_seconds").reset_index()
    summary["series_per_s"] = args.series / summary["median_seconds"]
    baseline = summary.loc[summary["dtype"] == "float32, chunked kernels, one batch at a time", "series_per_s"].iloc[0]
    summary["speedup"] = summary["series_per_s"] / baseline
    lines = [
        f"`TSMojoPipeline.predict` of {args.series} series x {args.context} points, horizon {args.horizon}, "
        f"model {args.model}, {args.threads} thread(s), median of {args.repeats} interleaved repeats "
        "(input parsing and output included).",
        "",
        "| dtype | median s | series/s | vs float32, chunked kernels, one batch at a time |",
        "|---|---|---|---|",
    ]
    for row in summary.itertuples():
        lines.append(f"| {row.dtype} | {row.median_seconds:.2f} | {row.series_per_s:.0f} | {row.speedup:.2f}x |")
    write_report("inference", summary, lines, args)
    return summary


def run_pretrain(config_path: Path, run_dir: Path, precision: str, *extra: str) -> tuple[pd.DataFrame, float]:
    """``tsmojo pretrain`` in a subprocess: its metrics log and its run time in seconds."""
    command = [sys.executable, "-m", "tsmojo.pretrain", "--config", str(config_path), "--run-dir", str(run_dir),
               "--precision", precision, *extra]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    return pd.read_csv(run_dir / "logs" / "from_step_0" / "metrics.csv"), seconds


def bench_learning(args: argparse.Namespace) -> pd.DataFrame:
    runs = REPO / "runs" / "precision_learning"
    recipe = yaml.safe_load((REPO / "tsmojo" / "recipes" / "mini_stage1.yaml").read_text())
    recipe.update(max_steps=args.steps, validation_every=max(1, args.steps // 6), threads=args.threads,
                  warmup_steps=min(recipe.get("warmup_steps", 200), args.steps // 4))  # fmt: skip
    runs.mkdir(parents=True, exist_ok=True)
    config_path = runs / "recipe.yaml"
    config_path.write_text(yaml.safe_dump(recipe))
    curves = []
    for precision in ("32-true", "bf16-mixed"):
        log, seconds = run_pretrain(config_path, runs / precision, precision, "--max-steps", str(args.steps))
        validation = log.dropna(subset=["val_loss"])[["step", "val_loss", "val_wql"]].assign(precision=precision)
        validation["run_seconds"] = seconds
        curves.append(validation)
    frame = pd.concat(curves, ignore_index=True)
    final = frame.groupby("precision", sort=False).last().reset_index()
    reference = final.loc[final["precision"] == "32-true", "val_loss"].iloc[0]
    final["relative_to_float32"] = final["val_loss"] / reference - 1
    lines = [
        f"Two `tsmojo pretrain` runs from scratch, {args.steps} steps of the mini_stage1 recipe, "
        f"{args.threads} thread(s), same seed and data stream; held-out synthetic validation (context 512).",
        "",
        "| precision | final val_loss | final val_wql | vs float32 | run seconds |",
        "|---|---|---|---|---|",
    ]
    for row in final.itertuples():
        lines.append(
            f"| {row.precision} | {row.val_loss:.4f} | {row.val_wql:.4f} | {row.relative_to_float32:+.2%} | "
            f"{row.run_seconds:.0f} |"
        )
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for precision, curve in frame.groupby("precision", sort=False):
        ax.plot(curve["step"], curve["val_loss"], marker="o", label=precision)
    ax.set_xlabel("step")
    ax.set_ylabel("validation quantile loss")
    ax.set_title("tsmojo-mini from scratch: float32 vs bf16-mixed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "precision_learning.png", dpi=120)
    frame.to_csv(RESULTS / "precision_learning_curves.csv", index=False)
    write_report("learning", final, lines, args)
    return final


def bench_processes(args: argparse.Namespace) -> pd.DataFrame:
    """``tsmojo pretrain`` end to end on the same cores: one process with ``--threads`` intra-op
    threads against ``--threads`` DDP processes of one thread each (gloo)."""
    runs = REPO / "runs" / "precision_processes"
    recipe = yaml.safe_load((REPO / "tsmojo" / "recipes" / "mini_v2.yaml").read_text())
    recipe.update(max_steps=args.steps, validation_every=10**6, checkpoint_minutes=10**6, use_real_series=False,
                  log_every=1, context_curriculum=recipe["context_curriculum"][-1:])  # fmt: skip
    recipe.pop("model")  # the tsmojo-mini architecture, without a checkpoint to load
    runs.mkdir(parents=True, exist_ok=True)
    modes = [("32-true", 1, args.threads), ("bf16-mixed", 1, args.threads), ("bf16-mixed", args.threads, 1)]
    rows = []
    for precision, processes, threads in modes:
        name = f"{precision}, {processes} process(es) x {threads} thread(s)"
        config_path = runs / f"recipe-{processes}x{threads}.yaml"
        config_path.write_text(yaml.safe_dump({**recipe, "threads": threads}))
        run_dir = runs / f"{precision}-{processes}x{threads}"
        log, _ = run_pretrain(config_path, run_dir, precision, "--devices", str(processes))
        windows = log["series_per_second"].dropna().to_numpy()[1:]  # the first 20 steps warm up
        rows.append(dict(mode=name, windows=len(windows), series_per_s=float(np.median(windows))))
    summary = pd.DataFrame(rows)
    summary["speedup"] = summary["series_per_s"] / summary["series_per_s"].iloc[0]
    lines = [
        f"`tsmojo pretrain` of the tsmojo-mini architecture on the mini_v2 long stage (synthetic data), "
        f"{args.steps} steps per mode on {args.threads} cores; series/s is the median over 20-step windows "
        "after the first (all ranks' series counted), data generation in DataLoader workers included.",
        "",
        "| mode | windows | series/s | vs float32 |",
        "|---|---|---|---|",
    ]
    for row in summary.itertuples():
        lines.append(f"| {row.mode} | {row.windows} | {row.series_per_s:.1f} | {row.speedup:.2f}x |")
    write_report("processes", summary, lines, args)
    return summary


def write_report(kind: str, summary: pd.DataFrame, lines: list[str], args: argparse.Namespace) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/precision.py " + " ".join(shlex.quote(a) for a in args.argv)
    name = f"precision_{kind}" + ("" if args.allocator == "tuned" else "_glibc_malloc")
    summary.to_csv(RESULTS / f"{name}.csv", index=False)
    cpu = {"avx512_bf16": bool(torch.cpu._is_avx512_bf16_supported()), "amx": bool(torch.cpu._is_amx_tile_supported())}
    allocator = (
        "malloc tuned by `tsmojo.tune_cpu_allocator()`, as the tsmojo command lines run"
        if args.allocator == "tuned"
        else "glibc's default malloc settings"
    )
    text = "\n".join(
        [f"# precision: {kind}", "", f"`{command}`", "", *lines, "", f"CPU: {json.dumps(cpu)}; {allocator}.", ""]
    )
    (RESULTS / f"{name}.md").write_text(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("kind", choices=["train", "inference", "learning", "processes"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--compile", action="store_true", help="train: also bf16 under torch.compile")
    parser.add_argument("--model", default="tsmojo-mini", help="inference: bundled name or model directory")
    parser.add_argument("--recipe", default="mini_v5", help="train: recipe (tsmojo/recipes/NAME.yaml) of the batches")
    parser.add_argument("--series", type=int, default=4096, help="inference: series per call")
    parser.add_argument("--context", type=int, default=512, help="inference: points per series")
    parser.add_argument("--horizon", type=int, default=24, help="inference: prediction length")
    parser.add_argument("--steps", type=int, default=600, help="learning, processes: steps per run")
    parser.add_argument(
        "--allocator",
        choices=["tuned", "glibc"],
        default="tuned",
        help="tuned: tsmojo.tune_cpu_allocator() first, as the command lines do; glibc: the C library's "
        "defaults (results go to precision_<kind>_glibc_malloc.*)",
    )
    args = parser.parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    if args.allocator == "tuned":
        from tsmojo import tune_cpu_allocator

        if not tune_cpu_allocator():
            raise SystemExit("--allocator tuned: this C library is not glibc; pass --allocator glibc")
    kinds = dict(train=bench_train, inference=bench_inference, learning=bench_learning, processes=bench_processes)
    kinds[args.kind](args)


if __name__ == "__main__":
    main()
