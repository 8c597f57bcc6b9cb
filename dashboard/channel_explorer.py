"""Inspect's *Channels* tab: the regulator's channels over a whole split, after LSTMVis and OpenAI Microscope.

Pick a stage, a step, a state (H, C or a gate) and a channel; then see the images that drive it most (or
least) with its map over each, the classes it serves and the channels a class relies on, where a region's
pattern of active channels recurs in the split, the channel along the stage's steps and, for a run that
kept epoch snapshots, across its epochs. Everything is answered from the split's channel index
(``regnet.inspect.channels``), built once per checkpoint (each snapshot is one) with a progress bar and
kept in the run's ``artifacts/``; only the maps shown are computed again.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
import torch
from plotly.subplots import make_subplots

from regnet.dashboard import inspect_cache
from regnet.data import denormalize
from regnet.inspect import channels as ch
from regnet.inspect import file_identity
from regnet.runs import snapshot_epochs
from regnet.train.explore import channel_index, snapshot_indexes, snapshots_to_index

VIEWS = ("Top images", "Classes", "Pattern match", "Across steps", "Across epochs")
NO_SNAPSHOTS = ("This run kept no epoch snapshots, so its channels cannot be followed across epochs. Train with "
                "`train.keep_every: K` (New run page, or `--set train.keep_every=1`) to keep the weights every K "
                "epochs.")


def maps_gallery_figure(pictures: Sequence[np.ndarray], maps: Sequence[np.ndarray], titles: Sequence[str],
                        boxes: Sequence[tuple[int, int, int, int]] | None = None) -> go.Figure:
    """Images (HxWx3 in [0, 1]) above the channel's map over each (one colour scale for all), with an
    optional box ``(top, left, bottom, right)`` in map coordinates drawn on each map."""
    n = max(len(pictures), 1)
    fig = make_subplots(rows=2, cols=n, subplot_titles=list(titles) + [""] * n, horizontal_spacing=0.01,
                        vertical_spacing=0.04)
    low = min((float(m.min()) for m in maps), default=0.0)
    high = max((float(m.max()) for m in maps), default=1.0)
    for k, (picture, values) in enumerate(zip(pictures, maps), start=1):
        fig.add_trace(go.Image(z=(np.clip(picture, 0, 1) * 255).astype(np.uint8)), row=1, col=k)
        fig.add_trace(go.Heatmap(z=values, zmin=low, zmax=high, colorscale="Viridis", showscale=k == n,
                                 hovertemplate="row %{y}, column %{x}: %{z:.4f}<extra></extra>"), row=2, col=k)
        fig.update_yaxes(autorange="reversed", row=2, col=k)
        if boxes is not None:
            top, left, bottom, right = boxes[k - 1]
            fig.add_shape(type="rect", x0=left - 0.5, x1=right - 0.5, y0=top - 0.5, y1=bottom - 0.5,
                          line=dict(color="red", width=2), row=2, col=k)
    fig.update_xaxes(showticklabels=False).update_yaxes(showticklabels=False)
    fig.update_layout(height=330, margin=dict(l=5, r=5, t=40, b=5), font=dict(size=10))
    return fig


def _class_lines(fig: go.Figure, xs: list[int], per_class: list[list[float]], class_names: Sequence[str],
                 **where) -> None:
    """One line per class: ``per_class[i][c]`` is class c's mean at ``xs[i]``."""
    for c, name in enumerate(class_names):
        fig.add_scatter(x=xs, y=[means[c] for means in per_class], mode="lines+markers", name=name,
                        legendgroup="classes", **where)


def steps_figure(steps: dict[int, list[float]], class_names: Sequence[str], title: str) -> go.Figure:
    """Each class's mean of one channel along the stage's steps, one line per class."""
    fig = go.Figure()
    _class_lines(fig, list(steps), list(steps.values()), class_names)
    fig.update_xaxes(title_text="step (block of the stage)", dtick=1).update_yaxes(title_text="mean value")
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=40, b=10), title=title)
    return fig


