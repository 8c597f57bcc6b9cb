"""The regulator lab's analyses on the shipped regnet20 trained on `shapes`."""
import warnings
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from regnet import inspect as ri
from regnet.train.build import load_data
from regnet.train.evaluate import load_run_config, load_run_model
from regnet.models import build_model

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")


# A regnet20 trained on `shapes` ships with the repository (checkpoints/README.md says how); the
# analyses are tested on it rather than on a model trained inside the test.
SHIPPED = Path(__file__).resolve().parents[1] / "checkpoints" / "shapes-regnet20"


@pytest.fixture(scope="module")
def shapes():
    return load_data(load_run_config(SHIPPED), augment=False)


@pytest.fixture(scope="module")
def trained():
    model, _ = load_run_model(SHIPPED)
    return model.eval()


@pytest.fixture(scope="module")
def val_batch(shapes):
    n = 48
    xs = torch.stack([shapes.val[i][0] for i in range(n)])
    ys = torch.tensor([shapes.val[i][1] for i in range(n)])
    masks = torch.stack([shapes.val.mask(i) for i in range(n)])
    return xs, ys, masks


def test_recorded_states_have_the_right_shapes_and_ranges(trained, val_batch):
    xs, _, _ = val_batch
    logits, trace = ri.record_states(trained, xs[:2])
    assert logits.shape == (2, 10) and len(trace) == 9
    grid = ri.state_grid(trace, "cell", mode="top", top=3)
    assert [(g["stage"], g["step"]) for g in grid] == [(s, t) for s in range(3) for t in range(3)]
    assert all(len(g["maps"]) == 3 and g["maps"][0][1].shape == trace[g["stage"] * 3].cell.shape[-2:] for g in grid)
    # "top" ranks channels by mean |activation|, most active first.
    first = trace[0].cell[0]
    top_channel = int(grid[0]["maps"][0][0].split()[-1])
    torch.testing.assert_close(first[top_channel].abs().mean(), first.abs().mean((1, 2)).max())  # same up to rounding
    mean_map = ri.state_grid(trace, "hidden", mode="mean")[4]["maps"][0][1]
    torch.testing.assert_close(mean_map, trace[4].hidden[0].mean(0))
    with pytest.raises(ValueError, match="channels 0..15"):
        ri.channel_maps(trace[0].hidden[0], "channel", channel=99)
    profile = ri.gate_profile(trace)
    assert len(profile) == 9 * 4
    for row in profile:
        low, high = (-1, 1) if row["gate"] == "g" else (0, 1)
        assert low <= row["q10"] <= row["median"] <= row["q90"] <= high and row["std"] >= 0


def test_readout_of_the_last_block_equals_the_models_accuracy(trained, shapes):
    loader = DataLoader(shapes.val, batch_size=100)
    result = ri.analyze_split(trained, loader, [str(c) for c in range(10)])
    preds = torch.cat([trained(x).argmax(1) for x, _ in loader])
    targets = torch.tensor(shapes.val.targets)
    accuracy = float((preds == targets).double().mean())
    assert result["accuracy"] == pytest.approx(accuracy)
    assert result["readout"][-1]["accuracy"] == pytest.approx(accuracy)
    assert [r["block"] for r in result["readout"]] == [7, 8, 9]  # numbered through the network, as the paper does
    assert accuracy > 0.3  # trained well above chance (10%)
    assert int(result["confusion_matrix"].sum()) == len(targets)
    assert result["macro_f1"] == pytest.approx(sum(r["f1"] for r in result["per_class"]) / 10)
    assert len(result["redundancy"]) == 6 and all(-1 <= r["cosine"] <= 1 for r in result["redundancy"])
    ablation = result["ablation"]
    assert ablation["mean_abs_logit_change"] > 0
    assert all(row["drop"] == pytest.approx(row["intact"] - row["ablated"]) for row in ablation["per_class"])


def test_ablation_changes_the_logits_and_the_intact_path_does_not(trained, val_batch):
    xs, _, _ = val_batch
    with torch.no_grad():
        intact = trained(xs)
        with ri.regulator_ablated(trained):
            ablated = trained(xs)
        again = trained(xs)
    assert not torch.allclose(intact, ablated)
    assert torch.equal(intact, again)


def test_resnet_has_no_regulator_and_the_rest_works(val_batch):
    xs, ys, _ = val_batch
    model = build_model("resnet20").eval()
    assert not ri.has_regulator(model)
    assert ri.record_states(model, xs[:1])[1] == []
    assert not any("regulator" in name for name in ri.attribution_layers(model))
    result = ri.analyze_split(model, [(xs, ys)], [str(c) for c in range(10)])
    assert "ablation" not in result and len(result["readout"]) == 3


def test_pointing_game_on_a_trained_model_beats_a_random_map(trained, val_batch):
    xs, ys, masks = val_batch
    rows = ri.attribution_quality(trained, xs[:24], masks[:24], ys[:24],
                                  ["saliency", "gradcam"], ri.MethodSettings(layer="stage 2 block 3 output"))
    scores = {r["method"]: r["pointing_game"] for r in rows}
    assert 0 < scores["random map"] < 0.5
    assert max(scores["saliency"], scores["gradcam"]) > scores["random map"] + 0.15
    for r in rows:
        assert 0 <= r["mass_on_object"] <= 1


