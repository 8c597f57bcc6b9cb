"""The on-device data path (``data.on_device``), on CPU tensors: the same images, augmentations and normalisation
as the standard transforms, in the sampler's order."""
from __future__ import annotations

import math

import pytest
import torch
from torchvision import datasets
from torchvision.transforms import v2

from regnet.data import DataError, load_splits
from regnet.data import device as ondevice
from regnet.data.device import (Augmenter, DeviceBatches, crop_boxes, decode_split, evaluation_batches,
                                 resized_crops)
from regnet.data.info import DatasetInfo
from regnet.train.distributed import SeededShardSampler

from test_data import _write_cifar10, _write_mnist, _write_tiny, data_no_cifar_md5  # noqa: F401


def standard_batch(split, indices) -> torch.Tensor:
    return torch.stack([split[i][0] for i in indices])


@pytest.mark.parametrize("name", ["shapes", "mnist", "cifar10", "tiny_imagenet"])
def test_an_evaluation_split_on_the_device_is_the_standard_paths_tensors_bit_for_bit(name, tmp_path,
                                                                                     data_no_cifar_md5):
    {"mnist": lambda: _write_mnist(tmp_path, "MNIST"), "cifar10": lambda: _write_cifar10(tmp_path),
     "tiny_imagenet": lambda: _write_tiny(tmp_path), "shapes": lambda: None}[name]()
    splits = load_splits(name, tmp_path, val_ratio=0.2, size=120, download=False)
    sampler = SeededShardSampler(len(splits.val), shuffle=False, pad=False)
    batches = DeviceBatches(splits.val, splits.info, 7, sampler, torch.device("cpu"), augment=False)
    got = list(batches)
    assert len(got) == len(batches) == math.ceil(len(splits.val) / 7)
    images, targets = torch.cat([x for x, _ in got]), torch.cat([y for _, y in got])
    want = standard_batch(splits.val, range(len(splits.val)))
    assert images.dtype == torch.float32 and images.shape == want.shape
    assert torch.equal(images, want)  # decoding, ToDtype(scale=True) and Normalize: the same arithmetic
    assert targets.tolist() == splits.val.targets


def test_images_decoded_one_by_one_equal_the_in_memory_slice(monkeypatch):
    splits = load_splits("shapes", size=60, val_ratio=0.2)
    whole = decode_split(splits.train, 32)
    monkeypatch.setattr(ondevice, "_in_memory", lambda base: None)
    assert torch.equal(decode_split(splits.train, 32), whole)
    assert whole.dtype == torch.uint8 and whole.shape == (len(splits.train), 3, 32, 32)


def test_batches_follow_the_samplers_order_and_its_epoch():
    splits = load_splits("shapes", size=60, val_ratio=0.2)
    sampler = SeededShardSampler(len(splits.train), seed=3)
    batches = DeviceBatches(splits.train, splits.info, 16, sampler, torch.device("cpu"), augment=False)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        order = list(sampler)
        targets = torch.cat([y for _, y in batches]).tolist()
        assert targets == [splits.train.targets[i] for i in order]
    sampler.set_epoch(1, skip=32)  # a resumed epoch skips what it had seen
    assert len(torch.cat([y for _, y in batches])) == len(splits.train) - 32


def coded_images(n: int, side: int) -> torch.Tensor:
    """Channel 0 holds row + 10, channel 1 column + 10: a crop's offsets and a flip can be read off its pixels."""
    ramp = torch.arange(side, dtype=torch.uint8) + 10
    image = torch.stack([ramp[:, None].expand(side, side), ramp[None, :].expand(side, side),
                         torch.full((side, side), 99, dtype=torch.uint8)])
    return image.expand(n, 3, side, side).contiguous()


