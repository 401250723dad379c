"""The engine's hot path: no host sync of ours on steps that are not sync points, losses and the non-finite
policy kept on the device (health.StepHealth), ZeRO 0's skip of non-finite steps, the loss logged as the mean
of every micro-batch since the last record, side work timed apart, and CPU threads per rank."""

import json
import os

import pytest
import torch

import usfmae
from usfmae.config import ConfigError, PretrainConfig, load_config
from usfmae.train.device import cpu_threads
from usfmae.train.health import StepHealth, skip_non_finite_steps

from helpers import REPO, cpu_ranks_run
from shardutil import damage, make_shards
from syncutil import SyncRecorder

OURS = os.path.dirname(usfmae.__file__) + os.sep  # calls asked for by the usfmae package (not DeepSpeed's)


def trainer(tmp_path, *sets, shards=None):
    from usfmae.train.engine import Trainer

    shards = shards or make_shards(tmp_path / "shards", [24, 24])
    cfg = load_config(PretrainConfig, REPO / "configs/pretrain_tiny.yaml",
                      [f"data.shards=[{shards}]", f"output_dir={tmp_path / 'run'}", "deepspeed.device=cpu",
                       "deepspeed.micro_batch_size=4", "deepspeed.cpu_threads=1", "logging.tensorboard=false",
                       "logging.image_grid_every=0", *sets])
    t = Trainer(cfg, 0, 1)
    t.build()
    return t


def records(t):
    return [json.loads(x) for x in (t.run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision,stage,wrapper", [
    pytest.param(p, s, w, marks=cpu_ranks_run(p))
    for p, s, w in [("fp32", 2, "AdamW"), ("bf16", 2, "DeepSpeedZeroOptimizer"), ("bf16", 1, "BF16_Optimizer")]])
def test_steps_between_sync_points_make_no_host_sync_of_ours(tmp_path, process_group, precision, stage, wrapper):
    """Steps 2-5 and 7-9 are not sync points (logging every 6 steps, checkpoints every 100, 10 steps); step 1
    builds the normalisation constants on the device, once. One fp32 rank runs ZeRO stage 0 (nothing to
    partition): DeepSpeed steps our AdamW itself."""
    t = trainer(tmp_path, f"deepspeed.zero_stage={stage}", f"deepspeed.precision={precision}",
                "deepspeed.grad_accum_steps=2", "schedule.max_steps=10", "logging.every_steps=6",
                "checkpoint.every_steps=100")
    assert type(t.engine.optimizer).__name__ == wrapper
    per_step, step_of = {}, t._micro_step

    def recorded(*args):
        with SyncRecorder() as rec:
            out = step_of(*args)
        per_step.setdefault(t.step + 1, []).extend(rec.made_in(OURS))
        return out

    settle = t.health.settle

    def recorded_settle(step, *args):
        with SyncRecorder() as rec:
            out = settle(step, *args)
        per_step.setdefault(("settle", step), []).extend(rec.made_in(OURS))
        return out

    t._micro_step, t.health.settle = recorded, recorded_settle
    t.train()
    assert sorted(k for k in per_step if isinstance(k, int)) == list(range(1, 11))
    assert all(per_step[s] == [] for s in range(2, 11)), {s: per_step[s] for s in range(2, 11) if per_step[s]}
    # the recorder does see ours: the one read of a settle (steps 6 and 10)
    assert [c for c, _ in per_step[("settle", 6)]] == ["tolist"] and ("settle", 10) in per_step


def test_logged_loss_is_the_mean_of_every_micro_batch_since_the_last_record(tmp_path, process_group, monkeypatch):
    from usfmae.train import engine

    t = trainer(tmp_path, "deepspeed.grad_accum_steps=2", "schedule.max_steps=6", "logging.every_steps=3",
                "checkpoint.every_steps=100", "logging.image_grid_every=2")
    asked = []
    monkeypatch.setattr(engine, "mfu", lambda flops, ips, world, precision: asked.append(precision) or 0.5)
    losses, guard = [], t.health.guard

    def seen(loss):
        losses.append(loss.item())
        return guard(loss)

    t.health.guard = seen
    t.train()
    logged = [r for r in records(t) if "loss" in r]
    assert [r["step"] for r in logged] == [3, 6] and len(losses) == 12
    for r, chunk in zip(logged, (losses[:6], losses[6:])):
        assert r["loss"] == pytest.approx(sum(chunk) / 6, rel=1e-9)
        assert r["skipped_steps"] == 0 and r["images_per_s"] > 0 and r["mfu"] == 0.5
    assert asked == ["fp32", "fp32"]  # MFU against the peak of the run's precision
    # reconstruction grids (steps 2, 4, 6) are timed apart from training; the step-6 grid counts after its record
    assert logged[0]["time/image_grid_s"] > 0 and logged[1]["time/image_grid_s"] > 0
    assert logged[0]["time/checkpoint_s"] == 0 and logged[0]["time/train_s"] > 0
    assert records(t)[0]["torch_threads"] == 1


