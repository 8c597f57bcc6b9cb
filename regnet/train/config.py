"""One config schema for every way of starting a run, checked before anything starts.

The schema is the dataclasses below (pydantic dataclasses: each field's type, range and choices are
declared beside its default, and pydantic checks them, so there is no hand-written type checker).
Every source of values is a *layer* applied by one function, ``build_config``: a ready config from
configs/, a run's config.yaml (resume, clone), the New run form's values, the CLI's flags and ``--set
KEY=VALUE``. A bad value, whichever layer brought it, is a ``ConfigError``: one sentence per problem
naming the key, the value and what is allowed, raised before any run folder exists.

A run folder's ``config.yaml`` is ``config_to_dict(config)`` written as YAML, so a run can always be
rebuilt (or resumed) from its folder alone.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import re
from dataclasses import field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Union, get_args

import pydantic
import yaml
from pydantic import BeforeValidator, Field, StrictBool, StrictInt, StrictStr, field_validator

from regnet.runs import read_yaml_mapping

Optimizer = Literal["sgd", "adam", "adamw"]
Schedule = Literal["multistep", "cosine", "warmup_cosine", "onecycle", "constant"]
Metric = Literal["val_top1", "val_top5", "val_macro_f1", "val_loss"]
AmpDtype = Literal["auto", "bfloat16", "float16"]
CompileMode = Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"]
OPTIMIZERS, SCHEDULES, METRICS = get_args(Optimizer), get_args(Schedule), get_args(Metric)
AMP_DTYPES, COMPILE_MODES = get_args(AmpDtype), get_args(CompileMode)
SECTION_ALIASES = {"optimizer": "optim"}


def _number_from_text(value: Any) -> Any:
    """YAML 1.1 reads ``1e-4`` (no dot) as a string; a float field takes it as the number it spells."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


Float = Annotated[float, BeforeValidator(_number_from_text), Field(strict=True, allow_inf_nan=False)]
Int, Bool, Str = StrictInt, StrictBool, StrictStr  # 1.5 is not an int, 1 is not a bool, 3 is not a name


def _at_least(bound: float, number=Int):
    return Annotated[number, Field(ge=bound)]


def _above(bound: float, number=Float):
    return Annotated[number, Field(gt=bound)]


_section = pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(extra="forbid"))


@_section
class ModelConfig:
    name: Str = "regnet20"
    options: dict[str, Any] = field(default_factory=dict)  # checked against the model registry (check_config)
    # Filled in from the data set at the start of a run, so that config.yaml alone rebuilds the model
    # (the dashboard must load a CIFAR-100 model without the CIFAR-100 files).
    num_classes: Int | None = None
    in_channels: Int | None = None
    # The names of the model's outputs, in order: evaluation on a bare test/<class>/ folder maps folders to them.
    class_names: list[Str] | None = None
    input_side: Int | None = None  # the side of the images it was trained on, for the same evaluation transforms


@_section
class DataConfig:
    name: Str = "shapes"
    root: Str = "data"
    val_ratio: Annotated[Float, Field(ge=0, lt=1)] = 0.1
    split_seed: _at_least(0) = 0
    augment: Bool = True
    color_jitter: Bool = False
    workers: _at_least(0) = 2
    # The images train and validation are carved from: a seeded, stratified subset of the training data
    # (seed split_seed); shapes generates exactly this many. null: all of them.
    size: _above(0, Int) | None = None
    # The decoded split as one tensor on the training device, augmented there in batches (regnet.data.device):
    # for sets that fit in memory (CIFAR, MNIST, shapes, Tiny-ImageNet); data.workers is then unused.
    on_device: Bool = False


@_section
class OptimConfig:
    name: Optimizer = "sgd"
    lr: _above(0) = 0.1
    momentum: _at_least(0, Float) = 0.9
    nesterov: Bool = False
    weight_decay: _at_least(0, Float) = 0.0001
    betas: Annotated[list[Float], Field(min_length=2, max_length=2)] = field(default_factory=lambda: [0.9, 0.999])


@_section
class ScheduleConfig:
    name: Schedule = "multistep"
    milestones: list[Float] = field(default_factory=lambda: [0.5, 0.75])  # fractions of all epochs
    gamma: _above(0) = 0.1
    warmup_epochs: _at_least(0, Float) = 0.0  # warmup_cosine: the linear warm-up; onecycle: the rising phase (0 = 30%)

    @field_validator("milestones")
    @classmethod
    def _increasing_fractions(cls, milestones: list[float]) -> list[float]:
        if not all(0 < m <= 1 for m in milestones) or milestones != sorted(milestones):
            raise ValueError(f"schedule.milestones are increasing fractions of the epochs in (0, 1], e.g. "
                             f"[0.5, 0.75]; got {milestones}.")
        return milestones


