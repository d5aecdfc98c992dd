import pytest

from galaxytune.config import Config, load_config
from galaxytune.errors import ConfigError


def test_defaults_and_overrides_parse_yaml_values():
    cfg = load_config(overrides=["finetune.lr=3e-4", "model.kwargs={pad_type: same}", "transfer.enabled=false"])
    assert cfg.finetune.lr == pytest.approx(3e-4)
    assert cfg.model.kwargs == {"pad_type": "same"}
    assert cfg.transfer.enabled is False
    assert cfg.model.name == Config().model.name == "mobilenetv1_100"


def test_yaml_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("finetune:\n  epochs: 7\n  lr: 0.01\ndata:\n  image_size: 96\n")
    cfg = load_config(path, ["finetune.lr=0.02"])
    assert (cfg.finetune.epochs, cfg.finetune.lr, cfg.data.image_size) == (7, 0.02, 96)


@pytest.mark.parametrize(
    "override, named",
    [
        ("finetune.learning_rate=1", "finetune.learning_rate"),
        ("fintune.lr=1", "fintune"),
        ("data.imagesize=3", "data.imagesize"),
    ],
)
def test_unknown_key_is_named(override, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load_config(overrides=[override])


def test_unknown_key_in_file_is_named_with_suggestion(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("decision:\n  metrik: accuracy\n")
    with pytest.raises(ConfigError, match=r"decision\.metrik.*decision\.metric"):
        load_config(path)


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match="decision.metric"):
        load_config(overrides=["decision.metric=auc"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("/nonexistent/config.yaml")


def test_config_round_trips_through_saved_yaml(tmp_path):
    cfg = load_config(overrides=["finetune.top_blocks=2", "model.mean=[0.5, 0.5, 0.5]"])
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_scalar_types_are_checked():
    with pytest.raises(ConfigError, match="finetune.epochs.*integer"):
        load_config(overrides=["finetune.epochs=2.5"])
    with pytest.raises(ConfigError, match="transfer.enabled.*true or false"):
        load_config(overrides=["transfer.enabled=maybe"])
    assert load_config(overrides=["finetune.epochs=3.0"]).finetune.epochs == 3


def test_shipped_presets_load():
    from pathlib import Path

    presets = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
    assert presets
    for preset in presets:
        load_config(preset)


def test_words_yaml_1_1_would_turn_into_booleans_stay_words(tmp_path):
    cfg = load_config(overrides=["data.leakage=off", "data.cache_images=no", "finetune.augment=false"])
    assert (cfg.data.leakage, cfg.data.cache_images, cfg.finetune.augment) == ("off", "no", False)
    path = tmp_path / "c.yaml"
    path.write_text("data:\n  leakage: off\n  cache_images: yes\n")
    assert (load_config(path).data.leakage, load_config(path).data.cache_images) == ("off", "yes")
