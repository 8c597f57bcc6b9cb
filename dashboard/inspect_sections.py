"""The Inspect page, one function per section: which model, which image, the prediction, the regulator's
states and gates, attributions, and the whole-split analyses.

Each section that has widgets of its own is a fragment, so changing a gate or a method redraws that
section alone; everything expensive comes from ``dashboard.inspect_cache``, which computes it once. Problems are
shown as one sentence in the section they concern; nothing stops the page, so the other tab still works.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import streamlit as st
import torch

from regnet.dashboard import inspect_charts as charts
from regnet.dashboard import channel_explorer, inspect_cache, probe_section, ui
from regnet.dashboard.live_regulator import GATE_LABELS
from regnet.dashboard.run_listing import RunInfo
from regnet import inspect as ri
from regnet.data import denormalize, recognised_name

FIELD_LABELS = {"input": "input I (the block's X2)", "hidden": "hidden state H", "cell": "cell state C",
                "output": "block output O"}
PREDICTED = -1  # the target-class choice that follows the image's prediction (None would read as "no choice")
QUALITY_LABELS = {"method": "method", "pointing_game": "pointing game", "mass_on_object": "mass on object"}
TABS = ("One image", "Whole split", "Linear probes", "Channels")
ANY = "any"
# Keys of the page's widgets whose value Streamlit does not let a script set (an upload, buttons, chart
# selections): ``keep_choices`` leaves them alone.
NOT_SETTABLE = ("inspect_upload", "inspect_png_", "inspect_npy_", "inspect_pick_", "inspect_do_")


@dataclass
class Subject:
    """The checkpoint under inspection, with its images (or why there are none)."""

    run: RunInfo
    checkpoint: Path
    identity: str
    model: torch.nn.Module
    config: dict
    images: inspect_cache.InspectImages | None
    data_problem: str | None

    @property
    def class_names(self) -> list[str]:
        if self.images is not None:
            return self.images.info.class_names
        return [str(c) for c in range(self.config["model"]["num_classes"])]

    @property
    def input_spec(self) -> tuple[int, int, tuple, tuple]:
        """(channels, side, mean, std) of the model's input, from its data when known."""
        if self.images is not None:
            info = self.images.info
            return info.in_channels, info.image_size, info.mean, info.std
        return self.config["model"]["in_channels"], 32, (0.5,) * 3, (0.25,) * 3


@dataclass
class Picked:
    """One image, ready for the model (``x``, 1xCxHxW) and for the eye (``shown``, CxHxW in [0, 1])."""

    x: torch.Tensor
    shown: torch.Tensor
    true_label: str | None
    key: str

    def rgb(self):
        """HxWx3 array for plotly and ``st.image`` (a greyscale image repeated on three channels)."""
        shown = self.shown.clamp(0, 1)
        return (shown.expand(3, -1, -1) if shown.shape[0] == 1 else shown).permute(1, 2, 0).numpy()


def default_run(runs: list[RunInfo], selected: list[str]) -> str:
    """The run chosen elsewhere, else the best shipped model of the embedded data set (its images are on
    every machine), else the newest run."""
    if selected:
        return selected[0]
    embedded = [r for r in runs if r.dataset == "shapes"]
    shipped = [r for r in embedded if r.source == "shipped"]
    if shipped or embedded:
        return max(shipped or embedded, key=lambda r: r.best.value if r.best.value is not None else -1.0).key
    return runs[0].key


def choose_epoch(run: RunInfo, default: Path) -> Path:
    """For a run with epoch snapshots, which weights every view uses: one epoch's snapshot or ``default``.

    Each choice is its own checkpoint (its own identity), so the model, the traces and the split analyses
    of each epoch are computed once and kept apart.
    """
    snapshots = inspect_cache.snapshots_of(run.path)
    if not snapshots:
        return default
    options = [*snapshots, default.stem]
    label = {default.stem: f"{default.stem}.pt", **{epoch: f"epoch {epoch}" for epoch in snapshots}}
    choice = st.select_slider("Weights at epoch", options, value=default.stem, key=f"inspect_epoch_{run.key}",
                              format_func=label.get,
                              help="This run kept its weights every few epochs (train.keep_every): every view "
                                   "below shows the model as it was after the chosen epoch.")
    return default if choice == default.stem else snapshots[choice]


