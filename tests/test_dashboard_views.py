"""Live and Compare with AppTest: the figure JSON the browser gets, state in the URL, the HParams table (metric
first, each differing setting once, sortable), its parallel coordinates, seed groups and the downloads."""
from __future__ import annotations

import json

import pytest
import yaml
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from regnet.dashboard import tables
from test_dashboard_app import APP, fixture_root, line_charts, open_page, runs_root  # noqa: F401 (fixtures)
from test_dashboard_fixtures import SWEEP, metric_lines, write_run, write_sweep

LIVE = "r3-regnet20-shapes-live"


def figures(at: AppTest) -> dict[str, dict]:
    """The page's plotly figures as the browser gets them (JSON), by chart title."""
    specs = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    return {spec["layout"]["title"]["text"]: spec for spec in specs}


def opened_with(page: str, params: dict) -> AppTest:
    """A fresh session (a refresh, a second tab, a shared link) opening ``page`` with ``params`` in its URL."""
    at = AppTest.from_file(str(APP), default_timeout=90)
    for name, value in params.items():
        at.query_params[name] = value
    at.run()
    at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_live_charts_are_readable_from_the_first_points(fixture_root):
    at = open_page("views/live.py", selected=[LIVE])
    shown = line_charts(at)
    assert set(shown) == {"Loss", "Top-1 accuracy", "Top-5 accuracy", "Macro-F1", "Learning rate",
                          "Images per second"}
    top1 = shown["Top-1 accuracy"]
    assert top1["y"]["range"] == [0, 1] and shown["Macro-F1"]["y"]["range"] == [0, 1]
    assert top1["y"]["format"] == "percent" and shown["Loss"]["y"]["range"] is None  # from 0, to the data
    assert [len(curve["x"]) for curve in top1["series"]] == [1, 1] and top1["markers_up_to"] >= 1  # one epoch:
    assert top1["y_label"] == "top-1 accuracy" and top1["x_label"] == "step (optimizer updates)"  # markers
    assert [curve["dash"] for curve in top1["series"]] == [False, True]  # train solid, val dashed
    logged = [line["lr"] for line in metric_lines(1) if line["kind"] == "step"]
    [lr] = shown["Learning rate"]["series"]  # not smoothed (the page's default smoothing is 0.6), no raw copy
    assert lr["y"] == logged and not lr["raw"]
    loss = shown["Loss"]["series"]
    assert [curve["label"] for curve in loss] == ["train loss (raw)", "train loss", "val loss"]
    assert [curve["raw"] for curve in loss] == [True, False, False] and loss[0]["y"] != loss[1]["y"]


def test_live_shows_the_tail_of_a_running_runs_log_collapsed(fixture_root):
    (fixture_root / LIVE / "train.log").write_text("".join(f"line {i}\n" for i in range(100)))
    at = open_page("views/live.py", selected=[LIVE])
    [log] = [e for e in at.expander if "train.log" in e.label]
    assert LIVE in log.label and not log.proto.expanded
    text = log.code[0].value
    assert text.splitlines() == [f"line {i}" for i in range(70, 100)]


def test_live_settings_and_runs_go_into_the_url_and_come_back_from_it(fixture_root):
    at = open_page("views/live.py")
    at.multiselect(key="_select_live").select("r1-resnet20-shapes").select(LIVE).run()
    assert at.query_params["run"] == ["r1-resnet20-shapes", LIVE]  # written by the page
    # The settings are bound to the URL: the browser writes them there (tests/test_browser.py sees it).
    assert [at.get(kind)[0].proto.query_param_key for kind in ("radio", "slider", "selectbox", "button_group")] == [
        "live_x", "live_smooth", "live_refresh", "live_log"]

    again = opened_with("views/live.py", {**at.query_params, "live_x": "epoch", "live_log": "Loss"})  # a refresh
    assert again.multiselect(key="_select_live").value == ["r1-resnet20-shapes", LIVE]
    assert again.radio(key="live_x").value == "epoch"
    shown = line_charts(again)
    assert shown["Loss"]["y"]["log"] and not shown["Macro-F1"]["y"]["log"]
    assert shown["Top-1 accuracy"]["x_label"] == "epoch"
    wall = opened_with("views/live.py", {"run": LIVE, "live_x": "wall time"})
    loss = line_charts(wall)["Loss"]
    assert loss["time"] and min(loss["series"][0]["x"]) > 1e9  # unix seconds on a time axis