@_section
class TrainConfig:
    epochs: _at_least(1) = 10
    batch_size: _at_least(1) = 128  # global: split over the processes of a distributed run
    device: Str = "auto"
    seed: _at_least(0) = 0
    amp: Bool = False
    amp_dtype: AmpDtype = "auto"  # auto: bfloat16 on the CPU, float16 (with loss scaling) on CUDA; or name one
    channels_last: Bool = False
    # The regulator's speed layer on CPUs (regnet.models.fast): true, false, or null for $REGNET_FAST (on unless 0).
    fast_gates: Bool | None = None
    compile: Bool = False  # torch.compile the training step's model (and the evaluation's)
    compile_mode: CompileMode = "default"  # torch.compile's mode
    compile_backend: Str = "inductor"  # inductor compiles; aot_eager/eager only trace (tests, debugging)
    grad_clip: _above(0) | None = None
    label_smoothing: Annotated[Float, Field(ge=0, lt=1)] = 0.0
    early_stop_metric: Metric = "val_top1"  # also the metric that picks best.pt
    early_stop_patience: _at_least(1) | None = None
    log_every: _at_least(1) = 20
    # A mid-epoch last.pt at most this often (seconds; null: only at epoch ends), so a kill loses little work.
    checkpoint_every_s: _at_least(0, Float) | None = 300.0
    # Keep the weights every K epochs as checkpoints/epoch-NNN.pt (the first and last epochs too); 0: none.
    keep_every: _at_least(0) = 0

    @field_validator("device")
    @classmethod
    def _known_device(cls, device: str) -> str:
        if device != "auto" and device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(f"train.device must be auto, cpu, cuda, cuda:N or mps, got {device!r}.")
        return device


@_section
class RunConfig:
    runs_root: Str = "runs"
    run_id: Str | None = None


@_section
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


@dataclasses.dataclass(frozen=True)
class Problem:
    """One bad config value: its dotted key (``optim.lr``, ``model.options.cell``), the value, one sentence."""

    key: str
    value: Any
    message: str
    out_of_range: bool = False  # a number of the right type outside its range (a form's field can hold it)


class ConfigError(ValueError):
    """Every problem of a config; ``str()`` is the first one's sentence (the CLI prints it and exits 2)."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__(self.problems[0].message)


Layer = Union[Config, Mapping[str, Any], str]


def build_config(*layers: Layer, base: Config | None = None) -> Config:
    """The one way to make a config: ``base`` (default: the defaults), each layer applied in turn, then checked.

    A layer is a mapping of sections (a ready config, a run's config.yaml, the form's values), a whole
    ``Config``, or one ``KEY=VALUE`` assignment (``--set optim.lr=0.05``, the value read as YAML). Model
    options follow their model: when a layer changes ``model.name``, the options the new model does not
    accept are dropped (``regnet.models.model_info`` knows which). Raises ``ConfigError``.
    """
    return check_config(merge_layers(*layers, base=base))


def merge_layers(*layers: Layer, base: Config | None = None) -> dict:
    """``build_config`` without the value checks: the merged mapping, with unknown keys already refused."""
    data = config_to_dict(base if base is not None else Config())
    for layer in layers:
        if isinstance(layer, str):
            layer = parse_assignment(layer)
        elif isinstance(layer, Config):
            layer = config_to_dict(layer)
        _merge_layer(data, layer)
    return data


def check_config(data: Mapping[str, Any]) -> Config:
    """A merged mapping as a ``Config``, or ``ConfigError`` naming every bad value (types, ranges, model options)."""
    problems = []
    try:
        config = Config(**copy.deepcopy(dict(data)))
    except pydantic.ValidationError as error:
        problems = [_problem(item) for item in error.errors()]
        config = None
    model = data.get("model") or {}
    if isinstance(model.get("name"), str) and isinstance(model.get("options"), dict):
        problems += option_problems(model["name"], model["options"])
    if problems:
        raise ConfigError(problems)
    return config


def option_problems(model: str, options: Mapping[str, Any]) -> list[Problem]:
    """The registry's verdict on each option of ``model`` (an unknown model is one problem on model.name)."""
    from regnet.models import check_options, model_info

    try:
        model_info(model)
    except ValueError as error:
        return [Problem("model.name", model, str(error))]
    problems = []
    for key, value in options.items():
        try:
            check_options(model, {key: value})
        except ValueError as error:
            problems.append(Problem(f"model.options.{key}", value, str(error)))
    return problems


_RANGE_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")
_PLAIN = {"a valid integer": "a whole number", "a valid boolean": "true or false", "a valid number": "a number",
          "a valid string": "text", "a valid list": "a list",
          "a valid dictionary": "a mapping"}


