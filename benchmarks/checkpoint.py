"""Checkpoint stall: how long a save holds training, the synchronous path against the background writer.

    python benchmarks/checkpoint.py                          # ViT-B/16, 2 CPU ranks (gloo), ZeRO 2, 3 rounds
    python benchmarks/checkpoint.py --preset mae_vit_tiny_patch8 --rounds 2

Two ranks (torch.multiprocessing, gloo) each build the DeepSpeed engine our trainer builds (fp32, ZeRO 2) and
take one optimizer step, so that AdamW's moments exist. Then, alternating in each round, in the same processes:
  sync        the path before the background writer: one reduce per tensor and kind (weights, exp_avg,
              exp_avg_sq) with a device-to-host copy on every rank, rank 0 copies every tensor again and writes
              checkpoints/<tag>/ (usfmae.checkpoint's format, safetensors) and `latest`, then all ranks meet at a
              barrier. Stall = the whole of it.
  background  usfmae.train: EngineState.gather (flat buckets reduced to rank 0, the only rank that copies to the
              host), then rank 0's writer thread writes and publishes the checkpoint (usfmae.runstore) while
              the ranks go on; the next save first waits for it. Between saves the ranks sleep --train-s seconds,
              a stand-in for GPU steps, which leave the host free for the writer.
Reported per path: stall per save (the slowest rank's, median over rounds), rank 0's parts of it (gather; write
and barrier, or waiting for the previous write), and for background the write's own duration. Prints one JSON
document.
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_info  # noqa: E402

from usfmae.checkpoint import stage_run_checkpoint  # noqa: E402
from usfmae.ports import free_port  # noqa: E402


def sync_gather(state_io, dst: int = 0):
    """The synchronous path's gather: one reduce per tensor and kind, every rank copies its buffer to the host."""
    weights, moments = {}, {"exp_avg": {}, "exp_avg_sq": {}}
    for name, p in state_io.named:
        for key, out in ((None, weights), ("exp_avg", moments["exp_avg"]), ("exp_avg_sq", moments["exp_avg_sq"])):
            src = state_io._source(p, key)
            buf = torch.zeros(p.numel(), dtype=torch.float32)
            if src is not None:
                lp = p._hp_mapping.lp_fragment_address
                buf.narrow(0, lp.start, lp.numel).copy_(src)
            dist.reduce(buf, dst=dst)
            host = buf.view(p.shape).cpu()
            if dist.get_rank() == dst:
                out[name] = host
    return weights, moments


def sync_write(ckpt_dir: Path, tag: str, weights, moments) -> None:
    """Rank 0's synchronous write: every tensor copied again (as the writer then did), files, then `latest`."""
    weights = {k: v.clone() for k, v in weights.items()}
    moments = {k: {n: t.clone() for n, t in ts.items()} for k, ts in moments.items()}
    final = ckpt_dir / tag
    staged = stage_run_checkpoint(ckpt_dir / f"{tag}.tmp", weights, moments, {"step": 1}, {"preset": "bench"})
    os.replace(staged, final)
    (ckpt_dir / "latest").write_text(tag)


