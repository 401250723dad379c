"""Label efficiency on the synthetic labeled task: MAE-pretrained encoder vs random init, 1% / 10% / 100% labels.

    python benchmarks/label_efficiency.py --checkpoint runs/pretrain_tiny/model.safetensors \
        [--config configs/finetune_tiny.yaml] [--out bench_out/label_efficiency] [--seeds 0 1 2] [--set epochs=20] \
        [--pool-per-class 200] [--test-per-class 100] [--threads 1]

Protocol:
- a labelled pool (`--pool-per-class` images per class) and a disjoint test set (`--test-per-class`) from
  usfmae.data.synthetic.write_labeled with different seeds (benign = smooth ellipse, malignant = irregular);
- for every seed and fraction, a stratified subset of the pool (usfmae.finetune.folds.stratified_subset: at
  least one image per class, nested: 1% inside 10% inside 100%) is fine-tuned from the checkpoint's encoder
  and from a random init of the same architecture, with the same config;
- every run takes the same number of optimisation steps: each epoch repeats the subset up to the pool's
  size, so a 1% run is not simply 100 times shorter;
- no model selection on the test set: the metrics after the last epoch are reported (binary F1 of
  'malignant', accuracy, AUROC), as mean and std over seeds.
Prints one JSON document (also written to <out>/label_efficiency.json).
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from usfmae.config import load_config
from usfmae.data.synthetic import write_labeled
from usfmae.finetune.config import FinetuneConfig
from usfmae.finetune.datasets import FolderDataset, LabelledImages, transforms_for
from usfmae.finetune.encoder import build_vit_classifier, checkpoint_preset
from usfmae.finetune.folds import seed_everything, stratified_subset
from usfmae.finetune.train import train_one

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True, help="pretraining export (model.safetensors) or any MAE checkpoint")
    ap.add_argument("--config", default=str(REPO / "configs/finetune_tiny.yaml"), help="fine-tuning config")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override (repeatable)")
    ap.add_argument("--out", default="bench_out/label_efficiency", help="data and run folders go here")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--pool-per-class", type=int, default=200, help="labelled pool images per class")
    ap.add_argument("--test-per-class", type=int, default=100, help="test images per class")
    ap.add_argument("--image-size", type=int, default=128, help="side of the generated images")
    ap.add_argument("--threads", type=int,
                    help="torch intra-op threads (1 is faster for the tiny model on a busy machine)")
    return ap.parse_args(argv)


def make_data(out: Path, args) -> tuple[FolderDataset, FolderDataset]:
    """Pool and test sets from different generator seeds (so no image is in both)."""
    pool = write_labeled(out / "pool", args.pool_per_class, seed=101, size=args.image_size)
    test = write_labeled(out / "test", args.test_per_class, seed=202, size=args.image_size)
    return FolderDataset(pool), FolderDataset(test)


def one_run(cfg: FinetuneConfig, checkpoint: str | None, preset: str, pool: FolderDataset, test: FolderDataset,
            fraction: float, seed: int, out_dir: Path) -> dict:
    """Fine-tune on a stratified `fraction` of the pool; the test metrics after the last epoch."""
    seed_everything(seed)
    idx = stratified_subset(pool.targets, fraction, seed)
    repeats = math.ceil(len(pool) / len(idx))  # same steps per epoch for every fraction
    model, _ = build_vit_classifier(checkpoint, len(pool.classes), preset, cfg.global_pool, cfg.drop_path,
                                    cfg.image_size)
    size = model.patch_embed.img_size[0]
    train = LabelledImages([pool.samples[i] for i in idx] * repeats, pool.classes,
                           transforms_for(True, size, cfg.augment))
    evaluation = LabelledImages(test.samples, test.classes, transforms_for(False, size))
    t0 = time.time()
    result = train_one(model, train, evaluation, pool.classes, cfg, out_dir, log=lambda message: None, seed=seed)
    last = result.history[-1]
    return {"labels": int(len(idx)), "f1": last["val_f1"], "accuracy": last["val_accuracy"],
            "auroc": last["val_auroc"], "best_epoch_f1": result.history[result.best_epoch]["val_f1"],
            "seconds": round(time.time() - t0, 1)}


def summarise(runs: list[dict]) -> dict:
    out = {"labels": runs[0]["labels"]}
    for key in ("f1", "accuracy", "auroc"):
        values = np.array([r[key] for r in runs], dtype=np.float64)
        out[key] = {"mean": round(float(values.mean()), 4),
                    "std": round(float(values.std(ddof=1)), 4) if len(values) > 1 else 0.0}
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = load_config(FinetuneConfig, args.config, args.overrides + ["save_model=false"])
    cfg = cfg.model_copy(update={"positive_class": "malignant"})
    out = Path(args.out)
    preset, _ = checkpoint_preset(args.checkpoint, cfg.preset)
    t0 = time.time()
    pool, test = make_data(out, args)

    runs: dict[str, dict[str, list[dict]]] = {}
    for seed in args.seeds:
        for fraction in args.fractions:
            for init, checkpoint in (("pretrained", args.checkpoint), ("random", None)):
                run = one_run(cfg, checkpoint, preset, pool, test, fraction, seed,
                              out / "runs" / f"{init}_{fraction:g}_seed{seed}")
                runs.setdefault(f"{fraction:g}", {}).setdefault(init, []).append(run)
                print(f"[label-efficiency] {init:10s} {fraction:>5g} of labels ({run['labels']:3d}) seed {seed}: "
                      f"F1 {run['f1']:.3f} acc {run['accuracy']:.3f} AUROC {run['auroc']:.3f} "
                      f"({run['seconds']:.0f} s)", file=sys.stderr, flush=True)

    report = {
        "task": "synthetic benign (smooth) vs malignant (irregular) lesions, write_labeled",
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "checkpoint": str(args.checkpoint),
        "preset": preset,
        "pool_images": len(pool), "test_images": len(test), "image_size_generated": args.image_size,
        "seeds": args.seeds,
        "config": cfg.model_dump(mode="json"),
        "results": {fraction: {init: summarise(r) for init, r in per_init.items()}
                    for fraction, per_init in runs.items()},
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.is_available(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
        "seconds": round(time.time() - t0, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "label_efficiency.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
