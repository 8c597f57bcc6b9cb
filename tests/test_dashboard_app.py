"""Each page's wiring with streamlit's AppTest (no browser): empty and fixture runs roots, bad input, launch/stop."""
from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from regnet.dashboard import launcher
from regnet.dashboard.run_listing import LIVE_METRICS
from test_dashboard_fixtures import fake_training_process, fixture_runs_root, write_run

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"
PAGES_WITHOUT_DATA = ["views/run_list.py", "views/new_run.py", "views/live.py", "views/compare.py", "views/inspect.py"]


def open_page(page: str, selected: list[str] | None = None, timeout: float = 90) -> AppTest:
    """Run the app, switch to ``page`` and run it (AppTest needs one run before switching pages)."""
    at = AppTest.from_file(str(APP), default_timeout=timeout)
    if selected is not None:
        at.session_state["selected_runs"] = selected
    at.run()
    if page != "views/run_list.py":
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


def line_charts(at: AppTest) -> dict[str, dict]:
    """The Live page's line charts (dashboard/live_chart.py) as the browser gets them (JSON), by title."""
    [grid] = [json.loads(element.proto.json) for element in at.get("bidi_component")
              if element.proto.component_name.endswith("regnet_line_charts")]
    return {spec["title"]: spec for spec in grid["panels"]}


def line_points(at: AppTest) -> list[int]:
    """Points per Live line chart, all its curves together; its x values must be plain numbers."""
    charts = line_charts(at).values()
    assert all(isinstance(x, (int, float)) for chart in charts for curve in chart["series"] for x in curve["x"])
    return [sum(len(curve["x"]) for curve in chart["series"]) for chart in charts]


def plotly_points(at: AppTest) -> list[int]:
    """Points per plotly chart on the page, read from the figure JSON the browser would get."""
    counts = []
    for chart in at.get("plotly_chart"):
        figure = json.loads(chart.proto.spec)
        xs = [trace.get("x") or [] for trace in figure.get("data", [])]
        assert all(isinstance(x, list) for x in xs), "curves must be sent as plain lists"
        counts.append(sum(map(len, xs)))
    return counts


def test_no_legacy_pages_folder_next_to_the_entry_point():
    # Streamlit would run a page opened by URL on a fresh server without app.py (no frame, no sys.path fix).
    assert not (APP.parent / "pages").exists(), "keep the pages in dashboard/views/, see dashboard/app.py"


@pytest.fixture
def runs_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(root))
    monkeypatch.setenv("REGNET_CHECKPOINTS_ROOT", str(tmp_path / "checkpoints"))
    return root


@pytest.fixture
def fixture_root(runs_root, tmp_path):
    process = fake_training_process()
    fixture_runs_root(runs_root, live_pid=process.pid)
    write_run(tmp_path / "checkpoints", "regnet20-shapes", epochs_done=3, epochs=3)
    yield runs_root
    process.kill()
    process.wait()


@pytest.mark.parametrize("page", PAGES_WITHOUT_DATA)
def test_pages_render_on_a_missing_or_empty_runs_root(runs_root, page):
    at = open_page(page)
    if page == "views/run_list.py":
        assert "does not exist yet" in texts(at.info) and "No runs yet" in texts(at.info)
    runs_root.mkdir()
    at.run()
    assert not at.exception
    if page in ("views/run_list.py", "views/live.py", "views/compare.py"):
        assert "No runs yet" in texts(at.info)


def test_an_unreadable_runs_folder_is_a_message(runs_root, monkeypatch):
    runs_root.mkdir()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("regnet.runs.layout.os.scandir", refuse)
    at = open_page("views/run_list.py")
    assert "Could not read the runs folder" in texts(at.error) and "Permission denied" in texts(at.error)


