"""The whole pipeline on built-in sample data, as `make demo` runs it.

1. a synthetic ultrasound corpus plus frames of pydicom's real ultrasound DICOMs,
2. shards built by a Ray job submitted with `ray job submit` to a local cluster,
3. MAE pretraining under `deepspeed --num_gpus 2`: 2 GPUs where torch sees them, else 2 CPU ranks (asked for
   explicitly with --cpu, and announced): the encoder of benchmarks/pretraining_pays.py
   (configs/pretrain_pays.yaml: 128 px, 16 px patches) for a few hundred steps,
4. fine-tuning on a synthetic labelled set, twice on the same split and at the same time: from the pretraining
   export (configs/finetune_tiny.yaml) and from a random init of the same architecture
   (configs/finetune_tiny_random.yaml), each with the recipe benchmarks/pretraining_pays.py chose for it;
   prints both side by side and where the reconstruction grids are.

    python launch/demo.py [--out demo_out] [--images 600] [--steps 300]
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
import yaml
from pydicom.data import get_testdata_file

from usfmae.testing.synthetic import write_corpus, write_labeled
from usfmae.io import ReaderConfig, iter_frames
from usfmae.testing.ray_local import auth_env, private_head

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


FINETUNES = {  # encoder -> its fine-tuning config (recipes chosen by benchmarks/pretraining_pays.py)
    "pretrained": REPO / "configs/finetune_tiny.yaml",
    "random init": REPO / "configs/finetune_tiny_random.yaml",  # the export's architecture, not its weights
}


def start(cmd: list, log: Path, env: dict) -> subprocess.Popen:
    """Start `cmd` with its output going to `log` (two runs at once would interleave on the console)."""
    print("$ " + " ".join(map(str, cmd)) + f"  > {log}", flush=True)
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as stream:
        return subprocess.Popen([str(c) for c in cmd], stdout=stream, stderr=subprocess.STDOUT, env=env)


def first_last_loss(metrics: Path) -> tuple[float, float]:
    losses = [r["loss"] for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r]
    return losses[0], losses[-1]


def recipe(run_dir: Path) -> str:
    """'lr 0.001, layer decay 0.85' from a fine-tuning run's resolved config."""
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    decay = f"layer decay {cfg['layer_decay']:g}" if cfg["layer_decay"] else "no layer decay"
    return f"lr {cfg['lr']:g}, {decay}, {cfg['epochs']} epochs"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="demo_out", help="everything is written here (recreated)")
    ap.add_argument("--images", type=int, default=600, help="synthetic pretraining images")
    ap.add_argument("--steps", type=int, default=300, help="pretraining steps (global batch 64)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    shutil.rmtree(out, ignore_errors=True)
    # Ray 2.5x clusters use token auth: the head, its workers and the job client share one token.
    # One torch thread per process: the demo runs two at once (2 ranks, then 2 fine-tunings) on a 2-core
    # machine, where a second intra-op thread per process only spins.
    env = auth_env({**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    py = sys.executable
    t0 = time.time()

    print("== 1/4 sample data", flush=True)
    n = make_corpus(out / "corpus", args.images)
    # 400 training / 100 validation scans at the encoder's 128 px (60 per class left 24 validation scans,
    # ~0.04 of F1 each)
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
    grid_every = max(1, args.steps // 3)
    run([str(Path(py).with_name("deepspeed")), "--num_gpus", "2", str(REPO / "launch/pretrain.py"),
         *([] if gpus else ["--cpu"]),
         "--config", str(REPO / "configs/pretrain_pays.yaml"), "--shards", str(out / "shards"),
         "--output", str(out / "pretrain"), "--max-steps", str(args.steps),
         "--set", "deepspeed.micro_batch_size=32",  # x 2 ranks = the study's global batch of 64
         "--set", f"logging.image_grid_every={grid_every}", "--set", f"checkpoint.every_steps={grid_every}",
         "--set", "logging.every_steps=10"], env=env, cwd=REPO)

    print("== 4/4 fine-tuning: pretrained and random init, same split, side by side", flush=True)
    export = out / "pretrain/model.safetensors"
    runs = {name: out / ("finetune" if name == "pretrained" else "finetune_random") for name in FINETUNES}
    procs = {name: start([py, REPO / "launch/finetune.py", "--config", config, "--checkpoint", export,
                          "--data", out / "labeled", "--output", runs[name]], runs[name].with_suffix(".log"), env)
             for name, config in FINETUNES.items()}
    for name, proc in procs.items():
        if proc.wait() != 0:
            log = runs[name].with_suffix(".log")
            print(log.read_text()[-3000:], file=sys.stderr)
            raise SystemExit(f"fine-tuning ({name}) exited {proc.returncode}; log {log}")

    first, last = first_last_loss(out / "pretrain/metrics.jsonl")
    grids = sorted((out / "pretrain/images").glob("step*.png"))
    metrics = {name: json.loads((run_dir / "metrics.json").read_text()) for name, run_dir in runs.items()}
    split = next(iter(metrics.values()))
    print("\n== demo done in %.0f s" % (time.time() - t0))
    print(f"shards:            {out / 'shards'} (manifest.json, report.json)")
    print(f"pretraining run:   {out / 'pretrain'} (metrics.jsonl, checkpoints/, images/, model.safetensors)")
    print(f"pretraining loss:  {first:.4f} -> {last:.4f} after {args.steps} steps")
    print(f"reconstructions:   {grids[-1] if grids else '(none)'} (each row: original | masked | reconstruction)")
    print(f"fine-tuning:       {runs['pretrained']}, {runs['random init']} (metrics.json, history.json, logs beside)")
    print(f"\nsame split ({split['n_train']} training / {split['n_val']} validation scans), each encoder's own recipe, "
          "best validation epoch (macro-F1):")
    print(f"  {'encoder':12s} {'F1':>7s} {'accuracy':>9s} {'AUROC':>7s} {'epoch':>6s}  recipe")
    for name, m in metrics.items():
        print(f"  {name:12s} {m['binary']['f1']:7.4f} {m['accuracy']:9.4f} {m['auroc']:7.4f} {m['best_epoch'] + 1:6d}"
              f"  {recipe(runs[name])}")
    gap = metrics["pretrained"]["accuracy"] - metrics["random init"]["accuracy"]
    print(f"pretrained - random init: accuracy {gap:+.3f}. Chance is accuracy 0.5 and AUROC 0.5 (calling every scan "
          f"'{split['binary']['positive_class']}' scores F1 0.667); on {split['n_val']} validation scans a gap "
          "under ~0.1 is noise.")
    print("A few hundred pretraining steps on a few hundred scans are a smoke test of the pipeline, not a pretrained "
          "encoder: what pretraining buys at CPU scale (3000 steps, 10,000 scans, fair baselines, 3 seeds) is "
          "measured in benchmarks/README.md#pretraining-pays.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
