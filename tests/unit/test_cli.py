"""The `usfmae` console script: dispatch, delegation to the entry scripts, export, inspect, pretrain."""

import importlib
import json
import os

import boto3
import cv2
import numpy as np
import pytest
import torch
import webdataset as wds
from moto.server import ThreadedMotoServer
from safetensors.torch import load_file

from usfmae import cli
from usfmae.checkpoint import save_safetensors
from usfmae.inspect_shards import inspect_shards, split_key
from usfmae.model import create_model
from usfmae.netguard import OFFLINE_ENV
from usfmae.ports import free_port

from helpers import BIN, REPO, run
from shardutil import make_shards

COMMANDS = ["build-shards", "clean", "pretrain", "finetune", "export", "inspect", "doctor"]


def test_console_script_lists_every_command():
    out = run([BIN / "usfmae", "--help"]).stdout
    for command in COMMANDS:
        assert f"  {command} " in out


def test_every_command_runs_a_main_of_usfmae_commands_with_its_offline_defaults(monkeypatch):
    assert list(cli.COMMANDS) == COMMANDS
    for name, command in cli.COMMANDS.items():
        assert callable(importlib.import_module(f"usfmae.commands.{command.module}").main), name
    for key in OFFLINE_ENV:
        monkeypatch.setenv(key, "unset by the test")  # restored (removed) at teardown
        monkeypatch.delenv(key)
    with pytest.raises(SystemExit):
        cli.main(["doctor", "--help"])  # reports the environment as the user has it
    assert not any(key in os.environ for key in OFFLINE_ENV)
    with pytest.raises(SystemExit):
        cli.main(["clean", "--help"])
    assert all(os.environ.get(key) == value for key, value in OFFLINE_ENV.items())


def test_unknown_or_missing_command_is_a_usage_error(capsys):
    assert cli.main(["pretrian"]) == 2
    assert "unknown command 'pretrian'" in capsys.readouterr().err
    assert cli.main([]) == 2


def test_clean_runs_the_package_main(tmp_path, capsys):
    # usfmae.commands.clean_images refuses an empty folder (exit 2): the command needs no source tree
    (tmp_path / "in").mkdir()
    assert cli.main(["clean", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "qa")]) == 2
    assert f"no inputs under {tmp_path / 'in'}" in capsys.readouterr().err


def test_build_shards_runs_the_scripts_main(tmp_path, capsys):
    # preprocessing/build_shards.py's own argument check (exit 2) proves the delegation, before Ray starts
    assert cli.main(["build-shards", "--input", str(tmp_path)]) == 2
    assert "--output is required with --input" in capsys.readouterr().err


