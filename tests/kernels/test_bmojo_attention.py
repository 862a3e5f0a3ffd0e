"""B'MOJO attention: fused, dense and chunked PyTorch and Triton against the naive reference (outputs and
every gradient), in float32, in bfloat16 and under bf16 autocast; query tails; and the op's
backend dispatch."""

from __future__ import annotations

import importlib

import pytest
import torch

from tests.kernels.helpers import (
    BF16_U,
    DEVICE,
    HAS_TRITON,
    TOL,
    assert_close_bf16,
    assert_matches,
    assert_matches_bf16,
    needs_triton,
    recording_spy,
)
from tsmojo.kernels import bmojo_attention, dispatch
from tsmojo.kernels.attention import DENSE_MAX_LENGTH, FUSED_MAX_LENGTH
from tsmojo.kernels.attention.chunk import bmojo_attention_chunked
from tsmojo.kernels.attention.dense import bmojo_attention_dense
from tsmojo.kernels.attention.fused import bmojo_attention_fused, bmojo_attention_fused_chunked
from tsmojo.kernels.attention.naive import bmojo_attention_naive

NAMES = "q k v k_fade v_fade".split()

# (batch, heads, T, dim, window, chunk, memory slots)
ATTENTION_CASES = {
    "odd_lengths": (2, 2, 37, 5, 3, 4, 3),
    "single_step": (1, 1, 1, 4, 2, 4, 2),
    "window_longer_than_T": (1, 2, 20, 8, 30, 8, 2),
    "chunk_longer_than_query_block": (2, 1, 45, 4, 4, 40, 4),
    "no_memory_slots": (1, 2, 19, 4, 2, 5, 0),
    "empty_memory": (1, 2, 23, 4, 2, 5, -3),  # negative: M slots, all -1
    "window_equals_chunk": (1, 2, 33, 4, 4, 4, 2),  # tsmojo-mini's shape: window = chunk
    "window_spans_chunks": (2, 1, 50, 4, 7, 3, 3),  # window and band each cross several chunks
}
# bf16 runs: T not a multiple of the chunk with memory slots in use, a single step, window and band
# across chunks, and slots that are all empty.
BF16_CASES = ("odd_lengths", "single_step", "window_spans_chunks", "empty_memory")

# bf16 tolerances, in units of U = 2^-8 (the most one rounding to bf16 moves a value, relative to it);
# see helpers.assert_close_bf16 for how r applies (relative to the entry and to the tensor's largest).
# * naive: float32 arithmetic on the bf16 numbers; the output and gradients are rounded to bf16 once,
#   q's gradient sums two rounded parts (scores against k and k_fade): 2U (measured <= 0.7U).
# * chunked: products run in bf16 (accumulated in float32): the scaled queries, the scores, the
#   probabilities and each value product are rounded (<= U each) on the way, and a score s rounded
#   by U|s| (|s| <~ 4 for these unit-variance inputs) moves its probability by U|s| relative: with the
#   final rounding, 8U = 2^-5 bounds it (measured <= 1.9U; <= 2.5U under autocast, which also rounds
#   the float32 inputs).
# * dense: the same roundings as the chunked path (scaled queries, scores, probabilities, one value
#   product over all keys): 8U (measured <= 1.6U).
# * fused: PyTorch's fused kernel rounds the same quantities (bf16 products, float32 softmax
#   statistics, probabilities rounded for the value product): 8U; chunk by chunk the same.
# * Triton: float32 arithmetic on the bf16 numbers and a bf16 output (rounded toward zero under the
#   interpreter, <= 1U); the backward's delta = rowsum(dO * O) reads that rounded output (as
#   FlashAttention does), and ds = p (dp - delta) is a difference that can be much smaller than its
#   terms, so the rounding is amplified in the q and k gradients: 8U (measured <= 3.1U).
# (measured: worst over every ATTENTION_CASES shape and 8 seeds.)
BF16_R = {"naive": 2 * BF16_U, "chunked": 8 * BF16_U, "dense": 8 * BF16_U, "fused": 8 * BF16_U,
          "fused_chunked": 8 * BF16_U, "triton": 8 * BF16_U}  # fmt: skip


def attention_triton(*args):
    from tsmojo.kernels.attention.triton import bmojo_attention_triton

    return bmojo_attention_triton(*args)


