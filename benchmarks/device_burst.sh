#!/usr/bin/env bash
# A lent GPU's few minutes, prepared: resume a pretraining run committed under
# tsmojo/recipes/runs/RUN on the GPU for a fixed budget, send its compacted state back through
# $OUT, then time the kernels on CUDA (Triton against the PyTorch paths).
#
# 1. Here, on the CPU machine: pack the real pretraining series small enough to travel with the
#    repository (the device tool sends at most 64 MiB, and the pretrain folder alone is 47 MB):
#        bash benchmarks/device_burst.sh pack
#    writes .device_data/pretrain/ (ignored by git): every dataset, those over MAX_MB (default
#    0.4) cut to their first series (sorted ids, so a site's variables stay together) up to it.
# 2. Through the device tool, carry [".device_data"], timeout_s 600:
#        bash benchmarks/device_burst.sh run mini_r2 5
#    trains for 5 minutes (data in 8 DataLoader workers), compacts the checkpoint and sends the
#    run's state back in $OUT/mini_r2/ (the checkpoint in 15 MB parts: the tool returns files of
#    at most 16 MiB), then runs benchmarks/kernel_speed.py on CUDA into $OUT.
# 3. Here: `cat last.ckpt.part-* > tsmojo/recipes/runs/mini_r2/checkpoints/last.ckpt`, copy
#    training_summary.json to tsmojo/recipes/runs/mini_r2/model/ and commit, as
#    tsmojo/recipes/runs/README.md says. The real series of that burst were the packed subset.
#
# The GPU image has torch, lightning, pandas, pyarrow and scipy but not this package: it runs from
# the working tree through PYTHONPATH. The Triton kernels have not run on a GPU in this project
# yet, so their whole-model test (tests/kernels/test_model_triton.py) runs first, and the burst
# falls back to the PyTorch kernels if it fails. The command takes about MINUTES + 4 minutes
# (keep it under the tool's 10). ACCELERATOR=cpu PRECISION=32-true OUT=/tmp/out runs it here as
# a dry run (its run directory is runs/device_RUN, never the RUN a local job may be writing).
set -euo pipefail
cd "$(dirname "$0")/.."
command=${1:?usage: device_burst.sh pack [MAX_MB] | run RUN MINUTES}

if [ "$command" = pack ]; then
    python3 - "${2:-0.4}" <<'PACK'
import os
import shutil
import sys

import pandas as pd
from tsmojo.data.real import pretrain_files
budget = float(sys.argv[1]) * 1e6
shutil.rmtree(".device_data", ignore_errors=True)
for path in pretrain_files():
    target = f".device_data/pretrain/{path.parent.name}/data.parquet"
    os.makedirs(os.path.dirname(target))
    size = path.stat().st_size
    if size <= budget:
        shutil.copy(path, target)
        continue
    frame = pd.read_parquet(path)
    ids = sorted(frame["unique_id"].unique())
    rows = frame.groupby("unique_id").size().loc[ids].cumsum()
    budget_rows = int(budget / size * len(frame))
    keep = set(rows.index[rows <= budget_rows])
    if keep:
        subset = frame[frame["unique_id"].isin(keep)]
    else:  # one series is over the budget alone: its most recent part
        subset = frame[frame["unique_id"] == ids[0]].sort_values("ds").tail(budget_rows)
    subset.to_parquet(target, index=False, compression="zstd")
    print(f"{path.parent.name}: {len(keep) or 1} of {len(ids)} series, {len(subset)} of {len(frame)} rows")
PACK
    du -sh .device_data
    exit 0
fi

run=${2:?usage: device_burst.sh run RUN MINUTES}
minutes=${3:?usage: device_burst.sh run RUN MINUTES}
out=${OUT:?run this through the device tool, which sets OUT}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TSMOJO_SHARED_DATASETS=$PWD/.device_data
test -d .device_data/pretrain || { echo "no .device_data/pretrain: run 'pack' here and carry .device_data"; exit 2; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__, 'cuda', torch.cuda.is_available())"

smoke=tests/kernels/test_model_triton.py::test_model_triton_matches_naive
if ! timeout 90 python3 -m pytest -q -x -p no:cacheprovider "$smoke" >"$out/triton_smoke.log" 2>&1; then
    echo "Triton kernels failed their test on this GPU (see triton_smoke.log): training on the PyTorch kernels"
    export TSMOJO_KERNELS=torch
fi

run_dir="runs/device_$run"
mkdir -p runs && rm -rf "$run_dir" && cp -r "tsmojo/recipes/runs/$run" "$run_dir"
python3 -m tsmojo.cli pretrain --config "tsmojo/recipes/$run.yaml" --run-dir "$run_dir" --resume \
    --max-time "${minutes}m" --accelerator "${ACCELERATOR:-gpu}" --precision "${PRECISION:-bf16-mixed}" \
    --data-workers 8 2>&1 | tee "$out/pretrain.log" | tail -5
python3 -m tsmojo.cli pretrain --run-dir "$run_dir" --compact
mkdir -p "$out/$run"
split -b 15000000 "$run_dir/checkpoints/last.ckpt" "$out/$run/last.ckpt.part-"
cp "$run_dir/model/training_summary.json" "$out/$run/"
newest_log=$(ls -d "$run_dir"/logs/from_step_* | sort -V | tail -1)
cp "$newest_log/metrics.csv" "$out/$run/metrics.csv"

timeout 100 python3 benchmarks/kernel_speed.py --device cuda --out "$out/kernels_cuda.csv" 2>&1 | tail -30 || true
