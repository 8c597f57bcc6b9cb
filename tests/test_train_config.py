"""Config schema, YAML files, --set overrides, schedules and the seeded sampler: fast, no training."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch.utils.data import DistributedSampler

from regnet.data import list_datasets
from regnet.models import list_models, model_info
from regnet.train.config import (Config, ConfigError, apply_override, build_config, config_from_dict, config_to_dict,
                                 dump_config, load_config)
from regnet.train.distributed import SeededShardSampler
from regnet.train.schedules import build_optimizer, build_scheduler, lr_multiplier

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"  # pytest may be started from any folder

CONFIGS = sorted(CONFIG_DIR.glob("*.yaml"))


def test_defaults_match_the_contract():
    d = config_to_dict(Config())
    assert d["optim"] == {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": False, "weight_decay": 0.0001,
                          "betas": [0.9, 0.999]}
    assert d["schedule"]["milestones"] == [0.5, 0.75]
    assert d["train"]["early_stop_metric"] == "val_top1" and d["run"] == {"runs_root": "runs", "run_id": None}
    assert config_from_dict(d) == Config()  # a dumped config reads back to the same config


def test_overrides_parse_yaml_and_accept_both_optimizer_prefixes():
    config = Config()
    apply_override(config, "optimizer.momentum=0.8")
    apply_override(config, "optim.lr=1e-4")  # YAML 1.1 reads 1e-4 as a string; a float field takes it
    apply_override(config, "schedule.milestones=[0.3, 0.6]")
    apply_override(config, "train.grad_clip=1")  # int -> float
    apply_override(config, "train.early_stop_patience=null")
    apply_override(config, "model.options.cell=gru")
    assert config.optim.momentum == 0.8 and config.optim.lr == 1e-4
    assert config.schedule.milestones == [0.3, 0.6] and config.train.grad_clip == 1.0
    assert isinstance(config.train.grad_clip, float) and config.model.options == {"cell": "gru"}


@pytest.mark.parametrize("override, words", [
    ("train.epochs=ten", "train.epochs must be a whole number, got 'ten'"),
    ("train.epochs=1.5", "train.epochs must be a whole number, got 1.5"),
    ("train.amp=1", "train.amp must be true or false, got 1"),
    ("schedule.milestones=0.5", "schedule.milestones must be a list, got 0.5"),
    ("optim.lr=-1", "optim.lr must be greater than 0, got -1"),
    ("optim.lr=0", "optim.lr must be greater than 0, got 0"),
    ("optim.name=rmsprop", "optim.name must be 'sgd', 'adam' or 'adamw', got 'rmsprop'"),
    ("data.size=0", "data.size must be greater than 0, got 0"),
    ("train.label_smoothing=1", "train.label_smoothing must be less than 1, got 1"),
    ("optim.lrr=1", r"Unknown config key 'optim.lrr' \(did you mean optim.lr\?\)"),
    ("schedule.milestones=[0.75, 0.5]", "increasing fractions"),
    ("optim.bogus=1", "Unknown config key 'optim.bogus'"),
    ("trainer.epochs=1", "Unknown config section 'trainer'"),
    ("epochs", "not of the form KEY=VALUE"),
])
def test_bad_overrides_are_one_sentence(override, words):
    with pytest.raises(ValueError, match=words) as info:
        apply_override(Config(), override)
    assert "\n" not in str(info.value)


def test_yaml_file_with_a_wrong_type_names_the_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  epochs: ten\n")
    with pytest.raises(ValueError, match="train.epochs must be a whole number, got 'ten'"):
        load_config(path)
    path.write_text("train: [epochs\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(path)
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_shipped_configs_load_and_name_real_models_and_datasets():
    names = {p.name for p in CONFIGS}
    assert {"cifar10_resnet20.yaml", "cifar10_regnet20.yaml", "imagenet_regnet50.yaml", "mnist_cnn.yaml",
            "mnist_regnet20.yaml", "tiny_imagenet_resnet.yaml", "shapes_regnet20.yaml",
            "shapes_resnet20.yaml"} <= names
    for path in CONFIGS:
        config = load_config(path)
        assert config.model.name in list_models() and config.data.name in list_datasets()
        assert set(config.model.options) <= set(model_info(config.model.name).options)
        assert load_config(path) == config_from_dict(__import__("yaml").safe_load(dump_config(config)))


def test_paper_recipes():
    for name in ("cifar10_resnet20", "cifar10_regnet20"):
        c = load_config(CONFIG_DIR / f"{name}.yaml")
        assert (c.optim.name, c.optim.lr, c.optim.momentum, c.optim.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
        assert (c.train.batch_size, c.train.epochs, c.schedule.name) == (128, 180, "multistep")
        assert c.schedule.milestones == [0.5, 0.75] and c.schedule.gamma == 0.1
    c = load_config(CONFIG_DIR / "imagenet_regnet50.yaml")
    assert [round(m * c.train.epochs) for m in c.schedule.milestones] == [30, 60, 80]
    assert (c.optim.lr, c.train.batch_size, c.train.epochs) == (0.1, 256, 90)
    c = load_config(CONFIG_DIR / "tiny_imagenet_resnet.yaml")
    assert (c.model.name, c.optim.name, c.optim.lr, c.schedule.name) == ("tiny_resnet", "adamw", 1e-4, "warmup_cosine")
    assert c.model.options["blocks"] == [3, 3, 3] and c.data.color_jitter and c.train.batch_size == 32


def test_multistep_drops_at_the_epoch_milestones():
    config = Config().schedule  # milestones 0.5, 0.75 of 8 epochs of 10 steps -> drops at steps 40 and 60
    values = [lr_multiplier(config, step, 8, 10) for step in (0, 39, 40, 59, 60, 79)]
    assert values == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


@pytest.mark.parametrize("epochs, steps_per_epoch", [(1, 1), (1, 3), (2, 1), (2, 4), (3, 2), (3, 5)])
def test_a_short_multistep_run_trains_at_the_configured_lr_first(epochs, steps_per_epoch):
    # Milestones 0.5 and 0.75 round to epoch 0 for a 1-epoch run (and 0.5 to epoch 1 of 2): no milestone
    # may fall on the first step, which would mean the configured LR is never used.
    config = Config().schedule
    values = [lr_multiplier(config, step, epochs, steps_per_epoch) for step in range(epochs * steps_per_epoch)]
    first_epoch = values[:steps_per_epoch]
    assert first_epoch == [1.0] * steps_per_epoch
    expected_drops = {1: 0, 2: 1, 3: 2}[epochs]  # 3 epochs: milestones at epochs round(1.5)=2, round(2.25)=2
    assert values[-1] == pytest.approx(config.gamma ** expected_drops)


def test_an_explicit_zero_milestone_still_starts_at_the_configured_lr():
    config = Config().schedule
    config.milestones = [0.0, 0.5]
    assert [lr_multiplier(config, step, 4, 2) for step in range(8)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01,
                                                                                      0.01, 0.01])


@pytest.mark.parametrize("name", ["multistep", "cosine", "warmup_cosine", "onecycle", "constant"])
@pytest.mark.parametrize("epochs, steps_per_epoch", [(1, 1), (1, 2), (2, 1), (3, 3)])
def test_every_schedule_stays_positive_and_at_most_the_lr_on_short_runs(name, epochs, steps_per_epoch):
    config = Config().schedule
    config.name, config.warmup_epochs = name, 1 if name == "warmup_cosine" else 0
    values = [lr_multiplier(config, step, epochs, steps_per_epoch) for step in range(epochs * steps_per_epoch)]
    assert all(0 < value <= 1 + 1e-12 for value in values), values
    if name in ("multistep", "cosine", "constant"):
        assert values[0] == 1.0


def test_warmup_cosine_onecycle_and_cosine_shapes():
    warm = Config().schedule
    warm.name, warm.warmup_epochs = "warmup_cosine", 1
    assert lr_multiplier(warm, 0, 5, 10) == pytest.approx(0.1)
    assert lr_multiplier(warm, 9, 5, 10) == pytest.approx(1.0)
    assert lr_multiplier(warm, 49, 5, 10) < 0.01
    cosine = Config().schedule
    cosine.name = "cosine"
    assert lr_multiplier(cosine, 25, 5, 10) == pytest.approx(0.5)
    one = Config().schedule
    one.name = "onecycle"
    peak = max(range(50), key=lambda s: lr_multiplier(one, s, 5, 10))
    assert peak == 15 and lr_multiplier(one, 0, 5, 10) == pytest.approx(1 / 25)
    assert lr_multiplier(one, 50, 5, 10) < 1e-4


def test_scheduler_steps_per_iteration_and_optimisers_follow_the_config():
    model = torch.nn.Linear(2, 2)
    config = Config()
    config.optim.nesterov = True
    optimizer = build_optimizer(model, config.optim)
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["nesterov"]
    scheduler = build_scheduler(optimizer, config.schedule, epochs=2, steps_per_epoch=3)
    lrs = []
    for _ in range(6):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.1, 0.1, 0.1, 0.01, 0.01, 0.01])
    for name, cls in (("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)):
        config.optim.name = name
        assert type(build_optimizer(model, config.optim)) is cls


@pytest.mark.parametrize("world", [1, 2, 3])
def test_sampler_is_distributed_samplers_order_and_skips(world):
    for rank in range(world):
        ours = SeededShardSampler(23, seed=5, rank=rank, world_size=world)
        theirs = DistributedSampler(range(23), num_replicas=world, rank=rank, shuffle=True, seed=5)
        ours.set_epoch(3)
        theirs.set_epoch(3)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)
        ours.set_epoch(3, skip=4)
        assert list(ours) == list(theirs)[4:] and len(ours) == len(theirs) - 4
    shards = [list(SeededShardSampler(23, rank=r, world_size=world, shuffle=False, pad=False)) for r in range(world)]
    assert sorted(sum(shards, [])) == list(range(23))  # evaluation shards: every image exactly once


def test_epoch_orders_differ_and_repeat():
    sampler = SeededShardSampler(50, seed=0)
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    assert math.isclose(len(set(first)), 50)


def test_cli_flags_overlay_the_file_and_another_model_keeps_only_its_options():
    from regnet.train.cli import build_parser, config_from_args

    args = build_parser().parse_args(["train", "--config", str(CONFIG_DIR / "cifar10_regnet20.yaml"), "--model", "resnet20",
                                      "--lr", "0.05", "--epochs", "3", "--run-id", "007",
                                      "--set", "optimizer.nesterov=true", "--set", "optim.lr=0.02"])
    config = config_from_args(args)
    assert (config.model.name, config.model.options) == ("resnet20", {"se": False})
    assert (config.optim.lr, config.optim.nesterov, config.train.epochs) == (0.02, True, 3)  # --set comes last
    assert config.run.run_id == "007" and config.data.name == "cifar10"


def test_a_config_changed_attribute_by_attribute_is_still_checked_before_any_run_folder(tmp_path):
    from regnet.train import train

    config = build_config(f"run.runs_root={tmp_path}", "data.size=60", "train.epochs=1")
    config.optim.lr = 0.0  # the Python API skips build_config; train() checks the whole config again
    with pytest.raises(ConfigError, match=r"^optim.lr must be greater than 0, got 0.0.$"):
        train(config, progress=False)
    assert not list(tmp_path.iterdir())


def test_layers_apply_in_order_and_model_options_follow_their_model():
    ready = {"model": {"name": "regnet20", "options": {"cell": "gru", "shortcut": "B"}}, "optim": {"lr": 0.05}}
    config = build_config(ready, "optim.lr=0.02", {"train": {"epochs": 3}})
    assert (config.model.options, config.optim.lr, config.train.epochs) == ({"cell": "gru", "shortcut": "B"}, 0.02, 3)
    plain = build_config(ready, {"model": {"name": "resnet20"}})  # cell is regnet's; shortcut both accept
    assert plain.model.options == {"shortcut": "B"}
    imagenet = build_config(ready, {"model": {"name": "resnet18", "options": {"se": True}}})
    assert imagenet.model.options == {"se": True}
    assert build_config(config) == config and build_config(base=config) == config  # a Config is a layer too
    assert Config() == build_config() and config_to_dict(build_config({"data": None})) == config_to_dict(Config())


def test_every_problem_is_named_at_once_with_its_key_and_value():
    with pytest.raises(ConfigError) as error:
        build_config({"optim": {"lr": 0, "name": "rmsprop"}, "train": {"epochs": "ten"},
                      "model": {"name": "regnet20", "options": {"cell": "lstn"}}})
    problems = {p.key: (p.value, p.out_of_range) for p in error.value.problems}
    assert problems == {"optim.lr": (0, True), "optim.name": ("rmsprop", False), "train.epochs": ("ten", False),
                        "model.options.cell": ("lstn", False)}
    assert str(error.value) == "optim.name must be 'sgd', 'adam' or 'adamw', got 'rmsprop'."
