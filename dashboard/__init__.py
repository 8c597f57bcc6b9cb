"""The RegNet Lab dashboard: plain modules (runs, charts, launcher) tested without a browser, and thin pages.

``streamlit run dashboard/app.py`` is the entry point; the pages only wire widgets to these modules.
"""