def test_finetune_runs_the_scripts_main(tmp_path, capsys):
    assert cli.main(["finetune", "--set", "no_such_key=1", "--output", str(tmp_path)]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_finetune_passes_the_task_through(tmp_path, capsys):
    # threshold is a segmentation setting: the classification config has no such key
    assert cli.main(["finetune", "--task", "segmentation", "--set", "threshold=2", "--output", str(tmp_path)]) == 2
    assert "threshold: Input should be less than 1" in capsys.readouterr().err
    assert cli.main(["finetune", "--set", "threshold=0.5", "--output", str(tmp_path)]) == 2
    assert "threshold: Extra inputs are not permitted" in capsys.readouterr().err


def test_pretrain_help_explains_multi_rank_runs(capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["pretrain", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "deepspeed --num_gpus N --module usfmae.commands.pretrain" in out and "--hostfile" in out
    assert "--max-steps" in out  # launch/pretrain.py's own options follow


def test_pretrain_nproc_becomes_a_deepspeed_launch():
    nproc, port, rest = cli.split_pretrain_args(["--config", "c.yaml", "--nproc=2", "--master-port", "29600",
                                                  "--max-steps", "3"])
    assert (nproc, port, rest) == (2, 29600, ["--config", "c.yaml", "--max-steps", "3"])
    cmd = cli.deepspeed_command(nproc, port, rest)
    assert cmd[0].endswith("deepspeed") and cmd[1:5] == ["--master_port", "29600", "--num_gpus", "2"]
    assert cmd[5:7] == ["--module", "usfmae.commands.pretrain"] and cmd[7:] == rest  # no source tree needed
    assert cli.split_pretrain_args(["--max-steps", "3"]) == (None, None, ["--max-steps", "3"])
    for bad in (["--nproc"], ["--nproc", "0"], ["--nproc", "two"]):
        with pytest.raises(cli.CliError):
            cli.split_pretrain_args(bad)
    assert cli.main(["pretrain", "--nproc", "x"]) == 2


def test_export_writes_a_timm_encoder(tmp_path):
    torch.manual_seed(0)
    mae = create_model("mae_vit_tiny_patch8")
    src = save_safetensors(mae.state_dict(), tmp_path / "mae.safetensors", {"preset": "mae_vit_tiny_patch8"})
    out = tmp_path / "e.safetensors"
    assert cli.main(["export", "--checkpoint", str(src), "--format", "timm", "--out", str(out)]) == 0
    enc = load_file(out)
    assert torch.equal(enc["blocks.3.mlp.fc2.weight"], mae.state_dict()["blocks.3.mlp.fc2.weight"])
    assert not any(k.startswith("decoder") or k == "mask_token" for k in enc)


def test_inspect_counts_every_shard_and_writes_a_contact_sheet(tmp_path, capsys):
    shards = make_shards(tmp_path / "b", [5, 7])
    sheet, counts = tmp_path / "sheet.png", tmp_path / "counts.json"
    assert cli.main(["inspect", str(shards), "--sheet", str(sheet), "--samples", "6", "--json", str(counts)]) == 0
    out = capsys.readouterr().out
    assert "12 samples in 2 shards (manifest: 12)" in out
    assert [line.split()[:3] for line in out.splitlines() if line.startswith("shard-")] == \
        [["shard-000000.tar", "5", "5"], ["shard-000001.tar", "7", "7"]]
    data = json.loads(counts.read_text())
    assert data["datasets"] == {"test": 12} and data["problems"] == []
    img = cv2.imread(str(sheet))
    assert img.shape == (2 * (160 + 16), 3 * 160, 3)  # 6 tiles: 3 columns x 2 rows, captions under each
    assert img[:160, :160].std() > 5  # a real ultrasound tile, not blank


def test_inspect_picks_are_seeded_and_distinct(tmp_path):
    shards = make_shards(tmp_path / "b", [10, 10, 10])
    a, b = inspect_shards(str(shards), 8, seed=3), inspect_shards(str(shards), 8, seed=3)
    keys = [p.key for p in a.picks]
    assert keys == [p.key for p in b.picks] and len(set(keys)) == 8
    assert keys != [p.key for p in inspect_shards(str(shards), 8, seed=4).picks]


def test_inspect_counts_datasets_from_the_json_metadata(tmp_path, capsys):
    (tmp_path / "mix").mkdir()
    png = cv2.imencode(".png", np.full((8, 8, 3), 90, np.uint8))[1].tobytes()
    with wds.TarWriter(str(tmp_path / "mix/part-000000.tar")) as sink:  # no manifest: tar headers are the listing
        for i, name in enumerate(["busi", "busi", "echonet", "busi", "echonet"]):
            sink.write({"__key__": f"s{i}", "png": png, "json": json.dumps({"dataset": name}).encode()})
    ins = inspect_shards(str(tmp_path / "mix"), n_picks=2)
    assert ins.datasets == {"busi": 3, "echonet": 2} and ins.shards[0].datasets == {"busi": 3, "echonet": 2}
    assert ins.manifest is None and ins.problems == []
    assert cli.main(["inspect", str(tmp_path / "mix"), "--sheet", ""]) == 0
    assert "busi" in capsys.readouterr().out and not (tmp_path / "contact_sheet.png").exists()


def test_inspect_reports_a_manifest_that_disagrees(tmp_path, capsys):
    shards = make_shards(tmp_path / "b", [4, 4])
    manifest = json.loads((shards / "manifest.json").read_text())
    manifest["shards"][1]["samples"] = 5
    (shards / "manifest.json").write_text(json.dumps(manifest))
    assert cli.main(["inspect", str(shards), "--sheet", ""]) == 1
    assert "PROBLEM: shard-000001.tar: 4 samples in the tar, 5 in the manifest" in capsys.readouterr().out


def test_inspect_names_a_truncated_shard(tmp_path, capsys):
    shards = make_shards(tmp_path / "b", [4])
    tar = shards / "shard-000000.tar"
    tar.write_bytes(tar.read_bytes()[:3000])
    assert cli.main(["inspect", str(shards), "--sheet", ""]) == 2
    assert "shard-000000.tar: unreadable shard" in capsys.readouterr().err


def test_inspect_rejects_corrupt_metadata(tmp_path):
    (tmp_path / "bad").mkdir()
    with wds.TarWriter(str(tmp_path / "bad/x-000000.tar")) as sink:
        sink.write({"__key__": "k0", "png": b"\x89PNG", "json": b"{not json"})
    with pytest.raises(ValueError, match=r"x-000000.tar: sample 'k0' has corrupt .json"):
        inspect_shards(str(tmp_path / "bad"))


def test_split_key_follows_webdataset():
    assert split_key("a/b/abc.seg.png") == ("a/b/abc", "seg.png") and split_key("k.json") == ("k", "json")


def test_inspect_reads_shards_on_s3(tmp_path, monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(key, value)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port())
    server.start()
    try:
        host, port = server.get_host_and_port()
        url = f"http://{host}:{port}"
        shards = make_shards(tmp_path / "b", [3, 2])
        client = boto3.client("s3", endpoint_url=url)
        client.create_bucket(Bucket="corpus")
        for f in shards.iterdir():
            client.upload_file(str(f), "corpus", f"builds/b/{f.name}")
        ins = inspect_shards("s3://corpus/builds/b", n_picks=4, endpoint_url=url)
    finally:
        server.stop()
    assert [(s.name, s.samples) for s in ins.shards] == [("shard-000000.tar", 3), ("shard-000001.tar", 2)]
    assert ins.problems == [] and len(ins.picks) == 4


@pytest.mark.slow
def test_pretrain_runs_one_process_without_a_launcher(tmp_path):
    shards = make_shards(tmp_path / "b", [40])
    proc = run([BIN / "usfmae", "pretrain", "--cpu", "--config", REPO / "configs/pretrain_tiny.yaml", "--shards", shards,
                "--output", tmp_path / "run", "--max-steps", "2", "--set", "logging.every_steps=1"])
    assert "pretraining in one process" in proc.stderr
    steps = [json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in steps if "loss" in r] == [1, 2]
    create_model("mae_vit_tiny_patch8").load_state_dict(load_file(tmp_path / "run/model.safetensors"), strict=True)
