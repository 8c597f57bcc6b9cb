"""A run's parts built from its config, the same way for training, evaluation and the tools.

Training resolves the config against the data set (number of classes, input
channels, every model option with its default) and writes the resolved config
to the run folder; evaluation and the dashboard rebuild the same model from
that file alone, without the data.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from regnet.data.splits import with_object_boxes
from regnet.models import build_model, model_info
from regnet.models.detection import default_box_rule

from .config import Config, check_config, config_to_dict


def check_names(config: Config) -> None:
    """Fail fast, before any data is read or any folder made, on an unknown data set or any value the schema
    refuses (a ``Config`` changed attribute by attribute skipped the check ``build_config`` makes)."""
    from regnet.data import resolve_name

    check_config(config_to_dict(config))
    config.data.name = resolve_name(config.data.name)


def load_data(config: Config, *, augment: bool | None = None):
    """``regnet.data.load_splits`` with the config's data section (``augment`` overrides it for evaluation)."""
    from regnet.data import load_splits

    d = config.data
    return load_splits(d.name, d.root, val_ratio=d.val_ratio, split_seed=d.split_seed,
                       augment=d.augment if augment is None else augment, color_jitter=d.color_jitter, size=d.size)


def resolve_model(config: Config, data_info) -> Config:
    """Fill in classes, channels and every model option from the data set, so config.yaml alone rebuilds the model.

    A config that names a number of classes or channels other than the data's
    is an error: the model could not be trained on that data.
    """
    m = config.model
    for key, value in (("num_classes", data_info.num_classes), ("in_channels", data_info.in_channels)):
        given = getattr(m, key)
        if given is not None and given != value:
            raise ValueError(f"model.{key}={given} does not match data set {data_info.name} ({value}); "
                             f"remove model.{key} from the config.")
        setattr(m, key, value)
    m.class_names, m.input_side = list(data_info.class_names), data_info.image_size
    defaults = model_info(m.name).options
    options = {**defaults, **m.options}
    if "image_size" in defaults and "image_size" not in m.options:
        options["image_size"] = data_info.image_size  # MnistCNN's classifier depends on the input side
    if options.get("boxes") == "auto":
        options["boxes"] = default_box_rule(data_info.family)  # rcnn_classifier's training box
    m.options = {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}
    return config


def build_model_from_config(config: Config) -> nn.Module:
    m = config.model
    return build_model(m.name, num_classes=m.num_classes, in_channels=m.in_channels, **m.options)


def make_batches(config: Config, split, info, batch_size: int, sampler, device: torch.device, *, train: bool,
                 generator: torch.Generator | None = None):
    """The batches of one split: a DataLoader over the standard transforms, or with ``data.on_device`` the
    split decoded once onto ``device`` and augmented there (``regnet.data.device``); the same sampler order.
    A model that trains on the data's object boxes (``boxes="mask"``) gets (images, labels, boxes) batches."""
    d = config.data
    object_boxes = train and config.model.options.get("boxes") == "mask"  # rcnn_classifier's shapes boxes
    if object_boxes and d.on_device:
        raise ValueError("boxes='mask' takes each image's object box from the data loader, which data.on_device "
                         "skips; set data.on_device=false, or choose boxes='image'.")
    if not d.on_device:
        split = with_object_boxes(split) if object_boxes else split
        return make_loader(split, batch_size, sampler, d.workers, device, generator if train else None)
    from regnet.data.device import DeviceBatches, check_on_device

    check_on_device(info, d.color_jitter)
    return DeviceBatches(split, info, batch_size, sampler, device, augment=train and d.augment)


def compile_model(model: nn.Module, config: Config) -> nn.Module:
    """``torch.compile`` with the config's mode and backend; the module itself (and its state dict) is unchanged.

    The compiled wrapper shares the module's parameters, so checkpoints are
    saved from the module and carry no ``_orig_mod.`` prefix.
    """
    t = config.train
    if not t.compile:
        return model
    import torch._dynamo

    backends = torch._dynamo.list_backends(exclude_tags=())
    if t.compile_backend not in backends:
        raise ValueError(f"train.compile_backend {t.compile_backend!r} is not a torch.compile backend; "
                         f"choose one of {', '.join(sorted(backends))}.")
    mode = None if t.compile_mode == "default" or t.compile_backend != "inductor" else t.compile_mode
    return torch.compile(model, mode=mode, backend=t.compile_backend)


def make_loader(dataset: Dataset, batch_size: int, sampler, workers: int, device: torch.device,
                generator: torch.Generator | None = None) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
                      pin_memory=device.type == "cuda", generator=generator, drop_last=False,
                      worker_init_fn=ignore_stop_signals if workers else None)


def ignore_stop_signals(worker_id: int) -> None:
    """Loader workers leave SIGINT and SIGTERM to the trainer.

    Ctrl-C in a terminal (or ``kill -- -PGID``) reaches the whole process group; a worker that died of it
    would fail the run with "DataLoader worker killed by signal" instead of letting it stop cleanly after
    its step. The trainer shuts its workers down itself when it stops.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

