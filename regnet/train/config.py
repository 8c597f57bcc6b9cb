"""One config schema for every way of starting a run: dataclasses in code, YAML on disk, ``--set`` on the CLI.

A run folder's ``config.yaml`` is ``config_to_dict(config)`` written as YAML,
so a run can always be rebuilt (or resumed) from its folder alone. Every value
is type-checked against its dataclass field, whichever way it came in, so a
typo fails before any work starts, with one sentence naming the key.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from regnet.runs import read_yaml_mapping

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("multistep", "cosine", "warmup_cosine", "onecycle", "constant")
METRICS = ("val_top1", "val_top5", "val_macro_f1", "val_loss")
AMP_DTYPES = ("auto", "bfloat16", "float16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
SECTION_ALIASES = {"optimizer": "optim"}


@dataclass
class ModelConfig:
    name: str = "regnet20"
    options: dict[str, Any] = field(default_factory=dict)  # checked by regnet.models.build_model
    # Filled in from the data set at the start of a run, so that config.yaml alone rebuilds the model
    # (the dashboard must load a CIFAR-100 model without the CIFAR-100 files).
    num_classes: int | None = None
    in_channels: int | None = None
    # The names of the model's outputs, in order: evaluation on a bare test/<class>/ folder maps folders to them.
    class_names: list[str] | None = None
    input_side: int | None = None  # the side of the images it was trained on, for the same evaluation transforms


@dataclass
class DataConfig:
    name: str = "shapes"
    root: str = "data"
    val_ratio: float = 0.1
    split_seed: int = 0
    augment: bool = True
    color_jitter: bool = False
    workers: int = 2
    size: int | None = None  # images of the synthetic `shapes` set; ignored by the others
    # The decoded split as one tensor on the training device, augmented there in batches (regnet.data.device):
    # for sets that fit in memory (CIFAR, MNIST, shapes, Tiny-ImageNet); data.workers is then unused.
    on_device: bool = False


@dataclass
class OptimConfig:
    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0001
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])


@dataclass
class ScheduleConfig:
    name: str = "multistep"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of all epochs
    gamma: float = 0.1
    warmup_epochs: float = 0.0  # warmup_cosine: the linear warm-up; onecycle: the rising phase (0 = 30%)


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 128  # global: split over the processes of a distributed run
    device: str = "auto"
    seed: int = 0
    amp: bool = False
    amp_dtype: str = "auto"  # auto: bfloat16 on the CPU, float16 (with loss scaling) on CUDA; or name one
    channels_last: bool = False
    compile: bool = False  # torch.compile the training step's model (and the evaluation's)
    compile_mode: str = "default"  # torch.compile's mode: default, reduce-overhead, max-autotune, ...
    compile_backend: str = "inductor"  # inductor compiles; aot_eager/eager only trace (tests, debugging)
    grad_clip: float | None = None
    label_smoothing: float = 0.0
    early_stop_metric: str = "val_top1"  # also the metric that picks best.pt
    early_stop_patience: int | None = None
    log_every: int = 20
    # A mid-epoch last.pt at most this often (seconds; null: only at epoch ends), so a kill loses little work.
    checkpoint_every_s: float | None = 300.0
    # Keep the weights every K epochs as checkpoints/epoch-NNN.pt (the first and last epochs too); 0: none.
    keep_every: int = 0


@dataclass
class RunConfig:
    runs_root: str = "runs"
    run_id: str | None = None


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


def config_to_dict(config: Config) -> dict:
    """Plain dicts, lists and scalars only: what YAML, JSON and ``torch.load(weights_only=True)`` all accept."""
    return dataclasses.asdict(config)


def config_from_dict(data: dict, base: Config | None = None) -> Config:
    """Overlay ``data`` (nested sections, e.g. from YAML) on ``base`` (default: all defaults), checking every value."""
    config = base if base is not None else Config()
    if not isinstance(data, dict):
        raise ValueError(f"A config must be a mapping of sections (model, data, optim, ...), "
                         f"not {type(data).__name__}.")
    for section, values in data.items():
        if values is None:
            continue
        if not isinstance(values, dict):
            raise ValueError(f"Config section {section!r} must be a mapping of keys, not {values!r}.")
        for key, value in values.items():
            set_value(config, f"{section}.{key}", value)
    validate(config)
    return config


def load_config(path: str | Path, base: Config | None = None) -> Config:
    """Read a YAML config file; a missing file or bad YAML is a one-sentence ``ValueError``."""
    path = Path(path)
    data = read_yaml_mapping(path, missing=f"Config file {path} does not exist; pass an existing YAML file "
                                           f"(see configs/).")
    return config_from_dict(data, base)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(dump_config(config))


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def apply_override(config: Config, assignment: str) -> Config:
    """Apply one ``KEY=VALUE`` (``--set optim.lr=0.05``); the value is parsed as YAML, then type-checked."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"Override {assignment!r} is not of the form KEY=VALUE, e.g. optim.lr=0.05.")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise ValueError(f"The value in {assignment!r} is not valid YAML; quote it or fix it.") from None
    set_value(config, key.strip(), value)
    validate(config)
    return config