def choose_subject(every_run: list[RunInfo]) -> Subject | None:
    """The run picker, the checkpoint loaded once, and its images; one sentence when either fails."""
    runs = [run for run in every_run if inspect_cache.checkpoint_path(run.path)]
    if not runs:
        st.info("No run has a checkpoint yet. Finish an epoch of a run (New run page), or use a shipped "
                "checkpoint from `checkpoints/`.")
        return None
    by_key = {run.key: run for run in runs}
    keys = list(by_key)
    selected = [k for k in ui.selected_keys(every_run) if k in by_key]
    key = st.selectbox("Run or shipped checkpoint", keys, index=keys.index(default_run(runs, selected)),
                       key="inspect_run")
    run = by_key[key]
    checkpoint = choose_epoch(run, inspect_cache.checkpoint_path(run.path))
    identity = ri.file_identity(checkpoint)
    try:
        model, config = inspect_cache.model_of(str(run.path), checkpoint.stem, identity)
    except (ValueError, OSError, RuntimeError, KeyError) as error:
        st.error(f"This checkpoint cannot be inspected: {error}")
        return None
    m = config["model"]
    options = ", ".join(f"{k}={v}" for k, v in m.get("options", {}).items())
    data = recognised_name(config["data"]["name"], m.get("class_names") or ())
    st.caption(f"`{m['name']}` ({options or 'no options'}) · data `{data}` · "
               f"{sum(p.numel() for p in model.parameters()):,} parameters · checkpoint `{checkpoint.name}`")
    data_root = st.text_input("Data root", config["data"].get("root") or "data", key=f"inspect_root_{key}",
                              help="Where this run's data set lives on this machine. Without it, a run that "
                                   "ships a sample of its validation images shows those.")
    images, problem = None, None
    try:
        images = inspect_cache.images_of(str(run.path), data_root)
    except (ValueError, OSError) as error:  # DataError is a ValueError
        problem = str(error)
    return Subject(run, checkpoint, identity, model, config, images, problem)


def _validation_image(subject: Subject) -> Picked:
    images = subject.images
    names = subject.class_names
    wanted = st.selectbox("Class", [ANY] + names, key="inspect_class")
    pool = [i for i, t in enumerate(images.val.targets) if wanted == ANY or names[t] == wanted]
    _clamp_state("inspect_index", 0, max(len(pool) - 1, 0), default=0)
    position = st.number_input(f"Image ({len(pool)} match)", 0, max(len(pool) - 1, 0), key="inspect_index",
                               help="Among the validation images of the chosen class; a click on a gallery "
                                    "image (Whole split) opens it here.")
    index = pool[min(int(position), len(pool) - 1)]
    image, label = images.val[index]
    return Picked(image[None], denormalize(image, images.info), names[label],
                  inspect_cache.image_key("val", subject.run.path, images.sample, index))


def _remember_upload() -> None:
    """on_change of the uploader: keep the file (or its removal), since the uploader itself comes back empty
    after the other tab was open."""
    upload = st.session_state.get("inspect_upload")
    st.session_state["inspect_uploaded"] = None if upload is None else (upload.name, upload.getvalue())


def _uploaded_image(subject: Subject) -> Picked | None:
    upload = st.file_uploader("An image file (PNG, JPEG, GIF, TIFF, BMP, WebP, ICO...)", key="inspect_upload",
                              on_change=_remember_upload)
    kept = st.session_state.get("inspect_uploaded")
    if upload is None and kept is None:
        st.info("Upload an image to see the model's prediction, its regulator and attributions for it.")
        return None
    if upload is None:
        st.caption(f"Showing `{kept[0]}`, uploaded earlier; upload another file to replace it.")
    channels, side, mean, std = subject.input_spec
    data = upload.getvalue() if upload is not None else kept[1]
    try:
        x, shown, notes = ri.prepare_image(data, channels, side, mean, std)
    except ri.ImageInputError as error:
        st.error(str(error))
        return None
    except MemoryError:  # prepare_image's limits should make this unreachable; the page still says it
        st.error("This image is too large to prepare in the server's memory; upload a smaller one.")
        return None
    for note in notes:
        st.caption(note)
    return Picked(x, shown, None, inspect_cache.image_key("upload", data, channels, side))


