"""Config, training loop, metrics, checkpoints, run folders and the CLI behind ``python -m regnet``."""
