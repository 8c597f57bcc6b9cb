"""Config, training loop, metrics, checkpoints, run folders and the CLI behind ``python -m regnet``."""
from .config import Config, apply_override, build_config, config_from_dict, config_to_dict, load_config
from .loop import RunFailed, train
from .runfolder import RunFolder, read_metrics, read_status
from .evaluate import compare_runs, evaluate_run, list_runs, load_run_model

__all__ = [
    "Config", "apply_override", "build_config", "config_from_dict", "config_to_dict", "load_config",
    "RunFailed", "train",
    "RunFolder", "read_metrics", "read_status",
    "compare_runs", "evaluate_run", "list_runs", "load_run_model",
]
