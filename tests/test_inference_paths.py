"""Inference over many batches and the regulator ablation: each gives what the plain path gives.

Batches side by side on worker threads must come back in order and equal to
one at a time; an ablated pass must equal the regulator's output zeroed where
it enters the fusion, with the cells still run (a trace sees them).
"""
import threading

import pytest
import torch

from regnet.models import build_model, record, regulated_blocks, regulator_ablated
from regnet.models.parallel import map_batches


def _cell_calls(model) -> list:
    calls = []
    for stage in model.stages:
        stage.cell.register_forward_hook(lambda m, args, out: calls.append(1))
    return calls


def _zeroed_by_hook(model, x):
    """The ablation's definition: the regulator's output replaced by zeros where it enters the fusion."""
    hooks = [b.regulator_norm.register_forward_hook(lambda m, i, o: torch.zeros_like(o))
             for b in regulated_blocks(model)]
    try:
        return model(x)
    finally:
        for h in hooks:
            h.remove()


@pytest.mark.parametrize("name,cell", [("regnet20", "lstm"), ("regnet20", "gru"), ("regnet32", "rnn")])
def test_an_ablated_pass_gives_the_zeroed_logits(name, cell):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, cell=cell).eval()
    for m in model.modules():  # running statistics away from 0/1, so the regulator's norm matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    x = torch.randn(4, 3, 32, 32)
    with torch.inference_mode():
        reference = _zeroed_by_hook(model, x)
        intact = model(x)
        calls = _cell_calls(model)
        with regulator_ablated(model):
            ablated = model(x)
    assert len(calls) == len(model.stages) * len(model.stages[0].blocks)  # the cells still run, once per block
    assert not any(b.ablated for b in regulated_blocks(model))
    torch.testing.assert_close(ablated, reference, atol=1e-6, rtol=1e-6)
    assert not torch.allclose(ablated, intact)


def test_an_ablated_pass_that_is_traced_still_runs_and_records_the_cells():
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    calls = _cell_calls(model)
    with torch.no_grad(), regulator_ablated(model), record(model) as trace:
        ablated = model(x)
    assert len(calls) == 9 and len(trace) == 9 and set(trace[-1].gates) == {"i", "f", "o", "g"}
    with torch.no_grad():
        torch.testing.assert_close(ablated, _zeroed_by_hook(model, x), atol=1e-6, rtol=1e-6)


def test_batches_side_by_side_come_back_in_order_in_the_callers_mode():
    active, peak, lock = [0], [0], threading.Lock()

    def work(i):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        try:
            assert torch.get_num_threads() == 1  # one intra-op thread per batch
            return i, torch.is_inference_mode_enabled(), torch.is_grad_enabled()
        finally:
            with lock:
                active[0] -= 1

    torch.set_num_threads(2)
    with torch.inference_mode():
        got = list(map_batches(work, range(20), "cpu"))
    assert [g[0] for g in got] == list(range(20)) and all(g[1] and not g[2] for g in got)
    assert peak[0] <= 2 and torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="batch 3"):
        list(map_batches(lambda i: (_ for _ in ()).throw(ValueError(f"batch {i}")) if i == 3 else i, range(6), "cpu"))
    assert torch.get_num_threads() == 2  # restored after a failure too


def test_the_split_analyses_are_the_same_with_one_thread_or_two():
    from regnet.data import load_splits
    from regnet.data.device import evaluation_batches
    from regnet.inspect import analyze_split

    splits = load_splits("shapes", size=96, val_ratio=0.5, split_seed=0)
    torch.manual_seed(0)
    model = build_model("regnet20", num_classes=splits.info.num_classes).eval()
    batches = evaluation_batches(splits.val, splits.info, 16)
    results = []
    for threads in (1, 2):
        torch.set_num_threads(threads)
        results.append(analyze_split(model, batches, splits.info.class_names))
    one, two = results
    assert torch.equal(one["preds"], two["preds"]) and torch.equal(one["confidence"], two["confidence"])
    assert one["readout"] == two["readout"] and one["ablation"] == two["ablation"]
    assert [(r["stage"], r["pair"]) for r in one["redundancy"]] == [(r["stage"], r["pair"]) for r in two["redundancy"]]
    assert [r["cosine"] for r in one["redundancy"]] == pytest.approx([r["cosine"] for r in two["redundancy"]])
    assert one["num_images"] == len(splits.val) > 16  # more than one batch, so two ran side by side


class _ThreadRecorder(torch.nn.Module):
    """A 10-class linear model that notes which thread ran each forward pass."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(12, 10)
        self.threads: list[int] = []

    def forward(self, x):
        self.threads.append(threading.get_ident())
        return self.linear(x.flatten(1))


def test_evaluate_runs_batches_on_worker_threads_but_keeps_a_compiled_model_on_its_own():
    from regnet.train.metrics import evaluate

    batches = [(torch.randn(4, 3, 2, 2), torch.randint(0, 10, (4,))) for _ in range(6)]
    torch.set_num_threads(2)
    plain = _ThreadRecorder()
    side_by_side = evaluate(plain, batches, 10, torch.device("cpu"))
    assert len(plain.threads) == 6 and threading.get_ident() not in plain.threads
    compiled = _ThreadRecorder()
    compiled._orig_mod = torch.nn.Identity()  # what torch.compile's wrapper carries
    compiled.load_state_dict(plain.state_dict())
    one_thread = evaluate(compiled, batches, 10, torch.device("cpu"))
    assert compiled.threads == [threading.get_ident()] * 6
    assert one_thread["top1"] == side_by_side["top1"] and one_thread["loss"] == pytest.approx(side_by_side["loss"])


def test_the_redundancy_cosine_is_the_same_in_either_memory_order():
    from regnet.inspect.analyses import _cosine_sum

    torch.manual_seed(0)
    a, b = torch.randn(5, 16, 8, 8), torch.randn(5, 16, 8, 8)
    b = 0.5 * a + b  # correlated, so the cosine is far from 0
    expected = float(torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1), dim=1).sum())
    cl = [t.contiguous(memory_format=torch.channels_last) for t in (a, b)]
    assert abs(_cosine_sum(*cl) - expected) < 1e-5 and abs(expected) > 0.5
    assert abs(_cosine_sum(cl[0], b) - expected) < 1e-5  # mixed formats: NCHW order for both