def choose_image(subject: Subject) -> Picked | None:
    """A validation image by class and index (the whole split, or the shipped sample), or an upload."""
    images = subject.images
    sources = (["Validation image"] if images is not None else []) + ["Upload"]
    if subject.data_problem:
        st.warning(f"{subject.data_problem} You can still upload an image.")
    elif images is not None and images.sample:
        st.caption(f"The data set is not on this machine: showing {images.description} that came with "
                   "this checkpoint (set the data root above to use the whole split).")
    source = st.radio("Image", sources, horizontal=True, key=f"inspect_source_{subject.run.key}")
    return _validation_image(subject) if source == "Validation image" else _uploaded_image(subject)


def show_prediction(subject: Subject, picked: Picked) -> int:
    """The image beside the model's five most probable classes; returns the predicted class."""
    names = subject.class_names
    col_image, col_pred = st.columns([1, 2])
    col_image.image(picked.rgb(), caption=f"true: {picked.true_label or 'unknown'}", width=160)
    top = ri.top_k(subject.model, picked.x, k=min(5, len(names)), class_names=names)
    col_pred.dataframe(pd.DataFrame(top)[["class", "probability"]], hide_index=True,
                       column_config={"probability": st.column_config.ProgressColumn(
                           "probability", format="percent", min_value=0.0, max_value=1.0)})
    return top[0]["index"]


def _clamp_state(key: str, low: int, high: int, default: int) -> None:
    """Keep a number widget's remembered value inside bounds that another choice just changed."""
    st.session_state[key] = min(max(st.session_state.get(key, default), low), high)


@st.fragment
def show_states(subject: Subject, picked: Picked) -> None:
    """The regulator's input, H, C and the block output at every (stage, step), as heat maps."""
    st.subheader("Inside the regulator, step by step")
    _, trace = inspect_cache.trace_of(subject.identity, picked.key, subject.model, picked.x)
    c1, c2, c3, c4, c5 = st.columns(5)
    fields = ["input", "hidden"] + (["cell"] if trace[0].cell is not None else []) + ["output"]
    field = c1.selectbox("State", fields, index=1, key="inspect_field", format_func=FIELD_LABELS.get)
    stages = sorted({r.stage for r in trace})
    stage = c2.selectbox("Stage", ["all"] + stages, key="inspect_stage",
                         format_func=lambda s: "all stages" if s == "all" else f"stage {s + 1}")
    shown = [r for r in trace if stage == "all" or r.stage == stage]
    mode = c3.selectbox("Channels", ["mean", "top", "channel"], key="inspect_mode",
                        format_func={"mean": "channel mean", "top": "top-N most active",
                                     "channel": "one channel"}.get)
    channels = min(r.hidden.shape[1] for r in shown)
    low, high = (0, channels - 1) if mode == "channel" else (1, min(channels, 8))
    _clamp_state("inspect_number", low, high, default=min(3, high))
    number = c4.number_input("Channel" if mode == "channel" else "N", low, high, key="inspect_number",
                             disabled=mode == "mean",
                             help=f"The chosen stages have {channels} channels (0..{channels - 1}).")
    shared = c5.checkbox("Shared colour scale", True, key="inspect_shared")
    grid = ri.state_grid(shown, field, mode, channel=int(number), top=int(number))
    st.plotly_chart(charts.state_grid_figure(grid, FIELD_LABELS[field], shared), key="inspect_states")
    if inspect_cache.snapshots_of(subject.run.path):
        show_across_epochs(subject, picked, field, stage, mode, int(number))


