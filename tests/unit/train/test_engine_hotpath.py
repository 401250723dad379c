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

from helpers import REPO
from shardutil import make_shards
from syncutil import SyncRecorder

OURS = os.path.dirname(usfmae.__file__) + os.sep  # calls asked for by the usfmae package (not DeepSpeed's)


def trainer(tmp_path, *sets):
    from usfmae.train.engine import Trainer

    shards = make_shards(tmp_path / "shards", [24, 24])
    cfg = load_config(PretrainConfig, REPO / "configs/pretrain_tiny.yaml",
                      [f"data.shards=[{shards}]", f"output_dir={tmp_path / 'run'}", "deepspeed.device=cpu",
                       "deepspeed.micro_batch_size=4", "deepspeed.cpu_threads=1", "logging.tensorboard=false",
                       "logging.image_grid_every=0", *sets])
    t = Trainer(cfg, 0, 1)
    t.build()
    return t


def records(t):
    return [json.loads(x) for x in (t.run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("precision,stage,wrapper", [("fp32", 2, "AdamW"), ("bf16", 2, "DeepSpeedZeroOptimizer"),
                                                     ("bf16", 1, "BF16_Optimizer")])
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
