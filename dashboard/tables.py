"""What Compare explains: the HParams table (results first, then the config keys that differ), runs grouped by
all but their seed, exports.

The HParams table is metric-first, as TensorBoard's HParams tab and W&B's runs table: each chosen metric at
the best and the final epoch (the contract's ``comparison_row``), then only the settings that differ, each
once under a short label. Its values are rounded once, here, so the screen, the CSV, the Markdown and the
LaTeX hold the same numbers. Runs are grouped by their config, never by folder: the runs of a seed study (a
folder of ordinary run folders) and three runs started by hand with seeds 0, 1, 2 form the same group. A
group's line holds the mean of each metric and its band, min to max or mean ± 1 std (the column names say
which). Markdown and LaTeX are written here (a few lines each) rather than with pandas' ``to_markdown``/
``Styler``, which need ``tabulate`` and ``jinja2``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Mapping, Sequence

import pandas as pd

from regnet.dashboard.charts import METRIC_LABELS
from regnet.dashboard.run_listing import FRACTION_METRICS, RunInfo
from regnet.models import model_info
from regnet.runs import comparison_row, read_config_dict
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


OPTION_PREFIX = "model.options."
IDENTITY_KEYS = ("model.name", "data.name")  # first among the settings: what ran on what


def differing_keys(configs: Mapping[str, Mapping[str, object]], ignore: Sequence[str] = ()) -> list[str]:
    """The config keys whose value is not the same in every run (a key missing in some run differs), the
    model and data set first, then sorted. A model option differs only where the runs whose model has it
    disagree: the others lack it because their model differs, which ``model.name`` already says."""
    order = {key: at for at, key in enumerate(IDENTITY_KEYS)}
    keys = sorted({key for config in configs.values() for key in config} - set(ignore),
                  key=lambda key: (order.get(key, len(order)), key))
    return [key for key in keys if len({repr(config.get(key)) for config in configs.values()
                                        if key in config or not key.startswith(OPTION_PREFIX)}) > 1]


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


WHENS = ("best", "final")  # each metric at the checkpointed best epoch, and at the last epoch


def _label_parts(key: str) -> list[str]:
    """A key's parts as a label reads them: ``optim.name`` is the optimiser, ``data.name`` the data set."""
    parts = key.split(".")
    if len(parts) > 1 and parts[-1] == "name":
        parts = parts[:-1]
    return ["dataset"] if parts == ["data"] else parts


def key_labels(keys: Sequence[str]) -> dict[str, str]:
    """Each dotted config key's column label: its shortest trailing part that no other key shares
    (``optim.lr`` -> ``lr``, ``model.options.cell`` -> ``cell``, ``model.name`` -> ``model``), so the table
    stays narrow enough for a paper and never shows one setting twice under two names."""
    parts = {key: _label_parts(key) for key in keys}
    size = dict.fromkeys(keys, 1)
    while True:
        labels = {key: ".".join(parts[key][-size[key]:]) for key in keys}
        clashes = [key for key in keys if list(labels.values()).count(labels[key]) > 1
                   and size[key] < len(parts[key])]
        if not clashes:
            return labels
        for key in clashes:
            size[key] += 1


def metric_column(when: str, metric: str) -> str:
    """``best val top-1 %``: a metric at the best (or final) epoch; fractions are shown as percentages."""
    unit = " %" if metric in FRACTION_METRICS else ""
    return f"{when} {METRIC_LABELS.get(metric, metric)}{unit}"


def _rounded(metric: str, value) -> float | None:
    """A metric as every view of the table shows it: percentages to 2 decimals, other values to 4 digits."""
    if value is None or not math.isfinite(value):
        return None
    return round(100.0 * value, 2) if metric in FRACTION_METRICS else float(f"{value:.4g}")


@dataclass(frozen=True)
class HParamsTable:
    """The HParams view's table (metric-first) and what its columns are: one frame feeds the screen and the
    CSV, Markdown and LaTeX downloads, so each export holds exactly what is shown."""

    frame: pd.DataFrame
    metric_columns: list[str]
    key_columns: dict[str, str]  # column label -> dotted config key

    def paper_columns(self) -> list[str]:
        """The columns a paper's table takes: the differing settings, then the metrics. The run (or group)
        names are left out when settings tell the rows apart, and kept when nothing does."""
        identity = [column for column in ("run", "group") if column in self.frame]
        count = ["runs"] if "runs" in self.frame else []
        return [*(self.key_columns or identity), *count, *self.metric_columns]

    def sorted(self, by: str, descending: bool) -> "HParamsTable":
        """Rows ordered by column ``by`` (stable; empty cells last)."""
        frame = self.frame.sort_values(by, ascending=not descending, na_position="last", kind="stable",
                                       key=lambda column: column.map(_sort_key) if column.dtype == object else column)
        return replace(self, frame=frame.reset_index(drop=True))


