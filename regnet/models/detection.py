"""``rcnn_classifier``: the MNIST study's "Faster R-CNN" classifier, torchvision's ``FasterRCNN`` read as a classifier.

Why a detector for classification: an earlier MNIST study this lab reproduces compared one with a small
CNN. The detector is trained as a detector (region-proposal losses plus box-head losses) with one box per image, the
object's box labelled with the image's class; as a classifier, its logits are the box head's class
scores (background column dropped) of the best detection, or of the whole-image box when no
proposal is detected as an object. So training, metrics, evaluation and the dashboard treat it as
any classifier: ``forward(images)`` returns (N, classes) logits, and the loop trains it through its
``training_loss(images, labels)`` instead of cross-entropy.

Where the box comes from: ``boxes="mask"`` (``shapes``) is the box of the image's object mask, which
the data set knows: the training split then yields (image, label, box), the box cropped and flipped
with its image (``regnet.data.splits.with_object_boxes``). The other rules derive it from the batch
itself: ``boxes="foreground"`` (digits on black: MNIST, Fashion-MNIST) takes the pixel extent of
everything brighter than the image's background (its minimum, also after normalisation and the
zero-padded random crop); ``boxes="image"`` (any other data set) uses the whole image; ``boxes="auto"``
(the default) is resolved to the data set's rule when a run starts, and means the whole image before that.

Sizes fit the data: the detector's ``min_size``/``max_size`` are the input side, so nothing is
resized (no 800-pixel MNIST), and the batch goes straight to the backbone as one ``ImageList``; the
anchors are a quarter, a half and four fifths of the side, on a stride-4 feature map. Nothing is
pretrained (no weights can be downloaded).
"""
from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import MultiScaleRoIAlign

BOX_RULES = ("auto", "image", "foreground", "mask")  # auto: the data set's rule (``default_box_rule``), set at training
FEATURE_STRIDE = 4
ROI_SIDE = 5
HEAD_WIDTH = 128


def default_box_rule(family: str) -> str:
    """The box each data-set family trains with: the digit's extent on the black MNIST images, the object
    mask's box on ``shapes`` (the only data set with masks), else the whole image."""
    return {"mnist": "foreground", "shapes": "mask"}.get(family, "image")


def whole_image_boxes(images: torch.Tensor) -> torch.Tensor:
    """(N, 4) boxes (x0, y0, x1, y1) covering every image of the (N, C, H, W) batch."""
    n, _, h, w = images.shape
    return images.new_tensor([0.0, 0.0, w, h]).expand(n, 4).clone()


def foreground_boxes(images: torch.Tensor, tolerance: float = 1e-3) -> torch.Tensor:
    """(N, 4) boxes around the pixels brighter than each image's background (its darkest value).

    A blank image (nothing brighter) gets the whole image, so every image has a valid box.
    """
    brightest = images.detach().amax(1)  # (N, H, W): a pixel is foreground in any channel
    n, h, w = brightest.shape
    mask = brightest > brightest.flatten(1).amin(1).view(n, 1, 1) + tolerance
    rows, cols = mask.any(2), mask.any(1)
    ys = torch.arange(h, device=images.device)
    xs = torch.arange(w, device=images.device)
    y0 = torch.where(rows, ys, h).amin(1)
    y1 = torch.where(rows, ys + 1, 0).amax(1)
    x0 = torch.where(cols, xs, w).amin(1)
    x1 = torch.where(cols, xs + 1, 0).amax(1)
    boxes = torch.stack([x0, y0, x1, y1], 1).to(images.dtype)
    blank = ~rows.any(1)
    return torch.where(blank[:, None], whole_image_boxes(images), boxes)


def small_backbone(in_channels: int) -> nn.Sequential:
    """Three conv-BN-ReLU layers, stride 4 overall: a 7x7 map for a 28-pixel digit, 8x8 for a 32-pixel image."""
    layers, channels = [], in_channels
    for width, stride in ((32, 1), (64, 2), (HEAD_WIDTH, 2)):
        layers += [nn.Conv2d(channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(width),
                   nn.ReLU(inplace=True)]
        channels = width
    backbone = nn.Sequential(*layers)
    backbone.out_channels = HEAD_WIDTH  # what FasterRCNN reads to size its heads
    return backbone


def _detector(num_classes: int, in_channels: int, image_size: int) -> FasterRCNN:
    """torchvision's FasterRCNN sized for ``image_size`` images: small anchors, few proposals, a narrow head."""
    side = float(image_size)
    anchors = AnchorGenerator(sizes=((side / 4, side / 2, side * 0.8),), aspect_ratios=((0.5, 1.0, 2.0),))
    roi_pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=ROI_SIDE, sampling_ratio=2)
    return FasterRCNN(
        small_backbone(in_channels),
        min_size=image_size, max_size=image_size, image_mean=[0.0] * in_channels, image_std=[1.0] * in_channels,
        rpn_anchor_generator=anchors, box_roi_pool=roi_pool,
        box_head=TwoMLPHead(HEAD_WIDTH * ROI_SIDE ** 2, HEAD_WIDTH),
        box_predictor=FastRCNNPredictor(HEAD_WIDTH, num_classes + 1),  # + background
        rpn_pre_nms_top_n_train=200, rpn_post_nms_top_n_train=16, rpn_pre_nms_top_n_test=100,
        rpn_post_nms_top_n_test=16, rpn_batch_size_per_image=64, box_batch_size_per_image=16,
        box_detections_per_img=16,
    )


