"""The whole pipeline on built-in sample data, as `make demo` runs it.

1. a synthetic ultrasound corpus plus frames of pydicom's real ultrasound DICOMs,
2. shards built by a Ray job submitted with `ray job submit` to a local cluster,
3. tiny-MAE pretraining under `deepspeed --num_gpus 2`: 2 GPUs where torch sees them, else 2 CPU ranks
   (asked for explicitly with --cpu, and announced),
4. fine-tuning (configs/finetune_tiny.yaml) on a synthetic labeled set from the pretraining export; prints
   the F1, accuracy and AUROC.

    python launch/demo.py [--out demo_out] [--images 600]
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
from pydicom.data import get_testdata_file

from usfmae.data.synthetic import write_corpus, write_labeled
from usfmae.io import ReaderConfig, iter_frames
from usfmae.ray_local import auth_env, private_head

REPO = Path(__file__).resolve().parents[1]
DICOMS = ["examples_palette.dcm", "examples_rgb_color.dcm", "examples_jpeg2k.dcm", "examples_ybr_color.dcm"]


def run(cmd: list[str], **kw) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, **kw)


def make_corpus(corpus: Path, n_images: int) -> int:
    """Synthetic images + sampled frames of the real DICOMs, as PNGs."""
    write_corpus(corpus / "synthetic", n_images, seed=0, size=256)
    (corpus / "dicom").mkdir(parents=True, exist_ok=True)
    n = n_images
    for name in DICOMS:
        for frame in iter_frames(Path(get_testdata_file(name)), ReaderConfig()):
            path = corpus / "dicom" / f"{Path(name).stem}_{frame.index:03d}.png"
            cv2.imwrite(str(path), cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR))
            n += 1
    return n


def first_last_loss(metrics: Path) -> tuple[float, float]:
    losses = [r["loss"] for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    return losses[0], losses[-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out", help="everything is written here (recreated)")
    ap.add_argument("--images", type=int, default=600, help="synthetic pretraining images")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    # Ray 2.5x clusters use token auth: the head, its workers and the job client share one token.
    env = auth_env({**os.environ, "PYTHONUNBUFFERED": "1"})
    py = sys.executable
    t0 = time.time()

    print("== 1/4 sample data", flush=True)
    n = make_corpus(out / "corpus", args.images)
    # 400 training / 100 validation scans (60 per class left 24 validation scans, ~0.04 of F1 each)
    write_labeled(out / "labeled", n_per_class=250, seed=1, size=128)
    print(f"{n} pretraining images in {out / 'corpus'}", flush=True)

    print("== 2/4 shards: Ray job on a local cluster", flush=True)
    # A private head on free loopback ports, stopped by pid: other Ray clusters on the machine are left alone.
    with private_head(out / "ray", num_cpus=2, env=env) as head:
        print(f"local Ray head: {head.gcs}, jobs at {head.jobs}", flush=True)
        run([str(Path(py).with_name("ray")), "job", "submit", f"--address={head.jobs}",
             "--", py, str(REPO / "preprocessing/build_shards.py"), "--input", str(out / "corpus"),
             "--output", str(out / "shards"), "--shard-size", "100", "--dataset", "demo"], env=env)

    import torch

    gpus = torch.cuda.device_count() >= 2
    print(f"== 3/4 pretraining: deepspeed, 2 ranks on {'GPUs' if gpus else 'CPUs (no 2 usable GPUs here: --cpu)'}",
          flush=True)
    run([str(Path(py).with_name("deepspeed")), "--num_gpus", "2", str(REPO / "launch/pretrain.py"),
         *([] if gpus else ["--cpu"]),
         "--config", str(REPO / "configs/pretrain_tiny.yaml"), "--shards", str(out / "shards"),
         "--output", str(out / "pretrain")], env=env, cwd=REPO)

    print("== 4/4 fine-tuning from the export", flush=True)
    run([py, str(REPO / "launch/finetune.py"), "--config", str(REPO / "configs/finetune_tiny.yaml"),
         "--checkpoint", str(out / "pretrain/model.safetensors"), "--data", str(out / "labeled"),
         "--output", str(out / "finetune")], env=env)

    first, last = first_last_loss(out / "pretrain/metrics.jsonl")
    ft = json.loads((out / "finetune/metrics.json").read_text())
    print("\n== demo done in %.0f s" % (time.time() - t0))
    print(f"shards:            {out / 'shards'} (manifest.json, report.json)")
    print(f"pretraining run:   {out / 'pretrain'} (metrics.jsonl, checkpoints/, images/, model.safetensors)")
    print(f"pretraining loss:  {first:.4f} -> {last:.4f}")
    print(f"fine-tuning:       {out / 'finetune'} (metrics.json, history.json)")
    print(f"fine-tune F1:      {ft['binary']['f1']:.4f} (positive class '{ft['binary']['positive_class']}'; "
          f"calling every scan malignant scores 0.6667)")
    print(f"accuracy, AUROC:   {ft['accuracy']:.4f}, {ft['auroc']:.4f} (chance: 0.5, 0.5; "
          f"best validation macro-F1 epoch {ft['best_epoch'] + 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