def read_crop(out: torch.Tensor, padding: int) -> tuple[int, int, bool]:
    """(top, left, flipped) of one augmented coded image in [0, 255] (padding reads 0)."""
    rows, cols = out[0, :, out.shape[2] // 2], out[1, out.shape[1] // 2, :]
    r = int(rows.nonzero()[0])
    top = int(rows[r]) - 10 - r + padding
    live = cols.nonzero().flatten()
    flipped = bool(cols[live[1]] < cols[live[0]])
    c = int(live[0])
    left = int(cols[c]) - 10 - ((len(cols) - 1 - c) if flipped else c) + padding
    return top, left, flipped


def test_crop_offsets_are_uniform_and_flips_half_as_on_the_standard_path():
    torch.manual_seed(0)
    n, padding = 9000, 4
    out = Augmenter("cifar", 32)(coded_images(n, 32))
    crops = [read_crop(o, padding) for o in out]
    standard = v2.Compose([v2.RandomCrop(32, padding=padding), v2.RandomHorizontalFlip()])
    reference = [read_crop(standard(img).float(), padding) for img in coded_images(1800, 32)]
    for sample, count in ((crops, n), (reference, 1800)):
        for axis in (0, 1):
            histogram = torch.bincount(torch.tensor([c[axis] for c in sample]), minlength=9)
            assert len(histogram) == 9  # offsets 0..2*padding, nothing outside
            expected = count / 9
            assert (histogram - expected).abs().max() < 5 * math.sqrt(expected), histogram
        flips = sum(c[2] for c in sample) / count
        assert abs(flips - 0.5) < 5 * math.sqrt(0.25 / count)


def test_each_augmented_image_is_its_padded_crop_exactly():
    torch.manual_seed(1)
    images = torch.randint(0, 256, (50, 3, 32, 32), dtype=torch.uint8)
    images[:, 0] = coded_images(50, 32)[:, 0]
    images[:, 1] = coded_images(50, 32)[:, 1]
    out = Augmenter("cifar", 32)(images)
    for image, got in zip(images, out):
        top, left, flipped = read_crop(got, 4)
        want = torch.nn.functional.pad(image, (4, 4, 4, 4))[:, top:top + 32, left:left + 32].float()
        assert torch.equal(got, want.flip(2) if flipped else want)


def test_mnist_shifts_by_two_pixels_and_never_flips():
    torch.manual_seed(2)
    crops = [read_crop(o, 2) for o in Augmenter("mnist", 28)(coded_images(2000, 28))]
    assert {c[0] for c in crops} == {c[1] for c in crops} == set(range(5))
    assert not any(c[2] for c in crops)


def test_tiny_crops_draw_torchvisions_scale_and_ratio():
    torch.manual_seed(3)
    top, left, h, w = crop_boxes(20000, 64, 64, "cpu")
    area = (h * w).float() / 64**2
    assert bool(((h <= 64) & (w <= 64) & (top >= 0) & (left >= 0) & (top + h <= 64) & (left + w <= 64)).all())
    assert area.min() > 0.78 and area.max() <= 1.0
    reference = torch.tensor([v2.RandomResizedCrop.get_params(torch.zeros(3, 64, 64), [0.8, 1.0], [3 / 4, 4 / 3])
                              for _ in range(4000)])
    ref_area = (reference[:, 2] * reference[:, 3]).float() / 64**2
    assert abs(area.mean() - ref_area.mean()) < 0.005
    assert abs((h == 64).float().mean() - (reference[:, 2] == 64).float().mean()) < 0.03


def test_a_whole_image_box_resamples_to_the_image_itself():
    images = torch.rand(4, 3, 64, 64) * 255
    full = torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long)
    side = torch.full((4,), 64)
    torch.testing.assert_close(resized_crops(images, 64, *full, side, side), images, atol=1e-3, rtol=0)


def test_sets_too_large_or_jittered_are_refused_in_one_sentence():
    imagenet = DatasetInfo("imagefolder", 3, 3, 224, ["a", "b", "c"], (0.5,) * 3, (0.5,) * 3, "imagenet")
    with pytest.raises(DataError, match="data.on_device: false"):
        ondevice.check_on_device(imagenet, color_jitter=False)
    cifar = DatasetInfo("cifar10", 10, 3, 32, [str(i) for i in range(10)], (0.5,) * 3, (0.5,) * 3, "cifar")
    with pytest.raises(DataError, match="color_jitter: false"):
        ondevice.check_on_device(cifar, color_jitter=True)


def test_the_mnist_fixture_is_read_through_torchvisions_tensor(tmp_path):
    _write_mnist(tmp_path, "MNIST")
    splits = load_splits("mnist", tmp_path, val_ratio=0.2, download=False)
    assert isinstance(splits.train.base, datasets.MNIST)
    assert ondevice._in_memory(splits.train.base).shape[1:] == (1, 28, 28)


def test_evaluation_batches_serve_the_first_images_decoded_or_through_a_dataloader():
    splits = load_splits("shapes", size=100, val_ratio=0.3)
    want = standard_batch(splits.val, range(25))
    decoded = list(evaluation_batches(splits.val, splits.info, 10, count=25))
    assert [len(y) for _, y in decoded] == [10, 10, 5]
    assert torch.equal(torch.cat([x for x, _ in decoded]), want)
    other = DatasetInfo(*[getattr(splits.info, f) for f in ("name", "num_classes", "in_channels", "image_size",
                                                             "class_names", "mean", "std")], "imagenet")
    loader = evaluation_batches(splits.val, other, 10, count=25)
    assert isinstance(loader, torch.utils.data.DataLoader)
    assert torch.equal(torch.cat([x for x, _ in loader]), want)


def test_the_split_analyses_leave_the_model_as_they_found_it():
    from regnet.inspect import analyze_split
    from regnet.models import build_model

    splits = load_splits("shapes", size=40, val_ratio=0.5)
    model = build_model("regnet20", num_classes=splits.info.num_classes).train()
    batches = evaluation_batches(splits.val, splits.info, 8)
    result = analyze_split(model, batches, splits.info.class_names)
    assert result["num_images"] == 20 and model.training  # the analyses ran on a folded eval copy
    assert model.stem[0].weight.is_contiguous()  # still NCHW, as it came in
    with torch.no_grad():
        eager = torch.cat([model.eval()(x).argmax(1) for x, _ in batches])
    assert torch.equal(result["preds"], eager)
