"""New run: a form over the contract's config (or a ready config from configs/), Start and Stop."""
import time

import streamlit as st

from regnet.dashboard import launcher, ui
from regnet.dashboard.run_listing import progress

import regnet.data as rdata
from regnet.models import check_options, list_models, model_info

st.title("New run")

# ---------------------------------------------------------------- the config the form starts from
ready = launcher.ready_configs()
clone = ui.clone_source()  # (label, config) of the run named by ?clone=<run>, from the Runs page's Clone


def base_config() -> dict:
    """The defaults, or the chosen ready config (or cloned run's config) over them (extra keys are kept)."""
    name = st.session_state.get("nr_start", "defaults")
    if clone and name == clone[0]:
        return launcher.merge_config(clone[1], {})
    if name in ready:
        try:
            return launcher.load_ready_config(ready[name])
        except ValueError as error:
            st.error(str(error))
    return launcher.merge_config(launcher.DEFAULT_CONFIG, {})


def family_and_depth(name: str) -> tuple[str, str]:
    family = name.rstrip("0123456789")
    return family, name[len(family):]


# Widget key -> (config section, field). Options of the model are handled apart (they depend on the model).
FIELDS = {
    "nr_dataset": ("data", "name"), "nr_root": ("data", "root"), "nr_size": ("data", "size"),
    "nr_augment": ("data", "augment"), "nr_jitter": ("data", "color_jitter"), "nr_epochs": ("train", "epochs"),
    "nr_batch": ("train", "batch_size"), "nr_optim": ("optim", "name"), "nr_lr": ("optim", "lr"),
    "nr_schedule": ("schedule", "name"), "nr_wd": ("optim", "weight_decay"), "nr_seed": ("train", "seed"),
    "nr_device": ("train", "device"), "nr_log_every": ("train", "log_every"), "nr_workers": ("data", "workers"),
    "nr_keep_every": ("train", "keep_every"),
}


def apply_config() -> None:
    """Fill every widget from the chosen starting config (runs when 'Start from' changes)."""
    config = base_config()
    family, depth = family_and_depth(config["model"]["name"])
    st.session_state["nr_family"], st.session_state["nr_depth"] = family, depth
    st.session_state["nr_options_for"] = None  # options are refilled for the config's model below
    for key, (section, field) in FIELDS.items():
        value = config[section].get(field)
        if key in ("nr_lr", "nr_wd"):
            value = float(value)
        elif key in ("nr_size", "nr_workers"):
            value = int(value or 0)
        st.session_state[key] = value


if "nr_family" not in st.session_state:
    apply_config()
if clone and st.session_state.get("nr_cloned") != clone[0]:  # arrived from Clone: fill the form once
    st.session_state["nr_start"], st.session_state["nr_cloned"] = clone[0], clone[0]
    apply_config()

models = list_models()
families = list(dict.fromkeys(family_and_depth(name)[0] for name in models))
devices = ["auto", "cpu"]
try:
    import torch

    devices += ["cuda"] if torch.cuda.is_available() else []
except ImportError:
    pass

st.selectbox("Start from", ["defaults", *ready, *([clone[0]] if clone else [])], key="nr_start", on_change=apply_config,
             help="A ready config from configs/*.yaml fills the form; anything you change below overrides it.")

# ---------------------------------------------------------------- the form
model_col, data_col, train_col = st.columns(3)
with model_col:
    st.subheader("Model")
    family = st.selectbox("Architecture", families, key="nr_family")
    depths = [family_and_depth(name)[1] for name in models if family_and_depth(name)[0] == family]
    if st.session_state.get("nr_depth") not in depths:
        st.session_state["nr_depth"] = depths[0]
    depth = st.selectbox("Depth", depths, key="nr_depth", disabled=len(depths) == 1,
                         format_func=lambda d: f"{d} ({model_info(family + d).family})" if d else "fixed")
    model_name = family + depth
    info = model_info(model_name)
    st.caption(f"`{model_name}` · {info.family} · natural input {info.input_size} · "
               f"{'regulated (RegNet)' if info.regulated else 'plain'}")
    if st.session_state.get("nr_options_for") != model_name:
        # A new model: its options start from its defaults, or from the starting config if it is that model.
        config = base_config()
        preset = config["model"].get("options") or {} if config["model"]["name"] == model_name else {}
        for option, default in info.options.items():
            value = preset.get(option, default)
            st.session_state[f"nr_opt_{option}"] = (", ".join(map(str, value)) if isinstance(value, (tuple, list))
                                                    else value)
        st.session_state["nr_options_for"] = model_name
    labels = {"cell": "Regulator cell", "gates": "Gate form", "se": "Squeeze-and-excitation (SE)",
              "sharing": "Regulator cells (one per stage or per block)",
              "memory": "Regulator memory (carry the state across blocks, or reset it)",
              "h_norm": "BN+ReLU on H before the fusion", "fusion": "Fusion of H (concat with X2, or replace X2)",
              "shortcut": "Shortcut (A: zero-pad, B: 1x1 projection)",
              "regulated_stages": "Regulated stages (numbered from 1)"}
    options = {}
    for option, default in info.options.items():
        key, label, choices = f"nr_opt_{option}", labels.get(option, option.replace("_", " ")), info.choices.get(option)
        if isinstance(default, bool):
            options[option] = st.checkbox(label, key=key)
        elif choices:
            options[option] = st.selectbox(label, list(choices), key=key)
        elif isinstance(default, int):
            options[option] = int(st.number_input(label, min_value=1, step=1, key=key))
        elif isinstance(default, float):
            options[option] = float(st.number_input(label, min_value=0.0, step=0.05, key=key))
        elif isinstance(default, (tuple, list)):
            text = st.text_input(label, key=key, help="Comma-separated integers.")
            try:
                options[option] = [int(part) for part in text.split(",") if part.strip()]
            except ValueError:
                st.error(f"{label} must be comma-separated integers, like {', '.join(map(str, default))}.")
                options[option] = None
        else:
            options[option] = st.text_input(label, key=key)

