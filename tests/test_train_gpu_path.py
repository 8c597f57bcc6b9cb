"""The engine's GPU path, tested on the CPU: data on the device, torch.compile, the autocast dtype.

torch.compile is tested with the ``aot_eager`` backend: it traces the model
and its backward through dynamo and AOTAutograd as inductor would, without
inductor's C++ code generation (minutes on this CPU).
"""
from __future__ import annotations

import pytest
import torch

from regnet.train.build import compile_model
from regnet.train.checkpoint import load_checkpoint
from regnet.train.config import Config, apply_override
from regnet.train.distributed import amp_dtype
from regnet.train.loop import train
from regnet.train.runfolder import read_metrics
from regnet.train.evaluate import evaluate_run, load_run_model

from test_train_run import fast_config, tiny_config


def last_epoch(run_dir) -> dict:
    return [r for r in read_metrics(run_dir) if r["kind"] == "epoch"][-1]


def test_a_run_with_its_data_on_the_device_validates_on_the_standard_paths_images(tmp_path):
    run = train(tiny_config(tmp_path, "ondevice", "data.on_device=true", "train.epochs=1"), progress=False)
    record = last_epoch(run)
    again = evaluate_run(run, "val", "last", device="cpu")  # through the DataLoader and the standard transforms
    assert again["count"] == 60
    assert again["top1"] == pytest.approx(record["val_top1"], abs=1e-9)
    assert again["loss"] == pytest.approx(record["val_loss"], rel=1e-5)
    assert record["train_loss"] < 2.5  # it trained on augmented, normalised images, not raw bytes


def test_a_compiled_run_saves_plain_weights_that_load_into_an_uncompiled_model(tmp_path):
    from torch._dynamo.utils import counters

    eager = train(fast_config(tmp_path, "eager", "train.epochs=1"), progress=False)
    counters.clear()
    compiled = train(fast_config(tmp_path, "compiled", "train.epochs=1", "train.compile=true",
                                 "train.compile_backend=aot_eager"), progress=False)
    assert counters["stats"]["unique_graphs"] >= 2  # training and evaluation graphs were traced
    weights = load_checkpoint(compiled / "checkpoints" / "last.pt")["model"]
    assert weights and not any("_orig_mod" in key for key in weights)
    model, _ = load_run_model(compiled, "last")  # a plain nn.Module
    assert not hasattr(model, "_orig_mod")
    # The same seed, data and math: the traced graph trains as the eager module does.
    assert last_epoch(compiled)["val_loss"] == pytest.approx(last_epoch(eager)["val_loss"], rel=1e-4)
    assert last_epoch(compiled)["train_loss"] == pytest.approx(last_epoch(eager)["train_loss"], rel=1e-4)


def test_compile_wraps_the_module_without_copying_it():
    config = Config()
    apply_override(config, "train.compile=true")
    apply_override(config, "train.compile_backend=eager")
    module = torch.nn.Linear(3, 2)
    compiled = compile_model(module, config)
    assert compiled is not module and compiled._orig_mod is module
    assert set(compiled.state_dict()) == {f"_orig_mod.{k}" for k in module.state_dict()}  # hence: save the module
    x = torch.randn(4, 3)
    assert torch.equal(compiled(x), module(x))
    apply_override(config, "train.compile=false")
    assert compile_model(module, config) is module


@pytest.mark.parametrize("assignment, message", [
    ("train.compile_mode=fastest", "train.compile_mode must be 'default', 'reduce-overhead', .*got 'fastest'"),
    ("train.amp_dtype=fp8", "train.amp_dtype must be 'auto', 'bfloat16' or 'float16', got 'fp8'"),
    ("data.on_device=1", "data.on_device must be true or false, got 1"),
])
def test_bad_gpu_settings_are_one_sentence(assignment, message):
    with pytest.raises(ValueError, match=message):
        apply_override(Config(), assignment)


def test_an_unknown_compile_backend_fails_before_any_run_folder(tmp_path):
    config = fast_config(tmp_path, "nobackend", "train.compile=true", "train.compile_backend=turbo")
    with pytest.raises(ValueError, match="train.compile_backend 'turbo' is not a torch.compile backend"):
        train(config, progress=False)
    assert not (tmp_path / "nobackend").exists()


def test_autocast_dtypes_default_to_bf16_on_cpu_and_fp16_on_cuda():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (amp_dtype(cpu), amp_dtype(cuda)) == (torch.bfloat16, torch.float16)
    assert amp_dtype(cuda, "bfloat16") == torch.bfloat16 and amp_dtype(cpu, "float16") == torch.float16


def test_on_device_refuses_colour_jitter_before_any_run_folder(tmp_path):
    config = fast_config(tmp_path, "jitter", "data.on_device=true", "data.color_jitter=true")
    with pytest.raises(ValueError, match="data.on_device does not do colour jitter"):
        train(config, progress=False)
    assert not (tmp_path / "jitter").exists()
