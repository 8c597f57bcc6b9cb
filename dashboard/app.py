"""RegNet Lab dashboard (placeholder until the dashboard issue lands)."""
import streamlit as st

st.set_page_config(page_title="RegNet Lab", layout="wide")
st.title("RegNet Lab")
st.write("Runs, live curves, comparisons and the regulator lab are coming. "
         "Meanwhile `python -m regnet models` lists every model.")
