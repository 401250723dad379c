"""Evidence on real ultrasound: BUS-BRA's official 5 folds, encoders pretrained on real scans, 10% / 100% labels.

    python benchmarks/real_us_study.py --plot benchmarks/real_us_study.png --json benchmarks/real_us_study.json
    python benchmarks/real_us_study.py --quick --work /tmp/real_us_quick      # the whole pipeline, tiny budget

Data (read where they are, never copied into the repository): BUS-BRA (../shared/real_sets/busbra) through
usfmae.finetune.adapters.read_busbra; POCUS lung videos and images (../shared/real_sets/pocus) and
../shared/real_us for pretraining.

Encoders (configs/pretrain_pays.yaml: the tiny MAE, 16 px patches, here at 64 px input; 75% random masking, which beat the
paper's 25% in benchmarks/pretraining_pays.py), each pretrained by the real launcher on shards built by the real
`usfmae build-shards` (local Ray, cleaning on, videos at 3 fps):
  mae_pocus    POCUS videos + images and ../shared/real_us (one pretraining; the build checks by content hash that
               no BUS-BRA image is in it)
  mae_busbra   in-domain: BUS-BRA's scans without labels, one pretraining per official run k on the shards of the
               four folds that are not run k's test fold (each fold is cleaned and sharded once, on its own)
  random_init  the same ViT at pretraining step 0 (the MAE's own init, same seed)
  small_cnn    a 4-stage CNN from scratch (usfmae.finetune.classification.small_cnn)
Shards are cleaned (BUS-BRA's burned-in "LEFT BREAST" text and calipers are removed there); fine-tuning reads the
images as released (the paper's protocol), resized once to the model's input and cached in --work.

Protocol: BUS-BRA's official run k (k = 1..5) tests on fold k and splits the other four folds into training and
validation by the release's valid_k column. Classification follows benchmarks/pretraining_pays.py's recipe: per
arm and label fraction an lr sweep (--lrs) on run 1 (pays sweeps at its first seed), decided on run 1's validation
split, the other runs at the chosen lr; each cell's epoch is its best validation epoch (macro F1), and its test
fold is read once, there (usfmae.finetune.classification.sweep). Run 1's validation scans lie in the test folds of
runs 2-5: the one lr choice per arm and fraction has seen their labels (the pretraining never does).
Label fractions are class-stratified subsets of run k's training split, repeated up to its size per epoch (same
steps for every fraction). Reported: test precision, recall, F1 (positive class malignant), per class, AUROC and
accuracy as mean +/- std over the 5 runs. Segmentation (Dice, IoU at the masks' own resolution) fine-tunes
mae_pocus, mae_busbra and random_init with configs/finetune_seg_tiny.yaml, the epoch chosen on validation.

Budget (measured CPU time per training image on this machine, one thread: the tiny ViT 4.1 ms at 128 px, 2.5 ms at
96 px; the small CNN 9.1 / 4.6 ms; decoding a released PNG 1.3 ms; at 64 px about half of 96 px): 36 ViT and 12
CNN classification cells (2 lrs on run 1 + 4 runs, 2 fractions), 4 epochs of ~1,200 images each, 15 segmentation
cells of 3 epochs, 500 + 5 x 250 pretraining steps and six shard builds. Measured (benchmarks/README.md): ~28
CPU-minutes in this process tree plus ~8.5 of cleaning in the Ray workers, 38 min of wall time on the 2 cores shared
with 7 other sessions. The defaults were cut from 128 px / 8 epochs / a per-run sweep (~100 CPU-min) when the machine turned out
to be shared 10-20 deep (one process got 10-20% of a core).

Everything is cached in --work; a killed study re-run picks up where it stopped.
"""

import argparse
import json
import os
import resource
import shutil
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path

import cv2
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402
from pretraining_pays import ONE_THREAD, cached_folder, load_mae, pretraining_record, reconstructions, run  # noqa: E402

