"""The wheel holds the whole lab under the one name ``regnet``: dashboard, pages, settings, configs, shipped runs."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _tracked_copy(target: Path) -> Path:
    """The checkout's tracked files as they are now (links kept), without build/ leftovers of an earlier build."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source, copy = REPO / name, target / name
        if os.path.lexists(source):
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy, follow_symlinks=False)
    return target


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory) -> set[str]:
    source = _tracked_copy(tmp_path_factory.mktemp("checkout"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", str(source),
                    "-w", str(out)], check=True, capture_output=True, cwd=out)
    (wheel,) = out.glob("regnet_lab-*.whl")
    return set(zipfile.ZipFile(wheel).namelist())


def test_wheel_installs_nothing_beside_regnet(wheel_files):
    tops = {name.split("/")[0] for name in wheel_files}
    assert tops == {"regnet", next(top for top in tops if top.endswith(".dist-info"))}
    assert not any(name.startswith("dashboard/") for name in wheel_files)


def test_wheel_holds_every_package_of_the_checkout(wheel_files):
    """pyproject.toml lists the packages by hand (the dashboard is mapped inside regnet): none may be missing."""
    for init in [*REPO.glob("regnet/**/__init__.py"), *REPO.glob("dashboard/**/__init__.py")]:
        relative = init.relative_to(REPO).as_posix()
        assert ("regnet/" + relative if relative.startswith("dashboard/") else relative) in wheel_files


def test_wheel_holds_pages_settings_configs_and_shipped_runs(wheel_files):
    pages = {path.name for path in (REPO / "dashboard" / "views").glob("*.py")}
    assert pages and all(f"regnet/dashboard/views/{page}" in wheel_files for page in pages)
    assert "regnet/dashboard/app.py" in wheel_files
    assert "regnet/dashboard/.streamlit/config.toml" in wheel_files  # localhost only, once installed too
    assets = {path.name for path in (REPO / "dashboard" / "assets").iterdir()}  # the Live charts' code, licence
    assert {"live_chart.js", "uPlot.iife.min.js", "uPlot.LICENSE"} <= assets
    assert all(f"regnet/dashboard/assets/{name}" in wheel_files for name in assets)
    configs = {path.name for path in (REPO / "configs").glob("*.yaml")}
    assert configs and all(f"regnet/configs/{name}" in wheel_files for name in configs)
    tracked = subprocess.run(["git", "ls-files", "checkpoints"], cwd=REPO, capture_output=True, text=True).stdout
    shipped = [line for line in tracked.splitlines() if line]
    assert any(name.endswith("best.pt") for name in shipped)
    missing = [name for name in shipped if f"regnet/{name}" not in wheel_files]
    assert not missing, missing[:5]


def test_checkout_finds_the_dashboard_configs_and_shipped_runs_by_the_installed_names():
    import importlib.util

    from regnet.shipped import config_file, ready_configs, shipped_runs_dir

    spec = importlib.util.find_spec("regnet.dashboard")
    assert spec is not None and Path(next(iter(spec.submodule_search_locations))) == REPO / "dashboard"
    assert config_file("shapes_regnet20") == ready_configs()["shapes_regnet20"]
    assert (shipped_runs_dir() / "shapes-regnet20" / "status.json").is_file()
    with pytest.raises(ValueError, match="no ready config of that name; pass a YAML file or one of: .*shapes_regnet20"):
        config_file("no_such_config")
    assert config_file("elsewhere/mine.yaml") == Path("elsewhere/mine.yaml")  # a path stays a path (its error later)