def show_across_epochs(subject: Subject, picked: Picked, field: str, stage, mode: str, number: int) -> None:
    """The map chosen above at every kept epoch, as animation frames: how the regulator's view of this
    image formed during training."""
    snapshots = inspect_cache.snapshots_of(subject.run.path)
    if not st.toggle(f"Play this map across the {len(snapshots)} kept epochs", key="inspect_play_epochs"):
        return
    grids = {}
    with st.spinner("Recording the image at every kept epoch..."):
        for epoch, path in snapshots.items():
            identity = ri.file_identity(path)
            model, _ = inspect_cache.model_of(str(subject.run.path), path.stem, identity)
            _, trace = inspect_cache.trace_of(identity, picked.key, model, picked.x)
            shown = [r for r in trace if stage == "all" or r.stage == stage]
            grids[epoch] = ri.state_grid(shown, field, mode, channel=number, top=number)
    st.plotly_chart(charts.epochs_animation_figure(grids, FIELD_LABELS[field]), key="inspect_states_epochs")


@st.fragment
def show_gates(subject: Subject, picked: Picked) -> None:
    """One gate's maps at every (stage, step), and every gate's statistics along depth."""
    st.subheader("Gates")
    _, trace = inspect_cache.trace_of(subject.identity, picked.key, subject.model, picked.x)
    gate_names = list(trace[0].gates)
    if not gate_names:
        st.info("A ConvRNN cell has no gates: H = tanh(W * [X, H]).")
        return
    gate = st.selectbox("Gate", gate_names, key="inspect_gate", format_func=lambda g: GATE_LABELS.get(g, g))
    shared = st.session_state.get("inspect_shared", True)
    st.plotly_chart(charts.state_grid_figure(ri.state_grid(trace, gate, "mean"), GATE_LABELS.get(gate, gate),
                                             shared), key="inspect_gate_maps")
    st.plotly_chart(charts.gate_depth_figure(ri.gate_profile(trace), GATE_LABELS), key="inspect_gate_depth")
    st.caption("Gates along depth, the regulator's time axis: each point is one block of the stage. The line is "
               "the gate's mean over its channels and pixels, the band holds the middle 80% of its values (10th "
               "to 90th percentile). Each gate has its own row and y range, as sigmoid gates often differ only "
               "in the second decimal.")


