"""The dashboard against the run-folder contract: damaged and refused folders, the loopback rule, the CLI's runs.

Pages run in streamlit's AppTest (no browser); the server test starts a real `streamlit run` from a folder
that is not the repository.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from regnet.dashboard import ui
from regnet.dashboard.run_listing import discover_runs
from regnet.train.evaluate import list_runs
from test_damaged_runs import damaged_runs_root, run_cli
from test_dashboard_fixtures import write_run

APP = Path(__file__).resolve().parent.parent / "dashboard" / "app.py"


def texts(elements) -> str:
    return "\n".join(str(element.value) for element in elements)


@pytest.fixture
def damaged_root(tmp_path, monkeypatch):
    root = tmp_path / "runs"
    runs = damaged_runs_root(root)
    outside = write_run(tmp_path / "elsewhere", "escape", epochs_done=3, epochs=3)
    os.symlink(outside, root / "escape")
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(root))
    monkeypatch.setenv("REGNET_CHECKPOINTS_ROOT", str(tmp_path / "no-checkpoints"))
    return root, runs, outside


def open_page(page: str, selected: list[str] | None = None) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    if selected is not None:
        at.session_state["selected_runs"] = selected
    at.run()
    if page != "views/run_list.py":
        at.switch_page(page).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_damaged_and_refused_folders_are_rows_on_the_runs_page(damaged_root):
    root, runs, outside = damaged_root
    at = open_page("views/run_list.py")
    table = at.dataframe[0].value.set_index("run")
    assert set(table.index) == set(runs) | {"escape"}
    assert table.loc["escape", "status"] == "refused" and table.loc["dead", "status"] == "died"
    assert table.loc["status-list", "status"] == "unknown" and table.loc["sound", "status"] == "stopped"
    captions = texts(at.caption)
    assert "holds a JSON list" in captions and "not a regular file" in captions and "refused" in captions
    assert "escape" not in at.multiselect(key="_select_runs").options  # never selectable, so never opened
    assert sorted(p.name for p in outside.iterdir()) == ["config.yaml", "metrics.jsonl", "status.json", "train.log"]


@pytest.mark.parametrize("page", ["views/live.py", "views/compare.py", "views/inspect.py"])
def test_damaged_metrics_are_warnings_and_refused_runs_are_never_read(damaged_root, page):
    root, runs, outside = damaged_root
    at = open_page(page, selected=[*runs, "escape"])
    if page != "views/inspect.py":
        warnings = texts(at.warning)
        assert "metrics-dir: " in warnings and "is a folder" in warnings
        assert "metrics-zero: " in warnings and "not a regular file" in warnings
        assert "metrics-list-line: skipped 1 corrupt line" in warnings
        assert "metrics-utf8: skipped 1 corrupt line" in warnings
        picker = at.multiselect(key=f"_select_{page.split('/')[1][:-3]}")
        assert "escape" not in picker.options and "escape" not in picker.value
    assert sorted(p.name for p in outside.iterdir()) == ["config.yaml", "metrics.jsonl", "status.json", "train.log"]


def test_a_client_that_is_not_on_the_loopback_address_is_refused(damaged_root, monkeypatch):
    assert ui.is_local_client(None) and ui.is_local_client("127.0.0.1") and ui.is_local_client("::1")
    assert not ui.is_local_client("192.168.1.20") and not ui.is_local_client("fe80::1%eth0")
    assert not ui.is_local_client("not an address")
    monkeypatch.setattr(ui, "client_ip", lambda: "192.168.1.20")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception
    assert texts(at.error) == ("RegNet Lab serves only the machine it runs on; this connection comes from "
                               "192.168.1.20 and is refused.")
    assert not at.dataframe and not at.sidebar.text_input  # nothing else is served


def test_runs_listed_by_the_dashboard_are_the_runs_the_cli_created(tmp_path, capsys):
    tiny = ["--model", "mnist_cnn", "--dataset", "shapes", "--epochs", "1", "--batch-size", "30", "--device", "cpu",
            "--runs-root", str(tmp_path), "--set", "data.size=60", "--set", "data.workers=0"]
    for extra in (["--run-id", "Named.run_1"], [], ["--run-id", "my run"], ["--run-id", "_x"]):
        run_cli(["train", *tiny, *extra], capsys)
    grid = ["grid", *tiny, "--grid-id", "g", "--grid", "optim.lr=0.01,0.001"]
    run_cli(grid, capsys)
    created = [path.name for path in list_runs(tmp_path)]
    assert len(created) == 4 and "Named.run_1" in created and "g-01-lr_0.01" in created
    assert sorted(run.key for run in discover_runs(tmp_path)) == sorted(created)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _listening_addresses(port: int) -> set[str]:
    """Local addresses listening on ``port``, from /proc/net/tcp and tcp6 (hex, as the kernel writes them)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads the kernel's socket table")
def test_streamlit_run_from_another_folder_serves_localhost_only(tmp_path):
    port = _free_port()
    env = {**os.environ, "REGNET_RUNS_ROOT": str(tmp_path / "runs")}
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(APP), "--server.port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and not _listening_addresses(port) and server.poll() is None:
            time.sleep(0.2)
        addresses = _listening_addresses(port)
        assert addresses, "the server did not start"
        loopback = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1
        assert addresses <= loopback, addresses
    finally:
        server.terminate()
        output, _ = server.communicate(timeout=30)
    assert "Network URL" not in output and "External URL" not in output


def test_regnet_dashboard_runs_the_installed_app_with_its_own_settings(tmp_path, monkeypatch, capsys):
    import subprocess as subprocess_module

    calls = []
    monkeypatch.setattr(subprocess_module, "call", lambda command, env: calls.append((command, env)) or 0)
    monkeypatch.chdir(tmp_path)  # any folder
    code, _, _ = run_cli(["dashboard", "--port", "8600", "--runs-root", "my-runs"], capsys)
    [(command, env)] = calls
    assert code == 0 and command[1:4] == ["-m", "streamlit", "run"] and Path(command[4]) == APP
    assert command[5:] == ["--server.port", "8600"] and env["REGNET_RUNS_ROOT"] == str(tmp_path / "my-runs")


def test_the_package_declares_its_dependencies_and_ships_the_dashboard_with_its_server_settings():
    import tomllib

    repo = APP.parent.parent
    project = tomllib.loads((repo / "pyproject.toml").read_text())
    names = {requirement.split(">")[0].split("=")[0].strip() for requirement in project["project"]["dependencies"]}
    assert {"torch", "torchvision", "numpy", "streamlit", "pyyaml", "pandas", "plotly"} <= names
    setuptools = project["tool"]["setuptools"]
    assert "regnet.dashboard" in setuptools["packages"] and "dashboard" not in setuptools["packages"]
    assert setuptools["package-dir"]["regnet.dashboard"] == "dashboard"  # installed inside regnet, never top-level
    assert {"views/*.py", ".streamlit/config.toml"} <= set(setuptools["package-data"]["regnet.dashboard"])
    settings = tomllib.loads((APP.parent / ".streamlit" / "config.toml").read_text())
    assert settings["server"]["address"] == "localhost" and settings["browser"]["gatherUsageStats"] is False
    # One copy at the root (read from the repository root), linked beside app.py (read from any folder).
    assert (APP.parent / ".streamlit").resolve() == (repo / ".streamlit").resolve()
