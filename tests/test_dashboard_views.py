"""Live and Compare with AppTest: the figure JSON the browser gets, state in the URL, the config-difference
table, seed groups and the downloads (issue 12)."""
from __future__ import annotations

import json

import pytest
import yaml
from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage
from streamlit.testing.v1 import AppTest

from regnet.dashboard import tables
from test_dashboard_app import APP, fixture_root, open_page, runs_root  # noqa: F401 (fixtures)
from test_dashboard_fixtures import metric_lines, write_run

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
    shown = figures(at)
    assert set(shown) == {"Loss", "Top-1 accuracy", "Top-5 accuracy", "Macro-F1", "Learning rate",
                          "Images per second"}
    top1 = shown["Top-1 accuracy"]
    assert top1["layout"]["yaxis"]["range"] == [0, 1] and shown["Macro-F1"]["layout"]["yaxis"]["range"] == [0, 1]
    assert [trace["mode"] for trace in top1["data"]] == ["lines+markers"] * 2  # one epoch: single points
    assert top1["layout"]["yaxis"]["title"]["text"] == "top-1 accuracy"
    logged = [line["lr"] for line in metric_lines(1) if line["kind"] == "step"]
    [lr] = shown["Learning rate"]["data"]  # not smoothed (the page's default smoothing is 0.6), no raw copy
    assert lr["y"] == logged and lr["mode"] == "lines+markers"
    loss_names = [trace.get("name") for trace in shown["Loss"]["data"]]
    assert loss_names == ["train loss (raw)", "train loss", "val loss"]
    assert shown["Loss"]["layout"]["hoverlabel"]["namelength"] == -1


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
    shown = figures(again)
    assert shown["Loss"]["layout"]["yaxis"]["type"] == "log" and "type" not in shown["Macro-F1"]["layout"]["yaxis"]
    assert shown["Top-1 accuracy"]["layout"]["xaxis"]["title"]["text"] == "epoch"
    wall = opened_with("views/live.py", {"run": LIVE, "live_x": "wall time"})
    assert figures(wall)["Loss"]["layout"]["xaxis"]["type"] == "date"


def write_study(root, model_lrs: dict[str, tuple[float, int]]) -> None:
    """Runs named by key with (lr, seed) in their config; sub-folders of the root, like a seed study's."""
    for index, (run_id, (lr, seed)) in enumerate(model_lrs.items()):
        run_dir = write_run(root, run_id, epochs_done=2, epochs=2, started_at=1e9 + index)
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        config["optim"]["lr"], config["train"]["seed"] = lr, seed
        (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
        status = json.loads((run_dir / "status.json").read_text())
        status["best_value"] = 0.5 + 0.1 * seed
        (run_dir / "status.json").write_text(json.dumps(status))


STUDY = {"lr01-seed0": (0.1, 0), "lr01-seed1": (0.1, 1), "lr01-seed2": (0.1, 2), "lr005-seed0": (0.05, 0)}


def test_compare_tables_the_config_keys_that_differ_beside_best_and_final(runs_root):
    write_study(runs_root, STUDY)
    at = opened_with("views/compare.py", {"run": list(STUDY)})
    table = at.dataframe[0].value
    assert list(table["run"]) == list(STUDY)
    assert list(table.columns[1:6]) == ["optim.lr", "train.seed", "best metric", "best", "best epoch"]
    assert {"best val top-1", "final val top-1"} <= set(table.columns)  # each metric at the best epoch and the last
    assert list(table["optim.lr"]) == [0.1, 0.1, 0.1, 0.05] and list(table["train.seed"]) == [0, 1, 2, 0]
    assert list(table["best"]) == pytest.approx([0.5, 0.6, 0.7, 0.5])  # status.json's, the contract's best
    assert list(table["final val top-1"]) == [0.5] * 4
    assert "`optim.lr`, `train.seed`" in "\n".join(c.value for c in at.caption)


def test_compare_groups_runs_that_differ_only_in_seed_with_a_band(runs_root):
    write_study(runs_root, STUDY)
    at = opened_with("views/compare.py", {"run": list(STUDY), "compare_seeds": "true"})
    table = at.dataframe[0].value
    assert list(table["group"]) == ["lr01-seed0 +2 seeds", "lr005-seed0"] and list(table["runs"]) == [3, 1]
    assert list(table["optim.lr"]) == [0.1, 0.05] and table["seeds"][0] == "train.seed 0, 1, 2"
    assert list(table["best mean"]) == pytest.approx([0.6, 0.5])
    assert list(table["best min"]) == pytest.approx([0.5, 0.5]) and list(table["best max"]) == pytest.approx([0.7, 0.5])
    loss = figures(at)["Loss"]
    assert sum(trace.get("fill") == "tonexty" for trace in loss["data"]) == 2  # the group's train and val bands
    at.radio(key="compare_band").set_value("std").run()
    table = at.dataframe[0].value
    assert list(table["best std"]) == pytest.approx([0.1, 0.0]) and "best min" not in table
    assert at.radio(key="compare_band").proto.query_param_key == "compare_band"


def test_compare_downloads_the_table_as_csv_markdown_and_latex(runs_root, monkeypatch):
    write_study(runs_root, {"lr01-seed0": (0.1, 0), "lr005_x-seed0": (0.05, 0)})
    stored = {}
    original = MemoryMediaFileStorage.load_and_get_id

    def keep(self, data, mimetype, kind, filename=None):
        stored[filename] = data
        return original(self, data, mimetype, kind, filename)

    monkeypatch.setattr(MemoryMediaFileStorage, "load_and_get_id", keep)
    at = opened_with("views/compare.py", {"run": ["lr01-seed0", "lr005_x-seed0"]})
    assert not at.exception
    text = {name: data.decode() if isinstance(data, bytes) else data for name, data in stored.items()
            if name and name.endswith((".csv", ".md", ".tex"))}  # not the page's images
    csv = text["regnet_compare.csv"].splitlines()
    assert csv[0].startswith("run,optim.lr,best metric,best,best epoch,") and csv[2].startswith("lr005_x-seed0,0.05,")
    markdown = text["regnet_compare.md"].splitlines()
    assert markdown[0].startswith("| run | optim.lr | best metric | best | best epoch |")
    assert markdown[1].startswith("|---|---|") and markdown[3].startswith("| lr005_x-seed0 | 0.05 | val_top1 | 0.5 | 2 |")
    latex = text["regnet_compare.tex"]
    assert latex.startswith("\\begin{tabular}{l") and "\\toprule" in latex and "\\bottomrule" in latex
    assert "lr005\\_x-seed0 & 0.05 & val\\_top1 & 0.5 & 2" in latex
    assert "regnet_curves.csv" in text


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
