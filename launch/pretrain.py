"""Pretrain USF-MAE with DeepSpeed.

    # one GPU / CPU process
    deepspeed --num_gpus 1 launch/pretrain.py --config configs/pretrain_vitb16.yaml --shards shards/openus46
    # one node, 8 GPUs
    deepspeed --num_gpus 8 launch/pretrain.py --config configs/pretrain_vitb16.yaml --shards s3://bucket/openus46
    # several nodes: a hostfile lists 'host slots=N' lines
    deepspeed --hostfile hostfile launch/pretrain.py --config configs/pretrain_vitb16.yaml --shards s3://bucket/openus46

Restarting with the same --output directory resumes from its latest checkpoint.
"""

import argparse
import os
import sys

import deepspeed
import torch.distributed as dist

from usfmae.config import ConfigError, PretrainConfig, load_config
from usfmae.train.ds_config import pick_device
from usfmae.train.engine import Trainer, TrainingStopped


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config (configs/pretrain_vitb16.yaml, configs/pretrain_tiny.yaml)")
    ap.add_argument("--shards", action="append", help="shard source (repeatable); replaces data.shards")
    ap.add_argument("--output", help="run directory; replaces output_dir")
    ap.add_argument("--max-steps", type=int, help="run length in optimizer steps; replaces schedule.max_steps")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted config override, e.g. --set optimizer.lr=5e-4 (repeatable)")
    ap.add_argument("--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                    help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    sets = list(args.overrides)
    if args.shards:
        sets.append("data.shards=[" + ",".join(f'"{s}"' for s in args.shards) + "]")
    if args.output:
        sets.append(f"output_dir={args.output}")
    if args.max_steps:
        sets.append(f"schedule.max_steps={args.max_steps}")
    try:
        cfg = load_config(PretrainConfig, args.config, sets)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    _, backend, _ = pick_device()
    deepspeed.init_distributed(dist_backend=backend)
    try:
        trainer = Trainer(cfg, dist.get_rank(), dist.get_world_size(), args.local_rank)
        trainer.build()
        trainer.train()
    except ConfigError as e:  # a setting that only start-up can check (e.g. a missing folder)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
