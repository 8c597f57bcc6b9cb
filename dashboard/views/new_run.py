"""New run: a form over the engine's config (or a ready config, or a cloned run's), checked as the user types,
and the run's name, tags and note, which its folder gets at launch (``regnet.runs.annotations``).

The form is one layer of ``regnet.train.config.build_config`` over its starting config: every value the
engine would refuse is shown beside its field with the schema's sentence, and Start stays disabled, so
nothing is launched that would fail on its config.
"""
import copy
import time

import streamlit as st

from regnet.dashboard import launcher, ui
from regnet.dashboard.run_listing import progress

import regnet.data as rdata
from regnet.models import list_models, model_info
from regnet.runs import check_note, parse_tags, run_dir_in
from regnet.train.config import ConfigError, Problem as ConfigProblem, build_config

st.title("New run")

# ---------------------------------------------------------------- the config the form starts from
ready = launcher.ready_configs()
clone = ui.clone_source()  # (label, config) of the run named by ?clone=<run>, from the Runs page's Clone


def start_config() -> dict:
    """The defaults, or the chosen ready config (or cloned run's config) over them: the layer under the form."""
    name = st.session_state.get("nr_start", "defaults")
    if clone and name == clone[0]:
        return copy.deepcopy(clone[1])
    if name in ready:
        try:
            return launcher.load_ready_config(ready[name])
        except ValueError as error:
            st.error(str(error))
    return copy.deepcopy(launcher.DEFAULT_CONFIG)


def start_problems(config: dict) -> dict:
    """The starting config's problems by key: none when the engine would accept it as it is."""
    try:
        build_config(config)
    except ConfigError as error:
        return {problem.key: problem for problem in error.problems}
    return {}


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


def widget_value(key: str, value):
    """A config value as its widget holds it: floats for the float fields, 0 for an unset count."""
    if key in ("nr_lr", "nr_wd"):
        return float(value)
    if key in ("nr_size", "nr_workers"):
        return int(value or 0)
    return value


def apply_config() -> None:
    """Fill every widget from the chosen starting config (runs when 'Start from' changes).

    A value out of range stays in its field, to be shown beside it; one of the wrong type or not among the
    choices cannot sit in a widget, so the field gets the default and the sentence is shown at the top.
    """
    config = start_config()
    problems = start_problems(config)
    notes = [f"{p.message} The form shows the default there." for p in problems.values()
             if not p.out_of_range and (p.key == "model.name" or p.key.partition("[")[0] in FIELD_KEYS)]
    name = config["model"]["name"] if "model.name" not in problems else launcher.DEFAULT_CONFIG["model"]["name"]
    family, depth = family_and_depth(name)
    st.session_state["nr_family"], st.session_state["nr_depth"] = family, depth
    st.session_state["nr_options_for"] = None  # options are refilled for the config's model below
    for key, (section, field) in FIELDS.items():
        problem = problems.get(f"{section}.{field}")
        usable = problem is None or problem.out_of_range
        st.session_state[key] = widget_value(key, config[section].get(field) if usable
                                             else launcher.DEFAULT_CONFIG[section][field])
    st.session_state["nr_start_notes"] = notes


def fill_options(model_name: str, info) -> None:
    """A new model: its options start from its defaults, or from the starting config if it is that model."""
    config = start_config()
    preset = config["model"].get("options") or {} if config["model"]["name"] == model_name else {}
    problems = start_problems(config) if preset else {}
    for option, default in info.options.items():
        value = preset.get(option, default)
        problem = problems.get(f"model.options.{option}")
        if problem is not None and option in info.choices:  # a value the selectbox cannot show
            st.session_state.setdefault("nr_start_notes", []).append(
                f"{problem.message} The form shows the default there.")
            value = default
        st.session_state[f"nr_opt_{option}"] = (", ".join(map(str, value)) if isinstance(value, (tuple, list))
                                                else value)
    st.session_state["nr_options_for"] = model_name