class RCNNClassifier(nn.Module):
    """FasterRCNN trained on one box per image; classifies by its best detection (see the module docstring)."""

    # Proposal selection is data-dependent (NMS, argmax), so a summary must run it on real tensors, not meta.
    needs_real_tensors = True

    def __init__(self, num_classes: int = 10, in_channels: int = 1, image_size: int = 28, boxes: str = "auto"):
        super().__init__()
        if boxes not in BOX_RULES:
            raise ValueError(f"boxes={boxes!r} is not a box rule; choose one of {BOX_RULES}.")
        self.boxes = boxes
        self.detector = _detector(num_classes, in_channels, image_size)

    def attribution_layers(self) -> dict[str, nn.Module]:
        """Grad-CAM's layer: the backbone's feature map, which every proposal is pooled from."""
        return {"backbone output": self.detector.backbone}

    def target_boxes(self, images: torch.Tensor, boxes: torch.Tensor | None = None) -> torch.Tensor:
        """The one training box of each image: the data's ``boxes`` under the ``mask`` rule, else by the rule."""
        if self.boxes == "mask":
            if boxes is None:
                raise ValueError("rcnn_classifier with boxes='mask' trains on the data set's object boxes, and this "
                                 "batch has none; train it on shapes, or choose boxes='image' or 'foreground'.")
            return boxes.to(images.device, images.dtype)
        return foreground_boxes(images) if self.boxes == "foreground" else whole_image_boxes(images)

    def _features(self, images: torch.Tensor) -> tuple[ImageList, dict]:
        """The batch as the detector's ImageList (no resizing: the images already have the detector's size)."""
        image_list = ImageList(images, [tuple(images.shape[-2:])] * len(images))
        return image_list, {"0": self.detector.backbone(images)}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """(N, classes) logits: the class scores of each image's best detection (see ``best_logits``)."""
        image_list, features = self._features(images)
        with _inference_proposals(self.detector.rpn):
            proposals, _ = self.detector.rpn(image_list, features)
        return self.best_logits(features, proposals, image_list.image_sizes, whole_image_boxes(images))

    def best_logits(self, features: dict, proposals: list, image_sizes: list, whole: torch.Tensor) -> torch.Tensor:
        """Per image, the foreground logits of the most confident detection, else of the whole-image box.

        A detection is a box whose most probable class is not the background; the whole-image box is
        scored alongside the proposals, so an image where the RPN proposes nothing still gets logits.
        """
        heads = self.detector.roi_heads
        boxes = [torch.cat([whole[i:i + 1], p.detach()]) for i, p in enumerate(proposals)]
        pooled = heads.box_roi_pool(features, boxes, image_sizes)
        class_logits, _ = heads.box_predictor(heads.box_head(pooled))
        chosen = []
        for logits in class_logits.split([len(b) for b in boxes]):
            probs = logits.softmax(-1)
            object_score, _ = probs[:, 1:].max(-1)
            score = torch.where(object_score > probs[:, 0], object_score, torch.zeros_like(object_score))
            best = score.argmax() if bool((score > 0).any()) else 0
            chosen.append(logits[best, 1:])
        return torch.stack(chosen)

    def training_loss(self, images: torch.Tensor, labels: torch.Tensor,
                      boxes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, loss): the detector's four losses summed, for one box per image labelled with its class.

        ``boxes`` (N, 4) are the data's boxes, used under the ``mask`` rule. The logits (the classifier's
        reading of the same batch, without gradient) feed the training accuracy.
        """
        boxes = self.target_boxes(images, boxes)
        targets = [{"boxes": boxes[i:i + 1], "labels": labels[i:i + 1] + 1} for i in range(len(images))]
        image_list, features = self._features(images)
        proposals, rpn_losses = self.detector.rpn(image_list, features, targets)
        _, head_losses = self.detector.roi_heads(features, proposals, image_list.image_sizes, targets)
        with torch.no_grad():
            logits = self.best_logits(features, proposals, image_list.image_sizes, whole_image_boxes(images))
        return logits, sum(rpn_losses.values()) + sum(head_losses.values())


@contextmanager
def _inference_proposals(rpn: nn.Module):
    """The RPN's test-time proposals (and no loss) even while the model trains: ``forward`` takes no targets."""
    was_training = rpn.training
    rpn.training = False
    try:
        yield
    finally:
        rpn.training = was_training
