"""Inspect: the regulator lab. One image inside the regulator, attributions, and whole-split analyses."""
import warnings

import numpy as np
import pandas as pd
import streamlit as st
import torch

from dashboard import inspect_charts as charts
from dashboard import lab, ui
from regnet import inspect as ri
from regnet.data import denormalize

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")

st.title("Inspect")

every_run = ui.all_runs()
runs = [run for run in every_run if lab.checkpoint_path(run.path)]
if not runs:
    st.info("No run has a checkpoint yet. Finish an epoch of a run (New run page), or use a shipped checkpoint "
            "from `checkpoints/`.")
    st.stop()
by_key = {run.key: run for run in runs}
selected = [k for k in ui.selected_keys(every_run) if k in by_key]
keys = list(by_key)
# Without a selection, open a model of the embedded data set: its images are there on every machine.
embedded = [run.key for run in runs if run.dataset == "shapes"]
default = selected[0] if selected else (embedded[0] if embedded else keys[0])
key = st.selectbox("Run or shipped checkpoint", keys, index=keys.index(default), key="inspect_run")
run = by_key[key]
ckpt = lab.checkpoint_path(run.path)
try:
    model, config = lab.model_of(str(run.path), ckpt.stem, ri.file_identity(ckpt))
except (ValueError, OSError, RuntimeError, KeyError) as error:
    st.error(f"This checkpoint cannot be inspected: {error}")
    st.stop()
regulated = ri.has_regulator(model)
m = config["model"]
options = ", ".join(f"{k}={v}" for k, v in m.get("options", {}).items())
st.caption(f"`{m['name']}` ({options or 'no options'}) · data `{config['data']['name']}` · "
           f"{sum(p.numel() for p in model.parameters()):,} parameters · checkpoint `{ckpt.name}`")

data_root = st.text_input("Data root", config["data"].get("root") or "data", key=f"inspect_root_{key}",
                          help="Where this run's data set lives on this machine.")
splits, data_problem = None, None
try:
    splits = lab.splits_of(str(run.path), data_root)
except (ValueError, OSError) as error:  # DataError is a ValueError
    data_problem = str(error)
info = splits.info if splits else None
class_names = info.class_names if info else [str(c) for c in range(m["num_classes"])]

tab_image, tab_split = st.tabs(["One image", "Whole split"])

