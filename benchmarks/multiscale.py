"""BUS-M2AE experiment: `random` vs `multiscale` MAE masking, judged per lesion-size bucket.

    python benchmarks/multiscale.py --plot benchmarks/multiscale.png  # defaults: ~30 min on 2 busy cores
    python benchmarks/multiscale.py --steps 300 --arms scratch,random,multiscale,multiscale_feature
    python benchmarks/multiscale.py --work /tmp/ms --plot benchmarks/multiscale.png   # reuses finished steps

Same budget for every pretrained arm: the same shards (one Ray build of one synthetic corpus), the same
seed, the same number of optimizer steps and batch, the tiny preset (64x64, 8x8 patches, 25% masked).
  scratch              no pretraining (random init): the floor pretraining has to beat
  random               masking.strategy=random (the paper's MAE masking)
  multiscale           masking.strategy=multiscale: square blocks of 1x1, 2x2, 4x4 patches (BUS-M2AE,
                       token level, our interpretation)
  multiscale_feature   the same plus feature-level masking: zeroed 1x1/2x2 blocks of visible-token
                       features entering encoder blocks 1 and 2, 15% of the grid (training only)
Lesion-size buckets: lesion radius as a fraction of the image side (usfmae.testing.synthetic's lesion_scale):
small 0.03-0.06, medium 0.06-0.12, large 0.12-0.25; at 64 px, lesion diameters of roughly 0.5-1, 1-2 and
2-4 patches, matching the three block scales. Images are rendered at 128 px and area-downsampled to 64 px
(the generator cannot place a large lesion in every 64 px fan). The pretraining corpus mixes the buckets
equally; each bucket has its own downstream set (balanced benign/malignant, lesion masks) with a fixed
train/val split, on which every arm is fine-tuned for segmentation (usfmae.finetune.segmentation.run, Dice) and
classification (launch/finetune.py as a subprocess, F1 of 'malignant'), once per fine-tuning seed.

Steps already done in --work (corpus, shards, pretraining runs, fine-tuning runs with their metrics.json)
are reused, so an interrupted run resumes. Prints one JSON document; --plot writes a PNG.
"""

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

import torch

from usfmae.config import load_config
from usfmae.finetune.segmentation.config import SegmentationConfig
from usfmae.finetune.segmentation.run import run_segmentation
from usfmae.ports import free_port
from usfmae.testing.synthetic import generate_ultrasound

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SIDE, RENDER_SIDE = 64, 128
# One thread per process: on this shared 2-core machine (load average ~8-10) two torch threads made a
# tiny-model training step ~10x slower than one (threads spin waiting for each other).
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
BUCKETS = {"small": (0.03, 0.06), "medium": (0.06, 0.12), "large": (0.12, 0.25)}
ARMS = {
    "scratch": None,
    "random": ["masking.strategy=random"],
    "multiscale": ["masking.strategy=multiscale", "masking.scales=[1,2,4]"],
    "multiscale_feature": ["masking.strategy=multiscale", "masking.scales=[1,2,4]", "masking.feature_depths=[1,2]",
                           "masking.feature_rate=0.15", "masking.feature_scales=[1,2]"],
}


# ---------------------------------------------------------------------------- data
def machine_info() -> dict:
    """What a reader needs to weigh the numbers: CPU, cores, GPU, versions, load when we started."""
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").is_file() else ""
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": torch.cuda.get_device_name() if torch.cuda.is_available()
            else None, "python": platform.python_version(), "torch": torch.__version__,
            "load_average_at_start": [round(x, 1) for x in os.getloadavg()]}