def rank_main(rank: int, port: int, args, out_dir: str, results) -> None:
    import deepspeed

    from usfmae.model import create_model
    from usfmae.runstore import RunStore
    from usfmae.train.checkpointing import BackgroundWriter
    from usfmae.train.fullstate import EngineState
    from usfmae.train.optim import build_optimizer

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)
    torch.manual_seed(0)
    model = create_model(args.preset)
    config = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1,
              "zero_optimization": {"stage": 2}, "steps_per_print": 10**9}
    engine, *_ = deepspeed.initialize(model=model, optimizer=build_optimizer(model, 1e-4, 0.05, (0.9, 0.95), 1e-8,
                                                                                 "torch_fused"),
                                      config=config)
    side = model.patch_embed.img_size[0]
    loss, _, _ = engine(torch.rand(1, model.in_chans, side, side))
    engine.backward(loss)
    engine.step()
    state_io = EngineState(engine, model)
    store = RunStore(Path(out_dir) / "background")
    (Path(out_dir) / "sync" / "checkpoints").mkdir(parents=True, exist_ok=True)
    writer = BackgroundWriter() if rank == 0 else None
    stalls: dict[str, list[float]] = {"sync": [], "background": []}
    writes: list[float] = []
    parts: dict[str, list[dict]] = {"sync": [], "background": []}

    def write(tag, full):
        t0 = time.perf_counter()
        stage_run_checkpoint(store.checkpoint_staging(tag), full.weights, full.moments, {"step": 1}, {"preset": "b"})
        store.publish_checkpoint(tag)
        store.prune_checkpoints(1)
        writes.append(time.perf_counter() - t0)

    for r in range(args.rounds):
        dist.barrier()
        t0 = time.perf_counter()
        weights, moments = sync_gather(state_io)
        t1 = time.perf_counter()
        if rank == 0:
            sync_write(Path(out_dir) / "sync" / "checkpoints", f"step{r:08d}", weights, moments)
        dist.barrier()
        t2 = time.perf_counter()
        parts["sync"].append({"gather": t1 - t0, "write_and_barrier": t2 - t1})
        stalls["sync"].append(t2 - t0)
        del weights, moments

        dist.barrier()
        t0 = time.perf_counter()
        outcome = [None]
        if writer is not None:
            writer.wait()  # the previous save's write (RunCheckpoints.settle)
        dist.broadcast_object_list(outcome, src=0)
        t1 = time.perf_counter()
        full = state_io.gather()
        if writer is not None:
            writer.submit(f"step{r}", lambda tag=f"step{r:08d}", full=full: write(tag, full))
        t2 = time.perf_counter()
        parts["background"].append({"wait_for_previous_write": t1 - t0, "gather": t2 - t1})
        stalls["background"].append(t2 - t0)
        del full
        time.sleep(args.train_s)
    if writer is not None:
        writer.wait()
    gathered = [None, None]
    dist.all_gather_object(gathered, (stalls, parts))
    if rank == 0:
        slowest = {k: [max(a, b) for a, b in zip(gathered[0][0][k], gathered[1][0][k])] for k in stalls}
        results.put({"stall_s": slowest, "rank0_parts_s": parts, "background_write_s": writes})
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="mae_vit_base_patch16")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--train-s", type=float, default=8.0, help="seconds of (GPU) training between saves")
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="usfmae-ckpt-bench-") as out:
        port = free_port()
        procs = [ctx.Process(target=rank_main, args=(r, port, args, out, results)) for r in (0, 1)]
        for p in procs:
            p.start()
        while True:  # a rank that dies would leave get() waiting for ever
            try:
                res = results.get(timeout=5)
                break
            except Exception:  # noqa: BLE001 - queue.Empty
                if any(p.exitcode not in (None, 0) for p in procs):
                    sys.exit(f"a rank failed (exit codes {[p.exitcode for p in procs]})")
        for p in procs:
            p.join()
        size = sum(f.stat().st_size for f in (Path(out) / "background" / "checkpoints").rglob("*.safetensors"))
    med = {k: statistics.median(v) for k, v in res["stall_s"].items()}
    print(json.dumps({"machine": machine_info(), "preset": args.preset, "ranks": 2, "zero_stage": 2,
                      "checkpoint_bytes": size, "train_s_between_saves": args.train_s, "rounds": args.rounds,
                      "stall_per_save_s": {k: {"median": round(med[k], 3), "each": [round(x, 3) for x in v]}
                                           for k, v in res["stall_s"].items()},
                      "rank0_parts_s": {k: [{n: round(x, 3) for n, x in d.items()} for d in v]
                                        for k, v in res["rank0_parts_s"].items()},
                      "background_write_s": [round(x, 3) for x in res["background_write_s"]],
                      "stall_ratio_sync_over_background": round(med["sync"] / med["background"], 1)}, indent=1))


if __name__ == "__main__":
    main()