FIELD_KEYS = {f"{section}.{field}" for section, field in FIELDS.values()}
slots = {}  # config key -> the empty element beside its field, where its problem is shown


def beside(key: str) -> None:
    slots[key] = st.empty()


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
for note in dict.fromkeys(st.session_state.get("nr_start_notes", [])):
    st.warning(note)

# ---------------------------------------------------------------- the form
OPTION_LABELS = {"cell": "Regulator cell", "gates": "Gate form", "se": "Squeeze-and-excitation (SE)",
                 "sharing": "Regulator cells (one per stage or per block)",
                 "memory": "Regulator memory (carry the state across blocks, or reset it)",
                 "h_norm": "BN+ReLU on H before the fusion", "fusion": "Fusion of H (concat with X2, or replace X2)",
                 "shortcut": "Shortcut (A: zero-pad, B: 1x1 projection)",
                 "regulated_stages": "Regulated stages (numbered from 1)"}
form_problems = []  # values the form could not even read (a list option's text)


def option_widget(option: str, default, choices):
    """One model option's widget and its value (a list option is typed as comma-separated integers)."""
    key, label = f"nr_opt_{option}", OPTION_LABELS.get(option, option.replace("_", " "))
    if isinstance(default, bool):
        return st.checkbox(label, key=key)
    if choices:
        return st.selectbox(label, list(choices), key=key)
    if isinstance(default, int):
        return int(st.number_input(label, min_value=1, step=1, key=key))
    if isinstance(default, float):
        return float(st.number_input(label, min_value=0.0, step=0.05, key=key))
    if isinstance(default, (tuple, list)):
        text = st.text_input(label, key=key, help="Comma-separated integers.")
        try:
            return [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            form_problems.append(ConfigProblem(f"model.options.{option}", text, f"{label} must be comma-separated "
                                               f"integers, like {', '.join(map(str, default))}; got {text!r}."))
            return default
    return st.text_input(label, key=key)


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
        fill_options(model_name, info)
    options = {}
    for option, default in info.options.items():
        options[option] = option_widget(option, default, info.choices.get(option))
        beside(f"model.options.{option}")

with data_col:
    st.subheader("Data")
    datasets = rdata.list_datasets()
    if st.session_state.get("nr_dataset") not in datasets:
        st.session_state["nr_dataset"] = "shapes"
    dataset = st.selectbox("Data set", datasets, key="nr_dataset",
                           help="`shapes` is generated on the fly: no download needed.")
    data_root = st.text_input("Data root", key="nr_root", help="Folder holding the data set (ignored by shapes).")
    beside("data.root")
    size = st.number_input("Images to use (0 = all)", step=500, key="nr_size",
                           help="A seeded, stratified subset of the training images (by the split seed) that train and "
                                "validation are carved from; shapes generates this many (0: 6,000).")
    beside("data.size")
    augment = st.checkbox("Augmentation (random crop + flip)", key="nr_augment")
    jitter = st.checkbox("Colour jitter", key="nr_jitter")
    workers = st.number_input("Loader workers", step=1, key="nr_workers",
                              help="Data-loading processes; 0 loads in the training process (best on 1-2 cores).")
    beside("data.workers")

with train_col:
    st.subheader("Training")
    epochs = st.number_input("Epochs", step=1, key="nr_epochs")
    beside("train.epochs")
    batch_size = st.number_input("Batch size", step=16, key="nr_batch")
    beside("train.batch_size")
    optimiser = st.selectbox("Optimiser", launcher.OPTIMIZERS, key="nr_optim")
    lr = st.number_input("Learning rate", format="%.5f", step=0.01, key="nr_lr")
    beside("optim.lr")
    schedule = st.selectbox("Schedule", launcher.SCHEDULES, key="nr_schedule")
    weight_decay = st.number_input("Weight decay", format="%.5f", step=0.0001, key="nr_wd")
    beside("optim.weight_decay")
    seed = st.number_input("Seed", step=1, key="nr_seed")
    beside("train.seed")
    if st.session_state.get("nr_device") not in devices:
        st.session_state["nr_device"] = "auto"
    device = st.selectbox("Device", devices, key="nr_device")
    log_every = st.number_input("Log every N steps", step=1, key="nr_log_every")
    beside("train.log_every")
    keep_every = st.number_input("Keep weights every N epochs (0 = none)", step=1, key="nr_keep_every",
                                 help="Snapshots checkpoints/epoch-NNN.pt (first and last epoch too), so Inspect "
                                      "can show the model at any kept epoch.")
    beside("train.keep_every")

# ---------------------------------------------------------------- what the run is called and said to be
st.subheader("Name, tags and note")
name_col, tags_col = st.columns(2)
run_name = name_col.text_input("Name (the run folder; empty: time, model and data set)", key="nr_name",
                               placeholder="e.g. lstm-lr0.05").strip()
beside("run.run_id")
tags_text = tags_col.text_input("Tags (comma-separated)", key="nr_tags", placeholder="e.g. sweep, baseline")
beside("run.tags")
note = st.text_area("Note", key="nr_note", height=80, placeholder="What this run is for")
beside("run.note")


def annotation_problems() -> tuple[list, list]:
    """The launch's tags, and one problem per field the engine or the run folder would refuse."""
    found, tags = [], []
    try:
        tags = parse_tags(tags_text)
    except ValueError as error:
        found.append(ConfigProblem("run.tags", tags_text, str(error)))
    try:
        check_note(note)
    except ValueError as error:
        found.append(ConfigProblem("run.note", "", str(error)))
    if run_name:
        try:
            if run_dir_in(ui.runs_root(), run_name).exists():
                found.append(ConfigProblem("run.run_id", run_name, f"A run named {run_name!r} exists; choose "
                                                                   "another name."))
        except ValueError as error:
            found.append(ConfigProblem("run.run_id", run_name, str(error)))
    return tags, found


# ---------------------------------------------------------------- the form's layer, checked; then Start
form = {
    "model": {"name": model_name, "options": options},
    "data": {"name": dataset, "root": data_root, "augment": augment, "color_jitter": jitter,
             "size": int(size) or None, "workers": int(workers)},
    "optim": {"name": optimiser, "lr": float(lr), "weight_decay": float(weight_decay)},
    "schedule": {"name": schedule},
    "train": {"epochs": int(epochs), "batch_size": int(batch_size), "seed": int(seed), "device": device,
              "log_every": int(log_every), "keep_every": int(keep_every)},
}
launch_tags, problems = annotation_problems()
problems += form_problems
try:
    config = build_config(start_config(), form)
except ConfigError as error:
    config, problems = None, problems + error.problems
try:
    rdata.check_data_available(dataset, data_root)
except rdata.DataError as error:
    problems.append(ConfigProblem("data.root", data_root, str(error)))
by_slot = {}
for problem in problems:
    by_slot.setdefault(problem.key.partition("[")[0], []).append(problem.message)
for key, messages in by_slot.items():
    (slots[key] if key in slots else st).error(" ".join(dict.fromkeys(messages)))

runs = ui.all_runs()
# The run just started here is not "another" run sharing the CPU.
just_started = st.session_state.get("nr_last_launch")
running = [run for run in runs if run.source == "run" and run.active and run.key != just_started]
if running:
    st.info(f"{len(running)} run{'s are' if len(running) != 1 else ' is'} running on this machine; "
            "a new run shares the CPU with them.")

if st.button("Start", type="primary", disabled=bool(problems), key="nr_start_button",
             help="Fix the values marked in red first." if problems else None):
    try:
        launch = launcher.start_run(config, ui.runs_root(), run_name or None, launch_tags, note)
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