def test_a_damaged_shard_mid_run_is_warned_about_counted_and_the_run_goes_on(tmp_path, process_group, capfd):
    """A truncated shard and an undecodable image in the middle of the epoch: the run trains every step; the rank
    warns naming the shard and the sample; metrics.jsonl counts the positions filled by stand-ins
    (data/skipped_samples, summed over ranks in settle's all-reduce) and names the faults in a data_error event."""
    shards = make_shards(tmp_path / "shards", [12, 12, 12, 12])
    whole, lost = damage(shards, "shard-000001.tar", ("shard-000002.tar", "shard002_000030"))
    t = trainer(tmp_path, "schedule.max_steps=12", "logging.every_steps=4", "checkpoint.every_steps=100",
                "data.shuffle_buffer=20", shards=shards)
    assert t.plan.steps_per_epoch == 12 and t.train()["steps"] == 12
    logged = [r for r in records(t) if "loss" in r]
    assert [r["step"] for r in logged] == [4, 8, 12] and all(r["loss"] is not None for r in logged)
    assert sum(r["data/skipped_samples"] for r in logged) == lost + 2  # + the image cut through, the junk PNG
    events = [r for r in records(t) if r.get("event") == "data_error"]
    faults = {(f["shard"].rsplit("/", 1)[1], f["key"][:9]) for e in events for f in e["faults"]}
    assert {("shard-000001.tar", "shard001_"), ("shard-000002.tar", "shard002_")} <= faults
    assert sum(e["skipped_samples"] for e in events) == lost + 2
    err = capfd.readouterr().err
    assert "rank 0 WARNING: skipping damaged data in epoch 0: shard " in err
    assert "shard-000002.tar, sample shard002_000030: undecodable png" in err


def test_fp16_scales_the_loss_skips_an_overflow_step_and_resumes_its_scaler(tmp_path, process_group, monkeypatch):
    """fp16 under DeepSpeed's dynamic loss scaler on any CPU: DeepSpeed's fp16 capability is patched in (torch's
    CPU fp16 kernels need no fp16 instructions; only DeepSpeed's check asks for them), so the fp16 logic stays
    covered where the launcher-level fp16 cases skip. Step 3 overflows: it is skipped (weights and AdamW step as
    at step 2) and the scaler records it; a resume at step 4 carries the scaler on."""
    from deepspeed.accelerator import get_accelerator

    from usfmae.checkpoint import read_run_checkpoint
    from usfmae.model.mae import MaskedAutoencoderViT

    monkeypatch.setattr(get_accelerator(), "is_fp16_supported", lambda: True)
    calls, forward_loss = [], MaskedAutoencoderViT.forward_loss

    def overflowing(self, imgs, pred, mask):
        loss = forward_loss(self, imgs, pred, mask)
        if self.training:
            calls.append(1)
            if len(calls) in (5, 6):  # step 3's two micro-batches
                return loss * float("inf")
        return loss

    monkeypatch.setattr(MaskedAutoencoderViT, "forward_loss", overflowing)
    sets = ["deepspeed.zero_stage=2", "deepspeed.precision=fp16", "deepspeed.grad_accum_steps=2",
            "schedule.max_steps=5", "logging.every_steps=1", "checkpoint.every_steps=1", "checkpoint.keep_last=10"]
    t = trainer(tmp_path, *sets, "schedule.stop_at_step=4")
    assert type(t.engine.optimizer).__name__ == "DeepSpeedZeroOptimizer"
    t.train()
    trainer(tmp_path, *sets).train()
    saved = {s: read_run_checkpoint(tmp_path / "run" / "checkpoints" / f"step{s:08d}") for s in range(2, 6)}
    state, scaler = {s: saved[s][0] for s in saved}, {s: saved[s][0]["loss_scaler"] for s in saved}
    assert [state[s]["adam_step"] for s in range(2, 6)] == [2, 2, 3, 4]  # step 3 skipped, the rest stepped
    assert all(torch.equal(saved[3][1][k], saved[2][1][k]) for k in saved[2][1])
    assert not all(torch.equal(saved[4][1][k], saved[3][1][k]) for k in saved[3][1])
    assert scaler[3]["last_overflow_iter"] == scaler[2]["cur_iter"] and scaler[3]["cur_hysteresis"] == 1
    # resumed at step 4: the scaler goes on from the checkpoint (a fresh one would have no overflow and hysteresis 2)
    assert scaler[5]["cur_iter"] == scaler[4]["cur_iter"] + 1
    assert scaler[5]["last_overflow_iter"] == scaler[3]["last_overflow_iter"] and scaler[5]["cur_hysteresis"] == 1
    logged = [r for r in records(t) if "loss" in r]
    assert [(r["step"], r["skipped_steps"]) for r in logged] == [(1, 0), (2, 0), (3, 1), (4, 1), (5, 1)]
    assert all(r["loss_scale"] == scaler[2]["cur_scale"] for r in logged)  # hysteresis 2: one overflow keeps it