# ------------------------------------------------------------------------------------------ one image
with tab_image:
    sources = (["Validation image"] if splits else []) + ["Upload"]
    if data_problem:
        st.warning(f"{data_problem} You can still upload an image.")
    # Keyed per run: a run without its data offers only uploads, and that choice must not stick to the next run.
    source = st.radio("Image", sources, horizontal=True, key=f"inspect_source_{key}")
    x, shown, true_label = None, None, None
    if source == "Validation image":
        targets = splits.val.targets
        wanted = st.selectbox("Class", ["any"] + class_names, key="inspect_class")
        pool = [i for i, t in enumerate(targets) if wanted == "any" or class_names[t] == wanted]
        position = st.number_input(f"Image ({len(pool)} match)", 0, max(len(pool) - 1, 0), 0, key="inspect_index")
        index = pool[int(position)]
        image, label = splits.val[index]
        x, true_label = image[None], class_names[label]
        shown = denormalize(image, info)
    else:
        upload = st.file_uploader("An image file", key="inspect_upload")
        if upload is not None:
            in_channels = info.in_channels if info else m["in_channels"]
            size = info.image_size if info else 32
            mean, std = (info.mean, info.std) if info else ((0.5,) * 3, (0.25,) * 3)
            try:
                x, shown, notes = ri.prepare_image(upload.getvalue(), in_channels, size, mean, std)
                shown = shown[0]
                for note in notes:
                    st.info(note)
            except ri.ImageInputError as error:
                st.error(str(error))
    if x is None:
        st.info("Upload a PNG or JPEG to see the model's prediction, its regulator and attributions for it.")
        st.stop()

    col_image, col_pred = st.columns([1, 2])
    col_image.image(shown.permute(1, 2, 0).clamp(0, 1).numpy(), caption=f"true: {true_label or 'unknown'}",
                    width=160)
    top = ri.top_k(model, x, k=min(5, len(class_names)), class_names=class_names)
    col_pred.dataframe(pd.DataFrame(top)[["class", "probability"]], hide_index=True)
    predicted = top[0]["index"]

    st.subheader("Inside the regulator, step by step")
    logits, trace = ri.record_states(model, x)
    if not regulated:
        st.info(f"`{m['name']}` is a plain ResNet: it has no regulator, so there are no states or gates to show. "
                "Attributions and the whole-split analyses below still work.")
    else:
        c1, c2, c3, c4 = st.columns(4)
        fields = ["input", "hidden"] + (["cell"] if trace[0].cell is not None else []) + ["output"]
        field = c1.selectbox("State", fields, index=1, key="inspect_field",
                             help="input I = the block's X2, hidden H, cell C (ConvLSTM), output O of the block")
        mode = c2.selectbox("Channels", ["mean", "top", "channel"], key="inspect_mode",
                            format_func={"mean": "channel mean", "top": "top-N most active",
                                         "channel": "one channel"}.get)
        number = c3.number_input("N / channel", 0, 511, 3, key="inspect_number")
        shared = c4.checkbox("Shared colour scale", True, key="inspect_shared")
        try:
            grid = ri.state_grid(trace, field, mode, channel=int(number), top=max(int(number), 1))
            st.plotly_chart(charts.state_grid_figure(grid, field, shared), key="inspect_states")
        except ValueError as error:
            st.warning(str(error))

        st.subheader("Gates")
        gate_names = list(trace[0].gates)
        if not gate_names:
            st.info("A ConvRNN cell has no gates: H = tanh(W * [X, H]).")
        else:
            gate = st.selectbox("Gate", gate_names, key="inspect_gate")
            st.plotly_chart(charts.state_grid_figure(ri.state_grid(trace, gate, "mean"), f"gate {gate}", shared),
                            key="inspect_gate_maps")
            st.plotly_chart(charts.gate_depth_figure(ri.gate_profile(trace)), key="inspect_gate_depth")
            st.caption("Depth is the regulator's time axis: each point is one block of the stage.")

    st.subheader("Attribution")
    a1, a2, a3 = st.columns([2, 1, 2])
    methods = a1.multiselect("Methods", list(ri.METHODS), default=["integrated_gradients", "gradcam"],
                             format_func=ri.METHOD_LABELS.get, key="inspect_methods")
    target = a2.selectbox("Target class", range(len(class_names)), index=predicted,
                          format_func=lambda c: class_names[c], key="inspect_target")
    layers = list(ri.attribution_layers(model))
    default_layer = next((name for name in reversed(layers) if "regulator" in name), layers[-1])
    layer = a3.selectbox("Grad-CAM layer", layers, index=layers.index(default_layer), key="inspect_layer")
    shared_attr = st.checkbox("Shared colour scale across methods", False, key="inspect_attr_shared")
    maps = {}
    with st.spinner("Attributing..."):
        for method in methods:
            result = ri.attribute(model, x, method, target, layer=layer)
            maps[ri.METHOD_LABELS[method]] = result.importance().numpy()
            if result.is_zero:
                st.info(f"{ri.METHOD_LABELS[method]} found no evidence for '{class_names[target]}': "
                        "its map is all zero.")
    if maps:
        st.plotly_chart(charts.attribution_figure(shown.permute(1, 2, 0).numpy(), maps, shared_attr),
                        key="inspect_attr")