def test_runs_page_lists_runs_and_shipped_checkpoints(fixture_root):
    at = open_page("views/run_list.py")
    table = at.dataframe[0].value
    assert list(table["run"]) == ["r3-regnet20-shapes-live", "r2-regnet20-shapes", "r1-resnet20-shapes",
                                  "r4-regnet20-shapes-corrupt", "r0-broken", "shipped/regnet20-shapes"]
    assert list(table["status"])[:3] == ["running", "failed", "finished"]
    assert "status.json" in texts(at.caption)  # the broken folder is explained, not an exception
    at.multiselect(key="_select_runs").select("r1-resnet20-shapes").run()
    assert at.session_state["selected_runs"] == ["r1-resnet20-shapes"]


def test_live_page_shows_curves_progress_and_a_failed_runs_error(fixture_root):
    at = open_page("views/live.py", selected=["r2-regnet20-shapes", "r3-regnet20-shapes-live",
                                              "r4-regnet20-shapes-corrupt"])
    assert len(line_charts(at)) == 6 and all(points > 0 for points in line_points(at))
    errors = texts(at.error)
    assert "r2-regnet20-shapes failed" in errors and "CUDA is not available" in errors
    assert "RuntimeError: CUDA is not available" in errors  # the tail of train.log
    assert "skipped 2 corrupt lines" in texts(at.warning)
    bars = [bar.proto.text for bar in at.get("progress")]
    assert any("running · 1/5 epochs done · step 4/20" in text for text in bars), bars
    assert at.button(key="live_stop_r3-regnet20-shapes-live")  # a running run can be stopped from here
    live_metrics = fixture_root / "r3-regnet20-shapes-live" / "metrics.jsonl"
    assert LIVE_METRICS.offset(live_metrics) == live_metrics.stat().st_size  # read incrementally, all consumed


def test_live_page_reuses_its_figures_until_new_metric_lines_arrive(fixture_root):
    at = open_page("views/live.py", selected=["r3-regnet20-shapes-live"])

    def figures() -> dict:
        return at.session_state["live_specs"]

    first = figures()
    first_versions = {title: spec["version"] for title, spec in line_charts(at).items()}
    at.run()
    assert figures() == first  # nothing new: the same figure objects
    assert all(a is b for a, b in zip(first.values(), figures().values()))
    with open(fixture_root / "r3-regnet20-shapes-live" / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "step", "epoch": 1, "step": 5, "time": time.time(), "train_loss": 1.0,
                            "lr": 0.1, "images_per_s": 50.0}) + "\n")
    at.run()
    rebuilt = sorted(key[-1] for key in set(figures()) - set(first))  # titles of the panels rebuilt
    # A step line moves train loss and LR; the epoch panels (images/s as epoch averages) keep their figures.
    assert rebuilt == ["Learning rate", "Loss"]
    shown = line_charts(at)
    assert shown["Top-1 accuracy"]["version"] == first_versions["Top-1 accuracy"]  # the browser redraws nothing
    assert shown["Loss"]["version"] != first_versions["Loss"]
    raw = {curve["label"]: curve for curve in shown["Loss"]["series"]}["train loss (raw)"]
    assert (raw["x"][-1], raw["y"][-1]) == (5, 1.0)  # the new step's loss, sent to the browser


def test_live_page_follows_the_running_run_when_nothing_is_selected(fixture_root):
    at = open_page("views/live.py")
    assert "r3-regnet20-shapes-live" in texts(at.caption)


def test_live_polls_a_cheap_signature_that_changes_only_when_a_run_writes_or_stops(fixture_root, monkeypatch):
    from regnet.dashboard import ui

    at = open_page("views/live.py", selected=["r3-regnet20-shapes-live"])
    assert at.selectbox(key="live_refresh").value == 4.0  # the default check interval
    by_key = {run.key: run for run in ui.all_runs()}
    runs = [by_key["r3-regnet20-shapes-live"], by_key["r1-resnet20-shapes"]]
    seen = ui.change_signature(runs)
    assert ui.change_signature(runs) == seen  # nothing written: the poll does not rerun the page
    with open(fixture_root / "r3-regnet20-shapes-live" / "metrics.jsonl", "a") as f:
        f.write("{}\n")
    moved = ui.change_signature(runs)
    assert moved != seen and moved[1] == seen[1]  # the live run changed, the finished one did not
    launcher.request_stop(fixture_root / "r3-regnet20-shapes-live")
    assert ui.change_signature(runs) != moved  # a stop request shows at the next poll
    monkeypatch.setenv(ui.LIVE_REFRESH_ENV, "5")
    assert ui.live_refresh_s() == 5.0


