"""Inference and training cost of tsmojo-mini, against the Chronos-2 architecture of equal size.

Examples::

    python benchmarks/speed.py                 # everything, writes benchmarks/results/speed.{csv,md,png}
    python benchmarks/speed.py --quick         # contexts 512 and 2048 only
    python benchmarks/speed.py --skip-chronos2 --contexts 512,8192
    python benchmarks/speed.py --profile-context 32768 --threads 1   # where the time goes at 32k

Parts:

1. Forecast cost against context length (512 ... 131072 points, horizon 64, batch 16): series/s
   and peak memory. Each (model, context) point runs in a fresh subprocess; on CPU the memory is
   the process' peak resident set (``VmHWM``) and the growth of it during the forecasts
   (activations), on GPU ``torch.cuda.max_memory_allocated``. The comparison model is Chronos-2
   built from ``chronos-forecasting``'s own ``Chronos2Model`` with random weights, the same
   depth, width and heads as tsmojo-mini and a feed-forward width giving the same parameter
   count. It runs with its own context limit (8192: longer contexts are cut) and with the limit
   lifted. A point that fails for memory is marked ``oom``; after a point slower than
   ``--max-seconds`` the longer contexts of that model are marked ``skipped``.
2. One training step of tsmojo-mini (batch 64 x context 512 + horizon 64, forward, backward and
   AdamW step).
3. Throughput of tsmojo-mini at context 512 against statsforecast AutoETS (fits included) on the
   same 200 m4_hourly series, one CPU core each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO_ROOT, RESULTS_DIR, load_dataset  # noqa: E402
from tsmojo.bundled import BUNDLED_DIR, DEFAULT_MODEL  # noqa: E402

DEFAULT_MODEL_PATH = BUNDLED_DIR / DEFAULT_MODEL
CONTEXTS = (512, 2048, 8192, 32768, 131072)
CHRONOS2_NATIVE_CONTEXT = 8192
# "-bf16" rows run the same model under torch.autocast(bfloat16): weights stay float32.
MODELS = ("tsmojo", "tsmojo-bf16", "chronos2", "chronos2_unlimited", "chronos2_unlimited-bf16")


# ----------------------------------------------------------------------------------------------
# Measurement helpers (run inside the worker subprocess)
# ----------------------------------------------------------------------------------------------
def _proc_status_kib(field: str) -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def rss_mib() -> float:
    return _proc_status_kib("VmRSS") / 1024


def peak_rss_mib() -> float:
    return _proc_status_kib("VmHWM") / 1024


def load_tsmojo(model_path: str | Path, device: str):
    from tsmojo import TSMojoModel

    return TSMojoModel.from_pretrained(model_path, device=device).eval()


def chronos2_config_for(tsmojo_config, d_ff: int, context_limit: int):
    """A Chronos-2 config at tsmojo's width/depth/heads/patch/quantiles; ``d_ff`` sets the size."""
    from chronos.chronos2.config import Chronos2CoreConfig

    chronos_config = {
        "context_length": context_limit,
        "input_patch_size": tsmojo_config.patch_size,
        "input_patch_stride": tsmojo_config.patch_size,
        "output_patch_size": tsmojo_config.patch_size,
        "quantiles": list(tsmojo_config.quantiles),
        "use_reg_token": True,
        "use_arcsinh": True,
        "max_output_patches": 64,
        # Time encodings stay scaled as in the released model (8192); only the cut is lifted.
        "time_encoding_scale": CHRONOS2_NATIVE_CONTEXT,
    }
    return Chronos2CoreConfig(
        d_model=tsmojo_config.d_model,
        d_kv=tsmojo_config.d_model // tsmojo_config.num_heads,
        d_ff=d_ff,
        num_layers=tsmojo_config.num_layers,
        num_heads=tsmojo_config.num_heads,
        dropout_rate=0.0,
        attn_implementation="sdpa",
        chronos_config=chronos_config,
    )


def count_parameters(module) -> int:
    return sum(p.numel() for p in module.parameters())