IMPLEMENTATIONS = {
    "naive": bmojo_attention_naive,
    "chunked": bmojo_attention_chunked,
    "dense": bmojo_attention_dense,
    "fused": bmojo_attention_fused,
    "fused_chunked": bmojo_attention_fused_chunked,
    "triton": attention_triton,
}
IMPLEMENTATION_NAMES = [
    "naive", "chunked", "dense", "fused", "fused_chunked", pytest.param("triton", marks=needs_triton)
]  # fmt: skip


def memory_index_for(batch, length, chunk_size, slots, generator):
    """Distinct earlier positions per chunk (as ``select_memory`` produces), some slots left empty."""
    num_chunks = -(-length // chunk_size)
    index = torch.full((batch, num_chunks, abs(slots)), -1, dtype=torch.long)
    if slots <= 0:
        return index
    for b in range(batch):
        for c in range(1, num_chunks):
            chosen = torch.randperm(c * chunk_size, generator=generator)[:slots]
            index[b, c, : len(chosen)] = chosen
            if slots > 1 and c % 2:
                index[b, c, -1] = -1
    return index


def attention_inputs(batch, heads, length, dim, window, chunk_size, slots, seed=0):
    g = torch.Generator().manual_seed(seed)
    tensors = [torch.randn(batch, heads, length, dim, generator=g) for _ in range(5)]
    key_valid = torch.rand(batch, length, generator=g) > 0.3
    key_valid[0, :3] = False  # query 0 of batch 0 has no readable key
    memory_index = memory_index_for(batch, length, chunk_size, slots, g)
    return tensors, (key_valid.to(DEVICE), memory_index.to(DEVICE), window, chunk_size)


def full_then_tail(start):
    """The reference for a query tail: every query through the naive kernel (the skipped ones
    zero), then the tail's rows."""

    def run(q, k, v, k_fade, v_fade, *extra):
        zeros_in_front = torch.cat([q.new_zeros(*q.shape[:2], start, q.shape[3]), q[:, :, start:]], dim=2)
        return bmojo_attention_naive(zeros_in_front, k, v, k_fade, v_fade, *extra)[:, :, start:]

    return run


def dispatched_tail(start):
    """The public op on the queries from ``start`` on, with the full q's signature."""

    def run(q, k, v, k_fade, v_fade, *extra):
        return bmojo_attention(q[:, :, start:], k, v, k_fade, v_fade, *extra, query_start=start)

    return run


# --------------------------------------------------------------------------- float32
@pytest.mark.parametrize("case", ATTENTION_CASES.values(), ids=ATTENTION_CASES.keys())
def test_attention_chunked_matches_naive(case):
    tensors, extra = attention_inputs(*case)
    assert_matches(bmojo_attention_chunked, bmojo_attention_naive, tensors, extra, NAMES)


@pytest.mark.parametrize("name", ["dense", "fused", "fused_chunked"])
@pytest.mark.parametrize("case", ATTENTION_CASES.values(), ids=ATTENTION_CASES.keys())
def test_attention_dense_and_fused_match_naive(case, name):
    tensors, extra = attention_inputs(*case)
    assert_matches(IMPLEMENTATIONS[name], bmojo_attention_naive, tensors, extra, NAMES)


@pytest.mark.parametrize("name", ["fused", "fused_chunked"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", ["odd_lengths", "single_step", "window_spans_chunks", "empty_memory"])
def test_attention_fused_without_gradient_matches_naive(case, dtype, name):
    """How inference calls it (no autograd graph): every case, a query with no readable key (zeros)."""
    tensors, (key_valid, memory_index, window, chunk) = attention_inputs(*ATTENTION_CASES[case], seed=5)
    low = [t.to(DEVICE, dtype) for t in tensors]
    with torch.no_grad():
        out = IMPLEMENTATIONS[name](*low, key_valid, memory_index, window, chunk)
    expected = bmojo_attention_naive(*[t.float() for t in low], key_valid, memory_index, window, chunk)
    assert out.dtype == dtype
    if dtype == torch.float32:
        torch.testing.assert_close(out, expected, **TOL)
    else:
        assert_close_bf16(out, expected, BF16_R[name], "output")
    assert torch.equal(out[0, :, 0], torch.zeros_like(out[0, :, 0]))


@needs_triton
@pytest.mark.parametrize("case", ATTENTION_CASES.values(), ids=ATTENTION_CASES.keys())
def test_attention_triton_matches_naive(case):
    tensors, extra = attention_inputs(*case)
    assert_matches(attention_triton, bmojo_attention_naive, tensors, extra, NAMES)


@needs_triton
def test_attention_triton_custom_scale_and_zero_rows():
    tensors, (key_valid, memory_index, window, chunk) = attention_inputs(2, 2, 37, 5, 3, 4, 3, seed=1)
    extra = (key_valid, memory_index, window, chunk, 0.7)
    assert_matches(attention_triton, bmojo_attention_naive, tensors, extra, NAMES)
    out = attention_triton(*[t.to(DEVICE) for t in tensors], *extra)
    assert torch.equal(out[0, :, 0], torch.zeros_like(out[0, :, 0]))  # no readable key: zeros


def test_attention_cases_exercise_memory():
    """Guard on the test data: memory slots really change the result in the memory cases."""
    tensors, (key_valid, memory_index, window, chunk) = attention_inputs(*ATTENTION_CASES["odd_lengths"])
    with_memory = bmojo_attention_naive(*tensors, key_valid, memory_index, window, chunk)
    without = bmojo_attention_naive(*tensors, key_valid, torch.full_like(memory_index, -1), window, chunk)
    assert (with_memory - without).abs().max() > 1e-3


@needs_triton
def test_attention_triton_empty_sequence():
    tensors, extra = attention_inputs(1, 2, 0, 4, 2, 4, 2)
    leaves = [t.to(DEVICE).requires_grad_() for t in tensors]
    out = attention_triton(*leaves, *extra)
    assert out.shape == (1, 2, 0, 4)


# Queries from position `start` on only (a model's last layer): T mid-chunk, on a chunk
# boundary, the last query alone, no query at all, and every query.
QUERY_TAIL_CASES = {
    "mid_chunk": ("odd_lengths", 13),
    "chunk_boundary": ("window_equals_chunk", 16),
    "last_query": ("window_spans_chunks", 49),
    "no_query": ("window_equals_chunk", 33),
    "all_queries": ("odd_lengths", 0),
    "first_chunk": ("single_step", 0),
}


TAIL_KERNELS = [bmojo_attention_chunked, bmojo_attention_dense, bmojo_attention_fused, bmojo_attention_fused_chunked]
TAIL_KERNEL_IDS = ["chunked", "dense", "fused", "fused_chunked"]


@pytest.mark.parametrize("kernel", TAIL_KERNELS, ids=TAIL_KERNEL_IDS)
@pytest.mark.parametrize("case, start", QUERY_TAIL_CASES.values(), ids=QUERY_TAIL_CASES.keys())
def test_attention_query_tail_matches_full(kernel, case, start):
    tensors, extra = attention_inputs(*ATTENTION_CASES[case])
    assert 0 <= start <= tensors[0].shape[2]

    def tail(q, k, v, k_fade, v_fade, *rest):
        return kernel(q[:, :, start:], k, v, k_fade, v_fade, *rest, query_start=start)

    assert_matches(tail, full_then_tail(start), tensors, extra, NAMES)


@pytest.mark.parametrize("kernel", TAIL_KERNELS, ids=TAIL_KERNEL_IDS)
def test_attention_query_tail_rejects_wrong_length(kernel):
    tensors, extra = attention_inputs(*ATTENTION_CASES["odd_lengths"])
    q, k, v, k_fade, v_fade = tensors
    with pytest.raises(ValueError, match="query_start"):
        kernel(q[:, :, 5:], k, v, k_fade, v_fade, *extra, query_start=4)


# --------------------------------------------------------------------------- bfloat16
@pytest.mark.parametrize("name", IMPLEMENTATION_NAMES)
@pytest.mark.parametrize("case", BF16_CASES)
def test_attention_bf16_matches_float32_naive(name, case):
    """bf16 inputs: a bf16 output and bf16 gradients, within BF16_R of the float32 attention of
    the same numbers."""
    tensors, extra = attention_inputs(*ATTENTION_CASES[case], seed=2)
    assert_matches_bf16(IMPLEMENTATIONS[name], bmojo_attention_naive, tensors, extra, NAMES, BF16_R[name])


@pytest.mark.parametrize("backend, name", [("naive", "naive"), ("torch", "chunked"), ("triton", "triton")])
def test_attention_bf16_query_tail_mid_chunk(monkeypatch, backend, name):
    """bf16 queries from mid-chunk on (a model's last layer) through the public op on every backend."""
    if backend == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TSMOJO_KERNELS", backend)
    tensors, extra = attention_inputs(*ATTENTION_CASES["odd_lengths"], seed=3)
    start = 13  # mid-chunk: chunk 4, window 3
    assert_matches_bf16(dispatched_tail(start), full_then_tail(start), tensors, extra, NAMES, BF16_R[name])


@pytest.mark.parametrize("start", [0, 13], ids=["all_queries", "mid_chunk"])
@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
def test_attention_under_bf16_autocast(monkeypatch, backend, start):
    """float32 inputs under bf16 autocast (how the model runs) through the public op: a float32
    result close to the float32 attention. The chunked path's products then run in bf16 (this used to
    fail: "value cannot be converted to type c10::BFloat16 without overflow" when masking bf16 scores
    with float32's lowest value); the naive path turns autocast off and the Triton kernels compute in
    float32 (autocast does not reach them), so those two keep float32 tolerance."""
    if backend == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TSMOJO_KERNELS", backend)
    tensors, extra = attention_inputs(*ATTENTION_CASES["odd_lengths"], seed=4)
    if backend == "torch":
        assert_matches_bf16(dispatched_tail(start), full_then_tail(start), tensors, extra, NAMES,
                            BF16_R["chunked"], autocast=True)  # fmt: skip
    else:
        assert_matches(dispatched_tail(start), full_then_tail(start), tensors, extra, NAMES, autocast=True)


# --------------------------------------------------------------------------- dispatch
@pytest.mark.parametrize("backend", ["naive", "torch", "triton"])
def test_dispatch_query_tail(monkeypatch, backend):
    if backend == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    monkeypatch.setenv("TSMOJO_KERNELS", backend)
    tensors, extra = attention_inputs(*ATTENTION_CASES["odd_lengths"])
    q, k, v, k_fade, v_fade = (t.to(DEVICE) for t in tensors)
    full = bmojo_attention(q, k, v, k_fade, v_fade, *extra)
    tail = bmojo_attention(q[:, :, 13:], k, v, k_fade, v_fade, *extra, query_start=13)
    torch.testing.assert_close(tail, full[:, :, 13:], **TOL)


@pytest.mark.parametrize("grad", [True, False], ids=["training", "inference"])
@pytest.mark.parametrize("length", [3, DENSE_MAX_LENGTH, DENSE_MAX_LENGTH + 1, FUSED_MAX_LENGTH, FUSED_MAX_LENGTH + 1])
@pytest.mark.parametrize("setting", ["naive", "torch", "triton", "auto"])
def test_attention_dispatch_calls_the_chosen_backend(monkeypatch, setting, length, grad):
    """The backend that ``TSMOJO_KERNELS`` and the device choose runs. The PyTorch backend runs,
    when a gradient is needed, the dense form up to DENSE_MAX_LENGTH tokens and the chunked form
    beyond; without one, the fused form up to FUSED_MAX_LENGTH and the fused form chunk by chunk
    beyond."""
    if setting == "triton" and not HAS_TRITON:
        pytest.skip("triton is not installed")
    calls = []
    monkeypatch.setenv("TSMOJO_KERNELS", setting)
    # bmojo_attention looks the naive, dense and chunked kernels up in its package's namespace (the
    # op's __init__, not the tsmojo.kernels.attention attribute chain), and the Triton one in the
    # triton submodule at call time: patch them there.
    package = importlib.import_module("tsmojo.kernels.attention")
    monkeypatch.setattr(package, "bmojo_attention_naive", recording_spy(calls, "naive"))
    monkeypatch.setattr(package, "bmojo_attention_chunked", recording_spy(calls, "chunked"))
    monkeypatch.setattr(package, "bmojo_attention_dense", recording_spy(calls, "dense"))
    monkeypatch.setattr(package, "bmojo_attention_fused", recording_spy(calls, "fused"))
    monkeypatch.setattr(package, "bmojo_attention_fused_chunked", recording_spy(calls, "fused_chunked"))
    if HAS_TRITON:
        triton_module = importlib.import_module("tsmojo.kernels.attention.triton")
        monkeypatch.setattr(triton_module, "bmojo_attention_triton", recording_spy(calls, "triton"))
    tensors, extra = attention_inputs(1, 1, length, 4, 2, 4, 1)
    package.bmojo_attention(*[t.to(DEVICE).requires_grad_(grad) for t in tensors], *extra)
    backend = dispatch.resolve_backend(DEVICE)
    if backend == "torch" and grad:
        backend = "dense" if length <= DENSE_MAX_LENGTH else "chunked"
    elif backend == "torch":
        backend = "fused" if length <= FUSED_MAX_LENGTH else "fused_chunked"
    assert calls == [backend]