def epochs_figure(rows: list[dict], class_names: Sequence[str], title: str, marked: int | None = None) -> go.Figure:
    """One channel across epoch snapshots (rows of ``ch.across_epochs``): each class's mean and the mean
    over all images (dashed) above; the class-selectivity index and the share of the top images kept from
    the epoch before below. ``marked``: an epoch to draw a dotted line at (the one under inspection)."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.65, 0.35], vertical_spacing=0.08)
    epochs = [r["epoch"] for r in rows]
    _class_lines(fig, epochs, [r["class_means"] for r in rows], class_names, row=1, col=1)
    fig.add_scatter(x=epochs, y=[r["mean"] for r in rows], mode="lines", name="all images",
                    line=dict(color="black", dash="dash"), row=1, col=1)
    fig.add_scatter(x=epochs, y=[r["selectivity"] for r in rows], mode="lines+markers", name="selectivity",
                    line=dict(color="crimson"), row=2, col=1)
    fig.add_scatter(x=epochs, y=[r["overlap"] for r in rows], mode="lines+markers", name="top images kept",
                    line=dict(color="grey"), row=2, col=1)
    if marked is not None:
        fig.add_vline(x=marked, line=dict(color="grey", dash="dot"))
    fig.update_yaxes(title_text="mean value", row=1, col=1).update_yaxes(title_text="0 to 1", range=[0, 1.05],
                                                                        row=2, col=1)
    fig.update_xaxes(title_text="epoch", dtick=1, row=2, col=1)
    fig.update_layout(height=520, margin=dict(l=10, r=10, t=40, b=10), title=title)
    return fig


def _index_of(subject, split: str, reduce: str) -> dict:
    """The split's channel index of the checkpoint under inspection: built once with a progress bar, then
    read back from the run's artifacts/ (tens of milliseconds for 10,000 images). Not kept in a Streamlit
    cache: a cached function may not draw into the progress bar, which lives outside it."""
    images = subject.images
    with inspect_cache.ProgressBar("Indexing the regulator's channels", "images") as bar:
        return channel_index(subject.run.path, subject.checkpoint, subject.model, images.val, images.info, split,
                             reduce, progress=lambda what, done, total: bar(done, total))


def _choose(subject) -> tuple[str, int, str, str]:
    """(index key, stage, state, reduction), chosen among the model's taps."""
    keys = list(ch.state_taps(subject.model))
    c1, c2, c3, c4 = st.columns(4)
    stage = c1.selectbox("Regulator stage", sorted({int(k.split(".")[0]) for k in keys}), key="channels_stage")
    step = c2.selectbox("Step of the stage", sorted({int(k.split(".")[1]) for k in keys if k.startswith(f"{stage}.")}),
                        key="channels_step")
    states = [k.split(".")[2] for k in keys if k.startswith(f"{stage}.{step}.")]
    state = c3.selectbox("State or gate", states, key="channels_state",
                         format_func=lambda s: {"hidden": "H (hidden)", "cell": "C (cell)"}.get(s, f"gate {s}"))
    reduce = c4.selectbox("Per image", ["mean", "max"], key="channels_reduce",
                          format_func=lambda r: f"spatial {r}")
    return ch.state_key(subject.model, stage, step, state), stage, state, reduce


def _pictures(subject, indices: list[int]) -> tuple[list[np.ndarray], torch.Tensor]:
    images = subject.images
    xs = torch.stack([images.val[i][0] for i in indices])
    return [denormalize(x, images.info).permute(1, 2, 0).numpy() for x in xs], xs


def show_top_images(subject, index: dict, key: str, channel: int) -> None:
    c1, c2 = st.columns(2)
    k = c1.slider("Images", 4, 16, 8, key="channels_k")
    bottom = c2.toggle("Lowest instead of highest", key="channels_bottom")
    rows = ch.top_images(index, key, channel, k, bottom=bottom)
    pictures, xs = _pictures(subject, [r["index"] for r in rows])
    maps = ch.state_maps(subject.model, xs, key)[:, channel].numpy()
    names = subject.class_names
    titles = [f"#{r['index']} {names[r['label']]}<br>{r['value']:.4f}" for r in rows]
    st.plotly_chart(maps_gallery_figure(pictures, list(maps), titles), key="channels_top")
    st.caption(f"The {len(rows)} images of the split whose channel {channel} has the "
               f"{'lowest' if bottom else 'highest'} spatial {index['reduce']} (title: index in the split, class, "
               "value), with the channel's map over each below, on one colour scale.")


