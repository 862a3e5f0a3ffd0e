"""Which model size learns most per CPU-second: an equal-compute comparison from scratch.

    python benchmarks/model_size.py --minutes 10 --threads 1

Each size (the tsmojo-mini architecture, ~2M parameters, and a wider one, ~7.5M) is pretrained
from scratch with ``tsmojo pretrain`` on the same recipe, data stream and seed, for the same
wall-clock budget of training steps on the same number of threads. The budget becomes a step
count per size: two short probe runs (10 and 40 steps) measure each size's seconds per step with
the start-up left out, and the LR schedule (warm-up, cosine decay) is fitted to the steps the
budget buys, so neither run is cut off mid-schedule. The sizes run one after the other, so
anything else on the machine weighs on both; the probes are taken right before each run for the same reason.

Scored on the held-out synthetic validation (the pretraining log's ``val_loss``, one value per
validation, so the report also gives the curve against seconds) and on the named synthetic cases
of ``benchmarks/synthetic_validation.py``. No real benchmark data is used, so the choice is not
tuned on the zero-shot datasets.

Results go to ``benchmarks/results/model_size.{csv,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import pandas as pd
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from precision import run_pretrain  # noqa: E402
from synthetic_validation import validation_losses  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

# Width is what grows: at four layers the blocks stay the ones the kernels are tuned for.
SIZES: dict[str, dict] = {
    "2M (tsmojo-mini)": {},
    "7.5M (d_model 256)": {"d_model": 256, "num_heads": 8, "d_ff": 1024},
}
PROBE_STEPS = (10, 40)  # two probe lengths: their difference leaves out the start-up time


def recipe_for(base: dict, size: dict, **overrides: object) -> dict:
    recipe = {**base, **overrides}
    recipe["model"] = {**base.get("model", {}), **size}
    return recipe


def seconds_per_step(run_dir: Path, config_path: Path) -> float:
    """Wall time per step, from two short runs (start-up, data loading and validation excluded)."""
    walls = []
    for steps in PROBE_STEPS:
        run_pretrain(config_path, run_dir / str(steps), "bf16-mixed", "--max-steps", str(steps))
        walls.append(json.loads((run_dir / str(steps) / "model" / "training_summary.json").read_text()))
    return (walls[1]["wall_seconds_total"] - walls[0]["wall_seconds_total"]) / (walls[1]["steps"] - walls[0]["steps"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="wall-clock budget of training steps per size")
    parser.add_argument("--learning-rate", type=float, default=5e-4, help="peak LR of both sizes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--recipe", default="tsmojo/recipes/mini_v4.yaml", help="data mix and curriculum")
    parser.add_argument("--report-only", action="store_true", help="re-render the table and plot from the saved CSVs")
    args = parser.parse_args(argv)
    if args.report_only:
        curves = pd.read_csv(RESULTS / "model_size_curves.csv")
        report(pd.read_csv(RESULTS / "model_size.csv"), curves, args, argv)
        return
    base = yaml.safe_load((REPO / args.recipe).read_text())
    runs = REPO / "runs" / "model_size"
    runs.mkdir(parents=True, exist_ok=True)
    budget = args.minutes * 60
    curves, rows = [], []
    for name, size in SIZES.items():
        slug = name.split()[0]
        probe_config = runs / f"probe-{slug}.yaml"
        probe_config.write_text(yaml.safe_dump(recipe_for(base, size, threads=args.threads, validation_every=10**6)))
        per_step = seconds_per_step(runs / f"probe-{slug}", probe_config)
        steps = max(50, int(budget / per_step))
        config = recipe_for(base, size, threads=args.threads, max_steps=steps, warmup_steps=max(10, steps // 20),
                            learning_rate=args.learning_rate, validation_every=max(10, steps // 8))  # fmt: skip
        config_path = runs / f"recipe-{slug}.yaml"
        config_path.write_text(yaml.safe_dump(config))
        run_dir = runs / slug
        log, seconds = run_pretrain(config_path, run_dir, "bf16-mixed", "--max-time", f"{budget * 1.15:.0f}s")
        summary = json.loads((run_dir / "model" / "training_summary.json").read_text())
        curve = log.dropna(subset=["val_loss"])[["step", "val_loss", "val_wql"]].assign(size=name)
        curve["seconds"] = curve["step"] * per_step
        curves.append(curve)
        rows.append(
            dict(
                size=name,
                model=str(run_dir / "model"),
                parameters=summary["parameters"],
                seconds_per_step=per_step,
                steps=summary["steps"],
                series_seen=summary["series_seen_total"],
                run_seconds=seconds,
                skipped_steps=int(log["skipped_steps"].max()) if "skipped_steps" in log else 0,
            )
        )
    # Scored after both runs, so that scoring never overlaps a timed run.
    cases = validation_losses([row["model"] for row in rows])
    frame = pd.DataFrame([{**row, **cases[row["model"]]} for row in rows])
    frame.to_csv(RESULTS / "model_size.csv", index=False)
    pd.concat(curves, ignore_index=True).to_csv(RESULTS / "model_size_curves.csv", index=False)
    report(frame, pd.concat(curves, ignore_index=True), args, argv)


RUN_FIELDS = ("size", "model", "parameters", "seconds_per_step", "steps", "series_seen", "run_seconds", "skipped_steps")


def report(frame: pd.DataFrame, curves: pd.DataFrame, args: argparse.Namespace, argv: list[str] | None) -> None:
    """The markdown table and the plot of ``benchmarks/results/model_size.*``."""
    case_names = [c for c in frame.columns if c not in RUN_FIELDS]  # val_loss, then the named cases
    command = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only"]
    lines = [
        "# model size at equal compute",
        "",
        f"`python benchmarks/model_size.py {' '.join(shlex.quote(a) for a in command)}`",
        "",
        f"From scratch, recipe `{args.recipe}` (data mix, contexts) with peak LR {args.learning_rate:g} and a cosine "
        f"schedule fitted to the steps {args.minutes:g} minutes buy on {args.threads} thread(s), bf16-mixed; each "
        f"run also stops at 1.15x that budget. Held-out synthetic validation (quantile loss on scaled values, the "
        "recipe's validation batches; lower is better).",
        "",
        "| size | parameters | s/step (probe) | steps | run seconds | skipped (non-finite) | series seen | "
        + " | ".join(case_names)
        + " |",
        "|---|---|---|---|---|---|---|" + "---|" * len(case_names),
    ]
    for row in frame.to_dict("records"):
        cells = " | ".join(f"{row[c]:.4f}" for c in case_names)
        lines.append(
            f"| {row['size']} | {row['parameters']:,} | {row['seconds_per_step']:.2f} | {row['steps']} | "
            f"{row['run_seconds']:.0f} | {row['skipped_steps']} | {row['series_seen']:,} | {cells} |"
        )
    text = "\n".join(lines) + "\n"
    (RESULTS / "model_size.md").write_text(text)
    print(text)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for size, curve in curves.groupby("size", sort=False):
        ax.plot(curve["seconds"] / 60, curve["val_loss"], marker="o", label=size)
    ax.set_xlabel(f"minutes of training steps ({args.threads} thread(s))")
    ax.set_ylabel("validation quantile loss")
    ax.set_title("equal compute: 2M vs 7.5M parameters")
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "model_size.png", dpi=120)


if __name__ == "__main__":
    main()
