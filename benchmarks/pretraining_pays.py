"""Does MAE pretraining pay at CPU scale? Pretrained encoders against fair baselines, 1% / 10% / 100% labels.

    python benchmarks/pretraining_pays.py --plot benchmarks/pretraining_pays.png \
        --json benchmarks/pretraining_pays.json             # the study: ~4-6 h on 2 cores shared with other work
    python benchmarks/pretraining_pays.py --quick --work /tmp/pays_quick   # the whole pipeline in a few minutes

Arms (every one gets the same recipe search, decided on the validation split):
  mae25          MAE pretrained with 25% random masking (the paper's ratio)
  mae75          the same budget with 75% (the MAE default, and what the authors' released code calls)
  multiscale75   the same budget with multi-scale block masking at 75% (BUS-M2AE, our interpretation)
  random_init    the same ViT at step 0 of pretraining (the MAE's own init, same seed): what the pretraining
                 steps add, everything else equal
  small_cnn      a 4-stage CNN from scratch (usfmae.finetune.classification.small_cnn): what one would train without an encoder
Encoders: configs/pretrain_pays.yaml (tiny MAE at 128 px with 16 px patches), the same shards, seed, batch and
number of steps, each run by the real launcher (deepspeed --num_gpus 1 launch/pretrain.py) with its k-NN /
linear-probe monitor (logging.knn_every) on a monitor set that is neither the validation nor the test set.

Data (usfmae.testing.synthetic, default lesions, no overlays, every set from its own generator seed): an unlabelled
corpus built into shards by preprocessing/build_shards.py; a labelled pool (train), a validation split, a test
split, and the monitor set. Label fractions are class-stratified, nested subsets of the pool (1% inside 10%
inside 100% for a seed); every fine-tuning run takes the same number of steps (each epoch repeats the subset up
to the pool's size).

Selection on the validation split only (the test split is scored once per run, at the chosen recipe):
  fine-tuning   per arm and label fraction, a sweep over --lrs at the first seed, each run's epoch being its best
                validation epoch (macro-F1) of an --epochs cosine schedule; the other seeds run the chosen lr.
                Layer-wise lr decay 0.85 for the pretrained encoders (MAE's recipe), none from scratch.
  linear probe  logistic regression on frozen mean-pooled patch tokens, C from usfmae.finetune.classification.sweep.PROBE_CS,
                chosen per seed
Mean and std over seeds (subset, head init and order; one pretraining seed per encoder) are reported.

Everything is cached in --work (data, shards, each encoder's run dir, which resumes from its checkpoints, every
fine-tuning cell's result.json): a killed study re-run picks up where it stopped. While an encoder pretrains,
the arms that need no pretraining fine-tune beside it (--no-overlap runs one thing at a time).
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

from usfmae.checkpoint import ExportMeta, load_into, save_safetensors  # noqa: E402
from usfmae.config import PretrainConfig, load_config  # noqa: E402
from usfmae.finetune.classification.config import FinetuneConfig  # noqa: E402
from usfmae.data.labelled import FolderDataset, LabelledImages, transforms_for  # noqa: E402
from usfmae.finetune.classification.models import build_classifier  # noqa: E402
from usfmae.finetune.encoder import checkpoint_preset  # noqa: E402
from usfmae.eval.folds import seed_everything, stratified_subset  # noqa: E402
from usfmae.eval.probe import extract_features, monitor_knn  # noqa: E402
from usfmae.finetune.classification.sweep import choose, finetune_cell, mean_std, probe_sweep  # noqa: E402
from usfmae.model import create_model  # noqa: E402
from usfmae.ports import free_port  # noqa: E402
from usfmae.testing.synthetic import CLASS_NAMES, write_corpus, write_labeled  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PRETRAIN_CONFIG = REPO / "configs" / "pretrain_pays.yaml"
FINETUNE_CONFIG = REPO / "configs" / "finetune_tiny.yaml"
# One thread per process: on a loaded 2-core machine a second intra-op thread makes tiny models slower.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
POSITIVE = CLASS_NAMES[1]  # "malignant"
ENCODERS = {  # pretraining overrides of configs/pretrain_pays.yaml, one encoder each
    "mae25": ["masking.strategy=random", "masking.ratio=0.25"],
    "mae75": ["masking.strategy=random", "masking.ratio=0.75"],
    "multiscale75": ["masking.strategy=multiscale", "masking.scales=[1,2,4]", "masking.ratio=0.75"],
}
STEP0 = "random_init"
ARMS = {  # fine-tuning: which weights, and the recipe choices that are not searched
    **{name: {"encoder": name, "layer_decay": 0.85} for name in ENCODERS},
    STEP0: {"encoder": STEP0, "layer_decay": None},
    "small_cnn": {"encoder": None, "model": "small_cnn", "layer_decay": None, "drop_path": 0.0},
}
SETS = {"train": 101, "val": 303, "test": 202, "monitor": 404}  # labelled sets and their generator seeds
METRICS = ("accuracy", "auroc", "macro_f1", "f1")
PIXELS = "pixels"  # probe-only reference: the scans' own pixels (gray, 32x32)
COLOURS = {"mae25": "C0", "mae75": "C1", "multiscale75": "C2", STEP0: "0.65", "small_cnn": "0.3", PIXELS: "0.85"}


def say(message: str) -> None:
    print(f"[pays {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- data
def cached_folder(path: Path, params: dict, make) -> Path:
    """`make(path)` unless `path/.done` records the same params (a half-written folder is redone)."""
    marker = path / ".done"
    if marker.is_file() and json.loads(marker.read_text()) == params:
        return path
    shutil.rmtree(path, ignore_errors=True)
    make(path)
    marker.write_text(json.dumps(params))
    return path


def make_data(work: Path, args) -> dict[str, Path]:
    """Corpus shards and the labelled sets (each from its own generator seed: no image is in two sets)."""
    data = work / "data"
    corpus = cached_folder(data / "corpus", {"n": args.corpus, "size": args.image_size, "seed": 7},
                           lambda p: write_corpus(p, args.corpus, seed=7, size=args.image_size, overlays=False))
    shards = data / "shards"
    if not (shards / "manifest.json").is_file():
        say(f"building shards of {args.corpus} scans (preprocessing/build_shards.py, local Ray)")
        run([BIN / "python", REPO / "preprocessing/build_shards.py", "--input", corpus, "--output", shards,
             "--dataset", "synthetic", "--shard-size", 500, "--image-size", args.image_size, "--no-clean",
             "--no-dedup"], data / "build_shards.log")
    out = {"shards": shards}
    for name, seed in SETS.items():
        n = getattr(args, f"{name}_per_class")
        out[name] = cached_folder(data / name, {"n": n, "size": args.image_size, "seed": seed},
                                  lambda p, n=n, seed=seed: write_labeled(p, n, seed=seed, size=args.image_size))
    return out


# ---------------------------------------------------------------------------- encoders
def run(cmd: list, log: Path) -> None:
    """Run a command from the repository root with one torch thread, output to `log`; raise with its tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("a") as stream:
        code = subprocess.run([str(c) for c in cmd], cwd=REPO, stdout=stream, stderr=subprocess.STDOUT,
                              env={**os.environ, **ONE_THREAD}).returncode
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} ... exited {code}; end of {log}:\n{log.read_text()[-3000:]}")


