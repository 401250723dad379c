"""Pretrain USF-MAE with DeepSpeed.

    # one GPU
    deepspeed --num_gpus 1 launch/pretrain.py --config configs/pretrain_vitb16.yaml --shards shards/openus46
    # one node, 8 GPUs: 64 images per GPU, lr = base_lr x 512 / 256 (the paper's exact recipe: pretrain_vitb16.yaml)
    deepspeed --num_gpus 8 launch/pretrain.py --config configs/pretrain_vitb16_throughput.yaml --shards s3://bucket/openus46
    # several nodes: a hostfile lists 'host slots=N' lines; --output on a filesystem every node shares
    deepspeed --hostfile hostfile launch/pretrain.py --config configs/pretrain_vitb16_throughput.yaml --shards s3://bucket/openus46 \\
        --output /shared/runs/usfmae
    # several nodes sharing nothing but S3: the run directory on S3 too
    deepspeed --hostfile hostfile launch/pretrain.py --config configs/pretrain_vitb16.yaml --shards s3://bucket/openus46 \\
        --output s3://bucket/runs/usfmae
    # CPU ranks (tests, demo): asked for explicitly
    deepspeed --num_gpus 2 launch/pretrain.py --cpu --config configs/pretrain_tiny.yaml --shards shards/demo
    # the plan at 64 ranks, without training: one JSON object
    python launch/pretrain.py --dry-run --world-size 64 --config configs/pretrain_vitb16.yaml --shards s3://bucket/openus46

Restarting with the same --output directory resumes from its latest checkpoint, on any number of ranks (with
the checkpoint's global batch, or the nearest one the new world size realises: train/plan.py).
Exit codes: 0 done (or stopped at schedule.stop_at_step), 2 configuration or set-up refused (the message
says why), 3 training stopped (non-finite losses), 4 the run directory could not be written (a checkpoint or
the export: disk full, read-only, S3 refusing; the previous checkpoint stays valid and a rerun resumes from it),
5 a peer node was lost (the message names its rank and host; a rerun on the remaining nodes resumes).
"""

import argparse
import json
import os
import sys
from datetime import timedelta

from usfmae.config import ConfigError, PretrainConfig, flag_overrides, load_config


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="YAML config: a path or a packaged name (pretrain_vitb16, pretrain_tiny)")
    ap.add_argument("--shards", action="append", help="shard source (repeatable); replaces data.shards")
    ap.add_argument("--output", help="run directory; replaces output_dir")
    ap.add_argument("--max-steps", type=int, help="run length in optimizer steps; replaces schedule.max_steps")
    ap.add_argument("--cpu", action="store_true", help="train on CPU ranks (gloo): deepspeed.device=cpu")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="dotted config override, e.g. --set optimizer.lr=5e-4 (repeatable)")
    ap.add_argument("--dry-run", action="store_true",
                    help="resolve the config and shard manifests, print the plan as JSON and exit (no training)")
    ap.add_argument("--world-size", type=int, help="with --dry-run: ranks to plan for (default $WORLD_SIZE or 1)")
    ap.add_argument("--local_rank", type=int, default=int(os.environ.get("LOCAL_RANK", 0)),
                    help=argparse.SUPPRESS)  # passed by the deepspeed launcher
    return ap.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> PretrainConfig:
    # --max-steps 0 means "the schedule's own length", as leaving it out does
    from usfmae.train.checkpointing import keep_saved_batch

    sets = flag_overrides(args.overrides, {"data.shards": args.shards, "output_dir": args.output,
                                           "schedule.max_steps": args.max_steps or None,
                                           "deepspeed.device": "cpu" if args.cpu else None})
    return keep_saved_batch(load_config(PretrainConfig, args.config, sets))