def test_selection_from_the_browser_never_names_a_path(fixture_root):
    at = open_page("views/live.py", selected=["../../etc", "r1-resnet20-shapes"])
    assert at.multiselect(key="_select_live").value == ["r1-resnet20-shapes"]
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["run"] = ["/etc/passwd", "shipped/regnet20-shapes"]  # a bookmarked Compare link
    at.run()
    at.switch_page("views/compare.py").run()
    assert not at.exception and at.multiselect(key="_select_compare").value == ["shipped/regnet20-shapes"]


def test_compare_page_overlays_runs_and_offers_csv(fixture_root):
    at = open_page("views/compare.py", selected=["r1-resnet20-shapes", "shipped/regnet20-shapes"])
    assert len(at.get("plotly_chart")) == 3  # two curves, and the parallel coordinates of the settings
    assert all(points > 0 for points in plotly_points(at)[:2])
    table = at.dataframe[0].value
    assert set(table["run"]) == {"r1-resnet20-shapes", "shipped/regnet20-shapes"}
    assert list(table["best val top-1 %"]) == [75.0, 75.0] and list(table["model"]) == ["resnet20", "regnet20"]
    assert len(at.get("download_button")) == 4  # table as CSV, Markdown, LaTeX; curves as CSV


def test_new_run_page_refuses_a_data_set_that_is_not_there(runs_root, tmp_path):
    at = open_page("views/new_run.py")
    assert at.button(key="nr_start_button").disabled is False
    at.selectbox(key="nr_dataset").select("cifar10")
    at.text_input(key="nr_root").input(str(tmp_path / "no-data")).run()
    assert not at.exception
    assert texts(at.error) and at.button(key="nr_start_button").disabled
    at.selectbox(key="nr_family").select("tiny_resnet").run()
    assert not at.exception and at.text_input(key="nr_opt_blocks").value == "2, 2, 2"


def test_new_run_form_offers_the_regulator_variants_and_checks_the_stages(runs_root):
    at = open_page("views/new_run.py")
    at.selectbox(key="nr_family").select("regnet").run()
    assert at.selectbox(key="nr_opt_memory").value == "carry" and at.selectbox(key="nr_opt_sharing").value == "stage"
    assert at.checkbox(key="nr_opt_h_norm").value is True and at.selectbox(key="nr_opt_shortcut").value == "A"
    assert at.text_input(key="nr_opt_regulated_stages").value == "1, 2, 3"
    at.selectbox(key="nr_opt_memory").select("reset")
    at.text_input(key="nr_opt_regulated_stages").input("1, 4").run()
    assert not at.exception and "names stage(s) [4]" in texts(at.error)
    assert at.button(key="nr_start_button").disabled
    at.text_input(key="nr_opt_regulated_stages").input("2").run()
    assert not texts(at.error) and not at.button(key="nr_start_button").disabled


def test_a_ready_config_fills_the_new_run_form(runs_root):
    ready = launcher.ready_configs()
    if not ready:
        pytest.skip("no ready configs in configs/")
    name, path = next(iter(ready.items()))
    config = launcher.load_ready_config(path)
    at = open_page("views/new_run.py")
    at.selectbox(key="nr_start").select(name).run()
    assert not at.exception
    model = at.selectbox(key="nr_family").value + (at.selectbox(key="nr_depth").value or "")
    assert model == config["model"]["name"]
    assert at.number_input(key="nr_epochs").value == config["train"]["epochs"]
    assert at.number_input(key="nr_lr").value == pytest.approx(config["optim"]["lr"])
    assert at.selectbox(key="nr_dataset").value == config["data"]["name"]