def pretrain_config(args, arm: str | None = None) -> PretrainConfig:
    return load_config(PretrainConfig, PRETRAIN_CONFIG, [f"deepspeed.micro_batch_size={args.batch}",
                                                         *(ENCODERS[arm] if arm else [])])


def step0_encoder(work: Path, args, monitor: Path) -> Path:
    """The MAE as pretraining starts it (same seed and init), exported like a pretraining run, and its
    monitor figures: step 0 of every probe curve, and the random_init arm."""
    path = work / "encoders" / f"{STEP0}.safetensors"
    cfg = pretrain_config(args)
    if not path.is_file():
        torch.manual_seed(cfg.seed)  # as the engine does before create_model
        model = create_model(cfg.model.preset, **cfg.masking.model_kwargs(), **cfg.model.overrides())
        save_safetensors(model.state_dict(), path, ExportMeta(cfg.model.preset, cfg.model.overrides(), step=0).metadata())
    probe = path.with_suffix(".monitor.json")
    if not probe.is_file():
        probe.write_text(json.dumps(monitor_knn(load_mae(path), monitor, seed=cfg.seed)))
    return path


def load_mae(path: Path) -> torch.nn.Module:
    """The MAE of an export (preset and overrides from its metadata), weights loaded strictly."""
    preset, overrides = checkpoint_preset(str(path), None)
    model = create_model(preset, **overrides)
    load_into(model, path, strict=True, verbose=False)
    return model.eval()


