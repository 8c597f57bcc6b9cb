"""Inspect: placeholder until the regulator-inspection issue lands (the lead replaces this file)."""
import streamlit as st

st.title("Inspect")
st.info("Coming next: the regulator lab — hidden and cell states, gate activity, attributions, "
        "per-block read-out and regulator ablation for a selected run's checkpoint.")