def error_beside(at: AppTest, words: str) -> bool:
    return any(words in str(error.value) for error in at.error)


def test_the_new_run_form_checks_values_as_the_user_types_and_disables_start(runs_root):
    at = open_page("views/new_run.py")
    at.number_input(key="nr_lr").set_value(0.0).run()
    assert not at.exception and error_beside(at, "optim.lr must be greater than 0, got 0.0.")
    assert at.button(key="nr_start_button").disabled
    at.number_input(key="nr_epochs").set_value(0).run()
    assert error_beside(at, "train.epochs must be greater than or equal to 1, got 0.")
    at.number_input(key="nr_size").set_value(-5).run()
    assert error_beside(at, "data.size must be greater than 0, got -5.") and len(at.error) == 3
    at.number_input(key="nr_lr").set_value(0.05)
    at.number_input(key="nr_epochs").set_value(2)
    at.number_input(key="nr_size").set_value(300).run()
    assert not texts(at.error) and not at.button(key="nr_start_button").disabled
    assert not runs_root.exists() or not list(runs_root.iterdir())  # nothing was launched


def test_a_ready_config_with_a_bad_value_is_named_in_the_form(runs_root, tmp_path, monkeypatch):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: resnet20}\noptim: {lr: 0}\ntrain: {label_smoothing: 1.5}\n")
    (tmp_path / "wrong_type.yaml").write_text("optim: {name: rmsprop}\n")
    monkeypatch.setattr(launcher, "ready_configs", lambda: {"bad": path, "wrong_type": tmp_path / "wrong_type.yaml"})
    at = open_page("views/new_run.py")
    at.selectbox(key="nr_start").select("bad").run()
    assert not at.exception and at.number_input(key="nr_lr").value == 0.0
    assert error_beside(at, "optim.lr must be greater than 0, got 0.") and at.button(key="nr_start_button").disabled
    assert error_beside(at, "train.label_smoothing must be less than 1, got 1.5.")  # a key the form has no field for
    at.number_input(key="nr_lr").set_value(0.1).run()
    assert not error_beside(at, "optim.lr") and at.button(key="nr_start_button").disabled  # label_smoothing still
    at.selectbox(key="nr_start").select("wrong_type").run()
    assert not at.exception and at.selectbox(key="nr_optim").value == "sgd"
    assert "optim.name must be 'sgd', 'adam' or 'adamw', got 'rmsprop'." in texts(at.warning)


def test_a_cloned_run_with_a_bad_value_is_named_in_the_form(runs_root):
    import yaml

    run_dir = write_run(runs_root, "r1-resnet20-shapes", epochs_done=1, epochs=3)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    config["optim"]["lr"] = -0.1
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    at = AppTest.from_file(str(APP), default_timeout=90)
    at.query_params["clone"] = "r1-resnet20-shapes"
    at.run()
    at.switch_page("views/new_run.py").run()
    assert not at.exception and at.selectbox(key="nr_start").value == "clone of r1-resnet20-shapes"
    assert error_beside(at, "optim.lr must be greater than 0, got -0.1.") and at.button(key="nr_start_button").disabled


def test_the_new_run_form_offers_the_rcnn_classifier_from_the_registry(runs_root):
    at = open_page("views/new_run.py")
    assert "rcnn_classifier" in at.selectbox(key="nr_family").options
    at.selectbox(key="nr_family").select("rcnn_classifier").run()
    assert not at.exception
    assert list(at.selectbox(key="nr_opt_boxes").options) == ["auto", "image", "foreground", "mask"]
    assert at.selectbox(key="nr_opt_boxes").value == "auto" and at.number_input(key="nr_opt_image_size").value == 28


