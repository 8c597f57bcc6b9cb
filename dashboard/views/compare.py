"""Compare: several runs overlaid; the HParams view (results first, then the settings that differ, sortable, with
parallel coordinates); seed groups; downloads of exactly the table shown.

The chosen runs (``?run=``) and every setting are in the URL, so a bookmark or a shared link opens the
same comparison.
"""
import streamlit as st

from regnet.dashboard import charts, tables, ui
from regnet.dashboard.run_listing import curves_long
from regnet.runs import COMPARED_METRICS

st.title("Compare")
runs = ui.all_runs()
if not runs:
    st.info("No runs yet. Start some on **New run**, then choose them here or on **Runs**.")
    st.stop()

chosen = ui.run_picker(runs, "Runs to compare", key="compare")
if not chosen:
    st.info("Choose two or more runs above (or on **Runs**) to overlay their curves.")
    st.stop()

panel_titles = [panel.title for panel in charts.PANELS]
top = st.columns([3, 2, 2])
shown = top[0].multiselect("Curves", panel_titles, default=panel_titles[:2], key="compare_panels",
                           bind="query-params")
x_axis = top[1].radio("x axis", ["epoch", "step", "relative time", "wall time"], horizontal=True, key="compare_x",
                      bind="query-params")
smoothing = top[2].slider("Smoothing (EMA of per-step curves; never the LR)", 0.0, 0.99, 0.6, 0.01,
                          key="compare_smooth", bind="query-params")
log_scales = st.pills("Log scale", panel_titles, selection_mode="multi", key="compare_log", bind="query-params")
seed_col, band_col = st.columns([2, 5])
grouped = seed_col.toggle("Group by seed", key="compare_seeds", bind="query-params",
                          help=f"Runs whose configs are equal but for {', '.join(tables.SEED_KEYS)} become one "
                               "line: their mean, with a band.")
band = band_col.radio("Band", list(charts.BANDS), format_func=charts.BANDS.get, horizontal=True,
                      key="compare_band", bind="query-params", disabled=not grouped, label_visibility="collapsed")

frames = {}
for run in chosen:
    frames[run.key], notes = ui.metrics_of(run)
    ui.show_run_problems(run, notes)
configs = tables.run_configs(chosen)
groups = tables.seed_groups(configs) if grouped else None

columns = st.columns(2)
for index, panel in enumerate(charts.PANELS_BY_TITLE[title] for title in shown):
    figure = charts.metric_figure(frames, panel, x=x_axis, smoothing=smoothing, log_y=panel.title in (log_scales or []),
                                  groups=groups, band=band, height=380)
    columns[index % 2].plotly_chart(figure, key=f"compare_chart_{panel.title}", config={"displaylogo": False})

st.subheader("HParams: results against the settings that differ")
metric_col, when_col, sort_col, order_col = st.columns([3, 2, 3, 2])
metrics = metric_col.multiselect("Metrics", list(COMPARED_METRICS), default=["val_top1", "val_loss"],
                                 format_func=charts.METRIC_LABELS.get, key="compare_metrics", bind="query-params")
whens = when_col.pills("Epoch", list(tables.WHENS), selection_mode="multi", default=list(tables.WHENS),
                       key="compare_when", bind="query-params",
                       help="best: at the checkpointed best epoch (the model in best.pt); final: at the last epoch.")
hparams = tables.hparams_table(chosen, configs, metrics or ["val_top1"], whens or list(tables.WHENS))
if groups:
    hparams = tables.grouped_table(hparams, configs, groups, band)
    st.caption(f"One line a group of runs that differ only in seed: each metric's mean and its band "
               f"({charts.BANDS[band]}).")
columns = list(hparams.frame.columns)
if st.session_state.get("compare_sort") not in columns:
    st.session_state["compare_sort"] = (hparams.metric_columns or columns)[0]
sort_by = sort_col.selectbox("Sort by", columns, key="compare_sort")
descending = order_col.radio("Order", ["descending", "ascending"], horizontal=True, key="compare_order",
                             bind="query-params") == "descending"
hparams = hparams.sorted(sort_by, descending)
table = hparams.frame
differing = tables.differing_keys(configs)
st.caption(f"Settings that differ: {', '.join(f'`{key}`' for key in differing)}. The downloads hold this table "
           "in this order; the LaTeX keeps the settings and metrics." if differing else
           "The chosen runs have the same config.")
formats = {column: st.column_config.NumberColumn(format="%.2f" if "%" in column else "%.4g")
           for column in hparams.metric_columns}
formats.update({label: st.column_config.Column(help=f"config key `{key}`") for label, key in hparams.key_columns.items()})
st.dataframe(table, hide_index=True, width="stretch", key="compare_table", column_config=formats)
if hparams.key_columns and hparams.metric_columns:
    colour = st.selectbox("Parallel coordinates: colour by", hparams.metric_columns, key="compare_parcoords")
    st.plotly_chart(charts.hparams_figure(table, list(hparams.key_columns), colour), key="compare_parcoords_chart",
                    config={"displaylogo": False})
downloads = st.columns(4)
for column, (label, data, name, mime) in zip(downloads, (
        ("table (CSV)", table.to_csv(index=False), "regnet_compare.csv", "text/csv"),
        ("table (Markdown)", tables.to_markdown(table), "regnet_compare.md", "text/markdown"),
        ("table (LaTeX)", tables.to_latex(table[hparams.paper_columns()]), "regnet_compare.tex", "application/x-tex"),
        ("all curves (CSV)", curves_long(frames).to_csv(index=False), "regnet_curves.csv", "text/csv"))):
    column.download_button(f"Download {label}", data, name, mime, key=f"compare_{name}")
