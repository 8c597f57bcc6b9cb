"""Data: samples of a data set before and after augmentation, and the class distribution of each split."""
import random
from collections import Counter

import numpy as np
import streamlit as st

from regnet.dashboard import charts

import regnet.data as rdata

st.title("Data")


@st.cache_resource(show_spinner="Loading the data set...", max_entries=8)
def splits(name: str, root: str, augment: bool):
    """The splits, loaded once per (name, root, augment); never downloads from the dashboard."""
    return rdata.load_splits(name, root, augment=augment, download=False)


def to_images(dataset, indices, info) -> np.ndarray:
    """Samples as (N, H, W, C) arrays in [0, 1], undoing the normalisation."""
    return np.stack([rdata.denormalize(dataset[i][0], info).permute(1, 2, 0).numpy() for i in indices])


controls = st.columns([2, 2, 1, 1])
datasets = rdata.list_datasets()
name = controls[0].selectbox("Data set", datasets, index=datasets.index("shapes"), key="data_name")
root = controls[1].text_input("Data root", "data", key="data_root")
count = controls[2].number_input("Samples", 4, 48, 16, 4, key="data_count")
seed = controls[3].number_input("Sample seed", 0, 10_000, 0, key="data_seed")

try:
    rdata.check_data_available(name, root)
    plain, augmented = splits(name, root, False), splits(name, root, True)
except (ValueError, OSError) as error:  # DataError is a ValueError; a damaged file raises OSError
    st.error(str(error))
    st.stop()

info = plain.info
st.caption(f"`{info.name}` · {info.num_classes} classes · {info.in_channels} channel(s) · "
           f"{info.image_size} px · train {len(plain.train)}, val {len(plain.val) if plain.val is not None else 0}"
           f", test {len(plain.test) if plain.test is not None else 0}")
indices = random.Random(int(seed)).sample(range(len(plain.train)), min(int(count), len(plain.train)))
titles = [info.class_names[plain.train.targets[i]] for i in indices]
columns = min(8, len(indices))
st.plotly_chart(charts.sample_grid_figure(to_images(plain.train, indices, info), titles, columns,
                                          "Training samples, before augmentation"), key="data_before")
st.plotly_chart(charts.sample_grid_figure(to_images(augmented.train, indices, info), titles, columns,
                                          "The same samples after augmentation (new draw on every rerun)"),
                key="data_after")
st.button("Draw the augmentations again", key="data_redraw")

counts = {}
for split_name in ("train", "val", "test"):
    split = getattr(plain, split_name)
    if split is not None:
        histogram = Counter(split.targets)
        counts[split_name] = [histogram.get(c, 0) for c in range(info.num_classes)]
st.plotly_chart(charts.class_distribution_figure(counts, info.class_names), key="data_classes")
