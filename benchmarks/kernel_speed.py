"""Kernel benchmark: the SSD scan and B'MOJO attention, forward and forward+backward.

On CUDA it times the Triton kernels, the chunked PyTorch paths (the fused attention chunk by chunk
among them) and, for short sequences, the PyTorch backend's short-sequence paths (dense and fused
attention, the one-chunk scan) and the naive references, and reports the achieved memory
bandwidth: the bytes each op must move at least (every input read once, every output written once)
divided by its time. On CPU only the PyTorch paths run.
``--dtype bfloat16`` feeds bf16 inputs (the naive references still compute in float32). ``--triton-interpret`` adds
the Triton kernels on CPU, run by Triton's interpreter: it checks that the CUDA case's code path
runs end to end on a machine without a GPU; its times are the interpreter's, never a speed figure.

Examples::

    python benchmarks/kernel_speed.py                             # realistic shapes, T = 256 .. 8192
    python benchmarks/kernel_speed.py --lengths 256,1024 --repeats 3
    TSMOJO_BENCH_DEVICE=cpu python benchmarks/kernel_speed.py     # force the CPU case
    python benchmarks/kernel_speed.py --device cpu --lengths 64 --batch 2 --triton-interpret
    python benchmarks/kernel_speed.py --device cpu --ops attention --lengths 20,36,52,68,100,132 --dtype bfloat16

Writes ``benchmarks/results/kernels_<device>.csv`` (device = cuda or cpu).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tsmojo.kernels.attention.chunk import bmojo_attention_chunked  # noqa: E402
from tsmojo.kernels.attention.dense import bmojo_attention_dense  # noqa: E402
from tsmojo.kernels.attention.fused import bmojo_attention_fused, bmojo_attention_fused_chunked  # noqa: E402
from tsmojo.kernels.attention.naive import bmojo_attention_naive  # noqa: E402
from tsmojo.kernels.ssd.chunk import ssd_scan_chunked  # noqa: E402
from tsmojo.kernels.ssd.naive import ssd_scan_naive  # noqa: E402
from tsmojo.layers import select_memory  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
FIELDS = [
    "device",
    "device_name",
    "dtype",
    "op",
    "impl",
    "mode",
    "batch",
    "heads",
    "head_dim",
    "state",
    "window",
    "chunk",
    "memory",
    "T",
    "ms_median",
    "ms_min",
    "repeats",
    "min_bytes",
    "GB_per_s",
    "load_avg_1min",
    "torch",
    "triton",
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_device = os.environ.get("TSMOJO_BENCH_DEVICE", "auto")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default=default_device)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=32)
    parser.add_argument("--state", type=int, default=32, help="SSM state size")
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument("--chunk", type=int, default=16)
    parser.add_argument("--memory", type=int, default=16, help="memory slots per chunk")
    parser.add_argument(
        "--lengths",
        default=None,
        help="comma-separated T in patches (default 256,...,8192 on CUDA, 256,1024,2048 on CPU)",
    )
    parser.add_argument(
        "--naive-max-length",
        type=int,
        default=None,
        help="largest T for the naive references, the dense attention and the one-chunk scan "
        "(default 1024 on CUDA, 256 on CPU)",
    )
    parser.add_argument("--ops", default="ssd,attention")
    parser.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="dtype of the inputs")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs (default 20 on CUDA, 3 on CPU)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--triton-interpret",
        action="store_true",
        help="on CPU, also run the Triton kernels under TRITON_INTERPRET=1 for T <= --naive-max-length "
        "(checks the CUDA case's code path; the times are not a speed figure)",
    )
    return parser.parse_args(argv)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int) -> list[float]:
    fn()  # warm-up (and Triton autotuning / compilation)
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def ssd_inputs(args, length: int, device: torch.device):
    b, h, p, n = args.batch, args.heads, args.head_dim, args.state
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(b, length, h, p, generator=g)
    dt = torch.nn.functional.softplus(torch.randn(b, length, h, generator=g) - 2)
    A = -torch.linspace(1.0, 16.0, h)
    B, C = torch.randn(b, length, n, generator=g), torch.randn(b, length, n, generator=g)
    return [t.to(device) for t in (x, dt, A, B, C)]


def ssd_bytes(args, length: int, backward: bool) -> int:
    b, h, p, n = args.batch, args.heads, args.head_dim, args.state
    x, dt, bc = b * length * h * p, b * length * h, b * length * n
    forward = x + dt + 2 * bc + x  # read x, dt, B, C; write y
    if not backward:
        return 4 * forward
    return 4 * (forward + (2 * x + dt + 2 * bc) + (x + dt + 2 * bc))  # + read x, dy, dt, B, C; write grads


def attention_inputs(args, length: int, device: torch.device):
    b, h, d = args.batch, args.heads, args.head_dim
    g = torch.Generator(device="cpu").manual_seed(0)
    tensors = [torch.randn(b, h, length, d, generator=g) for _ in range(5)]
    key_valid = torch.ones(b, length, dtype=torch.bool)
    key_valid[: b // 4, : length // 8] = False  # some left padding
    innovation = torch.rand(b, length, generator=g)
    memory_index = select_memory(innovation, key_valid, args.chunk, 2, args.memory)
    return [t.to(device) for t in tensors], (key_valid.to(device), memory_index.to(device), args.window, args.chunk)


def attention_bytes(args, length: int, backward: bool) -> int:
    b, h, d = args.batch, args.heads, args.head_dim
    tokens = b * h * length * d
    chunks = -(-length // args.chunk)
    forward = 4 * (5 * tokens + tokens + b * h * length) + b * length + 8 * b * chunks * args.memory
    if not backward:
        return forward
    return forward + 4 * (7 * tokens + 2 * b * h * length + 5 * tokens) + b * length + 8 * b * chunks * args.memory


def implementations(op: str, device: torch.device, triton_interpret: bool = False) -> dict[str, Callable]:
    """The implementations timed for ``op``; Triton runs compiled on CUDA, interpreted on CPU if asked."""
    impls: dict[str, Callable] = {}
    if device.type == "cuda" or triton_interpret:
        name = "triton" if device.type == "cuda" else "triton-interpret"
        if op == "ssd":
            from tsmojo.kernels.ssd.triton import ssd_scan_triton

            impls[name] = ssd_scan_triton
        else:
            from tsmojo.kernels.attention.triton import bmojo_attention_triton

            impls[name] = bmojo_attention_triton
    if op == "ssd":
        impls["torch"] = ssd_scan_chunked
        # What the torch backend runs up to SINGLE_CHUNK_MAX_LENGTH steps: the whole sequence as one chunk.
        impls["one-chunk"] = lambda x, dt, A, B, C, chunk: ssd_scan_chunked(x, dt, A, B, C, max(chunk, x.shape[1]))
        impls["naive"] = lambda x, dt, A, B, C, chunk: ssd_scan_naive(x, dt, A, B, C)
    else:
        impls["torch"] = bmojo_attention_chunked
        impls["dense"] = bmojo_attention_dense
        impls["fused"] = bmojo_attention_fused
        impls["fused-chunked"] = bmojo_attention_fused_chunked
        impls["naive"] = bmojo_attention_naive
    return impls


def main(argv: list[str] | None = None) -> Path:
    args = parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    on_cuda = device.type == "cuda"
    if on_cuda and os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("TRITON_INTERPRET=1 is set: unset it to time the compiled Triton kernels")
    triton_interpret = args.triton_interpret and not on_cuda
    if triton_interpret:
        # triton.jit reads the setting when the kernel modules are imported, which happens below.
        os.environ["TRITON_INTERPRET"] = "1"
    repeats = args.repeats or (20 if on_cuda else 3)
    naive_max = args.naive_max_length if args.naive_max_length is not None else (1024 if on_cuda else 256)
    lengths_text = args.lengths or ("256,1024,2048,4096,8192" if on_cuda else "256,1024,2048")
    lengths = [int(v) for v in lengths_text.split(",") if v]
    device_name = torch.cuda.get_device_name(device) if on_cuda else (platform.processor() or platform.machine())
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = ""
    if on_cuda:
        print(
            f"CUDA case on {device_name}: timing triton, torch (chunked); dense, fused, one-chunk, naive "
            f"(T <= {naive_max}); GB/s = compulsory bytes / time"
        )
    else:
        print(
            f"CPU case ({device_name}, {torch.get_num_threads()} threads): timing the PyTorch paths only "
            f"(torch = chunked; dense, fused, one-chunk and naive for T <= {naive_max}); "
            + (
                f"Triton under its interpreter for T <= {naive_max}, a code-path check, not a speed figure"
                if triton_interpret
                else "Triton needs CUDA and is not timed (--triton-interpret runs it under the interpreter)"
            )
        )
    if hasattr(os, "getloadavg") and os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores: timings include contention")

    out_path = args.out or RESULTS_DIR / f"kernels_{device.type}.csv"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    handle = out_path.open("w", newline="")  # rows are flushed as they come: a cut-short run keeps its rows
    writer = csv.DictWriter(handle, fieldnames=FIELDS)
    writer.writeheader()
    for op in args.ops.split(","):
        make_inputs = ssd_inputs if op == "ssd" else attention_inputs
        count_bytes = ssd_bytes if op == "ssd" else attention_bytes
        for length in lengths:
            if op == "ssd":
                tensors, extra = make_inputs(args, length, device), (args.chunk,)
            else:
                tensors, extra = make_inputs(args, length, device)
            for impl, fn in implementations(op, device, triton_interpret).items():
                if impl in ("naive", "dense", "fused", "one-chunk", "triton-interpret") and length > naive_max:
                    continue
                for mode in ("fwd", "fwd+bwd"):
                    backward = mode == "fwd+bwd"
                    dtype = getattr(torch, args.dtype)
                    leaves = [t.detach().to(dtype).requires_grad_(backward) for t in tensors]

                    def step(fn=fn, leaves=leaves, extra=extra, backward=backward):
                        if not backward:
                            with torch.no_grad():
                                return fn(*leaves, *extra)
                        out = fn(*leaves, *extra)
                        grads = torch.autograd.grad(out, leaves, torch.ones_like(out))
                        return grads

                    times = time_ms(step, device, repeats)
                    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
                    median = statistics.median(times)
                    nbytes = count_bytes(args, length, backward)
                    gbps = nbytes / (median * 1e-3) / 1e9 if on_cuda else None
                    row = dict(
                        device=device.type,
                        device_name=device_name,
                        dtype=args.dtype,
                        op=op,
                        impl=impl,
                        mode=mode,
                        batch=args.batch,
                        heads=args.heads,
                        head_dim=args.head_dim,
                        state=args.state if op == "ssd" else "",
                        window=args.window if op == "attention" else "",
                        chunk=args.chunk,
                        memory=args.memory if op == "attention" else "",
                        T=length,
                        ms_median=f"{median:.4f}",
                        ms_min=f"{min(times):.4f}",
                        repeats=repeats,
                        min_bytes=nbytes,
                        GB_per_s="" if gbps is None else f"{gbps:.1f}",
                        load_avg_1min=f"{load:.2f}",
                        torch=torch.__version__,
                        triton=triton_version,
                    )
                    writer.writerow(row)
                    handle.flush()
                    bandwidth = f"  {gbps:8.1f} GB/s" if gbps is not None else ""
                    timing = f"{median:10.3f} ms (min {min(times):.3f})"
                    print(f"{op:9s} {impl:6s} {mode:7s} T={length:5d}  {timing}{bandwidth}", flush=True)
                    del leaves
            del tensors
    handle.close()
    given = sys.argv[1:] if argv is None else argv
    command = " ".join(shlex.quote(a) for a in ["python", "benchmarks/kernel_speed.py", *given])
    if "--device" not in command:
        command += f" --device {device.type}"
    print(f"wrote {out_path}\nreproduce with: {command}")
    return out_path


if __name__ == "__main__":
    main()