def dry_run(cfg: PretrainConfig, world_size: int) -> dict:
    """The plan at `world_size` ranks, without a process group: what the run would do."""
    import torch

    from usfmae.train.device import BF16_MIN_CAPABILITY, Device, resolve_precision
    from usfmae.train.ds_config import build_ds_config
    from usfmae.train.plan import make_plan

    plan = make_plan(cfg, world_size)
    report = {**plan.summary(), "device": cfg.deepspeed.device, "zero_stage": cfg.deepspeed.zero_stage,
              "timeout_minutes": cfg.deepspeed.timeout_minutes, "shard_sources": [len(s) for s in plan.sources],
              "samples_per_source": plan.counts, "output_dir": cfg.output_dir}
    if cfg.deepspeed.device == "cpu":
        precision = resolve_precision(cfg.deepspeed.precision, Device(torch.device("cpu"), "gloo", None))
    elif cfg.deepspeed.precision == "auto":  # decided per GPU at start-up; this machine may have none
        precision = "bf16"
        report["precision_note"] = (f"auto: bf16 on GPUs of compute capability >= {BF16_MIN_CAPABILITY[0]}."
                                    f"{BF16_MIN_CAPABILITY[1]}, fp16 below; deepspeed_config shown for bf16")
    else:
        precision = cfg.deepspeed.precision
    return {**report, "precision": precision, "deepspeed_config": build_ds_config(cfg, world_size, precision)}


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        cfg = config_from_args(args)
        if args.dry_run:
            world = args.world_size or int(os.environ.get("WORLD_SIZE", 1))
            print(json.dumps(dry_run(cfg, world), indent=1))
            return 0
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return train(cfg, args.local_rank)


def train(cfg: PretrainConfig, local_rank: int) -> int:
    import deepspeed
    import torch.distributed as dist

    from usfmae.train.device import DeviceError, release_shm_allreduce, resolve_precision, select_device
    from usfmae.train.checkpointing import CheckpointWriteError
    from usfmae.train.engine import Trainer, TrainingStopped
    from usfmae.train.peers import EXIT_PEER_LOST, Heartbeat, gather_peers, lost_peer_message
    from usfmae.train.plan import make_plan

    try:
        device = select_device(cfg.deepspeed.device, local_rank)  # before anything touches a GPU
        resolve_precision(cfg.deepspeed.precision, device)  # refused here, not inside deepspeed.initialize
        make_plan(cfg, int(os.environ.get("WORLD_SIZE", 1)))  # refuse a bad plan before the process group
    except (ConfigError, DeviceError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    deepspeed.init_distributed(dist_backend=device.backend, timeout=timedelta(minutes=cfg.deepspeed.timeout_minutes))
    if device.type == "cpu":
        dist.barrier()  # every local rank has mapped its peers' all-reduce buffers: their names can go
        release_shm_allreduce()
    rank = dist.get_rank()
    peers = gather_peers(rank)
    heartbeat = Heartbeat(peers, rank, cfg.deepspeed.heartbeat_timeout_s, (os.environ["MASTER_ADDR"],
                          int(os.environ["MASTER_PORT"]))).start() if cfg.deepspeed.heartbeat_timeout_s else None
    trainer = None
    try:
        trainer = Trainer(cfg, rank, dist.get_world_size(), local_rank)
        trainer.build()
        trainer.train()
    except ConfigError as e:  # a setting only start-up can check (a missing folder, an unshared run dir)
        print(f"error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"error: {e}", file=sys.stderr)
        trainer.drain()  # the checkpoint saved before the stop, still being written
        return 3
    except CheckpointWriteError as e:
        print(f"error: {e}", file=sys.stderr)
        return 4
    except RuntimeError as e:  # a collective failed: name the peers that went away
        if (message := lost_peer_message(e, peers, rank)) is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        if trainer is not None:
            trainer.drain()  # a checkpoint gathered before the loss is still being written: the one to resume from
        os._exit(EXIT_PEER_LOST)  # tearing down a process group with a dead member can hang: leave at once
    finally:
        if heartbeat is not None:
            heartbeat.stop()
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