def test_non_finite_losses_are_counted_on_the_device_and_settled_in_order():
    h = StepHealth(torch.device("cpu"), max_bad_steps=3)
    for step_losses in ([1.0, 2.0], [float("nan"), 4.0], [float("inf"), 1.0], [3.0, 5.0]):
        for value in step_losses:
            h.guard(torch.tensor(value, requires_grad=True))
        h.end_step()
    s = h.settle(4)
    assert (s.loss, s.skipped, s.bad_in_row, s.first_step, s.stop_at) == ((1 + 2 + 4 + 1 + 3 + 5) / 6, 2, 0, 1, None)
    for _ in range(3):
        h.guard(torch.tensor(float("nan")))
        h.end_step()
    h.guard(torch.tensor(2.0))
    h.end_step()
    s = h.settle(8)
    assert (s.loss, s.skipped, s.stop_at, h.skipped_total) == (2.0, 3, 7, 5)  # the third in a row: step 7
    h.guard(torch.tensor(float("nan")))
    h.end_step()
    assert h.settle(9).loss is None  # nothing finite to average


def test_a_non_finite_loss_makes_every_gradient_nan():
    h = StepHealth(torch.device("cpu"), max_bad_steps=3)
    w = torch.nn.Parameter(torch.ones(3))
    loss = (w ** 2).sum() * torch.tensor(float("inf"))
    h.guard(loss).backward()
    assert torch.isnan(w.grad).all()  # even where the loss's own gradient would be finite or zero
    w.grad = None
    h.guard((w ** 2).sum()).backward()
    assert torch.equal(w.grad, 2 * torch.ones(3))  # finite losses back-propagate unchanged


@pytest.mark.parametrize("fused", [True, False])
def test_zero_0_optimizer_skips_steps_with_non_finite_gradients(fused):
    w = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.AdamW([w], lr=0.1, fused=fused)
    skip_non_finite_steps(opt)
    w.grad = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    opt.step()
    assert torch.equal(w.detach(), torch.ones(4)) and not opt.state.get(w, {}).get("exp_avg", torch.zeros(1)).any()
    w.grad = torch.ones(4)
    opt.step()
    assert (w.detach() < 1).all() and int(opt.state[w]["step"]) == 1


def test_cpu_threads_default_to_cores_per_local_rank(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)))
    assert cpu_threads(None, {"LOCAL_SIZE": "2"}) == (4, "8 cores / 2 rank(s) on this node")  # deepspeed launcher
    assert cpu_threads(None, {"LOCAL_WORLD_SIZE": "3"})[0] == 2  # torchrun
    assert cpu_threads(None, {"LOCAL_SIZE": "16"})[0] == 1  # never 0
    assert cpu_threads(None, {})[0] == 8  # one rank
    assert cpu_threads(None, {"LOCAL_SIZE": "2", "OMP_NUM_THREADS": "3"}) == (3, "OMP_NUM_THREADS")  # respected
    assert cpu_threads(5, {"LOCAL_SIZE": "2", "OMP_NUM_THREADS": "3"}) == (5, "deepspeed.cpu_threads")
    with pytest.raises(ConfigError, match="OMP_NUM_THREADS='four'"):
        cpu_threads(None, {"OMP_NUM_THREADS": "four"})
