"""Device and precision choice (tsmojo/hardware.py) and its routes: pipeline, GluonTS, CLI, pretraining."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from tsmojo import TSMojoModel
from tsmojo.config import TSMojoConfig
from tsmojo.hardware import (
    default_precision,
    dtype_name,
    native_bf16,
    resolve_device,
    resolve_dtype,
    tune_cpu_allocator,
)
from tsmojo.pipeline import TSMojoPipeline

CPU = torch.device("cpu")


@pytest.fixture
def cpu_with_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


def test_auto_picks_bf16_on_a_cpu_with_native_bf16(cpu_with_bf16):
    assert native_bf16(CPU)
    assert resolve_dtype("auto", CPU) == torch.bfloat16
    assert default_precision(CPU) == "bf16-mixed"


def test_auto_falls_back_to_float32_on_a_cpu_without_bf16(cpu_without_bf16):
    assert not native_bf16(CPU)
    assert resolve_dtype("auto", CPU) == torch.float32
    assert default_precision(CPU) == "32-true"


def test_amx_counts_as_native_bf16(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert resolve_dtype("auto", CPU) == torch.bfloat16


@pytest.mark.parametrize("given", ["float32", torch.float32])
def test_explicit_float32_always_holds(cpu_with_bf16, given):
    assert resolve_dtype(given, CPU) == torch.float32


@pytest.mark.parametrize("bad", ["float16", torch.float16, "half", "fp8"])
def test_unsupported_dtypes_are_refused(bad):
    with pytest.raises(ValueError, match="float32|bfloat16"):
        resolve_dtype(bad, CPU)


def test_names_round_trip():
    for dtype in (torch.float32, torch.bfloat16):
        assert resolve_dtype(dtype_name(dtype), CPU) == dtype
    assert resolve_device("cpu") == CPU


def tiny_model() -> TSMojoModel:
    torch.manual_seed(0)
    return TSMojoModel(TSMojoConfig.tiny())


def test_pipeline_takes_the_choice(cpu_with_bf16):
    assert TSMojoPipeline(tiny_model()).dtype == torch.bfloat16
    assert TSMojoPipeline(tiny_model(), dtype="float32").dtype == torch.float32


def test_pipeline_falls_back_without_bf16(cpu_without_bf16):
    assert TSMojoPipeline(tiny_model()).dtype == torch.float32


def test_bf16_forecasts_stay_close_to_float32():
    model = tiny_model()
    rng = np.random.default_rng(0)
    series = [100 + np.cumsum(rng.normal(size=300)) for _ in range(8)]
    full, _ = TSMojoPipeline(model, dtype="float32").predict(series, prediction_length=12)
    half, _ = TSMojoPipeline(model, dtype="bfloat16").predict(series, prediction_length=12)
    for a, b in zip(full, half):
        assert b.dtype == a.dtype
        scale = np.std(series[0])
        # bf16 products carry 8 mantissa bits (0.4%): forecasts move by a small share of the scale.
        assert np.abs(a - b).max() < 0.1 * scale


def test_gluonts_predictor_takes_and_keeps_the_dtype(tmp_path):
    from gluonts.model.predictor import Predictor

    from tsmojo.gluonts import TSMojoPredictor

    predictor = TSMojoPredictor(tiny_model(), prediction_length=4, dtype="float32")
    assert predictor.pipeline.dtype == torch.float32
    predictor.serialize(tmp_path)
    loaded = Predictor.deserialize(tmp_path)
    assert loaded.pipeline.dtype == torch.float32
    bf16 = TSMojoPredictor(tiny_model(), prediction_length=4, dtype="bfloat16")
    bf16.serialize(tmp_path / "bf16")
    assert Predictor.deserialize(tmp_path / "bf16").pipeline.dtype == torch.bfloat16


def test_cli_dtype_option():
    from tsmojo.cli import build_parser

    args = build_parser().parse_args(["forecast", "in.csv", "-o", "out.csv", "-H", "4", "--dtype", "float32"])
    assert args.dtype == "float32"
    assert build_parser().parse_args(["forecast", "in.csv", "-o", "out.csv", "-H", "4"]).dtype == "auto"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["forecast", "in.csv", "-o", "out.csv", "-H", "4", "--dtype", "float16"])


# Frees 96 MB of 12 MB tensors and allocates them again, round after round, then prints the page
# faults of those rounds. glibc's default thresholds move with what the process freed before (the
# imports), which once let a CI run reuse most rounds by chance; so both modes first pin the mmap
# threshold at glibc's initial 128 KB, under which every such tensor is mapped and unmapped, and
# faults in again, each round. tune_cpu_allocator must override that and keep the memory.
_ALLOCATION_ROUNDS = """
import ctypes, resource, sys, torch
from tsmojo.hardware import tune_cpu_allocator
assert ctypes.CDLL("libc.so.6").mallopt(-3, 128 * 1024) == 1  # M_MMAP_THRESHOLD
if sys.argv[1] == "tuned":
    assert tune_cpu_allocator()
def round_trip():
    tensors = [torch.empty(3_000_000).fill_(1.0) for _ in range(8)]
    del tensors
round_trip()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    round_trip()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_tuned_allocator_keeps_freed_memory_for_reuse():
    faults = {}
    for mode in ("glibc", "tuned"):
        run = subprocess.run([sys.executable, "-c", _ALLOCATION_ROUNDS, mode], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        faults[mode] = int(run.stdout.split()[-1])
    # 10 rounds of 96 MB are about 234,000 pages of 4 KB.
    assert faults["glibc"] > 100_000
    assert faults["tuned"] < faults["glibc"] / 10


def test_tuned_allocator_changes_nothing_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert tune_cpu_allocator() is False