def _problem(item: dict) -> Problem:
    """pydantic's error as our sentence: 'optim.lr must be greater than 0, got 0.'"""
    key = ".".join(f"[{part}]" if isinstance(part, int) else str(part) for part in item["loc"]).replace(".[", "[")
    value = item.get("input")
    if item["type"] == "value_error":  # our own validators already wrote the whole sentence
        return Problem(key, value, str(item["ctx"]["error"]))
    allowed = re.sub(r"^\w+ should (be |have )?", lambda m: "must " + (m.group(1) or ""), item["msg"])
    allowed = re.sub(r"( after validation)?, not \d+$", "", allowed)
    for words, plain in _PLAIN.items():
        allowed = allowed.replace(words, plain)
    if item["type"] == "missing":
        return Problem(key, None, f"Config key {key} is missing; give it a value.")
    return Problem(key, value, f"{key} {allowed}, got {value!r}.", out_of_range=item["type"] in _RANGE_ERRORS)


def parse_assignment(assignment: str) -> dict:
    """``KEY=VALUE`` as a one-key layer; the value is read as YAML (``0.05``, ``true``, ``[1, 2]``, ``null``)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key.strip():
        raise _one(assignment, f"Override {assignment!r} is not of the form KEY=VALUE, e.g. optim.lr=0.05.")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise _one(key, f"The value in {assignment!r} is not valid YAML; quote it or fix it.") from None
    parts = key.strip().split(".")
    if len(parts) == 3 and parts[:2] == ["model", "options"]:
        return {"model": {"options": {parts[2]: value}}}
    if len(parts) != 2:
        raise _one(key, f"Config key {key.strip()!r} should look like section.key, e.g. optim.lr or "
                        f"model.options.cell.")
    return {parts[0]: {parts[1]: value}}


def _merge_layer(data: dict, layer: Any) -> None:
    """Apply one layer in place; unknown sections and keys are refused with the keys that exist."""
    if not isinstance(layer, Mapping):
        raise _one("", f"A config must be a mapping of sections (model, data, optim, ...), not "
                       f"{type(layer).__name__}.")
    for section, values in layer.items():
        section = SECTION_ALIASES.get(section, section)
        if values is None:
            continue
        if section not in data:
            raise _one(section, f"Unknown config section {section!r}; sections are {', '.join(sorted(data))}.")
        if not isinstance(values, Mapping):
            raise _one(section, f"Config section {section!r} must be a mapping of keys, not {values!r}.")
        for key in values:
            if key not in data[section]:
                close = difflib.get_close_matches(str(key), list(data[section]), n=1)
                hint = f" (did you mean {section}.{close[0]}?)" if close else ""
                raise _one(f"{section}.{key}", f"Unknown config key '{section}.{key}'{hint}; {section} has: "
                                               f"{', '.join(data[section])}.")
        if section == "model":
            _merge_model(data["model"], values)
        else:
            data[section].update(copy.deepcopy(dict(values)))


def _merge_model(model: dict, values: Mapping[str, Any]) -> None:
    """The model section: a new model keeps only the options it accepts, then the layer's options apply."""
    new_name = values.get("name", model["name"])
    if new_name != model["name"] and isinstance(new_name, str):
        accepted = accepted_options(new_name)
        if accepted is not None and isinstance(model.get("options"), dict):
            model["options"] = {k: v for k, v in model["options"].items() if k in accepted}
    for key, value in values.items():
        if key == "options" and isinstance(value, Mapping) and isinstance(model.get("options"), dict):
            model["options"] = {**model["options"], **copy.deepcopy(dict(value))}
        else:
            model[key] = copy.deepcopy(value)


def accepted_options(model: str) -> set[str] | None:
    """The option names ``model`` accepts; None for a name the registry does not know (reported later)."""
    from regnet.models import model_info

    try:
        return set(model_info(model).options)
    except ValueError:
        return None


def _one(key: str, message: str) -> ConfigError:
    return ConfigError([Problem(key, None, message)])


def config_to_dict(config: Config) -> dict:
    """Plain dicts, lists and scalars only: what YAML, JSON and ``torch.load(weights_only=True)`` all accept."""
    return dataclasses.asdict(config)


def config_from_dict(data: Mapping[str, Any], base: Config | None = None) -> Config:
    """``data`` (nested sections, e.g. a run's config.yaml) over ``base`` (default: the defaults), checked."""
    return build_config(data, base=base)


def read_config_file(path: str | Path) -> dict:
    """A YAML config file as a layer; a missing file or bad YAML is a one-sentence ``ValueError``."""
    path = Path(path)
    return read_yaml_mapping(path, missing=f"Config file {path} does not exist; pass an existing YAML file "
                                           f"(see configs/).")


def load_config(path: str | Path, base: Config | None = None) -> Config:
    """A YAML config file over ``base`` (default: the defaults), checked."""
    return build_config(read_config_file(path), base=base)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(dump_config(config))


def dump_config(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)


def apply_override(config: Config, assignment: str) -> Config:
    """Apply one ``KEY=VALUE`` to ``config`` in place (checked like any layer) and return it."""
    updated = build_config(assignment, base=config)
    for section in dataclasses.fields(Config):
        setattr(config, section.name, getattr(updated, section.name))
    return config


def lower_is_better(metric: str) -> bool:
    return metric.endswith("loss")
