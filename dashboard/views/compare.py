"""Compare: several runs overlaid (ResNet against RegNet, one cell against another), a table, CSV downloads."""
import streamlit as st

from dashboard import charts, ui
from dashboard.runs import compare_table, curves_long

st.title("Compare")
runs = ui.all_runs()
if not runs:
    st.info("No runs yet. Start some on **New run**, then choose them here or on **Runs**.")
    st.stop()

chosen = ui.run_picker(runs, "Runs to compare", key="compare")
if not chosen:
    st.info("Choose two or more runs above (or on **Runs**) to overlay their curves.")
    st.stop()

panel_titles = [title for title, _, _ in charts.PANELS]
controls = st.columns([2, 1, 2])
shown = controls[0].multiselect("Curves", panel_titles, default=panel_titles[:2], key="compare_panels")
x_axis = controls[1].radio("x axis", ["epoch", "step"], horizontal=True, key="compare_x")
smoothing = controls[2].slider("Smoothing (EMA of per-step curves)", 0.0, 0.99, 0.6, 0.01, key="compare_smooth")

frames = {}
for run in chosen:
    frames[run.key], notes = ui.metrics_of(run)
    ui.show_run_problems(run, notes)

columns = st.columns(2)
for index, (title, metrics, tickformat) in enumerate(p for p in charts.PANELS if p[0] in shown):
    figure = charts.metric_figure(frames, metrics, x=x_axis, smoothing=smoothing, title=title, tickformat=tickformat,
                                  height=380)
    columns[index % 2].plotly_chart(figure, key=f"compare_chart_{title}", config={"displaylogo": False})

st.subheader("Summary")
table = compare_table(chosen, frames)
st.dataframe(table, hide_index=True, width="stretch", column_config={
    "params": st.column_config.NumberColumn(format="localized"),
    "MACs": st.column_config.NumberColumn(format="compact"),
    **{name: st.column_config.NumberColumn(format="percent") for name in
       ("best val top-1", "final val top-1", "final val top-5")},
    "final val macro-F1": st.column_config.NumberColumn(format="%.3f"),
    "final val loss": st.column_config.NumberColumn(format="%.3f"),
    "final train loss": st.column_config.NumberColumn(format="%.3f"),
    "training time s": st.column_config.NumberColumn(format="%.0f"),
    "images/s": st.column_config.NumberColumn(format="%.1f"),
})
left, right = st.columns(2)
left.download_button("Download table (CSV)", table.to_csv(index=False), "regnet_compare.csv", "text/csv",
                     key="compare_table_csv")
right.download_button("Download all curves (CSV)", curves_long(frames).to_csv(index=False), "regnet_curves.csv",
                      "text/csv", key="compare_curves_csv")