def _method_settings(subject: Subject, layers: list[str]) -> tuple[ri.MethodSettings, str]:
    """What Captum Insights lets a user set: IG steps and baseline, SmoothGrad samples and noise, Occlusion
    window and stride, and the Grad-CAM layer."""
    side = subject.input_spec[1]
    default_layer = next((name for name in reversed(layers) if "regulator" in name), layers[-1] if layers else None)
    with st.expander("Method settings"):
        c1, c2, c3, c4 = st.columns(4)
        steps = c1.slider("Integrated Gradients: steps", 8, 128, 32, 8, key="inspect_ig_steps")
        baseline = c1.selectbox("Baseline (Integrated Gradients, Occlusion)", ri.BASELINES,
                                format_func=ri.BASELINE_LABELS.get, key="inspect_baseline")
        samples = c2.slider("SmoothGrad: samples", 4, 64, 16, 4, key="inspect_sg_samples")
        noise = c2.slider("SmoothGrad: noise (share of the value range)", 0.05, 0.5, 0.15, 0.05, key="inspect_sg_noise")
        window = c3.slider("Occlusion: window (pixels)", 2, max(3, side // 2), min(4, side // 2), key="inspect_occ_window")
        _clamp_state("inspect_occ_stride", 1, window, default=min(2, window))
        stride = c3.slider("Occlusion: stride (pixels)", 1, window, key="inspect_occ_stride")
        layer = (c4.selectbox("Grad-CAM layer", layers, index=layers.index(default_layer), key="inspect_layer")
                 if layers else None)
    return ri.MethodSettings(steps=steps, samples=samples, noise=noise, window=window, stride=stride,
                             layer=layer), baseline


def _map_downloads(maps: dict, signed: bool, evidence: str) -> None:
    """Each map as a PNG in the page's colours, titled and with its colour bar, and as the NumPy array behind
    it."""
    kind = "signed" if signed else "absolute"
    with st.expander("Download the maps"):
        for label, values in maps.items():
            name = label.lower().replace(" ", "-")
            c1, c2 = st.columns(2)
            c1.download_button(f"{label} as PNG", charts.map_png(values, signed, f"{label} ({kind}), {evidence}"),
                               f"{name}-{kind}.png", "image/png", key=f"inspect_png_{name}", on_click="ignore")
            c2.download_button(f"{label} as NumPy array", charts.map_npy(values), f"{name}-{kind}.npy",
                               "application/octet-stream", key=f"inspect_npy_{name}", on_click="ignore")


@st.fragment
def show_attributions(subject: Subject, picked: Picked, predicted: int) -> None:
    """The chosen methods' maps for a target class, computed once per image, method, target and settings."""
    st.subheader("Attribution")
    names = subject.class_names
    a1, a2, a3, a4, a5 = st.columns([3, 2, 2, 2, 2])
    methods = a1.multiselect("Methods", list(ri.METHODS), default=["integrated_gradients", "gradcam"],
                             format_func=ri.METHOD_LABELS.get, key="inspect_methods")
    choice = a2.selectbox("Target class", [PREDICTED, *range(len(names))], key="inspect_target",
                          format_func=lambda c: "the prediction" if c == PREDICTED else names[c])
    target = predicted if choice == PREDICTED else choice
    signed = a3.radio("Map", ["absolute", "signed"], horizontal=True, key="inspect_sign",
                      help="Signed: red is evidence for the class, blue against it.") == "signed"
    over_grey = a4.radio("Draw maps", ["beside the image", "over it in grey"], key="inspect_attr_over",
                         help="Beside: each colour is exactly one on the colour bar. Over the image in grey: "
                              "shows where the evidence lies; the grey darkens colours but adds no hue.") \
        == "over it in grey"
    shared = a5.checkbox("One scale for all maps", False, key="inspect_attr_shared")
    settings, baseline = _method_settings(subject, list(ri.attribution_layers(subject.model)))
    _, _, mean, std = subject.input_spec
    maps = {}
    for number, method in enumerate(methods, start=1):
        label = ri.METHOD_LABELS[method]
        if method == "gradcam" and settings.layer is None:
            st.info(f"{label} needs a layer to hook and `{subject.config['model']['name']}` names none; "
                    "the pixel methods still apply.")
            continue
        with inspect_cache.ProgressBar(f"{label} (method {number} of {len(methods)}, weights `{subject.checkpoint.name}`)",
                             "forward batches") as bar:
            result = inspect_cache.attribution_of(subject.identity, picked.key, method, target, settings, baseline,
                                        subject.model, picked.x, mean, std, progress=bar)
        maps[label] = (result.map if signed else result.importance()).numpy()
        if result.is_zero:
            st.info(f"{label} found no evidence for '{names[target]}': its map is all zero.")
    if maps:
        st.plotly_chart(charts.attribution_figure(picked.rgb(), maps, signed, shared, over_grey), key="inspect_attr")
        evidence = f"evidence for '{names[target]}'" + (" (the prediction)" if target == predicted else "")
        st.caption(evidence[0].upper() + evidence[1:] + ".")
        _map_downloads(maps, signed, evidence)


def image_tab(subject: Subject) -> None:
    """Everything about one image: prediction, regulator states and gates, attributions."""
    picked = choose_image(subject)
    if picked is None:
        return
    predicted = show_prediction(subject, picked)
    if ri.has_regulator(subject.model):
        show_states(subject, picked)
        show_gates(subject, picked)
    else:
        st.info(f"`{subject.config['model']['name']}` is a plain ResNet: it has no regulator, so there are no "
                "states or gates to show. Attributions and the whole-split analyses still work.")
    show_attributions(subject, picked, predicted)


def _split_metrics(analysis: dict, images: inspect_cache.InspectImages) -> None:
    k1, k2, k3 = st.columns(3)
    k1.metric("Top-1", f"{analysis['accuracy']:.2%}")
    k2.metric("Macro-F1", f"{analysis['macro_f1']:.3f}")
    if analysis.get("ablation"):
        drop = analysis["accuracy"] - analysis["ablation"]["accuracy"]
        k3.metric("Top-1 without the regulator", f"{analysis['ablation']['accuracy']:.2%}",
                  f"{-drop * 100:.1f} points")
    if images.sample:
        st.caption(f"Figures on {images.description}, not on the whole split: expect a few points of noise.")
    names = images.info.class_names
    normalise = st.toggle("Normalise by row (each true class's share)", key="inspect_confusion_norm",
                          help="Each row then sums to 100%, so a rare class's errors read as plainly as a "
                               "common one's.")
    st.plotly_chart(charts.confusion_figure(analysis["confusion_matrix"], names, normalise),
                    key="inspect_pick_confusion", on_select=lambda: _show_cell(names), selection_mode="points")
    st.caption("Click a cell to show its images in the gallery below.")
    st.dataframe(pd.DataFrame(analysis["per_class"]).round(4), hide_index=True)


def _picked(key: str) -> list | None:
    """The custom data of the point a click selected in the chart drawn with ``key``, as a list; None when
    the click cleared the selection.

    The browser hands a point's custom data back as a list, or as a dict by position when the figure sent
    it as a typed array.
    """
    state = st.session_state.get(key) or {}
    points = (state.get("selection") or {}).get("points") or []
    if not points:
        return None
    data = points[0].get("customdata")
    if isinstance(data, dict):
        return [data[k] for k in sorted(data, key=int)]
    return list(data) if isinstance(data, (list, tuple)) else [data]


def _show_cell(names: list[str]) -> None:
    """on_select of the confusion matrix: filter the gallery to the clicked (true, predicted) pair."""
    cell = _picked("inspect_pick_confusion")
    if cell:
        true, predicted = int(cell[0]), int(cell[1])
        st.session_state.update(inspect_gallery_class=names[true], inspect_gallery_pred=names[predicted],
                                inspect_gallery_verdict="all")


def _open_image(run_key: str) -> None:
    """on_select of the gallery: open the clicked image in the One image tab."""
    image = _picked("inspect_pick_gallery")
    if image:
        st.session_state.update({"inspect_tab": TABS[0], f"inspect_source_{run_key}": "Validation image",
                                 "inspect_class": ANY, "inspect_index": int(image[0]), "inspect_opened": True})


def gallery_indices(targets, preds, true_class: int | None, predicted_class: int | None, verdict: str,
                    count: int) -> list[int]:
    """The first ``count`` images of the given true and predicted class (None: any) and verdict."""
    return [i for i in range(len(targets))
            if (true_class is None or int(targets[i]) == true_class)
            and (predicted_class is None or int(preds[i]) == predicted_class)
            and (verdict == "all" or (verdict == "right") == bool(preds[i] == targets[i]))][:count]


def show_gallery(subject: Subject, analysis: dict) -> None:
    """Validation images filtered by true class, predicted class and verdict, titled with the prediction (and
    the truth when wrong); a click opens one in the One image tab."""
    st.subheader("Gallery")
    names = subject.class_names
    g1, g2, g3, g4 = st.columns(4)
    wanted = g1.selectbox("True class", [ANY] + names, key="inspect_gallery_class")
    said = g2.selectbox("Predicted class", [ANY] + names, key="inspect_gallery_pred")
    verdict = g3.selectbox("Predictions", ["all", "right", "wrong"], key="inspect_gallery_verdict")
    count = g4.number_input("Images", 6, 60, 24, 6, key="inspect_gallery_n")
    targets, preds, confidence = analysis["targets"], analysis["preds"], analysis["confidence"]
    picks = gallery_indices(targets, preds, None if wanted == ANY else names.index(wanted),
                            None if said == ANY else names.index(said), verdict, int(count))
    if not picks:
        st.info("No image matches these filters.")
        return
    info = subject.images.info
    pictures = [denormalize(subject.images.val[i][0], info).permute(1, 2, 0).numpy() for i in picks]
    predicted = [f"{names[int(preds[i])]} {float(confidence[i]):.0%}" for i in picks]
    truth = [None if preds[i] == targets[i] else names[int(targets[i])] for i in picks]
    st.plotly_chart(charts.gallery_figure(pictures, predicted, truth, picks), key="inspect_pick_gallery",
                    on_select=lambda: _open_image(subject.run.key), selection_mode="points")
    st.caption("Titles: predicted class and confidence, and the true class when the prediction is wrong; "
               "green is right, red is wrong. Click an image to open it in the One image tab.")


def _other_analysis(other: RunInfo, cache: Path, progress: inspect_cache.ProgressBar) -> dict:
    """Another run's split analysis on its own images; a ValueError or OSError says why it cannot be had."""
    checkpoint = inspect_cache.checkpoint_path(other.path)
    model, config = inspect_cache.model_of(str(other.path), checkpoint.stem, ri.file_identity(checkpoint))
    images = inspect_cache.images_of(str(other.path), config["data"].get("root") or "data")
    return inspect_cache.split_analysis(cache, checkpoint, model, images, progress=progress)


def show_readout(subject: Subject, analysis: dict, others: list[RunInfo], cache: Path) -> None:
    """The final-head read-out and the blocks' redundancy, beside a second run's (the paper's Fig. 1b probe
    is the Linear probes tab)."""
    st.subheader("Final-head read-out and redundancy, beside another run")
    by_key = {run.key: run for run in others}
    other_key = st.selectbox("Compare with", ["(none)", *by_key], key="inspect_other")
    per_run = {subject.run.key: analysis}
    if other_key != "(none)":
        try:
            with inspect_cache.ProgressBar(f"Analysing {other_key}", "images") as bar:
                per_run[other_key] = _other_analysis(by_key[other_key], cache, bar)
            if per_run[other_key]["class_names"] != analysis["class_names"]:
                st.warning(f"{other_key} was trained on other classes; its figures are on its own data.")
        except (ValueError, OSError, RuntimeError, KeyError) as error:
            st.warning(f"{other_key} cannot be analysed: {error}")
    last_stage = analysis["readout"][0]["stage"] if analysis["readout"] else 1
    st.plotly_chart(charts.runs_bar_figure(
        {k: a["readout"] for k, a in per_run.items()}, "block", "accuracy",
        f"Final-head read-out: the trained pool + FC applied to each block of stage {last_stage} "
        "(not the paper's probe: see Linear probes)", "top-1", "block", unit_range=True), key="inspect_readout")
    st.plotly_chart(charts.runs_bar_figure(
        {k: [{**r, "pair": f"S{r['stage']} {r['pair']}"} for r in a["redundancy"]] for k, a in per_run.items()},
        "pair", "cosine", "Cosine similarity of consecutive block outputs (higher = more redundant)",
        "cosine similarity", "stage and block pair"), key="inspect_redundancy")


def show_ablation(analysis: dict) -> None:
    st.subheader("Regulator ablation")
    if not analysis.get("ablation"):
        st.info("A plain ResNet has no regulator to ablate.")
        return
    rows = analysis["ablation"]["per_class"]
    st.plotly_chart(charts.runs_bar_figure(
        {"intact": [{"class": r["class"], "v": r["intact"]} for r in rows],
         "regulator zeroed": [{"class": r["class"], "v": r["ablated"]} for r in rows]},
        "class", "v", "Accuracy per class with H replaced by zeros at the fusion", "accuracy", "class",
        unit_range=True), key="inspect_ablation")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def show_quality(subject: Subject, cache: Path) -> None:
    """Pointing game and mass on object of every method, against object masks (``shapes`` only).

    Scoring takes minutes on a CPU, so it says how long before it starts: the first image is timed (once
    per checkpoint, kept on disk) and the rest waits for a click.
    """
    st.subheader("Attribution quality")
    images = subject.images
    if not hasattr(images.val, "mask"):
        st.info("Attribution quality is scored against object masks, which only the `shapes` data set has.")
        return
    layers = list(ri.attribution_layers(subject.model))
    layer = st.session_state.get("inspect_layer") or layers[-1]
    settings = ri.MethodSettings(layer=layer if layer in layers else layers[-1])
    n = min(inspect_cache.QUALITY_IMAGES, len(images.val))
    done = inspect_cache.quality_is_cached(cache, subject.checkpoint, images, settings)
    if not st.toggle("Score the attribution methods (pointing game, mass on object)",
                     key=f"inspect_quality_{subject.run.key}",
                     help=None if done else "Times one image first, then says how long the rest takes before "
                                            "it starts."):
        return
    if not done:
        with inspect_cache.ProgressBar("Timing the first image", "image-method pairs") as bar:
            seconds = inspect_cache.quality_seconds_per_image(cache, subject.checkpoint, subject.model, images, settings, bar)
        st.info(f"Scoring {n} images with {len(ri.METHODS)} methods takes up to about {_duration(seconds * n)} "
                f"here: the first image took {seconds:.1f} s, and the rest go in batches of 8, a little faster; "
                "the result is kept, so it is done once per checkpoint.")
        if not st.button(f"Score the {n} images", key=f"inspect_do_score_{subject.run.key}"):
            return
    with inspect_cache.ProgressBar("Scoring attributions", "image-method pairs") as bar:
        rows = inspect_cache.quality_scores(cache, subject.checkpoint, subject.model, images, settings, progress=bar)
    table = pd.DataFrame([{**r, "method": ri.METHOD_LABELS.get(r["method"], r["method"])} for r in rows])
    st.dataframe(table.rename(columns=QUALITY_LABELS).round(3), hide_index=True)
    st.caption(f"On the first {n} validation images, for the true class, with each method's default settings; "
               f"Grad-CAM on '{settings.layer}'. The random map's scores are the object's share of the image "
               "(exact expectation).")


@st.fragment
def split_tab(subject: Subject, others: list[RunInfo]) -> None:
    """Split-level analyses, computed once per checkpoint with a progress bar, then read from the cache."""
    if st.session_state.pop("inspect_opened", False):
        st.rerun()  # a gallery click chose the One image tab: the whole page, not this fragment, redraws
    images = subject.images
    if images is None:
        st.warning(subject.data_problem or "The data set is not available.")
        return
    cache = inspect_cache.cache_folder(ui.runs_root())
    count = min(inspect_cache.ANALYSIS_LIMIT, len(images.val))
    scope = images.description if count == len(images.val) else f"the first {count:,} of {images.description}"
    st.caption(f"On {scope}; computed once per checkpoint, then read from `{cache}`.")
    if not st.toggle("Analyse the validation images", key=f"inspect_split_{subject.run.key}"):
        return
    with inspect_cache.ProgressBar("Analysing the validation images", "images") as bar:
        analysis = inspect_cache.split_analysis(cache, subject.checkpoint, subject.model, images, progress=bar)
    _split_metrics(analysis, images)
    show_gallery(subject, analysis)
    show_readout(subject, analysis, others, cache)
    show_ablation(analysis)
    show_quality(subject, cache)


def render() -> None:
    """The whole page: the subject, then one tab per scope."""
    st.title("Inspect")
    keep_choices()
    every_run = ui.all_runs()
    subject = choose_subject(every_run)
    if subject is None:
        return
    others = [run for run in every_run if run.key != subject.run.key and inspect_cache.checkpoint_path(run.path)]
    tab_image, tab_split, tab_probes, tab_channels = st.tabs(TABS, key="inspect_tab", on_change="rerun")
    if tab_image.open:  # only the open tab computes: a new epoch's weights never wait on the hidden one
        with tab_image:
            image_tab(subject)
    if tab_split.open:
        with tab_split:
            split_tab(subject, others)
    if tab_probes.open:
        with tab_probes:
            probe_section.render(subject, others)
    if tab_channels.open:
        with tab_channels:
            channel_explorer.render(subject)


def keep_choices() -> None:
    """Keep every choice made on this page over runs that do not draw its widget.

    Only the open tab is drawn, and Streamlit forgets the value of a widget that a run does not draw;
    setting each value again makes it the page's own, kept until the widget is drawn again.
    """
    for key in list(st.session_state):
        if str(key).startswith("inspect_") and not str(key).startswith(NOT_SETTABLE):
            st.session_state[key] = st.session_state[key]
