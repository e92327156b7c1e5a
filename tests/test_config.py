"""The config model: YAML in, dotted overrides, one-line errors; the CLI exits 2 on bad input."""
from __future__ import annotations

import pytest

from orchestrator.cli import main
from orchestrator.config import CONFIG_DIR, Config, ConfigError, build_config, load_config, parse_override


def test_defaults_are_the_paper_recipe():
    config = Config()
    assert (config.augmix.width, config.augmix.depth, config.augmix.severity) == (3, -1, 3)
    assert (config.augmix.alpha, config.augmix.lam, config.augmix.jsd) == (1.0, 12.0, True)
    assert (config.train.lr, config.train.batch_size, config.train.weight_decay) == (0.1, 128, 5e-4)
    assert config.train.nesterov and config.train.momentum == 0.9


def test_overrides_are_typed_yaml_values():
    config = build_config({}, ["train.epochs=3", "augmix.jsd=false", "augmix.lam=0.5",
                               "eval.corruptions=[fog, contrast]", "storage.uri=s3://bucket/run"])
    assert config.train.epochs == 3 and config.augmix.jsd is False and config.augmix.lam == 0.5
    assert config.eval.corruptions == ["fog", "contrast"]
    assert config.storage.uri == "s3://bucket/run"
    assert parse_override("data.path=") == ("data.path", None)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("augmix.width=0", "augmix.width = 0"),
        ("augmix.depth=0", "depth 0 not allowed"),
        ("augmix.severity=11", "augmix.severity = 11"),
        ("augmix.alpha=-1", "augmix.alpha = -1"),
        ("model.name=vgg", "model name 'vgg' is not allowed"),
        ("eval.corruptions=[rain]", "unknown corruption 'rain'"),
        ("eval.severities=[0, 6]", "each must be in 1..5"),
        ("train.epochs=zero", "train.epochs = 'zero'"),
        ("augmix.widht=3", "unknown config key 'augmix.widht'"),
        ("tune.lam={low: -1, high: 5}", "lam range low=-1.0 is negative"),
        ("tune.width=[0, 2]", "mixture width k must be >= 1"),
        ("data.name=parquet", "data.path is required"),
        ("nonsense", "expected key=value"),
    ],
)
def test_bad_values_give_one_line_naming_them(override, fragment):
    with pytest.raises(ConfigError) as error:
        build_config({}, [override])
    message = str(error.value)
    assert fragment in message and "\n" not in message


def test_shipped_configs_validate():
    names = sorted(p.name for p in CONFIG_DIR.glob("*.yaml"))
    assert {"quickstart.yaml", "cifar10_wrn40_2.yaml", "cifar100_wrn40_2.yaml", "imagenet_resnet50.yaml"} <= set(names)
    for name in names:
        load_config(name)  # a bare name resolves inside jobs/configs/


def test_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a\n- list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad)


def test_cli_exits_2_with_one_line(capsys):
    assert main(["train", "--set", "augmix.width=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("augmix: error: config augmix.width = 0") and "\n" not in err


def test_model_options_are_checked_and_typed_when_the_config_is_read():
    assert build_config({}, ["model.options.dropout=1e-3"]).model.options == {"dropout": 0.001}  # YAML: a string
    with pytest.raises(ConfigError, match="option.s. dropot not allowed; allowed: dropout"):
        build_config({}, ["model.options.dropot=0.1"])
    with pytest.raises(ConfigError, match="option dropout='abc': expected float"):
        build_config({}, ["model.options.dropout=abc"])