def test_data_page_shows_samples_and_class_counts(runs_root):
    at = open_page("views/data.py", timeout=180)
    assert len(at.get("plotly_chart")) == 3
    counts = json.loads(at.get("plotly_chart")[2].proto.spec)["data"]
    assert [bar["name"] for bar in counts] == ["train", "val", "test"]
    at.selectbox(key="data_name").select("cifar10")
    at.text_input(key="data_root").input("/nonexistent/data").run()
    assert not at.exception and "does not exist" in texts(at.error)


def engine_has_train_command() -> bool:
    from regnet.train.cli import build_parser

    return "train" in build_parser()._subparsers._group_actions[0].choices


@pytest.mark.skipif(not engine_has_train_command(), reason="the training engine (python -m regnet train) is not there yet")
def test_new_run_form_launches_a_run_and_stop_stops_it(runs_root):
    at = open_page("views/new_run.py")
    at.selectbox(key="nr_family").select("resnet")
    at.selectbox(key="nr_dataset").select("shapes")
    at.number_input(key="nr_size").set_value(60)
    at.number_input(key="nr_workers").set_value(0)
    at.number_input(key="nr_epochs").set_value(50)
    at.number_input(key="nr_batch").set_value(16)
    at.number_input(key="nr_log_every").set_value(1)
    at.selectbox(key="nr_device").select("cpu")
    at.button(key="nr_start_button").click().run()
    assert not at.exception and not at.error, texts(at.error)
    [run_id] = at.session_state["selected_runs"]
    record = json.loads((runs_root / ".launches" / f"{run_id}.json").read_text())
    process = launcher._CHILDREN[record["pid"]]
    try:
        metrics = runs_root / run_id / "metrics.jsonl"
        deadline = time.time() + 90
        while time.time() < deadline and process.poll() is None and not metrics.exists():
            time.sleep(0.5)
        assert process.poll() is None, (runs_root / ".launches" / f"{run_id}.log").read_text()
        at.run()
        assert "running on this machine" not in texts(at.info)  # the run just started is not "another" run
        assert any(run_id in md.value and "running ·" in md.value for md in at.markdown)
        at.button(key=f"stop_{run_id}").click().run()
        assert (runs_root / run_id / "STOP").exists()
        assert any(run_id in md.value and "stopping... ·" in md.value and "ETA" not in md.value
                   for md in at.markdown) or process.poll() is not None
        assert process.wait(timeout=60) == 0  # a clean stop exits 0
        status = json.loads((runs_root / run_id / "status.json").read_text())
        assert status["state"] == "stopped" and status["epoch"] < 50
        at.switch_page("views/run_list.py").run()
        table = at.dataframe[0].value
        assert table.loc[table["run"] == run_id, "status"].item() == "stopped"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_the_new_run_form_names_tags_and_notes_the_run_it_starts(runs_root, monkeypatch):
    write_run(runs_root, "taken", epochs_done=1)
    launched = {}

    def start_run(config, root, run_id=None, tags=(), note=""):
        launched.update(run_id=run_id, tags=list(tags), note=note)
        return launcher.Launch(run_id, 0, root / run_id, root / "log", [])

    monkeypatch.setattr(launcher, "start_run", start_run)
    at = open_page("views/new_run.py")
    at.text_input(key="nr_name").input("taken")
    at.text_input(key="nr_tags").input("sweep, no!").run()
    assert error_beside(at, "A run named 'taken' exists") and error_beside(at, "Tag 'no!' is not allowed")
    assert at.button(key="nr_start_button").disabled
    at.text_input(key="nr_name").input("../out").run()
    assert error_beside(at, "Run id '../out' is not allowed")
    at.text_input(key="nr_name").input("lstm-lr0.05")
    at.text_input(key="nr_tags").input("sweep, baseline, Sweep")
    at.text_area(key="nr_note").input("first of the sweep").run()
    assert not texts(at.error) and not at.button(key="nr_start_button").disabled
    at.button(key="nr_start_button").click().run()
    assert not at.exception
    assert launched == {"run_id": "lstm-lr0.05", "tags": ["sweep", "baseline"], "note": "first of the sweep"}
