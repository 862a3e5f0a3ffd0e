"""Does the model read its covariates? Ablation and group-attention mass on the fev-bench tasks.

    python benchmarks/covariate_ablation.py [--model tsmojo-mini] [--windows 5] [--context-length 2048]

For the last ``--windows`` evaluation windows of each task in ``shared/datasets/covariates`` it
forecasts the target (the first target of a multivariate task) three ways through
``TSMojoPipeline.predict``:

- with the known covariates as they are;
- with the covariates' future values replaced by their past mean (the future information ablated);
- with the covariates shifted 24 steps later (so their future no longer lines up with the target).

It reports how far the median moves, relative to the target's scale over the window's past
(mean absolute step change), and the share of the target row's group attention, per layer,
that goes to covariate rows rather than to itself. A model that uses its covariates moves its
forecast when they are ablated and puts attention on them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsmojo import TSMojoPipeline  # noqa: E402
from tsmojo.data.real import shared_datasets_dir  # noqa: E402
from tsmojo.layers import GroupAttention  # noqa: E402


class AttentionShare:
    """Records, for every group-attention layer, the attention mass row 0 of each group puts on
    the other rows (its covariates), averaged over positions and heads."""

    def __init__(self, pipeline: TSMojoPipeline) -> None:
        self.shares: dict[int, list[float]] = {}
        layers = [m for m in pipeline.model.modules() if isinstance(m, GroupAttention)]
        for index, layer in enumerate(layers):
            layer.register_forward_hook(self.hook(index, layer))

    def hook(self, index: int, layer: GroupAttention):
        def record(module, inputs, output) -> None:
            x, observed, layout = inputs
            for rows in layout.buckets:
                groups, size = rows.shape
                members = rows.clamp(min=0)
                q, k = module.qk(x[members].float()).view(groups, size, x.shape[1], 2, module.heads, -1).unbind(3)
                scores = torch.einsum("githd,gjthd->gthij", q, k) / module.head_dim**0.5
                readable = (observed[members] & (rows >= 0)[..., None]).permute(0, 2, 1)[:, :, None, None, :]
                allowed = readable | torch.eye(size, dtype=torch.bool)
                probs = torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)
                target_row = probs[..., 0, :]  # (G, T, heads, size): what row 0 reads
                self.shares.setdefault(index, []).append(float(1 - target_row[..., 0].mean()))

        return record


def windows_of(folder: Path, count: int) -> list[dict]:
    """The last ``count`` evaluation windows of a task as predict() inputs, with their truths."""
    meta = json.loads((folder / "meta.json").read_text())
    frame = pd.read_parquet(folder / "data.parquet")
    covariates = meta["known_covariates"]
    series = frame[frame["unique_id"] == frame["unique_id"].iloc[0]].sort_values("ds")
    target = series["y"].to_numpy(dtype=float)
    if meta.get("fev_bench_task", "").startswith("uci"):
        target = np.where(target == -200, np.nan, target)
    values = {c: series[c].to_numpy(dtype=float) for c in covariates}
    horizon, step = meta["prediction_length"], meta["window_step"]
    first = len(target) + meta["initial_cutoff"]
    cutoffs = [first + i * step for i in range(meta["windows"])][-count:]
    out = []
    for cutoff in cutoffs:
        past = {c: v[:cutoff] for c, v in values.items()}
        future = {c: v[cutoff : cutoff + horizon] for c, v in values.items()}
        out.append(dict(target=target[:cutoff], past=past, future=future, truth=target[cutoff : cutoff + horizon]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tsmojo-mini")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--context-length", type=int, default=None)
    parser.add_argument("--data-dir", type=Path, default=shared_datasets_dir() / "covariates")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    pipeline = TSMojoPipeline.from_pretrained(args.model, dtype="float32")
    share = AttentionShare(pipeline)
    rows = []
    for folder in sorted(p for p in args.data_dir.iterdir() if (p / "meta.json").is_file()):
        moves_mean, moves_shift, errors, shares = [], [], [], []
        for window in windows_of(folder, args.windows):
            horizon = len(window["truth"])
            scale = np.nanmean(np.abs(np.diff(window["target"][-1000:]))) + 1e-9

            def forecast(future: dict, past: dict | None = None, window=window, horizon=horizon) -> np.ndarray:
                task = {"target": window["target"], "past_covariates": past or window["past"],
                        "future_covariates": future}  # fmt: skip
                quantiles, _ = pipeline.predict([task], horizon, quantile_levels=[0.5],
                                                context_length=args.context_length)  # fmt: skip
                return quantiles[0][0, :, 0]

            share.shares.clear()
            base = forecast(window["future"])
            shares.append({k: float(np.mean(v)) for k, v in share.shares.items()})
            ablated = forecast({c: np.full(horizon, np.nanmean(v[-horizon * 7 :])) for c, v in window["past"].items()})
            shifted_past = {c: np.r_[np.full(24, v[0]), v[:-24]] for c, v in window["past"].items()}
            shifted_future = {c: np.r_[window["past"][c][-24:], f][:horizon] for c, f in window["future"].items()}
            shifted = forecast(shifted_future, shifted_past)
            moves_mean.append(np.mean(np.abs(base - ablated)) / scale)
            moves_shift.append(np.mean(np.abs(base - shifted)) / scale)
            errors.append(np.nanmean(np.abs(base - window["truth"])) / scale)
        layer_share = {k: round(float(np.mean([s[k] for s in shares])), 3) for k in shares[0]}
        rows.append(dict(task=folder.name, median_move_mean_ablation=np.mean(moves_mean),
                         median_move_shift_ablation=np.mean(moves_shift), scaled_error=np.mean(errors),
                         covariate_attention_share=json.dumps(layer_share)))  # fmt: skip
    frame = pd.DataFrame(rows)
    print(f"model {args.model}, last {args.windows} windows per task, float32; moves and errors in units of the "
          "target's mean absolute step change")  # fmt: skip
    print("| " + " | ".join(frame.columns) + " |")
    print("|" + "---|" * len(frame.columns))
    for row in frame.itertuples(index=False):
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
