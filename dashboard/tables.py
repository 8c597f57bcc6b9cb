"""What Compare explains: the config keys that differ between runs, runs grouped by all but their seed, exports.

Runs are grouped by their config, never by folder: the runs of a seed study (a folder of ordinary run
folders) and three runs started by hand with seeds 0, 1, 2 form the same group. A group's line holds the
mean of each metric and its band, min to max or mean ± 1 std (the column names say which). The tables
download as CSV, Markdown and LaTeX; the last two are written here (a few lines each) rather than with
pandas' ``to_markdown``/``Styler``, which need ``tabulate`` and ``jinja2``.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import pandas as pd

from regnet.dashboard.run_listing import RunInfo, compare_table
from regnet.models import model_info
from regnet.runs import read_config_dict
from regnet.train.config import Config, config_to_dict

SEED_KEYS = ("train.seed", "data.split_seed")  # what "differ only in seed" may differ in
# The run id and runs root differ for every run and say nothing about it; the class list and input side are
# what the engine recorded of the data, not settings.
IGNORED_PREFIXES = ("run.", "model.class_names", "model.input_side")
BANDS = {"min-max": ("min", "max"), "std": ("std",)}


def flat_config(config: Mapping, prefix: str = "") -> dict[str, object]:
    """``{"optim": {"lr": 0.1}}`` as ``{"optim.lr": 0.1}``; lists become tuples so values compare and hash."""
    flat = {}
    for name, value in config.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flat_config(value, f"{key}."))
        elif not key.startswith(IGNORED_PREFIXES):
            flat[key] = tuple(value) if isinstance(value, list) else value
    return flat


def run_configs(runs: Sequence[RunInfo]) -> dict[str, dict[str, object]]:
    """Each run's flattened config.yaml, read through the contract's reader, with the defaults of the keys
    it does not spell out; {} for a missing or damaged one."""
    configs = {}
    for run in runs:
        try:
            configs[run.key] = with_defaults(flat_config(read_config_dict(run.path)))
        except ValueError:
            configs[run.key] = {}
    return configs


def with_defaults(flat: dict[str, object]) -> dict[str, object]:
    """``flat`` with every config key and model option it lacks set to its default (the config's, the
    model's). A run recorded before a key existed ran at that key's default, so a run from an older
    version does not differ from a new one in every key added since (``data.on_device``,
    ``model.options.memory``, ...). An empty config stays empty: nothing is known of it.
    """
    if not flat:
        return flat
    defaults = flat_config(config_to_dict(Config()))
    try:
        options = model_info(str(flat.get("model.name"))).options
    except ValueError:  # a model this version does not know: only what the run recorded
        options = {}
    defaults.update(flat_config({"model": {"options": dict(options)}}))
    return {**defaults, **flat}


def differing_keys(configs: Mapping[str, Mapping[str, object]], ignore: Sequence[str] = ()) -> list[str]:
    """The config keys whose value is not the same in every run (a key missing in some run differs), sorted."""
    keys = sorted({key for config in configs.values() for key in config} - set(ignore))
    return [key for key in keys if len({repr(config.get(key)) for config in configs.values()}) > 1]


def seed_groups(configs: Mapping[str, Mapping[str, object]]) -> dict[str, list[str]]:
    """Runs whose configs are equal but for ``SEED_KEYS``, as {label: run keys}, in the order of ``configs``.

    A group of one keeps the run's key as its label; a larger one is named after its first run and the
    number of seeds.
    """
    members: dict[str, list[str]] = {}
    for key, config in configs.items():
        rest = repr(sorted((k, repr(v)) for k, v in config.items() if k not in SEED_KEYS))
        members.setdefault(rest, []).append(key)
    return {(group[0] if len(group) == 1 else f"{group[0]} +{len(group) - 1} seeds"): group
            for group in members.values()}


def _config_value(value) -> object:
    return ", ".join(map(str, value)) if isinstance(value, tuple) else value


def difference_table(runs: Sequence[RunInfo], configs: Mapping[str, Mapping[str, object]]) -> pd.DataFrame:
    """The comparison table (``run_listing.compare_table``) with the config keys that differ between the runs
    after each run's id. "best" is the contract's one definition (the checkpointed best, and each metric at
    its epoch)."""
    table = compare_table(runs)
    for at, key in enumerate(differing_keys(configs), start=1):
        table.insert(at, key, [_config_value(configs[run.key].get(key)) for run in runs])
    return table


def _seeds(part: pd.DataFrame) -> str:
    return "; ".join(f"{key} {', '.join(map(str, part[key]))}" for key in SEED_KEYS
                     if key in part and part[key].nunique() > 1) or "-"


def grouped_table(table: pd.DataFrame, groups: Mapping[str, Sequence[str]], band: str = "min-max") -> pd.DataFrame:
    """``difference_table`` with one line a seed group: its runs, seeds and settings, then each metric's
    mean and band (``band`` "min-max": ``<metric> min`` and ``max`` columns; "std": ``<metric> std``).

    Config columns (dotted keys) are settings, shown when the group's runs agree on them, never averaged.
    """
    numeric = [c for c in table.columns if "." not in c and c != "best epoch"
               and pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])]
    rows = []
    for label, keys in groups.items():
        part = table[table["run"].isin(keys)]
        row = {"group": label, "runs": len(part), "seeds": _seeds(part)}
        for column in table.columns:
            if column in numeric:
                values = part[column].astype(float)
                row[f"{column} mean"] = values.mean()
                for stat in BANDS[band]:
                    row[f"{column} {stat}"] = getattr(values, stat)() if stat != "std" or len(values) > 1 else 0.0
            elif column not in ("run", *SEED_KEYS) and part[column].nunique(dropna=False) <= 1:
                row[column] = part[column].iloc[0] if len(part) else None
        rows.append(row)
    return pd.DataFrame(rows)


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped), numbers to 4 significant digits."""
    def line(cells) -> str:
        return "| " + " | ".join(_cell(cell).replace("|", "\\|") for cell in cells) + " |"

    header = [line(table.columns), "|" + "|".join("---" for _ in table.columns) + "|"]
    return "\n".join(header + [line(row) for row in table.itertuples(index=False)]) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(value) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in _cell(value))


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular`` (\\usepackage{booktabs}), text escaped, numbers right-aligned."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) else "l" for c in table.columns)
    rows = [" & ".join(_latex(cell) for cell in row) + r" \\" for row in table.itertuples(index=False)]
    return "\n".join([rf"\begin{{tabular}}{{{align}}}", r"\toprule",
                      " & ".join(_latex(c) for c in table.columns) + r" \\", r"\midrule", *rows,
                      r"\bottomrule", r"\end{tabular}"]) + "\n"