STUDY = {"lr01-seed0": (0.1, 0), "lr01-seed1": (0.1, 1), "lr01-seed2": (0.1, 2), "lr005-seed0": (0.05, 0)}


def sweep_table(root, runs=SWEEP, metrics=("val_top1", "val_loss")):
    from regnet.dashboard.run_listing import discover_runs

    write_sweep(root, {key: dict(spec) for key, spec in runs.items()})
    chosen = [run for run in discover_runs(root) if run.key in runs]
    return tables.hparams_table(chosen, tables.run_configs(chosen), metrics)


def test_the_hparams_table_puts_the_metrics_first_then_each_differing_setting_once(tmp_path):
    hparams = sweep_table(tmp_path)
    table = hparams.frame.set_index("run")
    assert list(hparams.frame.columns) == ["run", "best val top-1 %", "final val top-1 %", "best val loss",
                                           "final val loss", "cell", "lr"]
    assert hparams.key_columns == {"cell": "model.options.cell", "lr": "optim.lr"}
    assert table.loc["lr0.1-lstm", "best val top-1 %"] == 87.65  # rounded to what the screen shows
    assert table.loc["lr0.01-gru", "final val loss"] == 0.1235 and table.loc["lr0.01-gru", "lr"] == 0.01
    # A model that differs is one column, "model", never also "model.name"; data sets likewise.
    mixed = dict(SWEEP, resnet={"model.name": "resnet20", "model.options": {}, "data.name": "mnist",
                                "val": (0.7, 0.5)})
    # The regulator's options (fusion, gates, memory...) are not differences: only the model that has them does.
    assert list(sweep_table(tmp_path / "mixed", mixed).key_columns) == ["model", "dataset", "cell", "lr"]


def test_the_hparams_table_sorts_by_any_column_with_empty_cells_last(tmp_path):
    hparams = sweep_table(tmp_path)
    assert list(hparams.sorted("best val top-1 %", descending=True).frame["run"]) == [
        "lr0.01-gru", "lr0.1-lstm", "lr0.05-lstm"]
    assert list(hparams.sorted("final val loss", descending=False).frame["run"]) == [
        "lr0.01-gru", "lr0.1-lstm", "lr0.05-lstm"]
    assert list(hparams.sorted("lr", descending=False).frame["lr"]) == [0.01, 0.05, 0.1]
    assert list(hparams.sorted("cell", descending=False).frame["cell"]) == ["gru", "lstm", "lstm"]
    gap = tables.HParamsTable(hparams.frame.assign(**{"best val loss": [None, 0.2, 0.1]}),
                              hparams.metric_columns, hparams.key_columns)
    for descending in (True, False):
        assert gap.sorted("best val loss", descending).frame["best val loss"].isna().tolist()[-1]


def test_the_hparams_exports_hold_the_table_and_the_latex_is_a_paper_table(tmp_path):
    import io

    import pandas as pd

    hparams = sweep_table(tmp_path, metrics=("val_top1",)).sorted("best val top-1 %", True)
    back = pd.read_csv(io.StringIO(hparams.frame.to_csv(index=False)))
    pd.testing.assert_frame_equal(back, hparams.frame, check_dtype=False)
    markdown = tables.to_markdown(hparams.frame).splitlines()
    assert markdown[0] == "| run | best val top-1 % | final val top-1 % | cell | lr |"
    assert markdown[2] == "| lr0.01-gru | 95.00 | 95.00 | gru | 0.01 |"
    latex = tables.to_latex(hparams.frame[hparams.paper_columns()])
    lines = latex.splitlines()
    assert lines[:2] == [r"\begin{tabular}{lrrr}", r"\toprule"] and lines[-2:] == [r"\bottomrule", r"\end{tabular}"]
    assert lines[2] == r"cell & lr & best val top-1 \% & final val top-1 \% \\"  # settings, then metrics; no run ids
    assert r"lstm & 0.1 & 87.65 & 87.65 \\" in lines and "lr0.1-lstm" not in latex
    split = tables.to_latex(sweep_table(tmp_path / "split", {
        "a": {"data.split_seed": 1, "val": (0.5, 1.0)}, "b": {"data.split_seed": 2, "val": (0.6, 1.0)}}).frame)
    assert r"split\_seed" in split  # escaped underscores


