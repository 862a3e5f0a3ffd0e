"""Learning curve of a pretraining run: validation loss/WQL and training loss against steps.

    python benchmarks/learning_curve.py RUN_DIR [--output benchmarks/results/learning_curve]

Reads every RUN_DIR/logs/**/metrics.csv (one per run of ``tsmojo pretrain``) and writes a CSV of the
validation points plus a PNG. Zero-shot accuracy of saved snapshots, if any, is read from
``benchmarks/results/snapshots.csv`` (columns: step, series_seen, MASE, WQL).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/learning_curve"))
    args = parser.parse_args(argv)
    logs = sorted((args.run_dir / "logs").rglob("metrics.csv"))
    if not logs:
        raise SystemExit(f"no metrics.csv under {args.run_dir / 'logs'}")
    metrics = pd.concat([pd.read_csv(p) for p in logs]).sort_values("step", kind="stable")
    validation = metrics.dropna(subset=["val_wql"])[["step", "val_loss", "val_wql"]]
    validation = validation.drop_duplicates("step", keep="last")
    training = metrics.dropna(subset=["train_quantile_loss"])[["step", "train_quantile_loss"]]
    training = training.groupby(training["step"] // 50 * 50).mean()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    validation.to_csv(args.output.with_suffix(".csv"), index=False)

    snapshots_path = args.output.parent / "snapshots.csv"
    panels = 3 if snapshots_path.is_file() else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 3.6))
    axes[0].plot(training.index, training["train_quantile_loss"], label="train (mean per 50 steps)")
    axes[0].plot(validation["step"], validation["val_loss"], "o-", label="validation")
    axes[0].set(xlabel="step", ylabel="pinball loss (scaled space)", title="loss")
    axes[0].legend()
    axes[1].plot(validation["step"], validation["val_wql"], "o-")
    axes[1].set(xlabel="step", ylabel="WQL", title="held-out synthetic validation WQL")
    if panels == 3:
        snapshots = pd.read_csv(snapshots_path)
        axes[2].plot(snapshots["step"], snapshots["MASE"], "o-", label="MASE")
        axes[2].plot(snapshots["step"], snapshots["WQL"], "s-", label="WQL")
        axes[2].axhline(1.0, color="grey", lw=0.8)
        axes[2].set(xlabel="step", ylabel="relative to seasonal naive", title="zero-shot, 12 eval datasets")
        axes[2].legend()
    fig.tight_layout()
    fig.savefig(args.output.with_suffix(".png"), dpi=100)
    print(f"wrote {args.output.with_suffix('.csv')} and {args.output.with_suffix('.png')}")
    print(validation.to_string(index=False))


if __name__ == "__main__":
    main()
