"""The dashboard in a real browser: `streamlit run`, Chromium driven by Playwright, a real training run.

Prints (does not assert) three timings: from `streamlit run` to a rendered Runs page, from a metric line
appended to a run's metrics.jsonl to the point appearing in the browser, and from opening the Inspect page
on a RegNet checkpoint to its last chart. With REGNET_UPDATE_SCREENSHOTS=1
the Live, Compare and Inspect screenshots are copied to docs/ for the README (run the whole file then: the
Inspect screenshot shows the RegNet-20 that the launch test trains from the terminal).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from PIL import Image

from bench_scripts import load_bench
from test_dashboard_fixtures import SWEEP, fake_training_process, write_run, write_shipped_run, write_sweep
from test_inspect_images import long_thin_png

from regnet.data import SHAPE_NAMES

REPO = Path(__file__).resolve().parent.parent
_browser = load_bench("_browser")
CHROMIUM, chromium, dashboard, points, wait_for = (_browser.CHROMIUM, _browser.chromium, _browser.dashboard,
                                                   _browser.points, _browser.wait_for)
UPDATE_SCREENSHOTS = os.environ.get("REGNET_UPDATE_SCREENSHOTS") == "1"
# The launched run: tiny for the test; for the README screenshots, big enough for a few meaningful epochs.
RUN_SIZE, RUN_BATCH, RUN_EPOCHS_SHOWN = (1000, 32, 3) if UPDATE_SCREENSHOTS else (60, 16, 1)
# The run started from the terminal alongside: RegNet-20 against the browser's ResNet-20 for the README,
# the cheaper ResNet-20 (another seed) for the test.
CLI_MODEL = "regnet20" if UPDATE_SCREENSHOTS else "resnet20"
CLI_RUN = f"cli-{CLI_MODEL}-shapes"
# The RegNet checkpoint the Inspect page opens: an untrained regnet20 shipped-style fixture for the test,
# the trained CLI run for the README.
INSPECT_RUN = CLI_RUN if UPDATE_SCREENSHOTS else "shipped/regnet20-fixture"

pytestmark = [pytest.mark.browser, pytest.mark.skipif(not CHROMIUM.exists(), reason="needs /usr/bin/chromium")]

# Validation points (one per completed epoch) in the first chart that has any.
VALIDATION_JS = """() => Math.max(0, ...Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(
    div => (div.data || []).filter(trace => (trace.name || '').startsWith('val')).map(trace => trace.x.length)),
    ...Array.from(document.querySelectorAll('.regnet-chart')).filter(div => div.chart).flatMap(div =>
    div.chart.series.slice(1).map((s, i) => (s.label || '').startsWith('val') ?
    div.chart.data[i + 1].filter(v => v != null).length : 0)))"""
CELLS_JS = """() => Array.from(document.querySelectorAll('[data-testid="stDataFrame"] [role="gridcell"]'))
    .map(cell => cell.textContent)"""
# Heat-map traces in each keyed plotly chart: {element key: count}; Streamlit marks a keyed element's
# container with the class st-key-<key>.
# Page coordinates of the centre of a confusion cell with images in it, off the diagonal when there is one,
# and its [true, predicted] classes: plotly's own axis conversion, so the test clicks where a user would.
CONFUSION_CELL_JS = """div => {
    const cells = div.data.find(t => t.type === 'scatter').customdata;
    const full = cells.filter(c => c[2] > 0), wrong = full.filter(c => c[0] !== c[1]);
    const [t, p] = (wrong.length ? wrong : full)[0];
    const xa = div._fullLayout.xaxis, ya = div._fullLayout.yaxis, box = div.getBoundingClientRect();
    return {x: box.left + xa._offset + xa.l2p(p), y: box.top + ya._offset + ya.l2p(t), true: t, predicted: p};
}"""
# Plot-area widths (pixels) of each subplot of a chart, read from plotly's laid-out axes.
SUBPLOT_WIDTHS_JS = """div => Object.keys(div._fullLayout || {}).filter(k => /^xaxis\\d*$/.test(k))
    .map(k => div._fullLayout[k]._length)"""
HEATMAPS_JS = """() => Object.fromEntries(Array.from(document.querySelectorAll('[class*="st-key-"]'))
    .filter(el => el.querySelector('.js-plotly-plot'))
    .map(el => [Array.from(el.classList).find(c => c.startsWith('st-key-')).slice(7),
                (el.querySelector('.js-plotly-plot').data || []).filter(t => t.type === 'heatmap').length]))"""


@dataclass
class Server:
    url: str
    tmp: Path
    runs: Path
    started: float  # time.monotonic() when `streamlit run` was started


@pytest.fixture(scope="module")
def browser():
    with chromium() as chromium_browser:
        yield chromium_browser


@pytest.fixture(scope="module")
def probe():
    """A stand-in live training process for the fixture run whose metrics the latency test appends to."""
    process = fake_training_process()
    yield process
    process.kill()
    process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory, browser, probe):
    """`streamlit run dashboard/app.py` on a free port with a fixture runs root (the browser is already up)."""
    tmp = tmp_path_factory.mktemp("browser")
    runs = tmp / "runs"
    write_run(runs, "r1-resnet20-shapes", model="resnet20", epochs_done=3, epochs=3)
    write_run(runs, "latency-probe", state="running", epochs_done=1, epochs=5, pid=probe.pid, started_at=1.0)
    if UPDATE_SCREENSHOTS:
        checkpoints = REPO / "checkpoints"
    else:
        checkpoints = tmp / "checkpoints"
        write_shipped_run(checkpoints, INSPECT_RUN.removeprefix("shipped/"), "regnet20")
    env = dict(REGNET_RUNS_ROOT=str(runs), REGNET_CHECKPOINTS_ROOT=str(checkpoints), REGNET_LIVE_REFRESH_S="1")
    try:
        with dashboard(env, tmp / "streamlit.log") as app:
            yield Server(app.url, tmp, runs, app.started)
    finally:
        for record in (runs / ".launches").glob("*.json"):  # never leave a training run behind
            try:
                os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(60_000)
    yield page
    context.close()


def cells(page) -> list[str]:
    return page.evaluate(CELLS_JS)


def nav(page, title: str) -> None:
    """Click a page in the sidebar navigation (same browser session, so the selection is kept)."""
    link = page.locator('[data-testid="stSidebarNav"] a').filter(has=page.get_by_text(title, exact=True))
    link.click()
    page.get_by_role("heading", name=title, exact=True).wait_for()


def settle(page) -> None:
    """Wait until the script run has finished: no element is still marked stale from the run before."""
    wait_for(lambda: page.locator('[data-stale="true"]').count() == 0, 30, "the page to finish rendering")


def shot(page, server: Server, name: str) -> Path:
    settle(page)
    path = server.tmp / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if UPDATE_SCREENSHOTS and name in ("live", "compare", "inspect"):
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copy(path, REPO / "docs" / f"{name}.png")
    return path


def test_runs_page_and_metric_latency(page, server):
    page.goto(server.url)
    wait_for(lambda: "r1-resnet20-shapes" in cells(page), 60, "the Runs table")
    print(f"\n[timing] streamlit run -> rendered Runs page: {time.monotonic() - server.started:.2f} s")
    assert "latency-probe" in cells(page) and "running" in cells(page)
    shot(page, server, "runs")

    page.goto(f"{server.url}/live?run=latency-probe")
    before = wait_for(lambda: points(page), 60, "the Live charts")
    metrics = server.runs / "latency-probe" / "metrics.jsonl"
    row = {"kind": "step", "epoch": 2, "step": 5, "time": time.time(), "train_loss": 0.5, "lr": 0.1,
           "images_per_s": 99.0}
    written = time.monotonic()
    with open(metrics, "a") as handle:
        handle.write(json.dumps(row) + "\n")
    wait_for(lambda: points(page) > before, 30, "the new metric line in the browser", interval=0.02)
    print(f"[timing] metric line written -> point in the browser: {time.monotonic() - written:.2f} s")


# {curve name: its y values} of the chart titled arguments[0] on the page: a plotly chart (Streamlit's theme
# bolds titles), or a Live line chart, whose uPlot instance holds the curves aligned on one x (null: no point).
TRACES_JS = """title => Object.fromEntries([
    ...Array.from(document.querySelectorAll('.js-plotly-plot'))
    .filter(div => (((div.layout || {}).title || {}).text || '').replace(/<[^>]*>/g, '') === title)
    .flatMap(div => (div.data || []).map(trace => [trace.name, Array.from(trace.y || [])])),
    ...Array.from(document.querySelectorAll('.regnet-chart')).filter(div => div.dataset.title === title && div.chart)
    .flatMap(div => div.chart.series.slice(1).map((s, i) => [s.label, div.chart.data[i + 1].filter(v => v != null)]))])"""


def traces(page, title: str) -> dict[str, list]:
    return page.evaluate(TRACES_JS, title)


def test_a_run_written_line_by_line_shows_each_new_value_on_live(page, server, probe):
    """Live open on a RegNet run that the test writes line by line, as the engine does: each step's loss, the
    epoch's validation accuracy, the note while the regulator probe runs, and the epoch's system figures
    appear in the open tab without a reload (the page checks every second here)."""
    run = write_run(server.runs, "written-live", state="running", epochs_done=0, epochs=3, pid=probe.pid,
                    started_at=2.0)
    metrics = run / "metrics.jsonl"

    def append(line: dict) -> float:
        with open(metrics, "a") as handle:
            handle.write(json.dumps({"epoch": 1, "time": time.time(), **line}) + "\n")
        return time.monotonic()

    page.goto(f"{server.url}/live?run=written-live&live_smooth=0.0")
    page.get_by_role("heading", name="Live", exact=True).wait_for()
    waits = []
    for step, loss in [(1, 2.25), (2, 1.875), (3, 1.5)]:
        written = append({"kind": "step", "step": step, "train_loss": loss, "lr": 0.1, "images_per_s": 50.0})
        wait_for(lambda: loss in traces(page, "Loss").get("train loss", []), 30, f"step {step}'s loss {loss}",
                 interval=0.05)
        waits.append(time.monotonic() - written)
        assert traces(page, "Loss")["train loss"][-1] == loss  # the newest point, drawn last
    written = append({"kind": "epoch", "step": 4, "train_loss": 1.5, "train_top1": 0.5, "val_loss": 1.4,
                      "val_top1": 0.625, "val_top5": 0.875, "val_macro_f1": 0.5, "lr": 0.1, "epoch_time_s": 9.0,
                      "images_per_s": 50.0})
    wait_for(lambda: traces(page, "Top-1 accuracy").get("val top-1") == [0.625], 30, "epoch 1's val top-1")
    waits.append(time.monotonic() - written)
    note = page.get_by_text("probing the regulator after epoch 1")
    note.wait_for(timeout=30_000)  # the engine probes right after the epoch line; regulator.jsonl has no line yet
    note.scroll_into_view_if_needed()
    settle(page)
    page.screenshot(path=str(server.tmp / "live-probe-running.png"))
    append({"kind": "system", "step": 4, "data_s": 1.0, "compute_s": 6.5, "eval_s": 1.5, "probe_s": 2.0,
            "checkpoint_s": 0.5, "other_s": 0.25, "wall_s": 11.75, "cpu_s": 14.0, "cpu_cores": 1.19,
            "max_rss_mb": 900.0})
    wait_for(lambda: traces(page, "Where each epoch's time went").get("training steps") == [6.5], 30,
             "epoch 1's system line")
    system = page.get_by_text("peak memory 900 MiB")
    system.wait_for(timeout=30_000)
    system.scroll_into_view_if_needed()
    settle(page)
    page.screenshot(path=str(server.tmp / "live-system.png"))
    print(f"\n[timing] line written -> shown on Live (s): {', '.join(f'{w:.2f}' for w in waits)}")


# Every page, by its URL path, and its heading.
PAGES = [("", "Runs"), ("new_run", "New run"), ("live", "Live"), ("compare", "Compare"), ("data", "Data"),
         ("inspect", "Inspect")]
LOCAL_HOSTS = {"localhost", "127.0.0.1", "[::1]"}


@pytest.mark.parametrize("path, heading", PAGES)
def test_no_page_makes_a_request_that_leaves_this_machine(page, server, path, heading):
    from urllib.parse import urlsplit

    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(f"{server.url}/{path}")
    page.get_by_role("heading", name=heading, exact=True).wait_for()
    settle(page)
    page.wait_for_timeout(1500)  # late fetches (the favicon, icon fonts) come after the first render
    external = [url for url in requests if urlsplit(url).scheme not in ("data", "blob")
                and urlsplit(url).hostname not in {host.strip("[]") for host in LOCAL_HOSTS}]
    assert requests and not external, external
    icon = page.evaluate("() => document.querySelector('link[rel~=\"icon\"]')?.href || ''")
    assert icon.startswith(server.url), icon  # the page icon is served by the dashboard itself


# The chosen runs' chips in the page's run picker, and each chart's x-axis title.
# (the picker's text: its label, then one line a chosen run; options are not in the page until it opens)
CHIPS_JS = """() => document.querySelector('[data-testid="stMultiSelect"]').innerText.split('\\n')
    .map(line => line.trim()).filter(line => line && line !== 'Runs to follow')"""
X_TITLES_JS = """() => [...Array.from(document.querySelectorAll('.js-plotly-plot'))
    .map(div => ((div.layout || {}).xaxis || {}).title).map(title => title && (title.text || title)),
    ...Array.from(document.querySelectorAll('.regnet-chart')).map(div => div.dataset.x)]"""


def test_live_keeps_its_runs_and_settings_over_a_reload_and_in_a_second_tab(page, server, browser):
    chosen = ["latency-probe", "r1-resnet20-shapes"]
    page.goto(f"{server.url}/live?" + "&".join(f"run={key}" for key in chosen))
    wait_for(lambda: points(page), 60, "the Live charts")
    assert page.evaluate(CHIPS_JS) == chosen
    page.get_by_text("epoch", exact=True).first.click()  # the x-axis radio: the browser writes it into the URL
    wait_for(lambda: "live_x=epoch" in page.url, 30, "the x-axis choice in the URL")
    wait_for(lambda: set(page.evaluate(X_TITLES_JS)) == {"epoch"}, 30, "every chart on an epoch axis")
    page.reload()
    wait_for(lambda: points(page), 60, "the Live charts after a reload")
    settle(page)
    assert page.evaluate(CHIPS_JS) == chosen and set(page.evaluate(X_TITLES_JS)) == {"epoch"}
    second = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    try:
        second.goto(page.url)  # a second tab, a bookmark or a shared link
        wait_for(lambda: points(second), 60, "the Live charts in a second tab")
        assert second.evaluate(CHIPS_JS) == chosen and set(second.evaluate(X_TITLES_JS)) == {"epoch"}
    finally:
        second.context.close()


def engine_has_train_command() -> bool:
    from regnet.train.cli import build_parser

    return "train" in build_parser()._subparsers._group_actions[0].choices


# Slow: at full size what the default tests cover in parts: the New run form's launch and Stop
# (test_dashboard_app), Live drawing each new line (above), the Runs, Compare and Data pages (above).
@pytest.mark.slow
@pytest.mark.skipif(not engine_has_train_command(), reason="the training engine (python -m regnet train) is not there yet")
def test_launch_follow_and_stop_a_run_in_the_browser(page, server):
    # A run started from the terminal at the same time must show up like the browser's run.
    cli = subprocess.Popen(
        [sys.executable, "-m", "regnet", "train", "--model", CLI_MODEL, "--dataset", "shapes", "--device", "cpu",
         "--epochs", str(RUN_EPOCHS_SHOWN), "--batch-size", str(RUN_BATCH), "--set", f"data.size={RUN_SIZE}",
         "--set", "train.log_every=1", "--set", "data.workers=0", "--runs-root", str(server.runs), "--run-id", CLI_RUN],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        follow_and_stop(page, server, cli)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()


def follow_and_stop(page, server: Server, cli: subprocess.Popen) -> None:
    start = time.monotonic()

    def phase(name: str) -> None:
        print(f"[phase] {name}: {time.monotonic() - start:.1f} s")

    page.goto(f"{server.url}/new_run")
    page.get_by_role("button", name="Start", exact=True).wait_for()
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Architecture").click()
    page.get_by_role("option", name="resnet", exact=True).click()
    page.locator('[data-testid="stCaptionContainer"]', has_text="resnet20").wait_for()
    for label, value in (("Images to use (0 = all)", str(RUN_SIZE)), ("Batch size", str(RUN_BATCH)),
                         ("Log every N steps", "1"), ("Epochs", "30"), ("Seed", "1"), ("Loader workers", "0")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
        wait_for(lambda: field.input_value() == value, 10, f"{label} = {value}")
    page.wait_for_timeout(500)  # let the last widget change reach the server before clicking Start
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text("it is selected. Follow it on").wait_for()
    shot(page, server, "new_run")
    phase("launched")
    [record] = [json.loads(p.read_text()) for p in (server.runs / ".launches").glob("*.json")]  # not the CLI's
    run_id, run_dir = record["run_id"], server.runs / record["run_id"]
    config = yaml.safe_load(Path(record["config"]).read_text())
    assert config["model"]["name"] == "resnet20" and config["data"]["workers"] == 0
    assert (config["data"]["size"], config["train"]["batch_size"], config["train"]["epochs"]) == (RUN_SIZE, RUN_BATCH, 30)

    nav(page, "Live")
    first = wait_for(lambda: points(page), 120, "the first points of the launched run")
    more = wait_for(lambda: points(page) > first and points(page), 90, "the live curve to gain points")
    assert more > first
    phase("the live curve gained points")
    wait_for(lambda: page.evaluate(VALIDATION_JS) >= RUN_EPOCHS_SHOWN, 600,
             f"validation points of {RUN_EPOCHS_SHOWN} epoch(s) on the Live page", interval=0.5)
    shot(page, server, "live")
    phase("validation points shown")

    page.get_by_role("button", name="Stop", exact=True).click()
    wait_for(lambda: json.loads((run_dir / "status.json").read_text())["state"] == "stopped", 90,
             "the run to stop cleanly", interval=0.5)
    nav(page, "Runs")
    wait_for(lambda: run_id in cells(page) and "stopped" in cells(page), 30, "the stopped run on the Runs page")
    assert cli.wait(timeout=600) == 0
    wait_for(lambda: CLI_RUN in cells(page) and "finished" in cells(page), 30,
             "the CLI run, finished, on the Runs page")
    shot(page, server, "runs_after_stop")
    phase("stopped, CLI run finished")

    # The browser's run against the CLI's (and the shipped runs, for the README).
    shipped = sorted(f"shipped/{p.parent.name}" for p in (REPO / "checkpoints").glob("*/status.json"))
    compared = [run_id, CLI_RUN] + (shipped if UPDATE_SCREENSHOTS else [])
    page.goto(f"{server.url}/compare?" + "&".join(f"run={key}" for key in compared))
    wait_for(lambda: points(page), 60, "the Compare charts")
    page.get_by_text("Download table (CSV)").wait_for()
    shot(page, server, "compare")
    phase("compare")

    nav(page, "Data")
    wait_for(lambda: page.locator(".js-plotly-plot").count() == 3, 120, "the Data page's three charts")
    shot(page, server, "data")
    phase("data")


# Slow: the upload path in this browser is the long, thin upload's below; an upload's maps, test_dashboard_inspect's.
@pytest.mark.slow
def test_an_uploaded_png_gets_a_prediction_and_the_regulator_maps(page, server):
    image = server.tmp / "upload.png"
    Image.new("RGB", (96, 64), (40, 160, 90)).save(image)
    page.goto(f"{server.url}/inspect")
    page.get_by_role("heading", name="Inspect", exact=True).wait_for()
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Run or shipped checkpoint").click()
    page.get_by_role("option", name=INSPECT_RUN, exact=True).click()
    page.get_by_text("Upload", exact=True).click()
    page.get_by_text("Upload an image to see").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(image))
    page.get_by_text("Resized from 96x64").wait_for()
    wait_for(lambda: {"inspect_states", "inspect_gate_maps", "inspect_attr"} <= set(page.evaluate(HEATMAPS_JS)),
             120, "the regulator and attribution maps of the upload")
    settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator('[data-testid="stAlertContentError"]').count() == 0
    heatmaps = page.evaluate(HEATMAPS_JS)
    assert heatmaps["inspect_states"] == 9 and heatmaps["inspect_attr"] >= 2, heatmaps
    table = cells(page)  # class, probability: the five most probable classes of the upload
    probabilities = [float(p) for p in table[1:10:2]]
    assert len(table) == 10 and all(0 <= p <= 1 for p in probabilities), table
    assert probabilities == sorted(probabilities, reverse=True)
    shot(page, server, "inspect-upload")


def open_inspect(page, server: Server) -> None:
    page.goto(f"{server.url}/inspect")
    page.get_by_role("heading", name="Inspect", exact=True).wait_for()
    page.locator('[data-testid="stSelectbox"]').filter(has_text="Run or shipped checkpoint").click()
    page.get_by_role("option", name=INSPECT_RUN, exact=True).click()
    page.locator('[data-testid="stCaptionContainer"]', has_text="regnet20").wait_for()
    settle(page)


def test_inspect_draws_the_regulator_maps_and_five_attribution_maps_at_least_160_pixels_wide(page, server):
    start = time.monotonic()
    open_inspect(page, server)
    # The regulator's maps come first, the attribution chart last; nothing stale may be left of a
    # previously selected (ResNet) checkpoint's page.
    wait_for(lambda: {"inspect_states", "inspect_attr"} <= set(page.evaluate(HEATMAPS_JS)), 120,
             "the Inspect page's regulator and attribution charts")
    settle(page)
    heatmaps = page.evaluate(HEATMAPS_JS)
    print(f"\n[timing] Inspect page, {INSPECT_RUN} selected -> every chart drawn: {time.monotonic() - start:.1f} s")
    assert page.locator('[data-testid="stException"]').count() == 0
    # Channel mean of H and of a gate: one map per stage (3) and block of the stage (3).
    assert heatmaps["inspect_states"] == 9 and heatmaps["inspect_gate_maps"] == 9, heatmaps
    assert heatmaps["inspect_attr"] >= 2, heatmaps  # Integrated Gradients and Grad-CAM
    # Streamlit scrolls its main section, not the document: a tall window puts the maps in the picture.
    page.set_viewport_size({"width": 1400, "height": 3400})
    assert shot(page, server, "inspect").stat().st_size > 0
    page.set_viewport_size({"width": 1400, "height": 900})
    for name in ("Saliency", "SmoothGrad", "Occlusion"):
        page.get_by_role("combobox", name="Methods").click()
        page.keyboard.type(name)
        page.get_by_role("option", name=name, exact=True).click()
        settle(page)
    page.keyboard.press("Escape")
    chart = page.locator(".st-key-inspect_attr .js-plotly-plot").last
    wait_for(lambda: len(chart.evaluate(SUBPLOT_WIDTHS_JS)) == 6, 240, "the image and five maps")
    settle(page)
    widths = chart.evaluate(SUBPLOT_WIDTHS_JS)
    assert min(widths) >= 160, widths  # five methods on a 1400-pixel window
    page.set_viewport_size({"width": 1400, "height": 2600})
    shot(page, server, "inspect-five-maps")


def test_a_confusion_cell_filters_the_gallery_and_a_gallery_image_opens_in_one_image(page, server):
    open_inspect(page, server)
    page.get_by_role("tab", name="Whole split").click()
    page.get_by_text("Analyse the validation images").click()
    confusion = page.locator(".st-key-inspect_pick_confusion .js-plotly-plot").last
    confusion.wait_for(timeout=240_000)
    settle(page)
    confusion.scroll_into_view_if_needed()
    cell = confusion.evaluate(CONFUSION_CELL_JS)
    page.mouse.move(cell["x"], cell["y"])
    page.mouse.click(cell["x"], cell["y"])
    names = SHAPE_NAMES
    gallery = page.locator(".st-key-inspect_pick_gallery .js-plotly-plot").last

    wrong = cell["true"] != cell["predicted"]

    def filtered() -> bool:  # predicted class, and the true class on the second line when they differ
        titles = gallery.evaluate("d => (d.layout && d.layout.annotations || []).map(a => a.text)") \
            if gallery.count() else []
        return bool(titles) and all(t.startswith(names[cell["predicted"]] + " ")
                                    and t.endswith(f"<br>true {names[cell['true']]}" if wrong else "%")
                                    for t in titles)
    wait_for(filtered, 60, "the gallery filtered to the clicked cell")
    settle(page)
    shot(page, server, "inspect-cell-clicked")
    indices = gallery.evaluate("d => d.data.filter(t => t.type === 'scatter').map(t => t.customdata[0])")
    gallery.scroll_into_view_if_needed()
    picture = gallery.locator(".nsewdrag").nth(1).bounding_box()
    page.mouse.move(picture["x"] + picture["width"] / 2, picture["y"] + picture["height"] / 2)
    page.mouse.click(picture["x"] + picture["width"] / 2, picture["y"] + picture["height"] / 2)
    page.locator('[role="tab"][aria-selected="true"]', has_text="One image").wait_for(timeout=60_000)
    wait_for(lambda: page.locator(".st-key-inspect_index input").count()
             and page.locator(".st-key-inspect_index input").input_value() == str(indices[1]), 60,
             "the clicked image in the One image tab")
    settle(page)
    assert page.get_by_text(f"true: {names[cell['true']]}", exact=True).count() == 1
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, server, "inspect-image-opened")


def test_a_long_thin_upload_is_one_sentence_not_a_memory_error(page, server):
    image = server.tmp / "strip.png"
    image.write_bytes(long_thin_png())
    open_inspect(page, server)
    page.get_by_text("Upload", exact=True).click()
    page.get_by_text("Upload an image to see").wait_for()
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(image))
    error = page.locator('[data-testid="stAlertContentError"]')
    error.wait_for(timeout=60_000)
    settle(page)
    assert "too long and thin" in error.inner_text() and "39999999x1" in error.inner_text()
    assert page.locator('[data-testid="stException"]').count() == 0
    shot(page, server, "inspect-long-thin-upload")


def pick_option(page, label: str, option: str, tries: int = 8) -> None:
    """Choose ``option`` in the selectbox labelled ``label``; a rerun can close the list, so reopen it (an
    open list shows its options at once: a short wait per try, not a long one)."""
    for attempt in range(tries):
        page.locator('[data-testid="stSelectbox"]').filter(has_text=label).click()
        try:
            page.get_by_role("option", name=option, exact=True).click(timeout=3_000)
            return
        except Exception:
            if attempt == tries - 1:
                raise
            page.keyboard.press("Escape")
            settle(page)


def test_the_hparams_table_sorts_and_downloads_what_it_shows(page, server):
    import csv
    import io

    write_sweep(server.runs, SWEEP)
    page.goto(f"{server.url}/compare?" + "&".join(f"run={key}" for key in SWEEP))
    page.get_by_role("heading", name="HParams: results against the settings that differ").wait_for()
    wait_for(lambda: "lr0.01-gru" in cells(page), 60, "the HParams table")
    settle(page)
    table = cells(page)  # row by row: run, best/final val top-1 %, best/final val loss, cell, lr
    assert table[::7] == ["lr0.01-gru", "lr0.1-lstm", "lr0.05-lstm"], table  # best val top-1 first, descending
    pick_option(page, "Sort by", "lr")
    wait_for(lambda: cells(page)[::7] == ["lr0.1-lstm", "lr0.05-lstm", "lr0.01-gru"], 30, "the table by lr, descending")
    page.get_by_text("ascending", exact=True).click()
    wait_for(lambda: cells(page)[::7] == ["lr0.01-gru", "lr0.05-lstm", "lr0.1-lstm"], 30, "the table sorted by lr")
    settle(page)
    shot(page, server, "compare-hparams")
    shown = cells(page)
    with page.expect_download() as download:
        page.get_by_text("Download table (CSV)").click()
    rows = list(csv.reader(io.StringIO(Path(download.value.path()).read_text())))
    assert rows[0] == ["run", "best val top-1 %", "final val top-1 %", "best val loss", "final val loss", "cell", "lr"]
    assert [row[0] for row in rows[1:]] == shown[::7] and [float(row[-1]) for row in rows[1:]] == [0.01, 0.05, 0.1]
    assert [float(row[1]) for row in rows[1:]] == [95.0, 50.0, 87.65]  # the values shown, rounded as shown
    with page.expect_download() as download:
        page.get_by_text("Download table (LaTeX)").click()
    latex = Path(download.value.path()).read_text()
    assert "\\toprule" in latex and "cell & lr & best val top-1 \\%" in latex and "gru & 0.01 & 95" in latex