def test_the_parallel_coordinates_have_an_axis_per_setting_and_the_metric_last(tmp_path):
    from regnet.dashboard import charts

    hparams = sweep_table(tmp_path).sorted("best val top-1 %", descending=True)  # gru 0.01, lstm 0.1, lstm 0.05
    figure = charts.hparams_figure(hparams.frame, list(hparams.key_columns), "best val top-1 %")
    [trace] = figure.data
    assert trace.type == "parcoords"
    cell, lr, metric = trace.dimensions
    assert (cell.label, cell.ticktext, list(cell.values)) == ("cell", ("gru", "lstm"), [0, 1, 1])
    assert lr.label == "lr (log)" and lr.ticktext == ("0.01", "0.05", "0.1")  # lr spans a factor of 10
    assert list(lr.values) == pytest.approx([-2, -1, -1.30103], abs=1e-5)
    assert metric.label == "best val top-1 %" and list(metric.values) == [95.0, 87.65, 50.0]
    assert list(trace.line.color) == [95.0, 87.65, 50.0]
    # A run without the metric is left out, and a setting only it had different is then no axis.
    unfinished = hparams.frame.assign(**{"best val top-1 %": [95.0, 87.65, None], "cell": ["lstm", "lstm", "gru"]})
    figure = charts.hparams_figure(unfinished, list(hparams.key_columns), "best val top-1 %")
    assert [dimension.label for dimension in figure.data[0].dimensions] == ["lr (log)", "best val top-1 %"]
    assert "(2 runs; 1 without a value left out)" in figure.layout.title.text