def show_classes(subject, index: dict, key: str, channel: int) -> None:
    names = subject.class_names
    cls = st.selectbox("Class", range(len(names)), format_func=names.__getitem__, key="channels_class")
    top = ch.class_channels(index, key, cls, len(names), k=10)
    st.markdown(f"**Channels that *{names[cls]}* drives most** (class mean against the other classes' mean, "
                "in units of the channel's spread over the split)")
    st.dataframe(pd.DataFrame([{**r, "preferred": names[r["preferred"]]} for r in top]).round(4), hide_index=True)
    means = ch.class_means(index, key, len(names))
    sel = ch.selectivity(means)
    table = pd.DataFrame(means.T.numpy(), columns=names).round(4)
    table.insert(0, "selectivity", sel["index"].numpy().round(4))
    table.insert(0, "preferred class", [names[int(p)] for p in sel["preferred"]])
    table.insert(0, "channel", range(len(table)))
    st.markdown("**Every channel's mean per class** (sort by any column; selectivity after Morcos et al. 2018)")
    st.dataframe(table, hide_index=True)
    st.caption(f"Channel {channel} prefers {names[int(sel['preferred'][channel])]} "
               f"(selectivity {float(sel['index'][channel]):.3f}).")


def _middle(side: int) -> tuple[int, int]:
    """The middle quarter of a side (where the object usually is), at least one position."""
    return side * 3 // 8, max(side * 5 // 8, side * 3 // 8 + 1)


def show_pattern_match(subject, index: dict, key: str) -> None:
    images = subject.images
    c1, c2 = st.columns(2)
    query = int(c1.number_input("Query image (index in the split)", 0, len(images.val) - 1, 0, key="channels_query"))
    pictures, xs = _pictures(subject, [query])
    maps = ch.state_maps(subject.model, xs, key)[0]
    height, width = maps.shape[1:]
    rows = st.slider("Region rows", 0, height, _middle(height), key=f"channels_rows_{height}")
    cols = st.slider("Region columns", 0, width, _middle(width), key=f"channels_cols_{width}")
    if rows[1] <= rows[0] or cols[1] <= cols[0]:
        st.info("Choose a region at least one position tall and wide.")
        return
    region = (rows[0], cols[0], rows[1], cols[1])
    default = float(maps[:, rows[0]:rows[1], cols[0]:cols[1]].mean((1, 2)).median())
    threshold = c2.number_input("On at or above", value=round(default, 4), format="%.4f", key=f"channels_thr_{key}",
                                help="A channel is on where its mean over the region reaches this value "
                                     "(default: the median channel's, so about half are on).")
    result = ch.pattern_match(subject.model, index, key, lambda idx: _pictures(subject, idx)[1], maps, region,
                              threshold, top=8)
    on = result["channels_on"]
    st.caption(f"{len(on)} of {maps.shape[0]} channels are on in the region: {', '.join(map(str, on)) or 'none'}.")
    matches = result["matches"]
    shown, xs = _pictures(subject, [m["index"] for m in matches])
    found = ch.state_maps(subject.model, xs, key)
    strongest = int(torch.tensor(on)[maps[on, rows[0]:rows[1], cols[0]:cols[1]].mean((1, 2)).argmax()]) if on else 0
    boxes = [(m["top"], m["left"], m["top"] + m["window"][0], m["left"] + m["window"][1]) for m in matches]
    names = subject.class_names
    st.plotly_chart(maps_gallery_figure(pictures + shown, [maps[strongest].numpy()] + list(found[:, strongest].numpy()),
                                        ["query"] + [f"#{m['index']} {names[m['label']]}<br>J={m['jaccard']:.2f}"
                                                     for m in matches], [region] + boxes), key="channels_match")
    st.caption(f"The query, then the images whose best window of the region's size has the most similar on/off "
               f"pattern (Jaccard J), with the window boxed on the map of channel {strongest}, the strongest on "
               "the query's region. Candidates come from the index (whole-image values at the threshold), "
               "the best 64 are rerun and scored at every window.")


@st.cache_data(show_spinner="Reading the snapshots' channel indexes...", max_entries=64)
def _across_epochs(run_dir: str, identities: tuple[str, ...], split: str, reduce: str, key: str, channel: int,
                   k: int, _subject) -> list[dict]:
    """``ch.across_epochs`` of every snapshot's index (all built already), kept per snapshot set (their
    identities: a new snapshot of a running run counts), split, reduction, state, channel and k."""
    images = _subject.images
    indexes = snapshot_indexes(run_dir, images.val, images.info, split, reduce)
    return ch.across_epochs(indexes, key, channel, len(_subject.class_names), k)


