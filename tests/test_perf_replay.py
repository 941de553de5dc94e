"""The speed-up bound of `bench perf roofline`: FLOP-counted calls recorded by layout and replayed alone."""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from bench.perf.replay import OpRecorder, TensorLayout, replay_seconds


def test_the_recorder_notes_every_counted_call_by_layout_and_nothing_else() -> None:
    weights = torch.randn(8, 16, requires_grad=True)
    inputs = torch.randn(32, 8)
    recorder = OpRecorder()
    with FlopCounterMode(display=False) as counter, recorder:
        for _ in range(3):
            torch.relu(inputs @ weights).sum().backward()
        torch.mm(torch.randn(4, 8), torch.randn(8, 2))
    calls = {(func.overloadpacket.__name__, count) for (func, _, _), count in recorder.calls.items()}
    # forward mm ×3 at one layout, the other shape once, and the weight gradient's mm (inputsᵀ @ grad) ×3
    assert sum(recorder.calls.values()) == 7 and ("mm", 3) in calls and ("mm", 1) in calls
    assert {name for name, _ in calls} == {"mm"}  # relu, sum and the gradient's fill are not counted
    assert counter.get_total_flops() == 3 * 2 * (2 * 32 * 8 * 16) + 2 * 4 * 8 * 2


def test_replayed_tensors_keep_shape_stride_and_overlap() -> None:
    generator = torch.Generator().manual_seed(0)
    expanded = torch.randn(1, 5).expand(4, 5)
    transposed = torch.randn(6, 3).t()
    for original in (expanded, transposed, torch.randn(2, 3, 4)):
        layout = TensorLayout(tuple(original.shape), tuple(original.stride()), original.dtype, original.device)
        copy = layout.materialise(generator)
        assert copy.shape == original.shape and copy.stride() == original.stride() and copy.dtype == original.dtype
        assert torch.isfinite(copy).all() and copy.std() > 0
    replayed = TensorLayout((4, 5), (0, 1), torch.float32, torch.device("cpu")).materialise(generator)
    assert torch.equal(replayed[0], replayed[3])  # an expanded tensor's rows are one row, as in the original


def test_replay_sums_every_distinct_call_times_its_count() -> None:
    recorder = OpRecorder()
    with recorder:
        torch.mm(torch.randn(64, 64), torch.randn(64, 64))
    assert replay_seconds(recorder.calls, torch.device("cpu")) > 0
    assert replay_seconds(type(recorder.calls)(), torch.device("cpu")) == 0
    (call,) = recorder.calls
    recorder.calls[call] = 1000  # one call's median × 1000: far above a single replay of it
    many = replay_seconds(recorder.calls, torch.device("cpu"))
    recorder.calls[call] = 1
    assert many > 50 * replay_seconds(recorder.calls, torch.device("cpu"))