from usfmae.checkpoint import ExportMeta, save_safetensors  # noqa: E402
from usfmae.config import PretrainConfig, load_config  # noqa: E402
from usfmae.data.labelled import LabelledImages, load_rgb, transforms_for  # noqa: E402
from usfmae.eval.folds import seed_everything, stratified_subset  # noqa: E402
from usfmae.finetune.adapters import BUSBRA_CLASSES, read_busbra  # noqa: E402
from usfmae.finetune.classification.config import FinetuneConfig  # noqa: E402
from usfmae.finetune.classification.models import build_classifier  # noqa: E402
from usfmae.finetune.classification.sweep import choose, finetune_cell, mean_std  # noqa: E402
from usfmae.finetune.registry import DOWNSTREAM  # noqa: E402
from usfmae.finetune.segmentation.config import SegmentationConfig  # noqa: E402
from usfmae.finetune.segmentation.data import SegmentationPairs, joint_transform  # noqa: E402
from usfmae.finetune.segmentation.model import build_segmenter  # noqa: E402
from usfmae.finetune.segmentation.train import evaluate as evaluate_masks, train_segmentation  # noqa: E402
from usfmae.model import create_model  # noqa: E402
from usfmae.ports import free_port  # noqa: E402
from usfmae.train.monitor import save_reconstruction_grid  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SHARED = REPO.parent / "shared"
PRETRAIN_CONFIG = REPO / "configs" / "pretrain_pays.yaml"
FINETUNE_CONFIG = REPO / "configs" / "finetune_tiny.yaml"
SEG_CONFIG = REPO / "configs" / "finetune_seg_tiny.yaml"
PRETRAIN_SETS = ["masking.strategy=random", "masking.ratio=0.75", "logging.knn_every=0"]  # + model.img_size
POSITIVE = DOWNSTREAM["busbra"].positive_class
RUNS = (1, 2, 3, 4, 5)  # BUS-BRA's official runs: run k tests on fold k
SHARD_SIDE = 128  # stored shard images; pretraining crops and resizes them to the model's input
STEP0 = "random_init"
ARMS = {  # fine-tuning: which weights, and the recipe choices that are not searched (as pretraining_pays.ARMS)
    "mae_pocus": {"layer_decay": 0.85},
    "mae_busbra": {"layer_decay": 0.85},
    STEP0: {"layer_decay": None},
    "small_cnn": {"model": "small_cnn", "layer_decay": None, "drop_path": 0.0},
}
SEG_ARMS = ("mae_pocus", "mae_busbra", STEP0)
METRICS = ("f1", "precision", "recall", "auroc", "accuracy", "macro_f1")
PAPER_F1 = {"USF-MAE": 81.6, "ResNet-50": 72.9, "ViT-B/16": 68.4, "VGG-19": 55.4}  # Table 2, BUS-BRA
COLOURS = {"mae_pocus": "C0", "mae_busbra": "C2", STEP0: "0.65", "small_cnn": "0.3"}


