"""A new user's walk through the regulator views in Chromium: New run (shapes, regnet20, a few short epochs,
keep weights every epoch), Live's regulator strip growing epoch by epoch, Inspect scrubbing its epochs.

Not a benchmark (no figures): screenshots go to ``--out`` to be looked at. The runs root is a fresh folder.

    python bench/_regulator_walk.py --out /tmp/walk [--epochs 3 --size 300]
    python bench/_regulator_walk.py --out /tmp/walk --shipped    # the shipped shapes-regnet20 on Live and Inspect
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._browser import chromium, dashboard, wait_for

SCROLL_TO_STRIP_JS = """() => { for (const div of document.querySelectorAll('.js-plotly-plot')) {
    const t = div.layout && div.layout.title && div.layout.title.text;
    if (t && t.includes('per block and epoch')) { div.scrollIntoView({block: 'start'}); window.scrollBy(0, -200); } } }"""
STRIP_EPOCHS_JS = """() => { for (const div of document.querySelectorAll('.js-plotly-plot')) {
    const t = div.layout && div.layout.title && div.layout.title.text;
    if (t && t.includes('per block and epoch')) return div.data[0].x.length; } return 0; }"""


def nav(page, title: str) -> None:
    """Click a page in the sidebar navigation (same browser session, so the selection is kept)."""
    page.locator('[data-testid="stSidebarNav"] a').filter(has=page.get_by_text(title, exact=True)).click()
    page.get_by_role("heading", name=title, exact=True).wait_for()


def start_run(page, url: str, epochs: int, size: int) -> None:
    page.goto(f"{url}/new_run")
    page.get_by_role("button", name="Start", exact=True).wait_for()
    for label, value in (("Images to use (0 = all)", str(size)), ("Batch size", "30"),
                         ("Log every N steps", "2"), ("Epochs", str(epochs)), ("Loader workers", "0"),
                         ("Keep weights every N epochs (0 = none)", "1")):
        field = page.get_by_label(label, exact=True)
        field.fill(value)
        field.press("Tab")
        wait_for(lambda: field.input_value() == value, 10, f"{label} = {value}")
    page.wait_for_timeout(500)
    page.get_by_role("button", name="Start", exact=True).click()
    page.get_by_text("it is selected. Follow it on").wait_for()


def follow_live(page, out: Path, epochs: int) -> None:
    nav(page, "Live")
    page.wait_for_timeout(5000)
    page.screenshot(path=str(out / "live_first.png"), full_page=True)
    for epoch in range(1, epochs + 1):
        wait_for(lambda: page.evaluate(STRIP_EPOCHS_JS) >= epoch, 900, f"the strip at epoch {epoch}", interval=1)
        page.wait_for_timeout(1500)
        page.get_by_role("heading", name="Regulator").scroll_into_view_if_needed()
        page.screenshot(path=str(out / f"live_epoch{epoch}.png"))
        print(f"live: strip shows {page.evaluate(STRIP_EPOCHS_JS)} epoch(s) at {time.strftime('%H:%M:%S')}")


def scrub_inspect(page, out: Path, runs: Path, epochs: int) -> None:
    wait_for(lambda: any(json.loads(p.read_text()).get("state") == "finished" for p in runs.glob("*/status.json")),
             600, "the run to finish", interval=1)
    nav(page, "Inspect")
    slider = page.get_by_role("slider").first
    slider.wait_for(timeout=240_000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(out / "inspect_best.png"), full_page=True)
    slider.focus()
    for step in range(epochs):
        slider.press("ArrowLeft")
        page.wait_for_timeout(4000)
        caption = page.locator('[data-testid="stCaptionContainer"]', has_text="parameters · checkpoint").first.inner_text()
        print(f"inspect after {step + 1} step(s) left: {caption[-30:]!r}")
        page.get_by_text("Inside the regulator, step by step").scroll_into_view_if_needed()
        page.screenshot(path=str(out / f"inspect_left{step + 1}.png"))
    page.get_by_text("Play this map across").click()
    page.wait_for_timeout(8000)
    page.get_by_text("Play this map across").scroll_into_view_if_needed()
    page.screenshot(path=str(out / "inspect_play.png"))
    page.get_by_text("▶ Play").click()
    page.wait_for_timeout(2500)
    page.screenshot(path=str(out / "inspect_playing.png"))


def shipped_tour(page, url: str, out: Path) -> None:
    """The shipped shapes-regnet20 (trained with keep_every 1) on Live and in Inspect, as a newcomer finds it."""
    page.goto(f"{url}/live")
    page.get_by_role("heading", name="Live", exact=True).wait_for()
    box = page.locator('[data-testid="stMultiSelect"]').first
    box.click()
    page.keyboard.type("shapes-regnet20")
    page.keyboard.press("Enter")
    wait_for(lambda: page.evaluate(STRIP_EPOCHS_JS) >= 5, 240, "the shipped run's 5-epoch strip", interval=1)
    page.wait_for_timeout(2000)
    page.evaluate(SCROLL_TO_STRIP_JS)
    page.screenshot(path=str(out / "shipped_live.png"))
    nav(page, "Inspect")
    page.get_by_role("slider").first.wait_for(timeout=240_000)
    page.get_by_text("Play this map across").click()
    page.get_by_text("▶ Play").wait_for(timeout=240_000)
    page.get_by_text("Play this map across").scroll_into_view_if_needed()
    page.screenshot(path=str(out / "shipped_inspect_frames.png"))
    page.get_by_text("▶ Play").click()
    page.wait_for_timeout(1500)
    page.screenshot(path=str(out / "shipped_inspect_playing.png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--size", type=int, default=300)
    parser.add_argument("--shipped", action="store_true", help="tour the shipped shapes-regnet20 instead")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    args.out.mkdir(parents=True, exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="regulator-walk-"))
    shipped = Path(__file__).resolve().parents[1] / "checkpoints"
    env = {"REGNET_RUNS_ROOT": str(root / "runs"), "REGNET_CHECKPOINTS_ROOT": str(shipped if args.shipped else root / "none")}
    with dashboard(env, args.out / "server.log") as server, chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 2200})
        page.set_default_timeout(120_000)
        if args.shipped:
            shipped_tour(page, server.url, args.out)
        else:
            start_run(page, server.url, args.epochs, args.size)
            follow_live(page, args.out, args.epochs)
            scrub_inspect(page, args.out, root / "runs", args.epochs)
    print(f"screenshots in {args.out}, runs in {root / 'runs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