def set_value(config: Config, key: str, value: Any) -> None:
    """Set ``section.field`` (or ``model.options.NAME``) after checking ``value`` against the field's type."""
    parts = key.split(".")
    parts[0] = SECTION_ALIASES.get(parts[0], parts[0])
    sections = {f.name for f in dataclasses.fields(Config)}
    if parts[0] not in sections:
        raise ValueError(f"Unknown config section {parts[0]!r} in {key!r}; sections are {', '.join(sorted(sections))}.")
    section = getattr(config, parts[0])
    if parts[:2] == ["model", "options"] and len(parts) == 3:
        section.options[parts[2]] = value  # model options are checked by build_model, which knows each model
        return
    if len(parts) != 2:
        raise ValueError(f"Config key {key!r} should look like section.key, e.g. optim.lr or model.options.cell.")
    hints = typing.get_type_hints(type(section))
    if parts[1] not in hints:
        known = ", ".join(f.name for f in dataclasses.fields(section))
        raise ValueError(f"Unknown config key {key!r}; {parts[0]} has: {known}.")
    setattr(section, parts[1], check_type(value, hints[parts[1]], f"{parts[0]}.{parts[1]}"))


def check_type(value: Any, annotation: Any, key: str) -> Any:
    """``value`` converted to ``annotation`` where that is lossless (int -> float, "1e-4" -> 1e-4), else ValueError."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return check_type(value, option, key)
            except ValueError:
                pass
        raise _type_error(key, value, annotation)
    if annotation is Any:
        return value
    if origin is list:
        (item,) = typing.get_args(annotation)
        if isinstance(value, tuple):
            value = list(value)
        if not isinstance(value, list):
            raise _type_error(key, value, annotation)
        return [check_type(v, item, key) for v in value]
    if origin is dict:
        if not isinstance(value, dict):
            raise _type_error(key, value, annotation)
        return dict(value)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        raise _type_error(key, value, annotation)
    if annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _type_error(key, value, annotation)
    if annotation is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise _type_error(key, value, annotation) from None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise _type_error(key, value, annotation)
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _type_error(key, value, annotation)
    raise TypeError(f"config field {key} has an unsupported type {annotation}")


def _type_error(key: str, value: Any, annotation: Any) -> ValueError:
    name = getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")
    return ValueError(f"Config key {key} must be of type {name}, got {value!r}; fix it in the config or --set.")


def validate(config: Config) -> None:
    """Range and choice checks that types alone cannot express; one sentence per problem."""
    o, s, t, d = config.optim, config.schedule, config.train, config.data
    checks = [
        (o.name in OPTIMIZERS, f"optim.name must be one of {', '.join(OPTIMIZERS)}, got {o.name!r}."),
        (o.lr > 0, f"optim.lr must be positive, got {o.lr}."),
        (o.weight_decay >= 0, f"optim.weight_decay must be >= 0, got {o.weight_decay}."),
        (len(o.betas) == 2, f"optim.betas must be two numbers, got {o.betas}."),
        (s.name in SCHEDULES, f"schedule.name must be one of {', '.join(SCHEDULES)}, got {s.name!r}."),
        (all(0 < m <= 1 for m in s.milestones) and s.milestones == sorted(s.milestones),
         f"schedule.milestones are increasing fractions of the epochs in (0, 1], e.g. [0.5, 0.75]; "
         f"got {s.milestones}."),
        (s.warmup_epochs >= 0, f"schedule.warmup_epochs must be >= 0, got {s.warmup_epochs}."),
        (t.epochs >= 1, f"train.epochs must be at least 1, got {t.epochs}."),
        (t.batch_size >= 1, f"train.batch_size must be at least 1, got {t.batch_size}."),
        (t.log_every >= 1, f"train.log_every must be at least 1, got {t.log_every}."),
        (t.keep_every >= 0, f"train.keep_every must be 0 (no snapshots) or a number of epochs, got {t.keep_every}."),
        (t.checkpoint_every_s is None or t.checkpoint_every_s >= 0,
         f"train.checkpoint_every_s must be >= 0 or null, got {t.checkpoint_every_s}."),
        (0 <= t.label_smoothing < 1, f"train.label_smoothing must be in [0, 1), got {t.label_smoothing}."),
        (t.grad_clip is None or t.grad_clip > 0, f"train.grad_clip must be positive or null, got {t.grad_clip}."),
        (t.early_stop_metric in METRICS, f"train.early_stop_metric must be one of {', '.join(METRICS)}, "
                                         f"got {t.early_stop_metric!r}."),
        (t.early_stop_patience is None or t.early_stop_patience >= 1,
         f"train.early_stop_patience must be at least 1 or null, got {t.early_stop_patience}."),
        (t.amp_dtype in AMP_DTYPES, f"train.amp_dtype must be one of {', '.join(AMP_DTYPES)}, got {t.amp_dtype!r}."),
        (t.compile_mode in COMPILE_MODES,
         f"train.compile_mode must be one of {', '.join(COMPILE_MODES)}, got {t.compile_mode!r}."),
        (t.device == "auto" or t.device.split(":")[0] in ("cpu", "cuda", "mps"),
         f"train.device must be auto, cpu, cuda, cuda:N or mps, got {t.device!r}."),
        (0 <= d.val_ratio < 1, f"data.val_ratio must be in [0, 1), got {d.val_ratio}."),
        (d.workers >= 0, f"data.workers must be >= 0, got {d.workers}."),
        (d.size is None or d.size > 0, f"data.size must be positive or null, got {d.size}."),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")