def test_randomising_the_weights_lowers_the_rank_correlation(trained, val_batch):
    xs, ys, _ = val_batch
    check = ri.randomization_check(trained, xs[:6], ys[:6], "saliency")
    assert check["repeat_rank_correlation"] == pytest.approx(1.0)
    assert check["randomized_rank_correlation"] < 0.6


@pytest.mark.parametrize("method", ri.METHODS)
def test_every_attribution_method_gives_a_map_at_input_resolution(trained, val_batch, method):
    xs, ys, _ = val_batch
    settings = ri.MethodSettings(layer="stage 3 step 3 regulator H", steps=8, samples=4)
    a = ri.attribute(trained, xs[:1], method, settings=settings)
    assert a.map.shape == (32, 32) and a.target == int(trained(xs[:1]).argmax(1))
    assert torch.isfinite(a.map).all() and (a.importance() >= 0).all()


def test_an_all_zero_attribution_is_reported_as_such():
    model = build_model("resnet20").eval()
    torch.nn.init.zeros_(model.fc.weight)
    a = ri.attribute(model, torch.randn(1, 3, 32, 32), "saliency", target=3)
    assert a.is_zero
    assert not ri.pointing_hit(a.importance(), torch.ones(32, 32, dtype=torch.bool))


def test_top_k(trained, val_batch):
    xs, _, _ = val_batch
    top = ri.top_k(trained, xs[:1], k=3, class_names=[f"c{i}" for i in range(10)])
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert top[0]["class"] == f"c{top[0]['index']}"


def test_split_analyses_are_cached_and_a_corrupt_cache_is_recomputed(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"accuracy": 0.5, "preds": torch.arange(3)}

    key = ri.cache_key("ckpt", "val", 1)
    first = ri.cached(tmp_path, "split", key, compute)
    second = ri.cached(tmp_path, "split", key, compute)
    assert len(calls) == 1 and torch.equal(second["preds"], first["preds"])
    (tmp_path / f"split-{key}.pt").write_bytes(b"garbage")
    assert ri.cached(tmp_path, "split", key, compute)["accuracy"] == 0.5 and len(calls) == 2
    assert ri.cache_key("ckpt", "val", 1) != ri.cache_key("ckpt", "val", 2)


def test_split_figures_come_from_the_engines_torchmetrics_code_on_a_split_with_a_missing_class():
    from regnet.train.metrics import ClassificationMeter

    torch.manual_seed(0)
    model = build_model("resnet20", num_classes=4).eval()
    xs = torch.randn(24, 3, 32, 32)
    ys = torch.tensor([0, 1, 3] * 8)  # class 2 never occurs
    result = ri.analyze_split(model, [(xs[:12], ys[:12]), (xs[12:], ys[12:])], list("abcd"))
    meter = ClassificationMeter(4)
    with torch.no_grad():
        meter.update(model(xs), ys, torch.zeros(()))
    engine = meter.compute()
    assert result["macro_f1"] == pytest.approx(engine["macro_f1"], abs=1e-6)
    assert result["confusion_matrix"].tolist() == engine["confusion_matrix"]
    hand = sum(r["f1"] for r in result["per_class"]) / 4  # the old hand formula counts the absent class as 0
    assert result["per_class"][2]["support"] == 0 and (result["macro_f1"] > hand or result["macro_f1"] == hand == 0)


def test_progress_is_reported_by_the_split_analysis_and_the_quality_scores(trained, val_batch):
    xs, ys, masks = val_batch
    seen = []
    ri.analyze_split(trained, [(xs[:5], ys[:5]), (xs[5:9], ys[5:9])], [str(c) for c in range(10)],
                     progress=seen.append)
    assert seen == [5, 9]
    reports = []
    ri.attribution_quality(trained, xs[:9], masks[:9], ys[:9], ["saliency", "gradcam"],
                           ri.MethodSettings(layer="stage 3 block 3 output"), progress=lambda d, t: reports.append((d, t)))
    assert reports == [(8, 18), (9, 18), (17, 18), (18, 18)]


def test_baselines_are_built_in_pixel_space():
    mean, std = (0.5, 0.4, 0.3), (0.25, 0.2, 0.1)
    x = torch.randn(1, 3, 16, 16)
    black = ri.make_baseline(x, "black", mean, std)
    assert torch.allclose(black[0, :, 0, 0], torch.tensor([-2.0, -2.0, -3.0]))
    blurred = ri.make_baseline(x, "blurred", mean, std)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    noise = ri.make_baseline(x, "noise", mean, std)
    pixels = noise * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert 0 <= pixels.min() and pixels.max() <= 1 and torch.equal(noise, ri.make_baseline(x, "noise", mean, std))
    with pytest.raises(ValueError, match="choose one of black, blurred, noise"):
        ri.make_baseline(x, "grey", mean, std)


def test_signed_maps_keep_the_sign_and_importance_is_their_magnitude(trained, val_batch):
    xs, _, _ = val_batch
    a = ri.attribute(trained, xs[:1], "integrated_gradients", settings=ri.MethodSettings(steps=8))
    assert (a.map < 0).any() and (a.map > 0).any()
    assert torch.allclose(a.importance(), a.raw.abs().sum(0))
    cam = ri.attribute(trained, xs[:1], "gradcam", settings=ri.MethodSettings(layer="stage 3 block 3 output"))
    assert torch.equal(cam.importance(), cam.map.clamp(min=0))