def pretrain(arm: str, work: Path, args, shards: Path, monitor: Path) -> Path:
    """model.safetensors of encoder `arm` after args.steps steps (the launcher resumes a killed run)."""
    out = work / "pretrain" / arm
    if (out / "model.safetensors").is_file():
        return out / "model.safetensors"
    sets = [*ENCODERS[arm], f"deepspeed.micro_batch_size={args.batch}", f"logging.knn_every={args.knn_every}",
            f"logging.knn_data={monitor}", f"logging.image_grid_every={max(1, args.steps // 3)}"]
    cmd = [BIN / "deepspeed", "--num_gpus", 1, "--master_port", free_port(), REPO / "launch/pretrain.py",
           "--config", PRETRAIN_CONFIG, "--shards", shards, "--output", out, "--max-steps", args.steps,
           *(["--cpu"] if args.cpu else [])]
    say(f"pretraining {arm}: {args.steps} steps of {args.batch} ({' '.join(ENCODERS[arm])}); log {out}.log")
    run(cmd + [x for s in sets for x in ("--set", s)], out.with_suffix(".log"))
    return out / "model.safetensors"


def pretraining_record(run_dir: Path) -> dict:
    """Steps, training wall time (summed over resumed segments), loss and monitor curves from metrics.jsonl."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    wall, start, last = 0.0, None, None
    for r in records:  # every launch logs a "start" event; a resumed one continues the same file
        if r.get("event") == "start":
            wall += last - start if start is not None else 0.0
            start = r["time"]
        last = r["time"]
    wall += last - start if start is not None else 0.0
    losses = [(r["step"], round(r["loss"], 5)) for r in records if "loss" in r]
    knn = [{"step": r["step"], **{k.split("/", 1)[1]: r[k] for k in r if k.startswith("knn/")}}
           for r in records if "knn/knn_accuracy" in r]
    grids = sorted((run_dir / "images").glob("step*.png"))
    return {"steps": losses[-1][0] if losses else 0, "wall_seconds": round(wall, 1), "final_loss": losses[-1][1]
            if losses else None, "loss_curve": losses, "monitor_curve": knn, "last_grid": str(grids[-1]) if grids else None}


# ---------------------------------------------------------------------------- probes
def features(encoder: Path | None, sets: dict[str, Path], cache: Path, image_size: int) -> dict[str, tuple]:
    """Frozen features of train/val/test, {name: (x [N, D], y [N])}: the MAE's mean of patch tokens (as the
    monitor), or for encoder None the scan itself, gray and area-averaged to 32x32 (a floor for any feature)."""
    if cache.is_file():
        return torch.load(cache, weights_only=True)
    model = load_mae(encoder) if encoder else None
    out = {}
    for name in ("train", "val", "test"):
        loader = DataLoader(FolderDataset(sets[name], transforms_for(False, image_size)), batch_size=64)
        if model is not None:
            out[name] = extract_features(model, loader, pool="avg")
        else:  # [B, 3, S, S] -> [B, 1024]
            batches = [(F.adaptive_avg_pool2d(x.mean(1, keepdim=True), 32).flatten(1), y) for x, y in loader]
            out[name] = (torch.cat([x for x, _ in batches]), torch.cat([y for _, y in batches]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, cache)
    return out


def probe_arm(encoder: Path | None, sets: dict[str, Path], work: Path, arm: str, args) -> dict:
    """{fraction: [per-seed probe_sweep results]} (encoder None: the pixels)."""
    feats = features(encoder, sets, work / "features" / f"{arm}.pt", args.image_size)
    x, y = feats["train"]
    out = {}
    for fraction in args.fractions:
        out[f"{fraction:g}"] = []
        for seed in args.seeds:
            idx = torch.as_tensor(stratified_subset(y.numpy(), fraction, seed))
            result = probe_sweep((x[idx], y[idx]), feats["val"], feats["test"], CLASS_NAMES, POSITIVE)
            out[f"{fraction:g}"].append({"seed": seed, "labels": len(idx), **result})
    return out


# ---------------------------------------------------------------------------- fine-tuning
def cell_config(arm: str, encoder: Path | None, lr: float, args, base: FinetuneConfig) -> FinetuneConfig:
    """The fine-tuning recipe of `arm` at learning rate `lr`."""
    spec = ARMS[arm]
    cnn = spec.get("model") == "small_cnn"
    return base.model_copy(update={
        "model": spec.get("model", "usfmae"), "checkpoint": str(encoder) if encoder else None, "lr": lr,
        "min_lr": min(base.min_lr, lr), "layer_decay": spec["layer_decay"],
        "drop_path": spec.get("drop_path", base.drop_path), "image_size": args.image_size if cnn else None})


def finetune_task(arm: str, encoder: Path | None, fraction: float, seed: int, lr: float, work: Path, args,
                  base: FinetuneConfig) -> dict:
    """One cell, in a worker process: fine-tune on a stratified `fraction` of the pool (repeated up to the
    pool's size per epoch, so every fraction takes the same steps), choose the epoch on val, score test."""
    torch.set_num_threads(1)
    pool, val, test = (FolderDataset(work / "data" / name) for name in ("train", "val", "test"))
    cfg = cell_config(arm, encoder, lr, args, base)
    idx = stratified_subset(pool.targets, fraction, seed)
    train = LabelledImages([pool.samples[i] for i in idx] * math.ceil(len(pool) / len(idx)), pool.classes,
                           transforms_for(True, args.image_size, cfg.augment))
    val, test = (LabelledImages(d.samples, d.classes, transforms_for(False, args.image_size)) for d in (val, test))

    def build() -> torch.nn.Module:
        seed_everything(seed)  # the head's init and dropout draws
        return build_classifier(cfg, len(pool.classes))[0]

    out = cell_dir(work, arm, fraction, seed, lr, base.epochs, args)
    return {"labels": len(idx), **finetune_cell(build, train, val, test, pool.classes, cfg, out, seed)}


def cell_dir(work: Path, arm: str, fraction: float, seed: int, lr: float, epochs: int, args) -> Path:
    """Where a cell lives; runs longer than the study's --epochs (the long-schedule check) get a suffix."""
    suffix = "" if epochs == args.epochs else f"_e{epochs}"
    return work / "finetune" / arm / f"f{fraction:g}" / f"seed{seed}" / f"lr{lr:g}{suffix}"


def long_schedule(finetunes: dict, encoders: dict, work: Path, args, base: FinetuneConfig) -> dict:
    """Does a longer schedule change the picture? Per arm, its chosen recipe at the largest label fraction and
    the first seed, fine-tuned for --long-epochs instead of --epochs; with both runs' training-loss curves."""
    fraction, seed = max(args.fractions), args.seeds[0]
    long_base = base.model_copy(update={"epochs": args.long_epochs})
    lrs = {arm: runs[f"{fraction:g}"][0]["lr"] for arm, runs in finetunes.items()}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as workers:
        futures = {arm: workers.submit(finetune_task, arm, encoders[arm], fraction, seed, lr, work, args, long_base)
                   for arm, lr in lrs.items()}
        cells = {arm: future.result() for arm, future in futures.items()}
    out = {}
    for arm, cell in cells.items():
        curves = {epochs: [round(e["train_loss"], 4) for e in json.loads(
            (cell_dir(work, arm, fraction, seed, lrs[arm], epochs, args) / "history.json").read_text())]
            for epochs in (args.epochs, args.long_epochs)}
        out[arm] = {"lr": lrs[arm], "labels": cell["labels"], "epochs": args.long_epochs, "best_epoch": cell["best_epoch"],
                    "val_score": cell["val_score"], "test": cell["test"], "train_loss": curves}
        say(f"{arm:13s} {args.long_epochs} epochs: epoch {cell['best_epoch']} -> test acc {cell['test']['accuracy']:.3f} "
            f"AUROC {cell['test']['auroc']:.3f}; final training loss {curves[args.long_epochs][-1]:.3f}")
    return out


def finetune_all(arms: list[str], encoders: dict, ready: dict, lane: threading.Thread, failures: list, work: Path,
                 args, base: FinetuneConfig, on_ready) -> dict:
    """Every arm's cells in a pool of args.jobs processes (one fewer while an encoder pretrains). Per arm and
    fraction: the lr sweep at the first seed; its choice (validation only) then runs the other seeds.
    Arms start when their encoder is ready (on_ready(arm) runs first). Returns {arm: {fraction: [per seed]}}."""
    first = args.seeds[0]
    sweeps: dict[tuple, dict[float, dict]] = {}
    runs: dict[tuple, dict[int, dict]] = {}
    queue: deque = deque()
    started: list[str] = []
    futures: dict = {}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as workers:
        while True:
            if failures:
                raise failures[0]
            for arm in arms:
                if arm not in started and (arm not in ready or ready[arm].is_set()) and not failures:
                    started.append(arm)
                    on_ready(arm)
                    queue.extend((arm, f, first, lr) for f in args.fractions for lr in args.lrs)
            capacity = max(1, args.jobs - int(lane.is_alive()))
            while queue and len(futures) < capacity:
                task = queue.popleft()
                futures[workers.submit(finetune_task, *task[:1], encoders[task[0]], *task[1:], work, args, base)] = task
            if not futures:
                if len(started) == len(arms):
                    break
                time.sleep(5)  # every started arm is done: wait for the next encoder
                continue
            done, _ = wait(futures, timeout=10, return_when=FIRST_COMPLETED)
            for future in done:
                arm, fraction, seed, lr = futures.pop(future)
                cell = {"seed": seed, "lr": lr, **{k: v for k, v in future.result().items() if k != "recipe"}}
                say(f"{arm:13s} {fraction:>5g} labels ({cell['labels']:4d}) seed {seed} lr {lr:g}: epoch "
                    f"{cell['best_epoch']} val {cell['val_score']:.3f} -> test acc {cell['test']['accuracy']:.3f} "
                    f"AUROC {cell['test']['auroc']:.3f} ({cell['seconds']:.0f} s)")
                group = (arm, fraction)
                if seed != first:
                    runs[group][seed] = cell
                    continue
                sweeps.setdefault(group, {})[lr] = cell
                if len(sweeps[group]) == len(args.lrs):
                    chosen = float(choose({f"{k:g}": c for k, c in sweeps[group].items()}))
                    runs[group] = {first: sweeps[group][chosen]}
                    queue.extendleft((arm, fraction, s, chosen) for s in args.seeds[1:])
    return {arm: {f"{f:g}": [{**runs[(arm, f)][s], "sweep": {f"{lr:g}": c["val_score"] for lr, c in
                                                              sweeps[(arm, f)].items()}} for s in args.seeds]
                  for f in args.fractions} for arm in arms}


# ---------------------------------------------------------------------------- summary
def summarise(per_fraction: dict, key: str = "test") -> dict:
    """{fraction: {"labels", metric: mean_std over seeds}} of per-seed results."""
    return {f: {"labels": runs[0]["labels"], **{m: mean_std([r[key].get(m) for r in runs]) for m in METRICS}}
            for f, runs in per_fraction.items()}


def markdown(table: dict, fractions: list[str]) -> str:
    """Rows = arms; per label fraction: test accuracy and AUROC, mean ± std over seeds."""
    head = "| arm | " + " | ".join(f"{kind} {float(f):.0%} ({next(iter(table.values()))[f]['labels']})"
                                    for f in fractions for kind in ("accuracy", "AUROC")) + " |"
    lines = [head, "|---|" + ":---:|" * (2 * len(fractions))]
    for arm, row in table.items():
        cells = [f"{row[f][m]['mean']:.3f} ± {row[f][m]['std']:.3f}" for f in fractions for m in ("accuracy", "auroc")]
        lines.append(f"| {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict, path: Path) -> Path:
    """Top: probe curves over pretraining steps, pretraining loss, fine-tuning training loss (100% labels).
    Bottom: label-efficiency bars, test accuracy and AUROC of fine-tuning, test accuracy of the linear probe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(2, 3, figsize=(16, 8), dpi=80)
    step0 = result["step0_monitor"]
    for arm, rec in result["pretraining"].items():
        curve = [{"step": 0, **step0}, *rec["monitor_curve"]]
        steps = [c["step"] for c in curve]
        axes[0, 0].plot(steps, [c["knn_accuracy"] for c in curve], "-o", ms=3, color=COLOURS[arm], label=f"{arm} k-NN")
        axes[0, 0].plot(steps, [c["linear_accuracy"] for c in curve], "--", color=COLOURS[arm], label=f"{arm} linear")
        axes[0, 1].plot(*zip(*rec["loss_curve"]), color=COLOURS[arm], label=arm)
    axes[0, 0].set(title="frozen features, monitor set (5-fold CV; step 0 = init)", xlabel="pretraining step",
                   ylabel="accuracy")
    axes[0, 1].set(title="pretraining loss (masked-patch MSE)", xlabel="pretraining step", yscale="log")
    for arm, rec in result["long_schedule"].items():
        for (epochs, losses), style in zip(rec["train_loss"].items(), ("-", ":")):
            axes[0, 2].plot(range(1, len(losses) + 1), losses, style, color=COLOURS[arm],
                            label=f"{arm} ({epochs} epochs)")
    axes[0, 2].set(title="fine-tuning training loss, 100% labels, seed 0", xlabel="epoch")
    panels = (("finetune", "accuracy", "fine-tuning: test accuracy"), ("finetune", "auroc", "fine-tuning: test AUROC"),
              ("probe", "accuracy", "linear probe (frozen): test accuracy"))
    for ax, (kind, metric, title) in zip(axes[1], panels):
        table = result["results"][kind]
        fractions = list(next(iter(table.values())))
        width = 0.8 / len(table)
        for k, (arm, row) in enumerate(table.items()):
            ax.bar(np.arange(len(fractions)) + (k - (len(table) - 1) / 2) * width, [row[f][metric]["mean"] for f in
                   fractions], width, yerr=[row[f][metric]["std"] for f in fractions], capsize=2, label=arm,
                   color=COLOURS[arm])
        labels = next(iter(table.values()))
        ax.set_xticks(np.arange(len(fractions)), [f"{float(f):.0%}\n({labels[f]['labels']} labels)" for f in fractions])
        ax.axhline(0.5, color="k", lw=0.6, ls=":")
        ax.set(title=title, ylim=(0.4, 1.0))
    for ax in axes.flat:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(result["title"], fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def reconstructions(result: dict, path: Path, rows: int = 4) -> Path:
    """The last reconstruction grid of each encoder (original | masked | reconstruction), side by side."""
    import cv2
    import numpy as np

    panels = []
    for arm, rec in result["pretraining"].items():
        grid = cv2.imread(rec["last_grid"])
        row_h = (grid.shape[1] - 2) // 3  # 3 square cells per row, 2 px of padding around each (save_image)
        grid = grid[: rows * row_h + 2]
        label = np.full((18, grid.shape[1], 3), 255, np.uint8)
        cv2.putText(label, arm, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        panels.append(np.concatenate([label, grid]))
    height = max(p.shape[0] for p in panels)
    panels = [np.pad(p, ((0, height - p.shape[0]), (0, 6), (0, 0)), constant_values=255) for p in panels]
    cv2.imwrite(str(path), np.concatenate(panels, axis=1))
    return path


# ---------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("bench_out/pretraining_pays"), help="working folder (reused)")
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="arms to run")
    ap.add_argument("--image-size", type=int, default=128, help="side of every generated scan and of the model input")
    ap.add_argument("--corpus", type=int, default=10_000, help="unlabelled pretraining scans")
    ap.add_argument("--train-per-class", type=int, default=500, help="labelled pool (100%% of labels) per class")
    ap.add_argument("--val-per-class", type=int, default=100, help="validation split per class (selection only)")
    ap.add_argument("--test-per-class", type=int, default=250, help="test split per class (reported only)")
    ap.add_argument("--monitor-per-class", type=int, default=150, help="pretraining monitor set per class")
    ap.add_argument("--steps", type=int, default=3000, help="pretraining optimizer steps per encoder")
    ap.add_argument("--batch", type=int, default=64, help="pretraining batch (one rank)")
    ap.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=not torch.cuda.is_available(),
                    help="pretrain on a CPU rank (default: when there is no GPU; the launcher never falls back)")
    ap.add_argument("--knn-every", type=int, default=250, help="monitor every N pretraining steps")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="label fractions")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds (subset, head, order)")
    ap.add_argument("--lrs", type=float, nargs="+", default=[3e-4, 1e-3, 3e-3], help="fine-tuning lr grid")
    ap.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs (each = the pool's size)")
    ap.add_argument("--long-epochs", type=int, default=60,
                    help="then each arm's chosen recipe at 100%% labels for this many epochs (0 = skip)")
    ap.add_argument("--jobs", type=int, default=2, help="processes at once (pretraining counts as one)")
    ap.add_argument("--no-overlap", action="store_true", help="do not fine-tune while an encoder pretrains")
    ap.add_argument("--quick", action="store_true", help="tiny sizes everywhere: checks the pipeline end to end")
    ap.add_argument("--plot", type=Path, help="write the figure here (PNG); the reconstructions go beside it")
    ap.add_argument("--json", type=Path, help="copy the result JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.__dict__.update(corpus=200, train_per_class=20, val_per_class=10, test_per_class=10,
                             monitor_per_class=10, steps=8, batch=16, knn_every=4, fractions=[0.1, 1.0],
                             seeds=[0, 1], lrs=[1e-3, 3e-3], epochs=2, long_epochs=3)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    os.environ.update(ONE_THREAD)  # inherited by the fine-tuning workers
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started, info = time.time(), machine_info()
    base = load_config(FinetuneConfig, FINETUNE_CONFIG, [f"epochs={args.epochs}", "num_workers=0",
                                                         f"positive_class={POSITIVE}"])

    # Step 1: data and the step-0 encoder.
    sets = make_data(work, args)
    encoders: dict[str, Path | None] = {STEP0: step0_encoder(work, args, sets["monitor"]), "small_cnn": None}
    ready = {arm: threading.Event() for arm in ENCODERS if arm in args.arms}

    # Step 2: pretraining, one encoder after the other, in a thread: the subprocess does the work.
    failures: list[BaseException] = []

    def pretrain_all() -> None:
        for arm in ready:
            try:
                encoders[arm] = pretrain(arm, work, args, sets["shards"], sets["monitor"])
            except BaseException as error:  # noqa: BLE001 - re-raised by the main thread
                failures.append(error)
                return
            ready[arm].set()

    lane = threading.Thread(target=pretrain_all, daemon=True)
    lane.start()
    if args.no_overlap:
        lane.join()

    # Step 3: probes and fine-tuning sweeps, the arms without pretraining first, the others as their encoder is done.
    probes = {PIXELS: probe_arm(None, sets, work, PIXELS, args)}

    def probe(arm: str) -> None:
        if ARMS[arm]["encoder"]:
            probes[arm] = probe_arm(encoders[arm], sets, work, arm, args)

    arms = [a for a in ARMS if a in args.arms and a not in ENCODERS] + list(ready)
    finetunes = finetune_all(arms, encoders, ready, lane, failures, work, args, base, probe)
    lane.join()
    longer = long_schedule(finetunes, encoders, work, args, base) if args.long_epochs else {}

    # Step 4: the record, tables and figures.
    fractions = [f"{f:g}" for f in args.fractions]
    results = {"finetune": {a: summarise(r) for a, r in finetunes.items()},
               "probe": {a: summarise(r) for a, r in probes.items()}}
    pretraining = {arm: pretraining_record(work / "pretrain" / arm) for arm in ENCODERS if arm in args.arms}
    result = {
        "title": (f"tiny MAE (128 px, 16 px patches), {args.steps} pretraining steps of {args.batch} on {args.corpus} "
                  f"synthetic scans; mean ± std over {len(args.seeds)} seeds; test {2 * args.test_per_class} scans; "
                  "2-core CPU shared with other work"),
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "arms": ARMS, "encoders": ENCODERS, "pretrain_config": pretrain_config(args).model_dump(mode="json"),
        "finetune_config": base.model_dump(mode="json"),
        "step0_monitor": json.loads(encoders[STEP0].with_suffix(".monitor.json").read_text()),
        "pretraining": pretraining, "results": results, "long_schedule": longer,
        "markdown": {kind: markdown(table, fractions) for kind, table in results.items()},
        "runs": {"finetune": finetunes, "probe": probes},
        "machine": info, "wall_seconds_total": round(time.time() - started, 1),
    }
    if args.plot:
        result["plot"] = str(plot(result, args.plot))
        if pretraining:
            result["reconstructions"] = str(reconstructions(result, args.plot.with_name(
                args.plot.stem + "_recon.png")))
    (work / "pretraining_pays.json").write_text(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("title", "pretraining", "results", "markdown")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
