"""A run's configuration: TrainConfig, RunConfig and ModelConfig on the Config base,
resolution (defaults <- preset <- file <- flags) and the same-run check."""

import dataclasses
import json

import pytest

from esc50tf import presets
from esc50tf.config import Config
from esc50tf.errors import Esc50Error
from esc50tf.models.config import ModelConfig
from esc50tf.run_config import (OPTIMIZERS, RunConfig, TrainConfig, WHERE_KEYS, comparable,
                                config_diff, resolve_config)


def test_every_run_config_is_a_frozen_config():
    cfg = resolve_config("gru", "seed")
    for part in (cfg, cfg.train, cfg.model):
        assert isinstance(part, Config)
        with pytest.raises(dataclasses.FrozenInstanceError):
            part.seed = 1
    assert RunConfig.nested == {"train": TrainConfig, "model": ModelConfig,
                                "features": type(cfg.features), "augment": type(cfg.augment)}


def test_round_trip_through_json_and_missing_sections_take_defaults():
    cfg = resolve_config("gru", "seed", overrides={"train": {"epochs": 3},
                                                    "augment": {"gain_db": [-6.0, 6.0]}})
    d = json.loads(json.dumps(cfg.to_dict()))
    assert sorted(d) == ["augment", "features", "model", "train"]
    assert RunConfig.from_dict(d) == cfg
    assert (cfg.train.optimizer, cfg.train.epochs, cfg.features.n_mels) == ("adam", 3, 128)
    assert RunConfig.from_dict({}) == RunConfig()
    assert RunConfig.from_dict({"model": {"name": "svm"}}).train == TrainConfig()


@pytest.mark.parametrize("d, message", [
    ({"trian": {}}, r"config: unknown setting\(s\) trian; allowed: train, model, features, augment"),
    ({"train": {"epoch": 3}}, r"train: unknown setting\(s\) epoch; allowed: data, out"),
    ({"model": {"dropuot": 0.1}}, r"model: unknown setting\(s\) dropuot; allowed: name, dropout"),
    ({"train": {"schedule": "linear"}}, r"schedule 'linear' is not allowed; allowed: plateau"),
    ({"model": {"dropout": 1.5}}, r"model.dropout=1.5 is not allowed; allowed: a number in \[0, 1\)"),
    ({"model": {"image_channels": 2}}, r"model.image_channels=2 is not allowed"),
    ({"train": {"protocol": "test-fold"}}, "protocol test-fold needs --test-fold K"),
])
def test_bad_settings_are_named(d, message):
    with pytest.raises(Esc50Error, match=message):
        RunConfig.from_dict(d)


def test_preset_layers_and_the_study_and_demo_presets():
    assert resolve_config("bigru", "seed").augment.to_dict().items() >= presets.STUDY_AUGMENT.items()
    over = resolve_config("gru", "seed", base={"train": {"lr": 0.5}},
                          overrides={"train": {"lr": 0.25}})
    assert over.train.lr == 0.25 and over.train.preset == "seed"
    demo = resolve_config(presets.DEMO_MODEL, overrides={
        "train": presets.DEMO_TRAIN, "features": presets.DEMO_FEATURES,
        "augment": presets.DEMO_AUGMENT})
    assert demo.train.epochs == 30 and demo.features.n_mels == 64 and demo.augment.mix == "none"
    assert set(presets.STUDY_GRID_OPTIMIZERS) <= set(OPTIMIZERS)


def test_same_run_check_ignores_where_and_fills_new_fields():
    new = resolve_config("gru", overrides={"train": {"out": "a", "tpu": "x"}}).to_dict()
    old = json.loads(json.dumps(new))
    del old["train"]["swa_fraction"]  # a config.json from before the field existed
    for key in WHERE_KEYS:
        old["train"][key] = "elsewhere"
    assert comparable(old) == comparable(new)
    old["train"]["lr"] = 0.5
    old["model"]["dropout"] = 0.3
    assert comparable(old) != comparable(new)
    lr = new["train"]["lr"]  # the rnn family's recipe
    assert config_diff(old, new) == f"model.dropout 0.3 -> None; train.lr 0.5 -> {lr!r}"
