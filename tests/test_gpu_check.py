"""bench/gpu_check.py's smoke mode on the CPU (a small model for speed), its epoch plan and its goals."""
from __future__ import annotations

import json
import tarfile

import pytest
import torch

from bench_scripts import load_bench


@pytest.fixture(scope="module")
def gpu_check():
    return load_bench("gpu_check")


def test_the_smoke_run_measures_trains_into_a_run_folder_and_packs_it(gpu_check, tmp_path, monkeypatch):
    # The phases as they are, on a model that is fast here, 96 images (3 training steps) and one timed step.
    monkeypatch.setattr(gpu_check, "MODELS", ("mnist_cnn",))
    monkeypatch.setattr(gpu_check, "data_overrides",
                        lambda args, workdir: (["data.name=shapes", "data.size=96"], "shapes (96 images)"))
    monkeypatch.setenv("OUT", str(tmp_path))
    result = gpu_check.main(["--smoke", "--compile-backend", "eager", "--steps", "1", "--warmup", "1"])
    assert [(r["model"], r["compiled"]) for r in result["speed"]] == [("mnist_cnn", False), ("mnist_cnn", True)]
    assert all(r["train_img_s"] > 0 and r["eval_img_s"] > 0 for r in result["speed"])
    (run,) = result["train"]["runs"]
    assert (run["state"], run["epochs_done"]) == ("finished", 1) and 0 <= run["final_val_top1"] <= 1
    saved = json.loads((tmp_path / "gpu_check.json").read_text())
    assert saved["train"]["epochs"] == 1 and saved["environment"]["device"] == "cpu"
    with tarfile.open(tmp_path / f"{run['run']}.tar.gz") as archive:
        names = archive.getnames()
    assert f"{run['run']}/config.yaml" in names and f"{run['run']}/checkpoints/last.pt" in names
    assert "speed: mnist_cnn" in (tmp_path / "gpu_check.log").read_text()


def rows(resnet_ms: float, regnet_ms: float, compiled_regnet_ms: float) -> list[dict]:
    def row(model, compiled, ms):
        return {"model": model, "compiled": compiled, "step_ms": ms, "train_img_s": 128e3 / ms, "warmup_s": 5.0}
    return [row("resnet20", False, resnet_ms), row("regnet20", False, regnet_ms),
            row("regnet20", True, compiled_regnet_ms)]


def test_both_models_get_the_same_epochs_from_their_fastest_step(gpu_check):
    train_images = 45_000  # 352 steps of 128
    epochs, choice = gpu_check.plan_epochs(rows(10.0, 40.0, 20.0), train_images, 128, 300.0, 180)
    per_pair = 352 * (0.010 + 0.020) * gpu_check.ENGINE_OVERHEAD
    assert epochs == int((300.0 - 20.0) / per_pair)
    assert choice["regnet20"]["compiled"] and not choice["resnet20"]["compiled"]
    assert gpu_check.plan_epochs(rows(10.0, 40.0, 20.0), train_images, 128, 1.0, 180)[0] == 1  # at least one
    assert gpu_check.plan_epochs(rows(0.01, 0.02, 0.02), train_images, 128, 300.0, 180)[0] == 180  # the most


def test_the_goals_compare_each_models_fastest_configuration(gpu_check):
    result = {"smoke": False, "speed": rows(4.0, 20.0, 8.0)}
    resnet, ratio = gpu_check.goals(result)
    assert resnet["value"] == pytest.approx(32_000) and resnet["status"] == "PASS"
    assert ratio["value"] == pytest.approx(0.5) and ratio["status"] == "MISS" and ratio["note"] == "compiled"


def test_a_failed_compile_costs_its_row_only(gpu_check, monkeypatch):
    def speed(config, data, device, steps, warmup):
        if config.train.compile:
            raise RuntimeError("inductor: no C++ compiler")
        return {"model": config.model.name, "compiled": False, "train_img_s": 1.0, "step_ms": 1.0, "warmup_s": 0.0,
                "eval_img_s": 1.0}

    monkeypatch.setattr(gpu_check, "speed", speed)
    args = gpu_check.parse_args(["--smoke"])
    base = gpu_check.base_config(["data.name=shapes"], torch.device("cpu"), "runs", 32)
    result = {}
    gpu_check.speed_phase(args, base, None, torch.device("cpu"), gpu_check.Deadline(300.0, 1.0), result)
    assert [("error" in r, r["compiled"]) for r in result["speed"]] == [(False, False)] * 2 + [(True, True)] * 2
    assert gpu_check.fastest(result["speed"], "regnet20")["compiled"] is False
