"""bench/throughput.py's floor of the split analyses: the convolutions it replays, and where its figure goes."""
from __future__ import annotations

import pytest
import torch

from bench_scripts import load_bench
from regnet.inspect import analyze_split
from regnet.models import build_model, native


@pytest.fixture(scope="module")
def throughput():
    return load_bench("throughput")


@pytest.fixture
def one_thread():
    """map_batches then runs batches inline, in the thread whose dispatch mode records them."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_floor_replays_both_passes_convolutions_and_only_them(throughput, one_thread):
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=3).eval().to(memory_format=torch.channels_last)
    batch = (torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0]))
    recorded = throughput.ConvolutionCalls()
    with recorded:
        analyze_split(model, [batch], ["a", "b", "c"])
    kernels = [tuple(args[1].shape[2:]) for _, args, _ in recorded.calls]
    # Each pass: the stem and two 3x3 per block; the ablated pass's 9 fusions take the features' half of the 1x1,
    # the intact pass's run inside the C++ fusion kernel where it is built, else as convolutions too.
    assert kernels.count((3, 3)) == 2 * (1 + 2 * 9)
    assert kernels.count((1, 1)) == (9 if native.kernels() is not None else 18)
    assert len(kernels) == kernels.count((3, 3)) + kernels.count((1, 1))

    replay = throughput.convolutions_alone(lambda some: analyze_split(model, some, ["a", "b", "c"]), batch, 3)
    with throughput.ConvolutionCalls() as counter:
        replay()
    assert len(counter.calls) == 3 * len(kernels)


def test_the_floor_is_a_note_on_the_analyses_not_a_goal(throughput):
    def row(task, img_s):
        return {"task": task, "img_s": img_s, "img_per_cpu_s": img_s / 2, "paths": "fast", "images": 100,
                "threads": 2, "load_before": 1.0, "load_after": 1.2}

    rows = [row("regnet eval (evaluate)", 1100.0), row(throughput.ANALYSES_TASK, 700.0),
            row(throughput.FLOOR_TASK, 1190.0), row(throughput.ANALYSES_TASK, 720.0), row(throughput.FLOOR_TASK, 1180.0)]
    goals = throughput.lab_goals(rows)
    assert [g["status"] for g in goals] == ["PASS", "MISS"]
    assert goals[1]["value"] == 710.0
    assert goals[1]["note"].endswith("its convolutions alone: 1185 img/s")
    assert "convolutions alone" not in goals[0]["note"]