def test_compare_shows_the_hparams_table_sorted_and_downloads_it(runs_root, monkeypatch):
    write_sweep(runs_root, {key: dict(spec) for key, spec in SWEEP.items()})
    stored = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, data, mimetype, kind, filename=None):
        if filename and filename.endswith((".csv", ".md", ".tex")):  # not the page's images
            stored[filename] = data.decode() if isinstance(data, bytes) else data
        return original(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    at = opened_with("views/compare.py", {"run": list(SWEEP)})
    table = at.dataframe[0].value
    assert list(table.columns[:3]) == ["run", "best val top-1 %", "final val top-1 %"]
    assert list(table["run"]) == ["lr0.01-gru", "lr0.1-lstm", "lr0.05-lstm"]  # the first metric, best first
    at.selectbox(key="compare_sort").set_value("lr").run()
    at.radio(key="compare_order").set_value("ascending").run()
    table = at.dataframe[0].value
    assert list(table["lr"]) == [0.01, 0.05, 0.1]
    assert stored["regnet_compare.csv"].splitlines()[1].startswith("lr0.01-gru,95.0,95.0,")
    assert stored["regnet_compare.md"].splitlines()[2].startswith("| lr0.01-gru | 95.00 | 95.00 |")
    assert "gru & 0.01 & 95.00 & 95.00 & 0.1235 & 0.1235" in stored["regnet_compare.tex"]
    assert "regnet_curves.csv" in stored
    [chart] = [json.loads(c.proto.spec) for c in at.get("plotly_chart") if "parcoords" in c.proto.spec]
    assert [d["label"] for d in chart["data"][0]["dimensions"]] == ["cell", "lr (log)", "best val top-1 %"]


def test_compare_groups_runs_that_differ_only_in_seed_with_a_band(runs_root):
    write_sweep(runs_root, {key: {"optim.lr": lr, "train.seed": seed, "val": (0.5 + 0.1 * seed, 1.0)}
                            for key, (lr, seed) in STUDY.items()})
    at = opened_with("views/compare.py", {"run": list(STUDY), "compare_seeds": "true", "compare_when": "best",
                                          "compare_metrics": "val_top1"})
    table = at.dataframe[0].value.set_index("group")
    assert list(table.index) == ["lr01-seed0 +2 seeds", "lr005-seed0"] and list(table["runs"]) == [3, 1]
    assert list(table["lr"]) == [0.1, 0.05] and table["seeds"].iloc[0] == "train.seed 0, 1, 2"
    assert "seed" not in table  # a group's seeds are in "seeds", never a setting column
    assert list(table["best val top-1 % mean"]) == pytest.approx([60.0, 50.0])
    assert list(table["best val top-1 % min"]) == [50.0, 50.0] and list(table["best val top-1 % max"]) == [70.0, 50.0]
    loss = figures(at)["Loss"]
    assert sum(trace.get("fill") == "tonexty" for trace in loss["data"]) == 2  # the group's train and val bands
    at.radio(key="compare_band").set_value("std").run()
    table = at.dataframe[0].value
    assert list(table["best val top-1 % std"]) == pytest.approx([10.0, 0.0]) and "best val top-1 % min" not in table
    assert at.radio(key="compare_band").proto.query_param_key == "compare_band"


def test_markdown_and_latex_escape_what_would_break_them():
    import pandas as pd

    table = pd.DataFrame({"run": ["a|b", "50%_{x}"], "value": [0.123456, float("nan")]})
    assert tables.to_markdown(table).splitlines()[2] == "| a\\|b | 0.1235 |"
    assert "50\\%\\_\\{x\\} &  \\\\" in tables.to_latex(table)


def test_seed_groups_are_found_by_config_whatever_the_folders():
    configs = {"study/a": {"optim.lr": 0.1, "train.seed": 0}, "b": {"optim.lr": 0.1, "train.seed": 1},
               "c": {"optim.lr": 0.2, "train.seed": 0}}
    assert tables.seed_groups(configs) == {"study/a +1 seeds": ["study/a", "b"], "c": ["c"]}
    assert tables.differing_keys(configs) == ["optim.lr", "train.seed"]
    assert tables.flat_config({"run": {"run_id": "x"}, "optim": {"betas": [0.9, 0.99]}}) == {"optim.betas": (0.9, 0.99)}


def test_a_key_an_older_run_does_not_spell_out_is_its_default_not_a_difference():
    from regnet.train.config import Config, config_to_dict

    new = tables.flat_config(config_to_dict(Config()))  # a run of today's engine, at the defaults
    new.update({"model.name": "regnet20", "model.options.memory": "carry", "model.class_names": ("a", "b")})
    old = {key: value for key, value in new.items() if key not in ("data.on_device", "model.options.memory")}
    configs = {"old": tables.with_defaults(old), "new": tables.with_defaults(new)}
    assert tables.differing_keys(configs) == []
    configs["reset"] = tables.with_defaults({**new, "model.options.memory": "reset"})
    assert tables.differing_keys(configs) == ["model.options.memory"]
    assert tables.with_defaults({}) == {}  # nothing known of a damaged config: no invented defaults
    assert tables.with_defaults({"model.name": "gone"})["data.on_device"] is False  # an unknown model: config defaults only
    assert tables.flat_config({"model": {"class_names": ["a"], "input_side": 32, "name": "x"}}) == {"model.name": "x"}


def system_line(epoch: int, **seconds: float) -> dict:
    phases = {"data_s": 1.0, "compute_s": 6.0, "eval_s": 2.0, "probe_s": 0.5, "checkpoint_s": 0.25, "other_s": 0.25,
              **seconds}
    return {"kind": "system", "epoch": epoch, "step": 4 * epoch, "time": 1.0e9 + epoch, **phases,
            "wall_s": sum(phases.values()), "cpu_s": 15.0, "cpu_cores": 1.5, "max_rss_mb": 812.0}


def test_live_shows_where_each_epochs_time_went_and_the_process_cpu_and_memory(fixture_root):
    with open(fixture_root / LIVE / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(system_line(1, compute_s=7.0)) + "\n")
    at = open_page("views/live.py", selected=[LIVE])
    bars = figures(at)["Where each epoch's time went"]
    assert [trace["name"] for trace in bars["data"]] == ["data loading", "training steps", "evaluation",
                                                          "regulator probe", "checkpoints", "other"]
    assert [trace["y"] for trace in bars["data"]] == [[1.0], [7.0], [2.0], [0.5], [0.25], [0.25]]
    assert bars["layout"]["barmode"] == "stack"
    [caption] = [c.value for c in at.caption if "CPU cores" in c.value]
    assert "epoch 1: 11.0 s, 1.50 CPU cores" in caption and "peak memory 812 MiB" in caption
    table = [frame.value for frame in at.dataframe if "peak RSS MiB" in frame.value][0]
    assert table.to_dict("records") == [{"epoch": 1, "epoch s": 11.0, "CPU cores": 1.5, "peak RSS MiB": 812.0}]


def test_live_says_while_the_regulator_probe_of_an_epoch_runs(fixture_root):
    from test_live_regulator import regulator_rows, write_regulator

    at = open_page("views/live.py", selected=[LIVE])  # epoch 1's line is written, its probe line is not
    [note] = [i.value for i in at.info if "probing the regulator" in i.value]
    assert note.startswith(f"`{LIVE}`: probing the regulator after epoch 1")
    assert not [c.value for c in at.caption if "gates and states appear here" in c.value]
    write_regulator(fixture_root / LIVE, regulator_rows(1))
    at = open_page("views/live.py", selected=[LIVE])
    assert not [i.value for i in at.info if "probing the regulator" in i.value]
