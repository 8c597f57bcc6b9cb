"""The Live page's line charts: uPlot in a Streamlit component, updated in place at every check.

A Live check redraws every chart that gained points. A plotly chart redraws whole: about 0.12 CPU-s of the
browser a chart on a 2-core machine, twice the page's whole budget (0.06 CPU-s per second of watching,
bench/dashboard_overhead.py), and Streamlit's Vega charts cost the same. uPlot (MIT, 50 kB, shipped in
dashboard/assets/ with its licence) takes new data into the chart it keeps in ~1 ms. The spec is built by
``charts.line_spec``; other pages keep plotly, whose figures change only when the user asks.
"""
from __future__ import annotations

from pathlib import Path

import streamlit as st

ASSETS = Path(__file__).parent / "assets"


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


# Inline code for the component: uPlot's global first, then the module that draws with it. A CSS or JS
# string without a line break would be taken for a file path, hence the line breaks between the parts.
_CHART = st.components.v2.component(
    "regnet_line_charts", html='<div class="regnet-charts"></div>',
    css=_asset("uPlot.min.css") + "\n" + _asset("live_chart.css"),
    js=_asset("uPlot.iife.min.js") + "\n;\n" + _asset("live_chart.js"), isolate_styles=False)


def line_charts(specs: list[dict], key: str) -> None:
    """Draw ``specs`` (``charts.line_spec`` each, with a ``version`` that changes with its points), two a
    row, in the charts kept under ``key``: one element for all of them, so that a check costs the browser
    one element's update, not one a chart."""
    _CHART(data={"panels": specs}, key=key)
