"""Fine-tune a pretrained USF-MAE encoder (or a baseline) for classification under the paper's protocol,
or for lesion segmentation (--task segmentation, usfmae.finetune.segmentation).

    # one process: a class-folder tree (stratified hold-out) or a path,label[,fold|split] CSV
    python launch/finetune.py --checkpoint runs/usfmae/model.safetensors --data data/busbra.csv \
        --dataset busbra --output runs/ft_busbra [--config configs/finetune.yaml] [--set epochs=30]
    # adapt an official layout first (BUS-BRA's 5 folds, MMOTU-2D's split, GIST514-DB's folds)
    python launch/finetune.py --checkpoint ... --dataset mmotu --raw /data/OTU_2d --output runs/ft_mmotu
    # a baseline: timm model, weights from a local file or random init (never downloaded)
    python launch/finetune.py --model resnet50 --checkpoint weights/resnet50_a1_0.pth --data ... --output ...
    # several processes on one node (DDP; gloo on CPU, NCCL on GPU); batch_size is per process
    torchrun --nproc_per_node 4 launch/finetune.py --checkpoint ... --data ... --output ...
    deepspeed --num_gpus 4 launch/finetune.py --checkpoint ... --data ... --output ...
    # Table 2 from finished runs
    python launch/finetune.py --table2 runs/ft_*/metrics.json --output runs/table2
    # segmentation: images/ + masks/ folder pairs (or BUS-BRA's BUSBRA/), one process; Dice and IoU
    python launch/finetune.py --task segmentation --checkpoint ... --data data/seg --output runs/seg \
        [--config configs/finetune_seg_tiny.yaml] [--set epochs=50]   # --task segmentation --help: its options

Writes (rank 0) metrics.json (pooled + per fold + mean/std, seeds), table2.md, confusion_matrix.png,
predictions.csv, config.yaml, and per fold history.json / best_model.pt; prints the tables.
"""

import argparse
import os
import sys
from pathlib import Path

from usfmae.config import ConfigError, flag_overrides, load_config, save_resolved
from usfmae.finetune import FinetuneConfig, init_distributed, run_finetune, shutdown, table2_from_runs
from usfmae.finetune.registry import DOWNSTREAM, MODELS
from usfmae.finetune.segmentation.config import SegmentationConfig
from usfmae.finetune.segmentation.run import run_segmentation

TASKS = ("classification", "segmentation")
SEGMENTATION_DOC = """Segmentation fine-tuning of a pretrained encoder, in one process.

    # image/mask folder pairs (images/x.png + masks/x.png), seeded 80/20 hold-out
    python launch/finetune.py --task segmentation --checkpoint runs/usfmae/model.safetensors \\
        --data data/seg --output runs/seg [--config configs/finetune_seg_tiny.yaml] [--set epochs=50]
    # BUS-BRA as distributed (BUSBRA/Images + BUSBRA/Masks), validating on official fold 1
    python launch/finetune.py --task segmentation --checkpoint ... --data /data/BUSBRA --set fold=1 --output ...

Writes config.yaml, metrics.json (best-epoch Dice and IoU: mean, std, pooled, per image; loading report;
split sizes), history.json, masks/<stem>.png for the validation images and optionally best_model.pt.
"""


def split_task(argv: list[str]) -> tuple[str, list[str]]:
    """(--task, the other arguments); classification when absent."""
    ap = argparse.ArgumentParser(add_help=False)
    ap.add_argument("--task", choices=TASKS, default="classification")
    known, rest = ap.parse_known_args(argv)
    return known.task, rest


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--task", choices=TASKS, default="classification",
                    help="classification (default, these options) or segmentation (--task segmentation --help: its options)")
    ap.add_argument("--checkpoint", help="pretrained weights (replaces `checkpoint`)")
    ap.add_argument("--model", help=f"{' | '.join(MODELS)} (replaces `model`)")
    ap.add_argument("--data", help="class-folder tree or path,label[,fold|split] CSV (replaces `data`)")
    ap.add_argument("--dataset", help=f"{' | '.join(DOWNSTREAM)}: names the task, its classes and positive class")
    ap.add_argument("--raw", help="official layout of --dataset to adapt first (replaces `raw`)")
    ap.add_argument("--output", help="output folder (replaces output_dir)")
    ap.add_argument("--config", help="YAML fine-tuning config: a path or a packaged name (finetune, finetune_tiny)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set epochs=30 (repeatable)")
    ap.add_argument("--table2", nargs="+", metavar="METRICS_JSON",
                    help="no training: assemble Table 2 from these runs' metrics.json (into --output/table2.md)")
    ap.add_argument("--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                    help=argparse.SUPPRESS)  # passed by the deepspeed launcher; LOCAL_RANK is read instead
    return ap.parse_args(argv)


def parse_segmentation_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=SEGMENTATION_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", help="pretrained encoder weights (replaces `checkpoint`)")
    ap.add_argument("--data", help="images/ + masks/ folder or BUS-BRA's BUSBRA/ (replaces `data`)")
    ap.add_argument("--output", help="output folder (replaces output_dir)")
    ap.add_argument("--config", help="YAML segmentation config: a path or a packaged name (finetune_seg_tiny)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. --set epochs=50 (repeatable)")
    return ap.parse_args(argv)


def collect_table2(files: list[str], output: str | None) -> int:
    table = table2_from_runs(files)
    print(table)
    if output:
        Path(output).mkdir(parents=True, exist_ok=True)
        (Path(output) / "table2.md").write_text(table + "\n")
    return 0


def segmentation(argv: list[str]) -> int:
    """Segmentation fine-tuning runs in one process: refuse a multi-process launch rather than have
    every rank train the same model and write the same files."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        print("error: --task segmentation runs in one process; start it with python, not torchrun/deepspeed",
              file=sys.stderr)
        return 2
    args = parse_segmentation_args(argv)
    sets = flag_overrides(args.overrides, {"checkpoint": args.checkpoint, "data": args.data, "output_dir": args.output})
    try:
        cfg = load_config(SegmentationConfig, args.config, sets)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_resolved(cfg, cfg.output_dir)
    run_segmentation(cfg)
    return 0


def main(argv=None) -> int:
    task, rest = split_task(sys.argv[1:] if argv is None else list(argv))
    if task == "segmentation":
        return segmentation(rest)
    args = parse_args(rest)
    if args.table2:
        return collect_table2(args.table2, args.output)
    sets = flag_overrides(args.overrides, {"checkpoint": args.checkpoint, "model": args.model, "data": args.data,
                                           "dataset": args.dataset, "raw": args.raw, "output_dir": args.output})
    try:
        cfg = load_config(FinetuneConfig, args.config, sets)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env = init_distributed()
    try:
        if env.is_main:
            save_resolved(cfg, cfg.output_dir)
        run_finetune(cfg, env)
    finally:
        shutdown(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
