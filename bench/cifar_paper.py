"""The paper's CIFAR-10 comparison (Table III, depth 20) on a GPU: resnet20 against regnet20 (ConvLSTM).

The recipe is the paper's (SGD 0.1, momentum 0.9, weight decay 1e-4, batch 128,
LR /10 at 50% and 75% of training, pad-4 crop + flip), on the CIFAR-10 JPEG
copy in ``../shared/data/cifar10`` with a stratified, seeded 45,000 / 5,000
train/validation split. The whole data set lives on the GPU and is augmented
there, so the run measures the models and not a JPEG decoder. With
``--budget-s`` the number of epochs is the most that fits in that time (never
more than ``--epochs``), measured on the first steps, so the LR schedule still
decays to the end; the JSON says how many epochs ran.

    python bench/cifar_paper.py --model regnet20 --out bench/results/cifar_paper_regnet20.json
"""
from __future__ import annotations

import argparse
import io
import json
import math
import tarfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn
from torchmetrics.functional.classification import multiclass_f1_score

from regnet.data import stratified_split
from regnet.models import build_model, count_params

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
DEFAULT_TAR = Path(__file__).resolve().parents[2] / "shared/data/cifar10/cifar10-train-jpeg.tar.gz"


def load_cifar10_jpeg(tar_path: Path, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode every ``train/<class>/*.jpg`` of the tar into one uint8 (N, 3, 32, 32) tensor."""
    images, labels, members = [], [], []
    with tarfile.open(tar_path) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and m.name.endswith(".jpg") and len(parts) >= 3 and parts[-3] == "train":
                members.append((parts[-2], m.name, tar.extractfile(m).read()))
    classes = sorted({c for c, _, _ in members})
    members.sort(key=lambda t: t[1])
    if limit:
        members = members[::max(len(members) // limit, 1)][:limit]
    for cls, _, data in members:
        images.append(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
        labels.append(classes.index(cls))
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
    return x, torch.tensor(labels), classes


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Pad-4 random crop and horizontal flip of a uint8 batch, on its own device."""
    b = x.shape[0]
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    oy = torch.randint(0, 9, (b,), generator=g, device=x.device)
    ox = torch.randint(0, 9, (b,), generator=g, device=x.device)
    ar = torch.arange(32, device=x.device)
    rows = (oy[:, None] + ar)[:, None, :, None]
    cols = (ox[:, None] + ar)[:, None, None, :]
    out = padded[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(3, device=x.device)[None, :, None, None], rows, cols]
    flip = torch.rand(b, generator=g, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], out.flip(3), out)


def normalize(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR10_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=x.device).view(1, 3, 1, 1)
    return ((x.float() / 255) - mean) / std


@torch.no_grad()
def evaluate(model, x, y, batch=1000, amp=True) -> dict:
    model.eval()
    logits = []
    for i in range(0, len(x), batch):
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=amp):
            logits.append(model(normalize(x[i : i + batch]).contiguous(memory_format=torch.channels_last)).float())
    logits = torch.cat(logits)
    model.train()
    return {"val_loss": float(nn.functional.cross_entropy(logits, y)),
            "val_top1": float((logits.argmax(1) == y).double().mean()),
            "val_macro_f1": float(multiclass_f1_score(logits.argmax(1), y, 10, average="macro"))}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="regnet20")
    p.add_argument("--cell", default="lstm")
    p.add_argument("--epochs", type=int, default=180)
    p.add_argument("--budget-s", type=float, default=None, help="fit the epochs into this many seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tar", type=Path, default=DEFAULT_TAR)
    p.add_argument("--limit", type=int, default=None, help="use only this many images (smoke test)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--weights", type=Path, default=None, help="write the final state dict here")
    return p.parse_args()


def write_result(args, result: dict, model: nn.Module) -> None:
    """The JSON the shipped checkpoint's provenance cites, and the final weights if asked for."""
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    if args.weights:
        torch.save({k: v.detach().float().cpu() for k, v in model.state_dict().items()}, args.weights)
    final = result["final"]
    print(f"{args.model}: {result['epochs']} epochs, final val top-1 {final['val_top1']:.4f}, "
          f"macro-F1 {final['val_macro_f1']:.4f}, {result['train_time_s']:.0f}s", flush=True)


def main() -> None:
    args = parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cudnn.benchmark = True
    t0 = time.time()
    x, y, classes = load_cifar10_jpeg(args.tar, args.limit)
    train_idx, val_idx = stratified_split(y.tolist(), 0.1, seed=0)
    xt, yt = x[train_idx].to(device), y[train_idx].to(device)
    xv, yv = x[val_idx].to(device), y[val_idx].to(device)
    print(f"data: {len(xt)} train / {len(xv)} val in {time.time() - t0:.1f}s", flush=True)

    options = {"cell": args.cell} if args.model.startswith("regnet") else {}

    def fresh():
        torch.manual_seed(args.seed)
        net = build_model(args.model, num_classes=10, **options).to(device).to(memory_format=torch.channels_last)
        return (net, torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4),
                torch.Generator(device=device).manual_seed(args.seed))

    model, opt, g = fresh()
    batch = 128
    steps_per_epoch = len(xt) // batch
    amp = device == "cuda"

    def step(xb, yb) -> torch.Tensor:  # reads model/opt/g at call time: they are replaced after calibration
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = nn.functional.cross_entropy(model(normalize(augment(xb, g)).contiguous(memory_format=torch.channels_last)), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    epochs = args.epochs
    if args.budget_s:
        # Time 40 steps after a warm-up, add the evaluation's share, and fit the epochs in the budget.
        for i in range(10):
            step(xt[:batch], yt[:batch])
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.time()
        for i in range(40):
            step(xt[i * batch:(i + 1) * batch], yt[i * batch:(i + 1) * batch])
        evaluate(model, xv, yv, amp=amp)
        if device == "cuda":
            torch.cuda.synchronize()
        per_epoch = (time.time() - t) / 40 * steps_per_epoch * 1.1
        elapsed = time.time() - t0
        epochs = max(1, min(args.epochs, int((args.budget_s - elapsed) / per_epoch)))
        print(f"calibration: {per_epoch:.2f}s/epoch -> {epochs} epochs", flush=True)
        model, opt, g = fresh()  # the calibration steps are thrown away
    milestones = [math.ceil(epochs * 0.5) * steps_per_epoch, math.ceil(epochs * 0.75) * steps_per_epoch]
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=0.1)

    history, best = [], None
    train_start = time.time()
    for epoch in range(1, epochs + 1):
        e0 = time.time()
        order = torch.randperm(len(xt), generator=g, device=device)
        total = torch.zeros((), device=device)
        for i in range(steps_per_epoch):
            idx = order[i * batch:(i + 1) * batch]
            total += step(xt[idx], yt[idx]).detach()
            sched.step()
        row = {"epoch": epoch, "train_loss": float(total / steps_per_epoch), "lr": opt.param_groups[0]["lr"]}
        row.update(evaluate(model, xv, yv, amp=amp))
        row["epoch_time_s"] = time.time() - e0
        row["images_per_s"] = steps_per_epoch * batch / row["epoch_time_s"]
        history.append(row)
        if best is None or row["val_top1"] > best["val_top1"]:
            best = dict(row)
        print(json.dumps(row), flush=True)
    train_time = time.time() - train_start
    result = {
        "model": args.model, "options": options, "params": count_params(model), "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None, "torch": torch.__version__,
        "epochs": epochs, "recipe": "SGD 0.1 m0.9 wd1e-4 batch 128, /10 at 50%,75%; bf16 autocast",
        "train_images": len(xt), "val_images": len(xv), "seed": args.seed, "final": history[-1], "best": best,
        "train_time_s": train_time, "images_per_s": epochs * steps_per_epoch * batch / train_time, "history": history,
    }
    write_result(args, result, model)


if __name__ == "__main__":
    main()