def say(message: str) -> None:
    print(f"[real-us {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------- data
def busbra_split(records: list, run_k: int, limit: int = 0) -> dict[str, list]:
    """{"train", "val", "test"}: records of official run k (valid_k: 1 train, 0 validation; fold k tests);
    limit > 0 keeps an evenly spaced `limit` of each (--quick only)."""
    out = {"train": [], "val": [], "test": []}
    for r in records:
        out[r.roles[run_k - 1]].append(r)
    return {s: rs[:: max(1, len(rs) // limit)][:limit] if limit else rs for s, rs in out.items()}


def cache_inputs(work: Path, records: list, size: int) -> Path:
    """The released images resized once to size x size (the evaluation transform's resize), as PNGs."""
    def make(path: Path) -> None:
        path.mkdir(parents=True)
        for r in records:
            image = cv2.imread(str(r.image), cv2.IMREAD_UNCHANGED)
            cv2.imwrite(str(path / f"{r.id}.png"), cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA))
    return cached_folder(work / "data" / f"busbra{size}", {"n": len(records), "size": size}, make)


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link (no bytes copied) where the file system allows, else a copy. Not a symlink: the shard builder
    refuses links that point outside its input folder."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def build_pocus_shards(work: Path, args, records: list) -> Path:
    """Cleaned shards of POCUS + real_us (one build; BUS-BRA's images are looked for in it by content hash)."""
    out = work / "shards" / "pocus"
    if not (out / "manifest.json").is_file():
        config = work / "data" / "build_pocus.json"  # YAML is a superset of JSON
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(json.dumps({
            "datasets": [{"name": "Pocus", "path": str(args.pocus / "pocus_videos")},
                         {"name": "Pocus", "path": str(args.pocus / "pocus_images")},
                         {"name": "real_us", "path": str(args.real_us), "anatomy": "mixed"}],
            "output": str(out), "shard_size": 500, "image_size": SHARD_SIDE,
            "check_leaks": [str(records[0].image.parent)], "cleaning": {"enabled": True},
            "reader": {"video_fps": 3.0}}))
        say(f"building POCUS + real_us shards (usfmae build-shards, local Ray, cleaning on); log {out}.log")
        run([BIN / "usfmae", "build-shards", "--config", config], out.with_suffix(".log"))
    return out


def build_busbra_shards(work: Path, args, records: list) -> dict[str, Path]:
    """Cleaned shards of each BUS-BRA fold on its own (one build per fold; 100-scan shards: parallel Ray tasks)."""
    shards = {}
    for fold in RUNS:
        out = work / "shards" / f"busbra_fold{fold}"
        if not (out / "manifest.json").is_file():
            links = work / "data" / f"busbra_fold{fold}"  # the fold's images, one build input
            links.mkdir(parents=True, exist_ok=True)
            for r in records:
                if r.fold == fold and not (links / r.image.name).exists():
                    link_or_copy(r.image, links / r.image.name)
            say(f"building BUS-BRA fold {fold} shards (cleaning on, --force-downstream); log {out}.log")
            run([BIN / "usfmae", "build-shards", "--input", links, "--dataset", "BUS-BRA", "--force-downstream",
                 "--output", out, "--shard-size", 100, "--image-size", SHARD_SIDE], out.with_suffix(".log"))
        shards[f"busbra_fold{fold}"] = out
    return shards


# ---------------------------------------------------------------------------- encoders
def pretrain_config(args) -> PretrainConfig:
    return load_config(PretrainConfig, PRETRAIN_CONFIG, [*PRETRAIN_SETS, f"model.img_size={args.image_size}"])


def step0_encoder(work: Path, args) -> Path:
    """The MAE as pretraining starts it (same seed and init): the random_init arm's weights."""
    path = work / "encoders" / f"{STEP0}.safetensors"
    if not path.is_file():
        cfg = pretrain_config(args)
        torch.manual_seed(cfg.seed)  # as the engine does before create_model
        model = create_model(cfg.model.preset, **cfg.masking.model_kwargs(), **cfg.model.overrides())
        path.parent.mkdir(parents=True, exist_ok=True)
        save_safetensors(model.state_dict(), path, ExportMeta(cfg.model.preset, cfg.model.overrides(), step=0).metadata())
    return path


def pretrain(name: str, shards: list[Path], steps: int, work: Path, args) -> Path:
    """model.safetensors after `steps` steps of the real launcher on `shards` (a killed run resumes)."""
    out = work / "pretrain" / name
    if (out / "model.safetensors").is_file():
        return out / "model.safetensors"
    sets = [*PRETRAIN_SETS, f"model.img_size={args.image_size}", f"deepspeed.micro_batch_size={args.batch}", f"logging.image_grid_every={steps}"]
    cmd = [BIN / "deepspeed", "--num_gpus", 1, "--master_port", free_port(), REPO / "launch/pretrain.py",
           "--cpu", "--config", PRETRAIN_CONFIG, "--output", out, "--max-steps", steps, *[a for s in shards for a in ("--shards", s)]]
    say(f"pretraining {name}: {steps} steps of {args.batch} on {len(shards)} shard set(s); log {out}.log")
    run(cmd + [x for s in sets for x in ("--set", s)], out.with_suffix(".log"))
    return out / "model.safetensors"


# ---------------------------------------------------------------------------- cells (worker processes)
def labelled(records: list, cache: Path, transform) -> LabelledImages:
    return LabelledImages([(str(cache / f"{r.id}.png"), BUSBRA_CLASSES.index(r.label)) for r in records],
                          list(BUSBRA_CLASSES), transform)


def classify_task(arm: str, encoder: Path | None, run_k: int, fraction: float, lr: float, work: Path, args,
                  base: FinetuneConfig) -> dict:
    """One cell: fine-tune on a stratified `fraction` of run k's training split, epoch chosen on its validation
    split, its test fold scored once."""
    torch.set_num_threads(1)
    records, _ = read_busbra(args.busbra)
    split, cache = busbra_split(records, run_k, args.limit), cache_inputs(work, records, args.image_size)
    spec = ARMS[arm]
    cfg = base.model_copy(update={
        "model": spec.get("model", "usfmae"), "checkpoint": str(encoder) if encoder else None, "lr": lr,
        "min_lr": min(base.min_lr, lr), "layer_decay": spec["layer_decay"],
        "drop_path": spec.get("drop_path", base.drop_path), "image_size": args.image_size})
    pool = split["train"]
    idx = stratified_subset([BUSBRA_CLASSES.index(r.label) for r in pool], fraction, seed=run_k)
    repeats = -(-len(pool) // len(idx))
    train = labelled([pool[i] for i in idx] * repeats, cache, transforms_for(True, args.image_size, cfg.augment))
    val, test = (labelled(split[s], cache, transforms_for(False, args.image_size)) for s in ("val", "test"))

    def build() -> torch.nn.Module:
        seed_everything(run_k)  # the head's init and dropout draws
        return build_classifier(cfg, len(BUSBRA_CLASSES))[0]

    out = work / "finetune" / arm / f"f{fraction:g}" / f"run{run_k}" / f"lr{lr:g}"
    return {"labels": len(idx), **finetune_cell(build, train, val, test, list(BUSBRA_CLASSES), cfg, out, run_k)}


def segment_task(arm: str, encoder: Path, run_k: int, work: Path, args) -> dict:
    """Segmentation of run k: train on its training split, the epoch of best validation Dice, test fold once."""
    torch.set_num_threads(1)
    out = work / "segmentation" / arm / f"run{run_k}"
    if (out / "result.json").is_file():
        return json.loads((out / "result.json").read_text())
    t0 = time.time()
    records, _ = read_busbra(args.busbra)
    split = busbra_split(records, run_k, args.limit)
    cfg = load_config(SegmentationConfig, SEG_CONFIG, [f"epochs={args.seg_epochs}", f"seed={run_k}",
                                                      "save_masks=false", f"output_dir={out}"])
    seed_everything(run_k)
    model, _ = build_segmenter(str(encoder), None, None, cfg.decoder_widths, cfg.drop_path)
    size = model.encoder.patch_embed.img_size[0]
    aug = dict(crop_scale=cfg.crop_scale, rotation=cfg.rotation, hflip=cfg.hflip, vflip=cfg.vflip)
    pairs = {s: [(r.image, r.mask) for r in rs] for s, rs in split.items()}
    result = train_segmentation(model, SegmentationPairs(pairs["train"], joint_transform(True, size, **aug)),
                                SegmentationPairs(pairs["val"], joint_transform(False, size)), cfg, out, log=lambda m: None)
    test, _ = evaluate_masks(model, SegmentationPairs(pairs["test"], joint_transform(False, size)), cfg.threshold,
                             cfg.batch_size, torch.device("cpu"))
    keep = ("dice", "iou", "dice_pooled", "iou_pooled")
    cell = {"best_epoch": result.best_epoch + 1, "val": {k: result.metrics[k] for k in keep if k in result.metrics},
            "test": {k: test[k] for k in keep if k in test}, "seconds": round(time.time() - t0, 1)}
    (out / "result.json").write_text(json.dumps(cell, indent=1))
    return cell


# ---------------------------------------------------------------------------- scheduling
def run_cells(encoders: dict, ready: dict, lane: threading.Thread, failures: list, work: Path, args,
              base: FinetuneConfig) -> tuple[dict, dict]:
    """Every classification and segmentation cell in a pool of args.jobs processes (one fewer while the
    pretraining lane runs); a cell starts once its encoder exists. 100% labels first, then segmentation, then 10%.
    As pretraining_pays does per seed: the lr sweep runs on run 1, and runs 2-5 take its choice (validation only)."""
    fractions = sorted(args.fractions, reverse=True)
    tasks = [("cls", arm, RUNS[0], f, lr) for f in fractions[:1] for arm in ARMS for lr in args.lrs]
    tasks += [("seg", arm, k) for arm in SEG_ARMS for k in RUNS] if args.seg_epochs else []
    tasks += [("cls", arm, RUNS[0], f, lr) for f in fractions[1:] for arm in ARMS for lr in args.lrs]
    cls_cells: dict = {}
    seg_cells: dict = {}
    futures: dict = {}
    with ProcessPoolExecutor(args.jobs, mp_context=get_context("spawn")) as workers:
        while tasks or futures:
            if failures:
                raise failures[0]
            capacity = max(1, args.jobs - int(lane.is_alive()))
            for task in list(tasks):
                if len(futures) >= capacity:
                    break
                key = encoder_key(task[1], task[2])
                if key is not None and not ready[key].is_set():
                    continue
                tasks.remove(task)
                encoder = encoders.get(key or task[1])  # random_init: the step-0 export; small_cnn: None
                if task[0] == "cls":
                    future = workers.submit(classify_task, task[1], encoder, *task[2:], work, args, base)
                else:
                    future = workers.submit(segment_task, task[1], encoder, task[2], work, args)
                futures[future] = task
            if not futures:
                time.sleep(5)  # waiting for an encoder
                continue
            done, _ = wait(futures, timeout=10, return_when=FIRST_COMPLETED)
            for future in done:
                task = futures.pop(future)
                cell = future.result()
                if task[0] == "cls":
                    _, arm, k, fraction, lr = task
                    cls_cells.setdefault((arm, fraction, k), {})[lr] = {"lr": lr, **cell}
                    sweep = cls_cells[(arm, fraction, RUNS[0])]
                    if k == RUNS[0] and len(sweep) == len(args.lrs):  # the choice, then the other runs first
                        chosen = float(choose({f"{lr:g}": c for lr, c in sweep.items()}))
                        tasks[0:0] = [("cls", arm, other, fraction, chosen) for other in RUNS[1:]]
                    say(f"{arm:11s} {fraction:>4g} labels ({cell['labels']:4d}) run {k} lr {lr:g}: epoch "
                        f"{cell['best_epoch']} val {cell['val_score']:.3f} -> test F1 {cell['test']['f1']:.3f} "
                        f"AUROC {cell['test']['auroc']:.3f} ({cell['seconds']:.0f} s)")
                else:
                    seg_cells[(task[1], task[2])] = cell
                    say(f"segmentation {task[1]:11s} run {task[2]}: epoch {cell['best_epoch']} -> test Dice "
                        f"{cell['test']['dice']:.3f} IoU {cell['test']['iou']:.3f} ({cell['seconds']:.0f} s)")
    return cls_cells, seg_cells


def encoder_key(arm: str, run_k: int) -> str | None:
    """The pretraining an arm's run k waits for (None: nothing to wait for)."""
    return {"mae_pocus": "mae_pocus", "mae_busbra": f"mae_busbra_run{run_k}"}.get(arm)


# ---------------------------------------------------------------------------- summary
def summarise(cls_cells: dict, seg_cells: dict, args) -> tuple[dict, dict, dict]:
    """(classification {arm: {fraction: ...}}, per-run choices, segmentation {arm: ...}), mean_std over runs."""
    table, chosen = {}, {}
    for arm in ARMS:
        for fraction in args.fractions:
            runs = []
            for k in RUNS:
                sweep = {f"{lr:g}": c for lr, c in cls_cells[(arm, fraction, k)].items()}
                runs.append({"run": k, **sweep[choose(sweep)],
                             "sweep": {lr: c["val_score"] for lr, c in sweep.items()}})
            chosen.setdefault(arm, {})[f"{fraction:g}"] = runs
            row = {m: mean_std([r["test"].get(m) for r in runs]) for m in METRICS}
            row["per_class"] = {c: {m: mean_std([r["test"]["per_class"][c][m] for r in runs])
                                    for m in ("precision", "recall", "f1")} for c in BUSBRA_CLASSES}
            table.setdefault(arm, {})[f"{fraction:g}"] = {"labels": [r["labels"] for r in runs], **row}
    seg = {arm: {m: mean_std([seg_cells[(arm, k)]["test"][m] for k in RUNS]) for m in ("dice", "iou")}
           | {"runs": [seg_cells[(arm, k)] for k in RUNS]} for arm in SEG_ARMS if (arm, RUNS[0]) in seg_cells}
    return table, chosen, seg


def markdown(table: dict, seg: dict) -> dict:
    """Classification rows (arm x fraction: P, R, F1, AUROC, accuracy) and segmentation rows (Dice, IoU)."""
    def ms(v: dict) -> str:
        return f"{100 * v['mean']:.1f} ± {100 * v['std']:.1f}"
    cls = ["| arm | labels | precision | recall | F1 | AUROC | accuracy | F1 benign | F1 malignant |",
           "|---|---|:---:|:---:|:---:|:---:|:---:|:---:|:---:|"]
    for arm, rows in table.items():
        for fraction, row in rows.items():
            cls.append(f"| {arm} | {float(fraction):.0%} ({round(sum(row['labels']) / len(row['labels']))}) | "
                       + " | ".join(ms(row[m]) for m in ("precision", "recall", "f1", "auroc", "accuracy")) + " | "
                       + " | ".join(ms(row["per_class"][c]["f1"]) for c in BUSBRA_CLASSES) + " |")
    segm = ["| encoder | Dice | IoU |", "|---|:---:|:---:|"]
    segm += [f"| {arm} | {ms(row['dice'])} | {ms(row['iou'])} |" for arm, row in seg.items()]
    return {"classification": "\n".join(cls), "segmentation": "\n".join(segm)}


def recon_grid(encoders: dict, records: list, work: Path, path: Path, args, n: int = 6) -> Path:
    """Real BUS-BRA scans of run 1's test fold (as released, resized) reconstructed by each MAE; none of them saw
    these scans. Same masks for every encoder. Panels via pretraining_pays.reconstructions."""
    test = busbra_split(records, RUNS[0])["test"]
    picks = [test[i * len(test) // n] for i in range(n)]
    tf = transforms_for(False, args.image_size)
    imgs = torch.stack([tf(load_rgb(r.image)) for r in picks])
    grids = {}
    for name in ("mae_pocus", f"mae_busbra_run{RUNS[0]}", STEP0):
        model = load_mae(encoders[name])
        torch.manual_seed(0)
        with torch.no_grad():
            _, pred, mask = model(imgs)
        grids[name] = {"last_grid": str(save_reconstruction_grid(model, imgs, pred, mask,
                                                                 work / "recon" / f"{name}.png", n))}
    return reconstructions({"pretraining": grids}, path, rows=n)


def plot(result: dict, path: Path) -> Path:
    """F1 and AUROC per arm at each label fraction, segmentation Dice / IoU, pretraining loss curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, axes = plt.subplots(1, 4, figsize=(18, 4.2), dpi=80)
    table = result["classification"]
    fractions = list(next(iter(table.values())))
    width = 0.8 / len(table)
    for ax, metric in zip(axes[:2], ("f1", "auroc")):
        for i, (arm, row) in enumerate(table.items()):
            ax.bar(np.arange(len(fractions)) + (i - (len(table) - 1) / 2) * width, [row[f][metric]["mean"] for f in fractions],
                   width, yerr=[row[f][metric]["std"] for f in fractions], capsize=2, label=arm, color=COLOURS[arm])
        ax.set_xticks(np.arange(len(fractions)), [f"{float(f):.0%} of labels" for f in fractions])
        ax.set(title=f"BUS-BRA test {'F1 (malignant)' if metric == 'f1' else 'AUROC'}, 5 official runs", ylim=(0, 1))
    axes[0].axhline(PAPER_F1["USF-MAE"] / 100, color="C3", ls="--", lw=0.8, label="paper USF-MAE (ViT-B, 370k scans)")
    axes[0].axhline(PAPER_F1["ViT-B/16"] / 100, color="C3", ls=":", lw=0.8, label="paper ViT-B/16 (ImageNet)")
    seg = result["segmentation"]
    for i, metric in enumerate(("dice", "iou")):
        axes[2].bar(np.arange(len(seg)) + (i - 0.5) * 0.4, [r[metric]["mean"] for r in seg.values()], 0.4,
                    yerr=[r[metric]["std"] for r in seg.values()], capsize=2, label=metric, color=("C0", "C1")[i])
    axes[2].set_xticks(np.arange(len(seg)), list(seg), fontsize=7)
    axes[2].set(title="segmentation, test fold (Dice, IoU)", ylim=(0, 1))
    for name, rec in result["pretraining"].items():
        if rec["loss_curve"]:
            axes[3].plot(*zip(*rec["loss_curve"]), lw=0.8, label=name)
    axes[3].set(title="pretraining loss (masked-patch MSE)", xlabel="step", yscale="log")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    fig.suptitle(result["title"], fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("bench_out/real_us_study"), help="working folder (reused)")
    ap.add_argument("--busbra", type=Path, default=SHARED / "real_sets" / "busbra", help="BUS-BRA as released")
    ap.add_argument("--pocus", type=Path, default=SHARED / "real_sets" / "pocus", help="POCUS (pocus_videos, pocus_images)")
    ap.add_argument("--real-us", type=Path, default=SHARED / "real_us", help="more real scanner files for pretraining")
    ap.add_argument("--image-size", type=int, default=64, help="model input side (16 px patches)")
    ap.add_argument("--pocus-steps", type=int, default=500, help="pretraining steps of mae_pocus")
    ap.add_argument("--busbra-steps", type=int, default=250, help="pretraining steps of each mae_busbra run")
    ap.add_argument("--batch", type=int, default=64, help="pretraining batch (one rank)")
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.1, 1.0], help="label fractions")
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 3e-3], help="fine-tuning lr grid (swept on run 1)")
    ap.add_argument("--epochs", type=int, default=4, help="fine-tuning epochs (each = the training split's size)")
    ap.add_argument("--seg-epochs", type=int, default=3, help="segmentation epochs (0 = skip)")
    ap.add_argument("--limit", type=int, default=0, help="images per split and run (0 = all; --quick: 40)")
    ap.add_argument("--jobs", type=int, default=2, help="processes at once (the pretraining lane counts as one)")
    ap.add_argument("--quick", action="store_true", help="tiny budget everywhere: checks the pipeline end to end")
    ap.add_argument("--plot", type=Path, help="write the figure here (PNG); the reconstructions go beside it")
    ap.add_argument("--json", type=Path, help="copy the result JSON here")
    args = ap.parse_args(argv)
    if args.quick:
        args.__dict__.update(pocus_steps=4, busbra_steps=2, batch=8, lrs=[1e-3], epochs=1, seg_epochs=1, limit=40)
    for name in ("busbra", "pocus", "real_us"):
        if not getattr(args, name).is_dir():
            ap.error(f"--{name.replace('_', '-')} {getattr(args, name)} is not a folder")
    return args


def cpu_seconds() -> float:
    """CPU time of this process and its waited-for children (the launchers, the cell workers)."""
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF),
                                                   resource.getrusage(resource.RUSAGE_CHILDREN)))


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(1)
    os.environ.update(ONE_THREAD)  # inherited by the workers and launchers
    # Ray renices its workers by 15 (19 under our nice 5): on a shared machine the shard builds then starve.
    os.environ.setdefault("RAY_worker_niceness", "0")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    started, info = time.time(), machine_info()
    # class_weighted: BUS-BRA is 2:1 benign (configs/finetune_tiny.yaml leaves it off for balanced synthetic sets);
    # unweighted, every tiny model first settles on "all benign", whose malignant F1 is 0.
    base = load_config(FinetuneConfig, FINETUNE_CONFIG, [f"epochs={args.epochs}", "num_workers=0", "class_weighted=true",
                                                         f"positive_class={POSITIVE}", "save_model=false"])

    # Step 1: the release as it is, the cached fine-tuning inputs, the step-0 encoder.
    records, report = read_busbra(args.busbra)
    say(f"BUS-BRA: {report['images']} scans of {report['patients']} patients; sizes from the files "
        f"({len(report['size_differs_from_csv'])} differ from bus_data.csv)")
    cache_inputs(work, records, args.image_size)
    encoders: dict = {STEP0: step0_encoder(work, args)}
    ready = {name: threading.Event() for name in ["mae_pocus", *(f"mae_busbra_run{k}" for k in RUNS)]}
    timings: dict = {}

    # Step 2: shards and pretraining in a thread (subprocesses do the work); cells start beside it.
    failures: list[BaseException] = []

    def pretrain_all() -> None:
        try:
            t0 = time.time()
            pocus = build_pocus_shards(work, args, records)
            timings["build_pocus_wall_seconds"] = round(time.time() - t0, 1)
            encoders["mae_pocus"] = pretrain("mae_pocus", [pocus], args.pocus_steps, work, args)
            ready["mae_pocus"].set()
            t0 = time.time()
            shards = build_busbra_shards(work, args, records)
            timings["build_busbra_wall_seconds"] = round(time.time() - t0, 1)
            for k in RUNS:
                name = f"mae_busbra_run{k}"
                folds = [shards[f"busbra_fold{f}"] for f in RUNS if f != k]  # never run k's test fold
                encoders[name] = pretrain(name, folds, args.busbra_steps, work, args)
                ready[name].set()
        except BaseException as error:  # noqa: BLE001 - re-raised by the main thread
            failures.append(error)

    lane = threading.Thread(target=pretrain_all, daemon=True)
    lane.start()
    cls_cells, seg_cells = run_cells(encoders, ready, lane, failures, work, args, base)
    lane.join()
    if failures:
        raise failures[0]

    # Step 3: the record, tables and figures.
    table, chosen, seg = summarise(cls_cells, seg_cells, args)
    pretraining = {name: pretraining_record(work / "pretrain" / name) for name in ready}
    shard_reports = {p.parent.name: {k: v for k, v in json.loads(p.read_text()).items() if k != "read"}
                     for p in sorted((work / "shards").glob("*/report.json"))}
    result = {
        "title": (f"BUS-BRA official 5 runs; tiny MAE ({args.image_size} px, 16 px patches, 75% masking, shards at "
                  f"{SHARD_SIDE} px); "
                  f"mae_pocus {args.pocus_steps} steps, mae_busbra {args.busbra_steps} steps per run, of {args.batch}; "
                  f"fine-tuning {args.epochs} epochs, lr from {args.lrs} on validation; 2-core CPU shared with other work"),
        "command": " ".join([Path(sys.argv[0]).name, *(sys.argv[1:] if argv is None else argv)]),
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "busbra": report, "arms": ARMS, "paper_f1": PAPER_F1,
        "pretrain_config": pretrain_config(args).model_dump(mode="json"),
        "finetune_config": base.model_dump(mode="json"), "shards": shard_reports, "pretraining": pretraining,
        "classification": table, "segmentation": seg, "markdown": markdown(table, seg), "runs": chosen,
        "machine": info, "timings": {**timings, "wall_seconds_total": round(time.time() - started, 1),
                                     "cpu_seconds_total": round(cpu_seconds(), 1)},
    }
    if args.plot:
        result["plot"] = str(plot(result, args.plot))
        result["reconstructions"] = str(recon_grid(encoders, records, work, args.plot.with_name(args.plot.stem + "_recon.png"),
                                                   args))
    (work / "real_us_study.json").write_text(json.dumps(result, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("title", "markdown", "timings")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