with data_col:
    st.subheader("Data")
    datasets = rdata.list_datasets()
    if st.session_state.get("nr_dataset") not in datasets:
        st.session_state["nr_dataset"] = "shapes"
    dataset = st.selectbox("Data set", datasets, key="nr_dataset",
                           help="`shapes` is generated on the fly: no download needed.")
    data_root = st.text_input("Data root", key="nr_root", help="Folder holding the data set (ignored by shapes).")
    size = st.number_input("Images (shapes only, 0 = default)", min_value=0, step=500, key="nr_size",
                           disabled=dataset != "shapes")
    augment = st.checkbox("Augmentation (random crop + flip)", key="nr_augment")
    jitter = st.checkbox("Colour jitter", key="nr_jitter")
    workers = st.number_input("Loader workers", min_value=0, max_value=64, step=1, key="nr_workers",
                              help="Data-loading processes; 0 loads in the training process (best on 1-2 cores).")

with train_col:
    st.subheader("Training")
    epochs = st.number_input("Epochs", min_value=1, max_value=10_000, step=1, key="nr_epochs")
    batch_size = st.number_input("Batch size", min_value=1, max_value=8192, step=16, key="nr_batch")
    optimiser = st.selectbox("Optimiser", launcher.OPTIMIZERS, key="nr_optim")
    lr = st.number_input("Learning rate", min_value=0.0, format="%.5f", step=0.01, key="nr_lr")
    schedule = st.selectbox("Schedule", launcher.SCHEDULES, key="nr_schedule")
    weight_decay = st.number_input("Weight decay", min_value=0.0, format="%.5f", step=0.0001, key="nr_wd")
    seed = st.number_input("Seed", min_value=0, step=1, key="nr_seed")
    if st.session_state.get("nr_device") not in devices:
        st.session_state["nr_device"] = "auto"
    device = st.selectbox("Device", devices, key="nr_device")
    log_every = st.number_input("Log every N steps", min_value=1, step=1, key="nr_log_every")
    keep_every = st.number_input("Keep weights every N epochs (0 = none)", min_value=0, step=1, key="nr_keep_every",
                                 help="Snapshots checkpoints/epoch-NNN.pt (first and last epoch too), so Inspect "
                                      "can show the model at any kept epoch.")

# ---------------------------------------------------------------- checks, then Start
problems = []
try:
    rdata.check_data_available(dataset, data_root)
except rdata.DataError as error:
    problems.append(str(error))
if any(value is None for value in options.values()):
    problems.append("Fix the model options above.")
else:
    try:
        check_options(model_name, options)  # e.g. regulated_stages naming a stage the model does not have
    except ValueError as error:
        problems.append(str(error))
for problem in problems:
    st.error(problem)

runs = ui.all_runs()
# The run just started here is not "another" run sharing the CPU.
just_started = st.session_state.get("nr_last_launch")
running = [run for run in runs if run.source == "run" and run.active and run.key != just_started]
if running:
    st.info(f"{len(running)} run{'s are' if len(running) != 1 else ' is'} running on this machine; "
            "a new run shares the CPU with them.")

if st.button("Start", type="primary", disabled=bool(problems), key="nr_start_button"):
    config = launcher.merge_config(base_config(), {
        "model": {"name": model_name, "options": options},
        "data": {"name": dataset, "root": data_root, "augment": augment, "color_jitter": jitter,
                 "size": int(size) or None, "workers": int(workers)},
        "optim": {"name": optimiser, "lr": float(lr), "weight_decay": float(weight_decay)},
        "schedule": {"name": schedule},
        "train": {"epochs": int(epochs), "batch_size": int(batch_size), "seed": int(seed), "device": device,
                  "log_every": int(log_every), "keep_every": int(keep_every)},
    })
    config["model"]["options"] = options  # the model's own options only, never another model's
    try:
        launch = launcher.start_run(config, ui.runs_root())
    except (ValueError, OSError) as error:
        st.error(f"Could not start the run: {error}")
    else:
        st.session_state[ui.SELECTED] = [launch.run_id]
        st.session_state["nr_last_launch"] = launch.run_id
        st.rerun()

if st.session_state.get("nr_last_launch"):
    st.success(f"Started `{st.session_state['nr_last_launch']}`; it is selected. Follow it on **Live**.")
    st.page_link("views/live.py", label="Open Live", icon=":material/monitoring:")

# ---------------------------------------------------------------- running runs, with Stop
runs = ui.all_runs()
running = [run for run in runs if run.source == "run" and run.active]
if running:
    st.subheader("Running")
    for run in running:
        text_col, button_col = st.columns([5, 1])
        text_col.markdown(f"`{run.key}` · {run.model or '?'} on {run.dataset or '?'} · {progress(run).text}")
        if run.stop_requested_at:
            waited = time.time() - run.stop_requested_at
            button_col.caption(f"stop requested {waited:.0f}s ago")
        elif button_col.button("Stop", key=f"stop_{run.key}"):
            launcher.request_stop(run.path)
            st.rerun()