def matched_chronos2_d_ff(tsmojo_config, target_params: int) -> int:
    """The feed-forward width (multiple of 16) whose Chronos-2 parameter count is closest to ``target_params``."""
    from chronos.chronos2.model import Chronos2Model

    def params(d_ff: int) -> int:
        return count_parameters(Chronos2Model(chronos2_config_for(tsmojo_config, d_ff, CHRONOS2_NATIVE_CONTEXT)))

    # The count is affine in d_ff: two evaluations give the slope.
    low, high = 256, 1024
    p_low, p_high = params(low), params(high)
    slope = (p_high - p_low) / (high - low)
    d_ff = int(round((low + (target_params - p_low) / slope) / 16) * 16)
    return max(16, d_ff)


def build_model(name: str, model_path: str | Path, device: str, context: int, d_ff: int | None = None):
    """(callable forecasting a (B, L) batch for 64 steps, model, parameter count)."""
    import torch

    tsmojo = load_tsmojo(model_path, device)
    name, bf16 = name.removesuffix("-bf16"), name.endswith("-bf16")
    if bf16:
        inner = build_model(name, model_path, device, context, d_ff)

        def run_bf16(batch: torch.Tensor, horizon: int) -> torch.Tensor:
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
                return inner[0](batch, horizon)

        return run_bf16, inner[1], inner[2]
    if name == "tsmojo":
        # Lift the cut: the benchmark sets the context itself.
        tsmojo.config.max_context_length = max(context, tsmojo.config.max_context_length)

        def run(batch: torch.Tensor, horizon: int) -> torch.Tensor:
            return tsmojo.forecast(batch, horizon)

        return run, tsmojo, count_parameters(tsmojo)

    from chronos.chronos2.model import Chronos2Model

    d_ff = d_ff or matched_chronos2_d_ff(tsmojo.config, count_parameters(tsmojo))
    limit = CHRONOS2_NATIVE_CONTEXT if name == "chronos2" else max(context, CHRONOS2_NATIVE_CONTEXT)
    torch.manual_seed(0)
    model = Chronos2Model(chronos2_config_for(tsmojo.config, d_ff, limit)).to(device).eval()
    patch = model.chronos_config.output_patch_size

    @torch.no_grad()
    def run(batch: torch.Tensor, horizon: int) -> torch.Tensor:
        return model(context=batch, num_output_patches=-(-horizon // patch)).quantile_preds

    return run, model, count_parameters(model)


def worker_inference(args: argparse.Namespace) -> dict:
    """One (model, context) point: forecasts of a (batch, context) random-walk batch."""
    import torch

    device = args.device
    torch.manual_seed(0)
    # A tiny warm-up at a short context initialises kernels and allocator without costing much.
    run, model, params = build_model(args.model, args.model_path, device, args.context, args.d_ff)
    with torch.no_grad():
        run(torch.randn(2, 256, device=device).cumsum(-1), args.horizon)
    batch = torch.randn(args.batch, args.context, device=device).cumsum(-1)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    before = rss_mib()
    times = []
    with torch.no_grad():
        while len(times) < args.repeats:
            start = time.perf_counter()
            out = run(batch, args.horizon)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            if sum(times) > args.max_seconds:
                break
    assert out.shape[0] == args.batch and torch.isfinite(out).all(), "non-finite forecasts"
    seconds = float(np.median(times))
    result = {
        "model": args.model,
        "context": args.context,
        "batch": args.batch,
        "horizon": args.horizon,
        "params": params,
        "seconds_per_batch": seconds,
        "series_per_s": args.batch / seconds,
        "repeats": len(times),
        "peak_rss_mib": peak_rss_mib(),
        "activation_mib": max(0.0, peak_rss_mib() - before),
        "status": "ok",
    }
    if device.startswith("cuda"):
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return result


def worker_train(args: argparse.Namespace) -> dict:
    """Training steps of tsmojo-mini: forward + backward + AdamW on (batch, context + horizon)."""
    import torch

    torch.manual_seed(0)
    model = load_tsmojo(args.model_path, args.device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    horizon = args.horizon
    series = torch.randn(args.batch, args.context + horizon, device=args.device).cumsum(-1)
    context, target = series[:, : args.context], series[:, args.context :]
    patches = -(-horizon // model.config.patch_size)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(context, num_output_patches=patches, future_target=target).loss
        loss.backward()
        optimizer.step()
        return float(loss)

    step()  # warm-up (allocates optimizer state)
    before = rss_mib()
    times = []
    while len(times) < args.repeats:
        start = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - start)
        if sum(times) > args.max_seconds:
            break
    assert math.isfinite(loss)
    seconds = float(np.median(times))
    return {
        "model": "tsmojo",
        "context": args.context,
        "batch": args.batch,
        "horizon": horizon,
        "params": count_parameters(model),
        "seconds_per_step": seconds,
        "series_per_s": args.batch / seconds,
        "repeats": len(times),
        "peak_rss_mib": peak_rss_mib(),
        "activation_mib": max(0.0, peak_rss_mib() - before),
        "status": "ok",
    }


def worker_profile(args: argparse.Namespace) -> dict:
    """Where one (batch, context) forecast spends its time, by ``torch.profiler`` self CPU time:
    the linear layers' matrix products, fused attention (SDPA), and everything else."""
    import torch

    torch.manual_seed(0)
    run, _, params = build_model(args.model, args.model_path, args.device, args.context, args.d_ff)
    batch = torch.randn(args.batch, args.context).cumsum(-1)
    with torch.no_grad():
        run(batch[:2, :256], args.horizon)  # warm-up
        with torch.profiler.profile() as profile:
            run(batch, args.horizon)
    self_seconds = {event.key: event.self_cpu_time_total / 1e6 for event in profile.key_averages()}
    linear = sum(self_seconds.get(key, 0.0) for key in ("aten::mm", "aten::addmm"))
    sdpa = sum(seconds for key, seconds in self_seconds.items() if "scaled_dot_product" in key)
    total = sum(self_seconds.values())
    return {
        "model": args.model,
        "context": args.context,
        "params": params,
        "profiled_seconds": total,
        "linear_seconds": linear,
        "sdpa_seconds": sdpa,
        "other_seconds": total - linear - sdpa,
        "status": "ok",
    }


def worker_main(argv: Sequence[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["inference", "train", "profile"])
    parser.add_argument("--model", default="tsmojo")
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=120.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--d-ff", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--memory-limit-gib", type=float)
    args = parser.parse_args(argv)
    if args.memory_limit_gib:
        # Fail with a MemoryError instead of waking the OOM killer (which could hit other jobs).
        limit = int(args.memory_limit_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        workers = {"inference": worker_inference, "train": worker_train, "profile": worker_profile}
        result = workers[args.kind](args)
    except (MemoryError, RuntimeError) as exc:
        message = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        oom = isinstance(exc, MemoryError) or "memory" in message.lower() or "alloc" in message.lower()
        if not oom:
            raise
        result = {"model": args.model, "context": args.context, "status": "oom", "error": message}
    print("RESULT " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------------------------
# Driver
# ----------------------------------------------------------------------------------------------
def worker_arguments(args: argparse.Namespace, kind: str, *point: str) -> list[str]:
    """Command line of one worker subprocess: ``kind``, the point's own flags, and the settings
    every point shares (model path, device, memory cap, threads)."""
    shared = [
        f"--model-path={args.model_path}",
        f"--device={args.device}",
        f"--memory-limit-gib={args.memory_limit_gib}",
    ]
    if args.threads:
        shared.append(f"--threads={args.threads}")
    return [kind, *point, *shared]


def run_worker(arguments: list[str], timeout: float) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "_worker", *arguments]
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "timeout"}
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    killed = proc.returncode in (-9, 137)
    return {"status": "oom" if killed else "error", "error": " | ".join(tail)[:300]}


def scaling_exponent(contexts: Sequence[float], values: Sequence[float], low: int = 8192) -> float:
    """Least-squares slope of log(value) against log(context) over contexts >= ``low``."""
    points = [
        (c, v) for c, v in zip(contexts, values, strict=True) if c >= low and v is not None and np.isfinite(v) and v > 0
    ]
    if len(points) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def inference_sweep(args: argparse.Namespace, d_ff: int) -> pd.DataFrame:
    rows = []
    models = [m for m in MODELS if not (args.skip_chronos2 and m.startswith("chronos2"))]
    for model in models:
        stop_reason = None
        for context in args.contexts:
            if model == "chronos2" and context > CHRONOS2_NATIVE_CONTEXT and not args.include_cut_points:
                # The limited model cuts the context to 8192: its cost stays that of 8192.
                continue
            if stop_reason:
                rows.append({"model": model, "context": context, "status": "skipped", "error": stop_reason})
                print(f"{model:20s} {context:7d}  skipped ({stop_reason})", flush=True)
                continue
            arguments = worker_arguments(
                args,
                "inference",
                f"--model={model}",
                f"--context={context}",
                f"--batch={args.batch}",
                f"--horizon={args.horizon}",
                f"--repeats={args.repeats}",
                f"--max-seconds={args.max_seconds}",
                f"--d-ff={d_ff}",
            )
            result = run_worker(arguments, timeout=args.timeout)
            result.setdefault("model", model)
            result.setdefault("context", context)
            rows.append(result)
            if result["status"] == "ok":
                print(
                    f"{model:20s} {context:7d}  {result['seconds_per_batch']:9.3f} s/batch "
                    f"{result['series_per_s']:9.2f} series/s  peak RSS {result['peak_rss_mib']:8.0f} MiB "
                    f"(+{result['activation_mib']:.0f})",
                    flush=True,
                )
                if result["seconds_per_batch"] > args.max_seconds:
                    stop_reason = f"the {context}-point batch took {result['seconds_per_batch']:.0f} s"
            else:
                print(f"{model:20s} {context:7d}  {result['status']}: {result.get('error', '')}", flush=True)
                stop_reason = f"{result['status']} at {context}"
    return pd.DataFrame(rows)


def ets_throughput(args: argparse.Namespace) -> dict:
    """tsmojo-mini vs AutoETS on the same series, both on one CPU core, fits included."""
    import torch
    from statsforecast import StatsForecast
    from statsforecast.models import AutoETS

    dataset = load_dataset("m4_hourly")
    h, m, n, context = dataset.prediction_length, dataset.seasonality, args.ets_series, 512
    contexts = [c[-context:] for c in dataset.contexts[:n]]
    torch.set_num_threads(1)
    model = load_tsmojo(args.model_path, "cpu")
    batch = torch.tensor(np.stack([np.pad(c, (context - len(c), 0), constant_values=np.nan) for c in contexts]))
    model.forecast(batch[:2], h)  # warm-up
    start = time.perf_counter()
    for chunk in batch.split(64):
        model.forecast(chunk, h)
    tsmojo_seconds = time.perf_counter() - start

    df = pd.concat(
        [pd.DataFrame({"unique_id": i, "ds": np.arange(len(c)), "y": c.astype(float)}) for i, c in enumerate(contexts)]
    )
    sf = StatsForecast(models=[AutoETS(season_length=m)], freq=1, n_jobs=1)
    sf.forecast(df=df[df["unique_id"] < 2], h=h)  # warm-up: numba compilation is not counted
    start = time.perf_counter()
    sf.forecast(df=df, h=h, level=[80])
    ets_seconds = time.perf_counter() - start
    return {
        "series": n,
        "context": context,
        "horizon": h,
        "tsmojo_seconds": tsmojo_seconds,
        "tsmojo_series_per_s": n / tsmojo_seconds,
        "auto_ets_seconds": ets_seconds,
        "auto_ets_series_per_s": n / ets_seconds,
        "speedup": ets_seconds / tsmojo_seconds,
    }


def plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame[frame["status"] == "ok"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for model, group in ok.groupby("model", sort=False):
        group = group.sort_values("context")
        axes[0].plot(group["context"], group["seconds_per_batch"] / group["batch"], "o-", label=model)
        axes[1].plot(group["context"], group["activation_mib"].clip(lower=1), "o-", label=model)
    axes[0].set_ylabel("seconds per series (batch 16, horizon 64)")
    axes[1].set_ylabel("peak memory growth during forecasts (MiB)")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context length (points)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("Inference cost vs context length (CPU)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(
    frame: pd.DataFrame, exponents: dict, train: dict | None, ets: dict | None, params: dict, command: str
) -> str:
    lines = [f"Reproduce: `{command}`", ""]
    lines.append(
        f"Parameters: tsmojo-mini {params.get('tsmojo', 0):,}; Chronos-2 (same d_model/layers/heads, "
        f"d_ff={params.get('d_ff')}) {params.get('chronos2', 0):,}."
    )
    lines += ["", "### Inference: batch 16, horizon 64", ""]
    lines.append("| model | context | s / batch | series/s | peak RSS (MiB) | memory growth (MiB) | status |")
    lines.append("|---|---|---|---|---|---|---|")
    for _, r in frame.iterrows():
        ok = r.get("status") == "ok"
        cells = [
            str(r["model"]),
            f"{int(r['context']):,}",
            f"{r['seconds_per_batch']:.3f}" if ok else "-",
            f"{r['series_per_s']:.2f}" if ok else "-",
            f"{r['peak_rss_mib']:.0f}" if ok else "-",
            f"{r['activation_mib']:.0f}" if ok else "-",
            str(r["status"]) + ("" if ok or not isinstance(r.get("error"), str) else f" ({r['error']})"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "### Scaling exponents, 8,192 to 131,072 points (log-log slope)", ""]
    lines.append("| model | time | memory growth |")
    lines.append("|---|---|---|")
    for model, (t, mem) in exponents.items():
        lines.append(f"| {model} | {t:.2f} | {mem:.2f} |" if np.isfinite(t) else f"| {model} | - | - |")
    if train:
        lines += ["", "### Training step (tsmojo-mini, CPU)", ""]
        lines.append("| batch | context + horizon | s / step | series/s | peak RSS (MiB) |")
        lines.append("|---|---|---|---|---|")
        lines.append(
            f"| {train['batch']} | {train['context']} + {train['horizon']} | {train['seconds_per_step']:.3f} | "
            f"{train['series_per_s']:.1f} | {train['peak_rss_mib']:.0f} |"
        )
    if ets:
        lines += ["", f"### Throughput against AutoETS ({ets['series']} m4_hourly series, context 512, one core)", ""]
        lines.append("| model | seconds | series/s |")
        lines.append("|---|---|---|")
        lines.append(f"| tsmojo-mini | {ets['tsmojo_seconds']:.2f} | {ets['tsmojo_series_per_s']:.1f} |")
        lines.append(
            f"| AutoETS (fit + forecast) | {ets['auto_ets_seconds']:.2f} | {ets['auto_ets_series_per_s']:.1f} |"
        )
        lines.append("")
        lines.append(f"tsmojo-mini is {ets['speedup']:.1f}x faster than AutoETS here.")
    return "\n".join(lines) + "\n"


def targets_summary(frame: pd.DataFrame, exponents: dict) -> list[str]:
    """The issue's targets: exponent <= 1.15; >= 3x faster and less memory than Chronos-2 at 32,768."""
    out = []
    t = exponents.get("tsmojo", (float("nan"),))[0]
    verdict = "n/a (needs two contexts >= 8192)" if not np.isfinite(t) else ("met" if t <= 1.15 else "NOT met")
    out.append(f"tsmojo time exponent {t:.2f} (target <= 1.15): {verdict}")
    ok = frame[frame["status"] == "ok"].set_index(["model", "context"])
    compared = False
    for ours, theirs in (("tsmojo", "chronos2_unlimited"), ("tsmojo-bf16", "chronos2_unlimited"),
                         ("tsmojo-bf16", "chronos2_unlimited-bf16")):  # fmt: skip
        if (ours, 32768) not in ok.index or (theirs, 32768) not in ok.index:
            continue
        compared = True
        a, b = ok.loc[(ours, 32768)], ok.loc[(theirs, 32768)]
        speed = b["seconds_per_batch"] / a["seconds_per_batch"]
        out.append(
            f"at 32,768 points {ours} is {speed:.2f}x faster than {theirs} (target >= 3x): "
            f"{'met' if speed >= 3 else 'NOT met'}"
        )
        out.append(
            f"at 32,768 points peak RSS {ours} {a['peak_rss_mib']:.0f} MiB vs {theirs} {b['peak_rss_mib']:.0f} MiB, "
            f"memory growth {a['activation_mib']:.0f} vs {b['activation_mib']:.0f} MiB: "
            f"{'met' if a['peak_rss_mib'] < b['peak_rss_mib'] else 'NOT met'}"
        )
    if not compared:
        out.append("32,768-point comparison with Chronos-2 unavailable (not run or failed)")
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="contexts 512 and 2048, short parts 2 and 3")
    parser.add_argument("--contexts", help="comma-separated context lengths")
    parser.add_argument("--model-path", default=str(DEFAULT_MODEL_PATH))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--horizon", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3, help="timed forecasts per point (median)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="slower points stop a model's sweep")
    parser.add_argument("--timeout", type=float, default=600.0, help="wall-time limit of one point's subprocess")
    parser.add_argument("--memory-limit-gib", type=float, default=12.0, help="address-space cap of a subprocess")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads per subprocess (1: fastest on a loaded 2-core CPU)"
    )
    parser.add_argument("--skip-chronos2", action="store_true")
    parser.add_argument("--include-cut-points", action="store_true", help="also time chronos2 beyond its cut")
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-ets", action="store_true")
    parser.add_argument("--ets-series", type=int, default=200)
    parser.add_argument("--output-dir", default=str(RESULTS_DIR))
    parser.add_argument("--output-name", help="file stem; default speed (speed_quick with --quick)")
    parser.add_argument(
        "--profile-context",
        type=int,
        help="instead of the sweep: profile one batch of this context for tsmojo and Chronos-2 (unlimited) "
        "and write <stem>_profile.md",
    )
    args = parser.parse_args(argv)
    if args.contexts:
        args.contexts = [int(c) for c in args.contexts.split(",")]
    else:
        args.contexts = [512, 2048] if args.quick else list(CONTEXTS)
    if args.quick:
        args.ets_series = min(args.ets_series, 40)
    return args


def profile_split(args: argparse.Namespace, d_ff: int, path: Path, command: str) -> None:
    """Time split of one forecast batch per model (see :func:`worker_profile`), as a markdown table."""
    models = ["tsmojo"] if args.skip_chronos2 else ["tsmojo", "chronos2_unlimited"]
    lines = [
        f"Reproduce: `{command}`",
        "",
        f"`torch.profiler` self CPU time of one forecast, batch {args.batch} x context {args.profile_context:,},"
        f" horizon {args.horizon}, {args.threads or 'default'} thread(s). The profiler adds some overhead.",
        "",
        "| model | profiled total (s) | linear-layer products: mm, addmm (s) | SDPA attention (s) "
        "| everything else (s) |",
        "|---|---|---|---|---|",
    ]
    for model in models:
        point = [f"--model={model}", f"--context={args.profile_context}", f"--batch={args.batch}"]
        point += [f"--horizon={args.horizon}", f"--d-ff={d_ff}"]
        result = run_worker(worker_arguments(args, "profile", *point), timeout=args.timeout)
        if result.get("status") != "ok":
            lines.append(f"| {model} | {result.get('status')}: {result.get('error', '')} | | | |")
            continue
        lines.append(
            f"| {model} | {result['profiled_seconds']:.2f} | {result['linear_seconds']:.2f} | "
            f"{result['sdpa_seconds']:.2f} | {result['other_seconds']:.2f} |"
        )
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), f"\nwrote {path}", sep="\n", flush=True)


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    if argv is None and len(sys.argv) > 1 and sys.argv[1] == "_worker":
        worker_main(sys.argv[2:])
        return pd.DataFrame()
    args = parse_args(argv)
    shown = ["python benchmarks/speed.py", *(argv if argv is not None else sys.argv[1:])]
    command = " ".join(shown)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    stem = args.output_name or ("speed_quick" if args.quick else "speed")
    start = time.perf_counter()

    tsmojo = load_tsmojo(args.model_path, "cpu")
    params = {"tsmojo": count_parameters(tsmojo)}
    d_ff = 0
    if not args.skip_chronos2:
        from chronos.chronos2.model import Chronos2Model

        d_ff = matched_chronos2_d_ff(tsmojo.config, params["tsmojo"])
        chronos = Chronos2Model(chronos2_config_for(tsmojo.config, d_ff, CHRONOS2_NATIVE_CONTEXT))
        params |= {"chronos2": count_parameters(chronos), "d_ff": d_ff}
        del chronos
    print(f"parameters: {params}", flush=True)
    if args.profile_context:
        profile_split(args, d_ff, output_dir / f"{stem}_profile.md", command)
        return pd.DataFrame()
    frame = inference_sweep(args, d_ff)
    frame["params"] = frame["model"].map(lambda m: params.get("tsmojo" if m.startswith("tsmojo") else "chronos2"))
    exponents = {}
    for model, group in frame[frame["status"] == "ok"].groupby("model", sort=False):
        exponents[model] = (
            scaling_exponent(group["context"], group["seconds_per_batch"]),
            scaling_exponent(group["context"], group["activation_mib"]),
        )
        print(f"scaling exponent 8k-131k {model}: time {exponents[model][0]:.2f} memory {exponents[model][1]:.2f}")

    train = None
    if not args.skip_train:
        train_args = worker_arguments(
            args,
            "train",
            "--context=512",
            f"--batch={16 if args.quick else 64}",
            "--horizon=64",
            f"--repeats={2 if args.quick else 5}",
        )
        train = run_worker(train_args, timeout=args.timeout)
        if train.get("status") == "ok":
            print(f"training step: {train['seconds_per_step']:.3f} s, {train['series_per_s']:.1f} series/s", flush=True)
        else:
            print(f"training step failed: {train}", flush=True)
            train = None
    ets = None
    if not args.skip_ets:
        ets = ets_throughput(args)
        print(
            f"throughput: tsmojo {ets['tsmojo_series_per_s']:.1f} series/s, AutoETS {ets['auto_ets_series_per_s']:.1f}"
            f" series/s ({ets['speedup']:.1f}x)",
            flush=True,
        )

    columns = ["model", "context", "batch", "horizon", "params", "seconds_per_batch", "series_per_s"]
    columns += ["peak_rss_mib", "activation_mib", "repeats", "status", "error"]
    frame = frame.reindex(columns=columns)
    extra = []
    if train:
        extra.append(
            {
                "model": "tsmojo (train step)",
                "context": train["context"],
                "batch": train["batch"],
                "horizon": train["horizon"],
                "params": train["params"],
                "seconds_per_batch": train["seconds_per_step"],
                "series_per_s": train["series_per_s"],
                "peak_rss_mib": train["peak_rss_mib"],
                "activation_mib": train["activation_mib"],
                "repeats": train["repeats"],
                "status": "ok",
            }
        )
    if ets:
        extra.append(
            {
                "model": "tsmojo (m4_hourly, 1 core)",
                "context": 512,
                "batch": ets["series"],
                "horizon": ets["horizon"],
                "seconds_per_batch": ets["tsmojo_seconds"],
                "series_per_s": ets["tsmojo_series_per_s"],
                "status": "ok",
            }
        )
        extra.append(
            {
                "model": "auto_ets (m4_hourly, 1 core)",
                "context": 512,
                "batch": ets["series"],
                "horizon": ets["horizon"],
                "seconds_per_batch": ets["auto_ets_seconds"],
                "series_per_s": ets["auto_ets_series_per_s"],
                "status": "ok",
            }
        )
    pd.concat([frame, pd.DataFrame(extra, columns=columns)], ignore_index=True).to_csv(
        output_dir / f"{stem}.csv", index=False, float_format="%.6g"
    )
    plot(frame, output_dir / f"{stem}.png")
    summary = targets_summary(frame, exponents)
    report = markdown(frame, exponents, train, ets, params, command)
    report += "\n### Targets\n\n" + "\n".join(f"- {line}" for line in summary) + "\n"
    total = time.perf_counter() - start
    report += f"\nTotal wall time {total:.0f} s on {os.cpu_count()} CPU cores ({args.device}).\n"
    (output_dir / f"{stem}.md").write_text(report)
    print("\n" + report)
    print(f"wrote {output_dir / stem}.{{csv,md,png}}")
    return frame


if __name__ == "__main__":
    main()
