"""rcnn_classifier: torchvision's FasterRCNN read as a classifier, trained on one box per image."""
from __future__ import annotations

import json

import pytest
import torch

from regnet.inspect import attribution as ra
from regnet.models import build_model, list_models, model_info, summary
from regnet.models.detection import default_box_rule, foreground_boxes, whole_image_boxes
from regnet.train import Config, evaluate_run, train


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model("rcnn_classifier", boxes="foreground")


def _digits(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Bright squares on a black (normalised: constant negative) background; the label is where the square is."""
    images = torch.full((n, 1, 28, 28), -0.42)
    labels = torch.arange(n) % 2
    for i in range(n):
        top = 2 if labels[i] == 0 else 16
        images[i, :, top:top + 9, 4 + i:12 + i] = 2.8
    return images, labels


def test_registered_and_listed():
    assert "rcnn_classifier" in list_models()
    info = model_info("rcnn_classifier")
    assert info.options["boxes"] == "auto" and set(info.choices["boxes"]) == {"auto", "image", "foreground", "mask"}
    with pytest.raises(ValueError, match="boxes"):
        build_model("rcnn_classifier", boxes="edges")


def test_forward_gives_class_logits_in_eval_and_train(model):
    x, _ = _digits(5)
    model.eval()
    assert model(x).shape == (5, 10)
    model.train()
    assert model(x).shape == (5, 10)
    assert build_model("rcnn_classifier", num_classes=7, in_channels=3, image_size=32).eval()(
        torch.randn(2, 3, 32, 32)).shape == (2, 7)


def test_foreground_boxes_are_the_pixel_extent():
    x, _ = _digits(3)
    boxes = foreground_boxes(x)
    assert boxes.tolist()[0] == [4.0, 2.0, 12.0, 11.0]  # x0, y0, x1, y1 (exclusive ends)
    assert boxes.tolist()[2] == [6.0, 2.0, 14.0, 11.0]
    blank = torch.full((1, 1, 28, 28), -0.42)
    assert foreground_boxes(blank).tolist() == whole_image_boxes(blank).tolist() == [[0.0, 0.0, 28.0, 28.0]]


def test_box_rule_follows_the_data_family():
    assert default_box_rule("mnist") == "foreground"
    assert default_box_rule("shapes") == "mask"
    assert default_box_rule("cifar") == default_box_rule("imagenet") == "image"


def test_training_loss_decreases_on_a_tiny_batch(model):
    x, y = _digits(8)
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    model.train()
    losses = []
    for _ in range(12):
        logits, loss = model.training_loss(x, y)
        assert logits.shape == (8, 10) and not logits.requires_grad
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-3:]) / 3 < 0.7 * sum(losses[:3]) / 3, losses


def test_mask_rule_trains_on_the_data_boxes_and_says_when_there_are_none():
    torch.manual_seed(0)
    model = build_model("rcnn_classifier", in_channels=1, boxes="mask").train()
    x, y = _digits(4)
    given = torch.tensor([[4.0, 2.0, 12.0, 11.0]] * 4)
    assert model.target_boxes(x, given).tolist() == given.tolist()
    _, loss = model.training_loss(x, y, given)
    assert loss.requires_grad and torch.isfinite(loss)
    with pytest.raises(ValueError, match="boxes='mask'.*has none"):
        model.training_loss(x, y)


def test_shapes_object_boxes_follow_the_crop_and_flip_of_their_image():
    from regnet.data import load_splits
    from regnet.data.errors import DataError
    from regnet.data.splits import with_object_boxes
    from torchvision.transforms import v2

    splits = load_splits("shapes", size=100, val_ratio=0.1)
    plain = with_object_boxes(splits.val)  # no augmentation: the mask's own extent, exclusive ends
    mask = splits.val.mask(3)
    ys, xs = mask.nonzero().unbind(1)
    image, label, box = plain[3]
    assert label == splits.val.targets[3] and image.shape == (3, 32, 32)
    assert box.tolist() == [xs.min().item(), ys.min().item(), xs.max().item() + 1, ys.max().item() + 1]
    flipped = with_object_boxes(splits.val)
    flipped.transform = v2.Compose([v2.RandomHorizontalFlip(p=1.0), splits.val.transform])
    flipped_image, _, flipped_box = flipped[3]
    assert torch.equal(flipped_image, image.flip(-1))  # the image is mirrored, and its box with it
    assert flipped_box.tolist() == [32 - xs.max().item() - 1, ys.min().item(), 32 - xs.min().item(), ys.max().item() + 1]
    torch.manual_seed(0)
    augmented = with_object_boxes(splits.train)
    boxes = [augmented[i][2].tolist() for i in range(20)]
    for x0, y0, x1, y1 in boxes:
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32
    assert len({(x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes}) > 1  # a box per image, not one box for all
    with pytest.raises(DataError, match="no object masks"):
        with_object_boxes(_plain_split())


def _plain_split():
    """A two-image split of a data set without masks."""
    from regnet.data.splits import DatasetSplit

    class Base(torch.utils.data.Dataset):
        targets = [0, 1]

        def __getitem__(self, i):
            return torch.zeros(3, 8, 8), i

        def __len__(self):
            return 2

    return DatasetSplit(Base(), [0, 1], lambda x: x)


def test_summary_counts_the_detector(model):
    s = summary(model, (1, 28, 28))
    assert s.params == sum(p.numel() for p in model.parameters()) and s.macs > 1_000_000


def test_every_attribution_method_runs_on_the_detector(model):
    model.eval()
    x, _ = _digits(1)
    layers = ra.attribution_layers(model)
    assert list(layers) == ["backbone output"]
    settings = ra.MethodSettings(steps=4, samples=2, window=7, stride=7, layer="backbone output")
    for method in ra.METHODS:
        assert ra.attribute(model, x, method, target=3, settings=settings).raw.shape == (1, 28, 28)


def test_trains_and_evaluates_through_the_engine(tmp_path, monkeypatch):
    from regnet.models.detection import RCNNClassifier

    given = []
    real = RCNNClassifier.target_boxes
    monkeypatch.setattr(RCNNClassifier, "target_boxes",
                        lambda self, images, boxes=None: given.append(boxes) or real(self, images, boxes))
    config = Config()
    config.model.name = "rcnn_classifier"
    config.data.name, config.data.size, config.data.workers = "shapes", 60, 0
    config.train.epochs, config.train.batch_size = 1, 30
    config.optim.name, config.optim.lr = "adam", 1e-3
    config.run.runs_root = str(tmp_path)
    run = train(config, progress=False)
    saved = json.loads((run / "status.json").read_text())
    assert saved["state"] == "finished" and saved["params"] == sum(
        p.numel() for p in build_model("rcnn_classifier", in_channels=3, image_size=32).parameters())
    import yaml
    options = yaml.safe_load((run / "config.yaml").read_text())["model"]["options"]
    assert options == {"image_size": 32, "boxes": "mask"}  # "auto" resolved for shapes: its object masks' boxes
    assert [tuple(b.shape) for b in given] == [(30, 4), (20, 4)]  # the loader's boxes, 50 training images
    result = evaluate_run(run, "val", "last")
    assert result["count"] == 10 and len(result["confusion_matrix"]) == 10  # stratified: one per class
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epoch = [r for r in lines if r["kind"] == "epoch"][0]
    assert epoch["val_loss"] == pytest.approx(result["loss"], rel=1e-5)


def test_inspect_page_runs_the_attributions_on_the_detector(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.test_dashboard_fixtures import write_shipped_run
    from tests.test_dashboard_inspect import APP

    write_shipped_run(tmp_path / "checkpoints", "rcnn", "rcnn_classifier", image_size=32)
    monkeypatch.setenv("REGNET_RUNS_ROOT", str(tmp_path / "runs"))
    monkeypatch.setenv("REGNET_CHECKPOINTS_ROOT", str(tmp_path / "checkpoints"))
    at = AppTest.from_file(str(APP), default_timeout=240)
    at.run()
    at.switch_page("views/inspect.py").run()
    at.selectbox(key="inspect_run").set_value("shipped/rcnn").run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("has no regulator" in i.value for i in at.info)
    assert at.selectbox(key="inspect_layer").options == ["backbone output"]
    figures = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    titles = [a.get("text") for f in figures for a in f["layout"].get("annotations", [])]
    assert any("Integrated Gradients" in str(t) for t in titles) and any("Grad-CAM" in str(t) for t in titles)


def test_mask_boxes_with_on_device_data_is_one_sentence(tmp_path):
    config = Config()
    config.model.name = "rcnn_classifier"
    config.data.name, config.data.size, config.data.on_device = "shapes", 60, True
    config.train.epochs = 1
    config.run.runs_root = str(tmp_path)
    with pytest.raises(ValueError, match=r"^boxes='mask' takes each image's object box from the data loader"):
        train(config, progress=False)