def _epochs(epochs: list[int]) -> str:
    """``epoch 3``, ``epochs 1, 2 and 5``, or for many, ``epochs 1 to 40``."""
    if len(epochs) == 1:
        return f"epoch {epochs[0]}"
    if len(epochs) > 8:
        return f"epochs {epochs[0]} to {epochs[-1]}"
    return f"epochs {', '.join(map(str, epochs[:-1]))} and {epochs[-1]}"


def show_across_epochs(subject, key: str, split: str, reduce: str, channel: int) -> None:
    """The channel at every epoch snapshot; the snapshots not indexed yet are counted and built on a click."""
    snapshots = snapshot_epochs(subject.run.path)
    if not snapshots:
        st.info(NO_SNAPSHOTS)
        return
    images, run_dir = subject.images, str(subject.run.path)
    missing = snapshots_to_index(run_dir, images.val, images.info, split, reduce)
    if missing:
        done = len(snapshots) - len(missing)
        ask = st.empty()
        with ask.container():
            st.caption(f"This run kept {len(snapshots)} epoch snapshots"
                       f"{f', {done} of them indexed already' if done else ''}. Following the channel across them "
                       f"indexes {'the other' if done else 'all'} {len(missing)} ({_epochs(missing)}) once: "
                       f"{len(missing) * len(images.val):,} images through the model.")
            if not st.button(f"Index {len(missing)} snapshots", key="channels_index_epochs"):
                return
        ask.empty()  # the job's progress bar takes its place; the next run has nothing left to index
    k = st.slider("Top images compared between epochs", 4, 32, 10, key="channels_epochs_k")
    try:
        if missing:
            with inspect_cache.ProgressBar(f"Indexing the channels of {len(missing)} snapshots", "images") as bar:
                snapshot_indexes(run_dir, images.val, images.info, split, reduce,
                                 progress=lambda what, done, total: bar(done, total))
        identities = tuple(file_identity(path) for path in snapshots.values())
        rows = _across_epochs(run_dir, identities, split, reduce, key, channel, k, subject)
    except (ValueError, OSError) as error:  # a damaged snapshot: its loader's one sentence names the file
        st.warning(f"The channel cannot be followed across epochs: {error}")
        return
    names = subject.class_names
    stage, step, state = key.split(".")
    marked = next((epoch for epoch, path in snapshots.items() if path == subject.checkpoint), None)
    st.plotly_chart(epochs_figure(rows, names, f"Channel {channel} of {state} (stage {stage}, step {step}) across "
                                  f"{len(rows)} epochs", marked), key="channels_epochs")
    st.dataframe(pd.DataFrame([{"epoch": r["epoch"], "mean": r["mean"], "selectivity": r["selectivity"],
                                "preferred class": names[r["preferred"]], f"top {k} kept": r["overlap"]}
                               for r in rows]).round(4), hide_index=True)
    st.caption(f"Each class's mean of the channel (spatial {reduce}) over {images.description}, at every kept "
               f"epoch; below, its class-selectivity index (0: no preference, 1: one class only) and the share "
               f"of its top {k} images that were also its top {k} the epoch before.")


def render(subject) -> None:
    """The tab: the choices, the index (built once, with a progress bar) and the chosen view."""
    st.subheader("Channels of the regulator")
    if not ch.state_taps(subject.model):
        st.info("This model has no regulator (a ResNet or another plain network), so it has no channels to "
                "explore; choose a RegNet run.")
        return
    if subject.images is None:
        st.warning(subject.data_problem or "The data set is not available.")
        return
    key, stage, state, reduce = _choose(subject)
    split = "sample" if subject.images.sample else "val"
    if not st.toggle(f"Index {subject.images.description}", key=f"channels_on_{subject.run.key}"):
        return
    index = _index_of(subject, split, reduce)
    width = index["values"][key].shape[1]
    channel = int(st.number_input(f"Channel (0-{width - 1})", 0, width - 1, 0, key=f"channels_channel_{width}"))
    view = st.radio("View", VIEWS, horizontal=True, key="channels_view")
    if view == "Top images":
        show_top_images(subject, index, key, channel)
    elif view == "Classes":
        show_classes(subject, index, key, channel)
    elif view == "Pattern match":
        show_pattern_match(subject, index, key)
    elif view == "Across steps":
        steps = ch.across_steps(index, stage, state, channel, len(subject.class_names))
        st.plotly_chart(steps_figure(steps, subject.class_names, f"Channel {channel} of {state} along stage {stage}'s "
                                     "steps, mean per class"), key="channels_steps")
    else:
        show_across_epochs(subject, key, split, reduce, channel)
