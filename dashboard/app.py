"""RegNet Lab dashboard: ``streamlit run dashboard/app.py`` (from any folder) or ``regnet dashboard``.

The entry point is the frame around every page (title, sidebar with the runs folder) and the router
(``st.navigation``); each page is one file under dashboard/views/ and stays thin, calling the plain modules
dashboard/run_listing.py, charts.py and launcher.py.

The page folder is deliberately not called ``pages/``: with a ``pages/`` folder next to the entry point,
a freshly started server runs a page opened by URL (a bookmark, a refresh of /live) in Streamlit's legacy
pages-directory mode, alone, without this file, until some session has called ``st.navigation``.

The server settings (localhost only, no usage statistics) are in .streamlit/config.toml at the repository
root, which Streamlit reads from the working folder; dashboard/.streamlit links to it so that they also hold
beside the entry point, whatever the working folder and once installed. Every module is imported as
``regnet.dashboard`` (installed, the folder lies inside ``regnet``; in a checkout ``regnet`` finds it beside).

Offline by design: the page icon is an image drawn here and served by this server (a ``:material/...:``
page icon would make the browser fetch an SVG from fonts.gstatic.com on every load, an emoji one from a
CDN); the navigation's ``:material/...:`` icons are drawn with the font Streamlit ships in its package.
"""
import importlib
import threading

import streamlit as st

from regnet.dashboard import ui

st.set_page_config(page_title="RegNet Lab", page_icon=ui.page_icon(), layout="wide")
ui.refuse_remote_client()

PAGES = [
    st.Page("views/run_list.py", title="Runs", icon=":material/table_rows:", default=True),
    st.Page("views/new_run.py", title="New run", icon=":material/play_circle:", url_path="new_run"),
    st.Page("views/live.py", title="Live", icon=":material/monitoring:", url_path="live"),
    st.Page("views/compare.py", title="Compare", icon=":material/stacked_line_chart:", url_path="compare"),
    st.Page("views/data.py", title="Data", icon=":material/image:", url_path="data"),
    st.Page("views/inspect.py", title="Inspect", icon=":material/biotech:", url_path="inspect"),
]


@st.cache_resource
def warm_up() -> threading.Thread:
    """Import the model and attribution stack (torch, captum, regnet) once per server, in the background.

    Those imports take seconds of CPU; started here, they are done by the time a user who opened the
    Runs page clicks Inspect, instead of being paid by that first click.
    """
    thread = threading.Thread(target=importlib.import_module, args=("regnet.dashboard.inspect_sections",), daemon=True)
    thread.start()
    return thread


warm_up()
page = st.navigation(PAGES)
st.sidebar.markdown("**RegNet Lab** · self-regulated networks (Xu et al. 2021)")
ui.sidebar()
page.run()