def _sort_key(value) -> tuple:
    """Mixed config values (numbers, text, empty) in one order: numbers by value, then text."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return (2, "")
    return (0, value, "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, str(value))


def hparams_table(runs: Sequence[RunInfo], configs: Mapping[str, Mapping[str, object]],
                  metrics: Sequence[str], whens: Sequence[str] = WHENS) -> HParamsTable:
    """One row a run: its key, then each chosen metric at the best and/or final epoch (the contract's
    ``comparison_row``: one definition of best), then only the config keys that differ between the runs.

    Seed keys count as differences here (a seed study's table shows its seeds); the run id and what the
    engine recorded of the data never do (``IGNORED_PREFIXES``).
    """
    keys = differing_keys(configs)
    labels = key_labels(keys)
    rows = []
    for run in runs:
        compared = comparison_row(run)
        row = {"run": run.key}
        for metric in metrics:
            for when in whens:
                row[metric_column(when, metric)] = _rounded(metric, compared.get(f"{when}_{metric}"))
        row.update({labels[key]: _config_value(configs.get(run.key, {}).get(key)) for key in keys})
        rows.append(row)
    metric_columns = [metric_column(when, metric) for metric in metrics for when in whens]
    frame = pd.DataFrame(rows, columns=["run", *metric_columns, *labels.values()])
    return HParamsTable(frame, metric_columns, {label: key for key, label in labels.items()})


def _seeds(keys: Sequence[str], configs: Mapping[str, Mapping[str, object]]) -> str:
    parts = []
    for seed_key in SEED_KEYS:
        values = [configs.get(key, {}).get(seed_key) for key in keys]
        if len({repr(value) for value in values}) > 1:
            parts.append(f"{seed_key} {', '.join(map(str, values))}")
    return "; ".join(parts) or "-"


def grouped_table(table: HParamsTable, configs: Mapping[str, Mapping[str, object]],
                  groups: Mapping[str, Sequence[str]], band: str = "min-max") -> HParamsTable:
    """``table`` with one line a seed group: its runs and seeds, each metric's mean and band (``band``
    "min-max": ``<metric> min`` and ``max`` columns; "std": ``<metric> std``), then the config columns on
    which the group's runs agree (settings are never averaged; the seed keys' columns are left out)."""
    frame, seed_columns = table.frame, {label for label, key in table.key_columns.items() if key in SEED_KEYS}
    rows = []
    for label, keys in groups.items():
        part = frame[frame["run"].isin(keys)]
        row = {"group": label, "runs": len(part), "seeds": _seeds(keys, configs)}
        for column in table.metric_columns:
            values = part[column].astype(float)
            stats = {"mean": values.mean(), **{stat: (getattr(values, stat)() if stat != "std" or len(values) > 1
                                                      else 0.0) for stat in BANDS[band]}}
            row.update({f"{column} {stat}": value for stat, value in stats.items()})
        for column in table.key_columns:
            if column not in seed_columns and part[column].nunique(dropna=False) <= 1:
                row[column] = part[column].iloc[0] if len(part) else None
        rows.append(row)
    metric_columns = [f"{column} {stat}" for column in table.metric_columns for stat in ("mean", *BANDS[band])]
    keys = {label: key for label, key in table.key_columns.items() if any(label in row for row in rows)}
    frame = pd.DataFrame(rows, columns=["group", "runs", "seeds", *metric_columns, *keys])
    return HParamsTable(frame.round({column: 2 if "%" in column else 4 for column in metric_columns}),
                        metric_columns, keys)


def _cell(value, percent: bool = False) -> str:
    """A cell as text: percentages with 2 decimals (a column of them lines up), other numbers to 4 digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.2f}" if percent else f"{value:.4g}"
    return str(value)


def _cells(table: pd.DataFrame, row) -> list[str]:
    return [_cell(value, "%" in str(column)) for column, value in zip(table.columns, row)]


def to_markdown(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (pipes in cells escaped), percentages to 2 decimals, other numbers to 4
    significant digits."""
    def line(cells) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    header = [line(map(str, table.columns)), "|" + "|".join("---" for _ in table.columns) + "|"]
    return "\n".join(header + [line(_cells(table, row)) for row in table.itertuples(index=False)]) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _latex(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(char, char) for char in text)


def to_latex(table: pd.DataFrame) -> str:
    """A booktabs ``tabular`` (\\usepackage{booktabs}), text escaped, numbers right-aligned; for the HParams
    table, pass ``frame[paper_columns()]``: the settings and metrics, a few columns a paper can take."""
    align = "".join("r" if pd.api.types.is_numeric_dtype(table[c]) and not pd.api.types.is_bool_dtype(table[c])
                    else "l" for c in table.columns)
    rows = [" & ".join(map(_latex, _cells(table, row))) + r" \\" for row in table.itertuples(index=False)]
    return "\n".join([rf"\begin{{tabular}}{{{align}}}", r"\toprule",
                      " & ".join(_latex(str(c)) for c in table.columns) + r" \\", r"\midrule", *rows,
                      r"\bottomrule", r"\end{tabular}"]) + "\n"
