"""What the regulator lab finds in the shipped regnet20 trained on `shapes`.

On its validation split (the images come with object masks):

* the pointing game and the attribution mass on the object, per method, beside
  the random-map baseline (the object's share of the image, an exact expectation);
* the weight-randomisation sanity check: rank correlation of each method's maps
  with the maps of a re-initialised copy (low is good) and with themselves;
* the regulator ablation: top-1 with H zeroed at the fusion against the intact model;
* the per-block read-out and the redundancy of consecutive block outputs.

    python bench/attribution_quality.py [--quick]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch.utils.data import DataLoader

from bench._common import REPO, environment, format_table, result_path, write_json
from regnet import inspect as ri
from regnet.train.build import load_data
from regnet.train.evaluate import load_run_config, load_run_model

NAME = "attribution_quality"
CHECKPOINT = REPO / "checkpoints" / "shapes-regnet20"
REGULATOR_LAYER = "stage 2 step 3 regulator H"
BLOCK_LAYER = "stage 2 block 3 output"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 images instead of 200")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
    model, _ = load_run_model(CHECKPOINT)
    splits = load_data(load_run_config(CHECKPOINT), augment=False)
    val = splits.val
    n = 16 if args.quick else min(200, len(val))
    xs = torch.stack([val[i][0] for i in range(n)])
    ys = torch.tensor(val.targets[:n])
    masks = torch.stack([val.mask(i) for i in range(n)])

    quality = []
    for label, layer in (("block output", BLOCK_LAYER), ("regulator H", REGULATOR_LAYER)):
        methods = [m for m in ri.METHODS if m != "gradcam"] if label == "block output" else []
        rows = ri.attribution_quality(model, xs, masks, ys, methods + ["gradcam"], ri.MethodSettings(layer=layer))
        for row in rows:
            if row["method"] == "gradcam":
                row["method"] = f"gradcam ({label}: {layer})"
            if row["method"] != "random map" or label == "block output":
                quality.append(row)
    sanity = [ri.randomization_check(model, xs[:16], ys[:16], method, ri.MethodSettings(layer=BLOCK_LAYER))
              for method in ("saliency", "integrated_gradients", "gradcam")]
    analysis = ri.analyze_split(model, DataLoader(val, batch_size=250), splits.info.class_names)

    print(f"regnet20 on shapes ({CHECKPOINT.name}), {n} validation images\n")
    print(format_table(quality, [("method", "method", ""), ("pointing_game", "pointing game", ".3f"),
                                ("mass_on_object", "mass on object", ".3f")]))
    print()
    print(format_table(sanity, [("method", "method", ""), ("randomized_rank_correlation", "rank corr. vs randomised", ".3f"),
                               ("repeat_rank_correlation", "rank corr. vs itself", ".3f")]))
    ablation = analysis["ablation"]
    print(f"\ntop-1 intact {analysis['accuracy']:.4f}, regulator zeroed {ablation['accuracy']:.4f} "
          f"(drop {analysis['accuracy'] - ablation['accuracy']:.4f}) on {analysis['num_images']} images")
    print("read-out of the last stage's blocks:", [round(r["accuracy"], 4) for r in analysis["readout"]])
    print("cosine of consecutive block outputs:", [(f"S{r['stage']} {r['pair']}", round(r["cosine"], 3))
                                                  for r in analysis["redundancy"]])
    write_json(result_path(NAME, args.quick), {
        "name": NAME, "quick": args.quick, "environment": environment(), "checkpoint": CHECKPOINT.name,
        "images": n, "quality": quality, "randomization": sanity,
        "accuracy": analysis["accuracy"], "ablated_accuracy": ablation["accuracy"],
        "ablation_per_class": ablation["per_class"], "readout": analysis["readout"],
        "redundancy": analysis["redundancy"],
    })


if __name__ == "__main__":
    main()