def render(seed: int, bucket: str, label: int | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """(RGB [64, 64, 3] uint8, lesion mask [64, 64] 0/255, label) rendered at 128 px, area-downsampled."""
    sample = generate_ultrasound(seed, RENDER_SIDE, label=label, overlays=False, lesion_scale=BUCKETS[bucket])
    image = cv2.resize(sample.image, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    coverage = cv2.resize(sample.lesion_mask.astype(np.float32) / 255, (SIDE, SIDE), interpolation=cv2.INTER_AREA)
    return image, (coverage >= 0.5).astype(np.uint8) * 255, sample.label


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(array, cv2.COLOR_RGB2BGR) if array.ndim == 3 else array):
        raise OSError(f"could not write {path}")


def make_corpus(out: Path, per_bucket: int) -> Path:
    """Unlabelled pretraining images, `per_bucket` of each lesion size (seeds 0..)."""
    if out.is_dir() and len(list(out.glob("*.png"))) == per_bucket * len(BUCKETS):
        return out
    for b, bucket in enumerate(BUCKETS):
        for i in range(per_bucket):
            write_png(out / f"{bucket}_{i:05d}.png", render(b * 100_000 + i, bucket)[0])
    return out


def make_downstream(out: Path, bucket: int | str, n_train: int, n_val: int) -> Path:
    """One bucket's labelled set: images/ + masks/ (train), val/images + val/masks, and cls.csv
    (path,label,split) over the same images. Seeds are disjoint from the corpus's."""
    if (out / "cls.csv").is_file():
        return out
    offset = 1_000_000 + 100_000 * list(BUCKETS).index(bucket)
    rows = []
    for split, count, base in (("train", n_train, 0), ("val", n_val, 50_000)):
        root = out if split == "train" else out / "val"
        for i in range(count):
            image, mask, label = render(offset + base + i, bucket, label=i % 2)  # balanced classes
            name = f"{bucket}_{split}_{i:04d}.png"
            write_png(root / "images" / name, image)
            write_png(root / "masks" / name, mask)
            rows.append((os.path.relpath(root / "images" / name, out), ("benign", "malignant")[label], split))
    with (out / "cls.csv").open("w", newline="") as stream:
        csv.writer(stream).writerows([("path", "label", "split"), *rows])
    return out


def build_shards(corpus: Path, out: Path) -> Path:
    """The corpus as WebDataset shards, through the real Ray builder (no cleaning: no overlays drawn)."""
    if (out / "manifest.json").is_file():
        return out
    cmd = [BIN / "python", "preprocessing/build_shards.py", "--input", corpus, "--output", out, "--shard-size", 200,
           "--image-size", SIDE, "--no-clean"]
    run(cmd, out.parent / "build_shards.log")
    return out


# ---------------------------------------------------------------------------- runs
def start(cmd: list, log: Path) -> subprocess.Popen:
    """Start a command from the repository root, one torch thread, its output going to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stream:  # the child keeps its own handle
        return subprocess.Popen([str(c) for c in cmd], cwd=REPO, stdout=stream, stderr=subprocess.STDOUT,
                                env={**os.environ, **ONE_THREAD})


def wait(proc: subprocess.Popen, log: Path) -> None:
    """Wait for `proc`; raise with the end of its log when it fails."""
    if proc.wait() != 0:
        raise RuntimeError(f"{' '.join(proc.args[:3])} ... exited {proc.returncode}; end of {log}:\n"
                           f"{log.read_text()[-3000:]}")


def run(cmd: list, log: Path) -> None:
    wait(start(cmd, log), log)


def pretrain(arm: str, shards: Path, out: Path, steps: int) -> tuple[Path | None, float]:
    """(model.safetensors of `arm`, wall seconds) after `steps` steps; (None, 0) for scratch."""
    if ARMS[arm] is None:
        return None, 0.0
    model = out / "model.safetensors"
    timing = out / "wall_seconds.txt"
    if model.is_file() and timing.is_file():
        return model, float(timing.read_text())
    start = time.perf_counter()
    sets = [*ARMS[arm], "logging.image_grid_every=0", "logging.tensorboard=false", f"checkpoint.every_steps={steps}"]
    cmd = [BIN / "deepspeed", "--num_gpus", 1, "--master_port", free_port(), "launch/pretrain.py", "--cpu",
           "--config", "configs/pretrain_tiny.yaml", "--shards", shards, "--output", out, "--max-steps", steps]
    out.mkdir(parents=True, exist_ok=True)
    run(cmd + [x for s in sets for x in ("--set", s)], out.parent / f"{arm}.log")
    seconds = time.perf_counter() - start
    timing.write_text(f"{seconds:.1f}")
    return model, seconds


def final_loss(run_dir: Path) -> float | None:
    """The last logged pretraining loss (metrics.jsonl), for the record."""
    losses = [json.loads(line).get("loss") for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if '"loss"' in line] if (run_dir / "metrics.jsonl").is_file() else []
    return losses[-1] if losses else None


def finetune_segmentation(ckpt: Path | None, data: Path, out: Path, seed: int, epochs: int) -> dict:
    """Dice / IoU of a segmentation fine-tune (configs/finetune_seg_tiny.yaml) on one bucket."""
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    sets = [f"seed={seed}", f"epochs={epochs}", f"data={json.dumps(str(data))}",
            f"val_data={json.dumps(str(data / 'val'))}", f"output_dir={json.dumps(str(out))}",
            "save_masks=true", "preset=mae_vit_tiny_patch8"]
    if ckpt is not None:
        sets.append(f"checkpoint={json.dumps(str(ckpt))}")
    cfg = load_config(SegmentationConfig, REPO / "configs" / "finetune_seg_tiny.yaml", sets)
    return run_segmentation(cfg, log=lambda message: None)


def start_classification(ckpt: Path | None, data: Path, out: Path, seed: int, epochs: int) -> subprocess.Popen | None:
    """Start launch/finetune.py on one bucket's cls.csv (train/val split column); None when already done."""
    if (out / "metrics.json").is_file():
        return None
    cmd = [BIN / "python", "launch/finetune.py", "--data", data / "cls.csv", "--output", out,
           "--set", f"seed={seed}", "--set", f"epochs={epochs}", "--set", "batch_size=32",
           "--set", "augment=light", "--set", "num_workers=0", "--set", "save_model=false",
           "--set", "preset=mae_vit_tiny_patch8", "--set", "lr=1e-3"]
    if ckpt is not None:
        cmd += ["--checkpoint", ckpt]
    return start(cmd, out / "finetune.log")


def finish_classification(proc: subprocess.Popen | None, out: Path) -> dict:
    """metrics.json of a classification run once it has finished."""
    if proc is not None:
        wait(proc, out / "finetune.log")
    return json.loads((out / "metrics.json").read_text())


# ---------------------------------------------------------------------------- summary
def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def summarise(raw: dict) -> dict:
    """{arm: {bucket: {dice, iou, f1, auroc, accuracy: mean/std over fine-tuning seeds}}}."""
    table = {}
    for arm, buckets in raw.items():
        table[arm] = {}
        for bucket, runs in buckets.items():
            table[arm][bucket] = {
                "dice": mean_std([r["seg"]["dice"] for r in runs]),
                "iou": mean_std([r["seg"]["iou"] for r in runs]),
                "f1": mean_std([r["cls"]["binary"]["f1"] for r in runs]),
                "auroc": mean_std([r["cls"]["auroc"] for r in runs]),
                "accuracy": mean_std([r["cls"]["accuracy"] for r in runs]),
            }
    return table


METRICS = (("dice", "Dice", "segmentation Dice"), ("f1", "F1", "classification F1 (malignant)"),
           ("auroc", "AUROC", "classification AUROC"))


def markdown(table: dict) -> str:
    """Rows = arms; columns = Dice, F1 and AUROC per bucket (mean ± std over fine-tuning seeds)."""
    buckets = list(BUCKETS)
    head = "| arm | " + " | ".join(f"{short} {b}" for _, short, _ in METRICS for b in buckets) + " |"
    lines = [head, "|---|" + ":---:|" * (len(METRICS) * len(buckets))]
    for arm, row in table.items():
        cells = [f"{row[b][key]['mean']:.3f} ± {row[b][key]['std']:.3f}" for key, _, _ in METRICS for b in buckets]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(table: dict, path: Path, title: str) -> Path:
    """One panel per metric: grouped bars per lesion-size bucket, one bar per arm, std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets, arms = list(BUCKETS), list(table)
    fig, axes = plt.subplots(1, len(METRICS), figsize=(12, 3.4), dpi=80)
    width = 0.8 / len(arms)
    for ax, (key, _, name) in zip(axes, METRICS):
        for k, arm in enumerate(arms):
            means = [table[arm][b][key]["mean"] for b in buckets]
            stds = [table[arm][b][key]["std"] for b in buckets]
            ax.bar(np.arange(len(buckets)) + (k - (len(arms) - 1) / 2) * width, means, width, yerr=stds,
                   capsize=2, label=arm)
        ax.set_xticks(np.arange(len(buckets)), [f"{b}\n{lo:.2f}-{hi:.2f}" for b, (lo, hi) in BUCKETS.items()])
        ax.set_ylim(0, 1)
        ax.set_title(name, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8, loc="upper left")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/usfmae_multiscale"), help="working folder (reused)")
    ap.add_argument("--arms", default="scratch,random,multiscale,multiscale_feature",
                    help=f"comma-separated, from {list(ARMS)}")
    ap.add_argument("--steps", type=int, default=1000, help="pretraining optimizer steps per arm (batch 16)")
    ap.add_argument("--corpus-per-bucket", type=int, default=200, help="pretraining images per lesion-size bucket")
    ap.add_argument("--train", type=int, default=192, help="downstream training images per bucket")
    ap.add_argument("--val", type=int, default=96, help="downstream validation images per bucket")
    ap.add_argument("--seg-epochs", type=int, default=15, help="segmentation fine-tuning epochs")
    ap.add_argument("--cls-epochs", type=int, default=40, help="classification fine-tuning epochs")
    ap.add_argument("--seeds", default="0,1", help="fine-tuning seeds (comma-separated)")
    ap.add_argument("--plot", type=Path, help="write the figure here (PNG)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    arms = args.arms.split(",")
    unknown = sorted(set(arms) - set(ARMS))
    if unknown:
        raise SystemExit(f"unknown arm(s) {unknown}; known: {list(ARMS)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    info = machine_info()
    started = time.perf_counter()

    # Step 1: data, and the corpus as shards.
    corpus = make_corpus(work / "corpus", args.corpus_per_bucket)
    shards = build_shards(corpus, work / "shards")
    downstream = {b: make_downstream(work / "downstream" / f"{b}_{args.train}_{args.val}", b, args.train, args.val)
                  for b in BUCKETS}

    # Step 2: pretraining, one arm after the other (same shards, seed, steps).
    checkpoints, pretraining = {}, {}
    for arm in arms:
        ckpt, seconds = pretrain(arm, shards, work / f"pretrain_{args.steps}steps" / arm, args.steps)
        checkpoints[arm] = ckpt
        pretraining[arm] = {"steps": args.steps if ckpt else 0, "wall_seconds": seconds,
                            "final_loss": final_loss(ckpt.parent) if ckpt else None}
        print(f"[multiscale] pretrained {arm}: {pretraining[arm]}", file=sys.stderr, flush=True)

    # Step 3: every arm fine-tuned on every bucket, for segmentation and classification, per seed; the
    # classification subprocess runs while segmentation trains in this process (one thread each).
    runs = work / (f"finetune_{args.steps}steps_{args.train}_{args.val}_seg{args.seg_epochs}_cls{args.cls_epochs}")
    raw: dict = {}
    for arm in arms:
        raw[arm] = {}
        for bucket, data in downstream.items():
            raw[arm][bucket] = []
            for seed in seeds:
                base = runs / arm / bucket / f"seed{seed}"
                proc = start_classification(checkpoints[arm], data, base / "cls", seed, args.cls_epochs)
                seg = finetune_segmentation(checkpoints[arm], data, base / "seg", seed, args.seg_epochs)
                cls = finish_classification(proc, base / "cls")
                raw[arm][bucket].append({"seg": {k: seg[k] for k in ("dice", "iou", "dice_pooled", "best_epoch")},
                                         "cls": {k: cls.get(k) for k in ("binary", "accuracy", "auroc")}})
                print(f"[multiscale] {arm} {bucket} seed {seed}: Dice {seg['dice']:.3f}, "
                      f"F1 {cls['binary']['f1']:.3f}, AUROC {cls['auroc']:.3f}", file=sys.stderr, flush=True)

    # Step 4: summary, table, figure.
    table = summarise(raw)
    result = {"machine": info, "arms": {a: ARMS[a] for a in arms}, "buckets": BUCKETS,
              "setup": {"image_side": SIDE, "rendered_at": RENDER_SIDE, "preset": "mae_vit_tiny_patch8",
                        "mask_ratio": 0.25, "pretrain_steps": args.steps, "pretrain_micro_batch": 16,
                        "cls_batch": 32, "seg_batch": 16,
                        "corpus_images": args.corpus_per_bucket * len(BUCKETS), "train_per_bucket": args.train,
                        "val_per_bucket": args.val, "seg_epochs": args.seg_epochs, "cls_epochs": args.cls_epochs,
                        "finetune_seeds": seeds},
              "pretraining": pretraining, "results": table, "runs": raw, "markdown": markdown(table),
              "wall_seconds_total": time.perf_counter() - started}
    if args.plot:
        title = (f"tiny MAE (64 px, 8x8 patches), {args.steps} pretraining steps on {args.corpus_per_bucket * 3} "
                 f"synthetic scans; mean ± std over {len(seeds)} fine-tuning seeds; 2-core CPU")
        result["plot"] = str(plot(table, args.plot, title))
    (work / "results.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
