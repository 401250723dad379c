"""Config loading, validation errors naming the key, overrides, schedule."""

import math

import pytest
import yaml

from usfmae import cli
from usfmae.config import ConfigError, PretrainConfig, config_path, load_config, packaged_configs, save_resolved
from usfmae.optim import lr_at

from helpers import REPO

CONFIGS = ["configs/pretrain_vitb16.yaml", "configs/pretrain_tiny.yaml"]


@pytest.mark.parametrize("path", CONFIGS)
def test_shipped_configs_validate(path):
    cfg = load_config(PretrainConfig, path)
    assert cfg.masking.ratio == 0.25 and cfg.deepspeed.gradient_clipping == 1.0


def test_config_names_resolve_to_the_packaged_configs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside the repository: only the package's copy can answer
    packaged = packaged_configs() / "pretrain_tiny.yaml"
    assert packaged.read_text() == (REPO / "configs/pretrain_tiny.yaml").read_text()
    assert config_path("pretrain_tiny") == config_path("pretrain_tiny.yaml") == packaged
    assert config_path("datasets/openus46") == packaged_configs() / "datasets/openus46.yaml"
    assert load_config(PretrainConfig, "pretrain_tiny").model.preset == "mae_vit_tiny_patch8"
    # a file of that name in the working directory is a path, and a path wins over a packaged name
    (tmp_path / "pretrain_tiny.yaml").write_text("model: {preset: mae_vit_base_patch16}\n")
    assert config_path("pretrain_tiny.yaml").resolve() == tmp_path / "pretrain_tiny.yaml"
    assert config_path("pretrain_tiny") == packaged
    assert config_path(REPO / "configs/pretrain_vitb16.yaml") == REPO / "configs/pretrain_vitb16.yaml"


def test_an_unknown_config_name_lists_the_packaged_ones(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        config_path("pretrain_tinny")
    assert "config file not found: pretrain_tinny" in str(err.value)
    for name in ("pretrain_tiny", "pretrain_vitb16", "finetune_tiny", "build_example", "datasets/openus46"):
        assert name in str(err.value)
    with pytest.raises(ConfigError, match="packaged: "):
        config_path(tmp_path / "pretrain_tiny.yaml")  # an absolute path is never looked up by name
    with pytest.raises(ConfigError, match="config file not found:  "):
        config_path("")
    # every command with --config refuses it the same way: exit 2, the value named
    for argv in (["pretrain", "--dry-run", "--config", "pretrain_tinny"], ["finetune", "--config", "pretrain_tinny"],
                 ["finetune", "--task", "segmentation", "--config", "pretrain_tinny"],
                 ["build-shards", "--config", "pretrain_tinny"],
                 ["clean", "--input", str(tmp_path), "--output", str(tmp_path / "qa"), "--config", "pretrain_tinny"]):
        assert cli.main(argv) == 2, argv
        assert "config file not found: pretrain_tinny" in capsys.readouterr().err, argv


def test_paper_recipe_values():
    cfg = load_config(PretrainConfig, "configs/pretrain_vitb16.yaml")
    assert cfg.model.preset == "mae_vit_base_patch16"
    assert (cfg.optimizer.lr, cfg.optimizer.weight_decay, cfg.schedule.min_lr) == (1e-3, 0.01, 1e-5)
    assert cfg.schedule.warmup_fraction == 0.1 and cfg.schedule.epochs == 100
    assert cfg.deepspeed.zero_stage == 2


def test_unknown_key_names_the_path(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"deepspeed": {"zero_stag": 2}}))
    with pytest.raises(ConfigError, match=r"deepspeed\.zero_stag"):
        load_config(PretrainConfig, p)
    with pytest.raises(ConfigError, match=r"optimizer\.lrr"):
        load_config(PretrainConfig, None, ["optimizer.lrr=3"])


def test_bad_value_names_the_key():
    with pytest.raises(ConfigError, match=r"masking\.ratio"):
        load_config(PretrainConfig, None, ["masking.ratio=1.5"])
    with pytest.raises(ConfigError, match=r"deepspeed\.micro_batch_size"):
        load_config(PretrainConfig, None, ["deepspeed.micro_batch_size=lots"])
    with pytest.raises(ConfigError, match="expects dotted.key=value"):
        load_config(PretrainConfig, None, ["seed"])
    with pytest.raises(ConfigError, match="not found"):
        load_config(PretrainConfig, "nope.yaml")


def test_overrides_apply_and_resolved_config_round_trips(tmp_path):
    cfg = load_config(PretrainConfig, "configs/pretrain_tiny.yaml",
                      ["optimizer.lr=2e-3", "data.shards=[a, b]", "data.weights=[0.7, 0.3]"])
    assert cfg.optimizer.lr == 2e-3 and cfg.data.shards == ["a", "b"]
    path = save_resolved(cfg, tmp_path)
    again = load_config(PretrainConfig, path)
    assert again == cfg
    with pytest.raises(ConfigError, match="data.weights has 1 entries"):
        load_config(PretrainConfig, None, ["data.shards=[a, b]", "data.weights=[1]"])


def test_schedule_start_warmup_end():
    total, warm, peak, floor = 1000, 100, 1e-3, 1e-5
    assert lr_at(0, total, peak, floor, warm) == 0.0
    assert lr_at(50, total, peak, floor, warm) == pytest.approx(peak / 2)
    assert lr_at(warm, total, peak, floor, warm) == pytest.approx(peak)
    mid = warm + (total - warm) // 2
    assert lr_at(mid, total, peak, floor, warm) == pytest.approx(floor + (peak - floor) / 2)
    assert lr_at(total, total, peak, floor, warm) == pytest.approx(floor)
    values = [lr_at(s, total, peak, floor, warm) for s in range(warm, total + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert not any(math.isnan(v) for v in values)


def test_flag_overrides_skips_absent_flags_and_keeps_values_typed():
    from usfmae.config import flag_overrides, parse_overrides

    sets = flag_overrides(["epochs=3"], {"data": "/d/with space", "output_dir": None, "cleaning.enabled": False,
                                         "data.shards": ["a.tar", "b.tar"], "schedule.max_steps": 0, "empty": "",
                                         "none": []})
    assert sets[0] == "epochs=3" and len(sets) == 5
    assert parse_overrides(sets[1:]) == [("data", "/d/with space"), ("cleaning.enabled", False),
                                         ("data.shards", ["a.tar", "b.tar"]), ("schedule.max_steps", 0)]