# ------------------------------------------------------------------------------------------ whole split
with tab_split:
    if splits is None:
        st.warning(data_problem or "The data set is not available.")
        st.stop()
    count = min(lab.ANALYSIS_LIMIT, len(splits.val))
    st.caption(f"Computed once per checkpoint on {count:,} validation images, then read from "
               f"`{run.path.name}/artifacts/`.")
    if not st.toggle("Analyse the validation split", key=f"inspect_split_{key}"):
        st.stop()
    with st.spinner("Analysing the split..."):
        analysis = lab.split_analysis(run.path, ckpt, model, splits)
    k1, k2, k3 = st.columns(3)
    k1.metric("Top-1", f"{analysis['accuracy']:.2%}")
    k2.metric("Macro-F1", f"{analysis['macro_f1']:.3f}")
    if analysis.get("ablation"):
        drop = analysis["accuracy"] - analysis["ablation"]["accuracy"]
        k3.metric("Top-1 without the regulator", f"{analysis['ablation']['accuracy']:.2%}", f"{-drop:.2%}")

    st.plotly_chart(charts.confusion_figure(analysis["confusion_matrix"], class_names), key="inspect_confusion")
    st.dataframe(pd.DataFrame(analysis["per_class"]).round(4), hide_index=True)

    st.subheader("Gallery")
    g1, g2, g3 = st.columns(3)
    gallery_class = g1.selectbox("True class", ["any"] + class_names, key="inspect_gallery_class")
    verdict = g2.selectbox("Predictions", ["all", "right", "wrong"], key="inspect_gallery_verdict")
    shown_n = g3.number_input("Images", 8, 64, 24, 8, key="inspect_gallery_n")
    targets_t, preds_t = analysis["targets"], analysis["preds"]
    picks = [i for i in range(len(targets_t))
             if (gallery_class == "any" or class_names[int(targets_t[i])] == gallery_class)
             and (verdict == "all" or (verdict == "right") == bool(preds_t[i] == targets_t[i]))][: int(shown_n)]
    if picks:
        images = [denormalize(splits.val[i][0], info).permute(1, 2, 0).numpy() for i in picks]
        titles = [f"{class_names[int(preds_t[i])]} ({float(analysis['confidence'][i]):.0%})" for i in picks]
        st.plotly_chart(charts.gallery_figure(images, titles, [bool(preds_t[i] == targets_t[i]) for i in picks]),
                        key="inspect_gallery")
        st.caption("Titles: predicted class and confidence; green is right, red is wrong.")
    else:
        st.info("No image matches these filters.")

    st.subheader("Per-block read-out and redundancy, beside another run")
    others = [k for k in keys if k != key]
    other_key = st.selectbox("Compare with", ["(none)"] + others, key="inspect_other")
    per_run = {key: analysis}
    if other_key != "(none)":
        other = by_key[other_key]
        other_ckpt = lab.checkpoint_path(other.path)
        try:
            other_model, other_config = lab.model_of(str(other.path), other_ckpt.stem, ri.file_identity(other_ckpt))
            other_splits = lab.splits_of(str(other.path), data_root)
            if other_splits.info.name != splits.info.name:
                st.warning(f"{other_key} was trained on {other_splits.info.name}, not {splits.info.name}; "
                           "its figures are on its own data.")
            with st.spinner(f"Analysing {other_key}..."):
                per_run[other_key] = lab.split_analysis(other.path, other_ckpt, other_model, other_splits)
        except (ValueError, OSError, RuntimeError, KeyError) as error:
            st.warning(f"{other_key} cannot be analysed: {error}")
    st.plotly_chart(charts.runs_bar_figure({k: a["readout"] for k, a in per_run.items()}, "block", "accuracy",
                                           "Accuracy of the final pool + FC on each block of the last stage",
                                           "top-1"), key="inspect_readout")
    st.plotly_chart(charts.runs_bar_figure(
        {k: [{**r, "pair": f"S{r['stage']} {r['pair']}"} for r in a["redundancy"]] for k, a in per_run.items()},
        "pair", "cosine", "Cosine similarity of consecutive block outputs (higher = more redundant)", "cosine"),
        key="inspect_redundancy")

    st.subheader("Regulator ablation")
    if not analysis.get("ablation"):
        st.info("A plain ResNet has no regulator to ablate.")
    else:
        ablation = analysis["ablation"]
        st.plotly_chart(charts.runs_bar_figure(
            {"intact": [{"class": r["class"], "v": r["intact"]} for r in ablation["per_class"]],
             "regulator zeroed": [{"class": r["class"], "v": r["ablated"]} for r in ablation["per_class"]]},
            "class", "v", "Accuracy per class with H replaced by zeros at the fusion", "accuracy"),
            key="inspect_ablation")

    st.subheader("Attribution quality")
    if not hasattr(splits.val, "mask"):
        st.info("Attribution quality is scored against object masks, which only the `shapes` data set has.")
    elif st.toggle("Score the attribution methods (pointing game, mass on object)", key=f"inspect_quality_{key}"):
        n = min(32, len(splits.val))
        xs = torch.stack([splits.val[i][0] for i in range(n)])
        ys = torch.tensor(splits.val.targets[:n])
        masks = torch.stack([splits.val.mask(i) for i in range(n)])
        quality_key = ri.cache_key(ri.file_identity(ckpt), "quality", n, layer)
        with st.spinner("Scoring attributions..."):
            rows = ri.cached(run.path / "artifacts", "inspect-quality", quality_key,
                             lambda: {"rows": ri.attribution_quality(model, xs, masks, ys, list(ri.METHODS),
                                                                     layer=layer)})["rows"]
        st.dataframe(pd.DataFrame(rows).round(3), hide_index=True)
        st.caption(f"On {n} validation images, for the true class; Grad-CAM on '{layer}'. The random map's "
                   "scores are the object's share of the image (exact expectation).")
