"""The RegNet Lab dashboard (the package ``regnet.dashboard``): plain modules (run_listing, charts, launcher)
tested without a browser, and thin pages.

``streamlit run dashboard/app.py`` (from a checkout) or ``regnet dashboard`` (installed) is the entry point;
the pages only wire widgets to these modules. Installed, this folder lies inside ``regnet``; in a checkout
``regnet`` finds it beside itself, so the modules are imported as ``regnet.dashboard.<name>`` either way.
"""
