"""The shared config base: round trip, unknown keys, frozen, validation messages."""

import dataclasses
import json

import pytest

from esc50tf.config import Config
from esc50tf.errors import Esc50Error


@dataclasses.dataclass(frozen=True)
class Inner(Config):
    width: int = 2
    pair: tuple[float, float] | None = None

    def __post_init__(self):
        if isinstance(self.pair, list):
            self.set_field("pair", tuple(self.pair))
        self.check(isinstance(self.width, int) and self.width >= 1, "width", self.width,
                   "an integer >= 1")


@dataclasses.dataclass(frozen=True)
class Outer(Config):
    label = "outer"
    nested = {"inner": Inner}
    name: str = "x"
    inner: Inner = dataclasses.field(default_factory=Inner)


def test_round_trip_through_json():
    cfg = Outer(name="y", inner=Inner(width=3, pair=(1.0, 2.0)))
    d = json.loads(json.dumps(cfg.to_dict()))
    assert d == {"name": "y", "inner": {"width": 3, "pair": [1.0, 2.0]}}
    assert Outer.from_dict(d) == cfg


def test_missing_keys_take_defaults():
    assert Outer.from_dict({}) == Outer()
    assert Outer.from_dict({"inner": {"width": 5}}).inner == Inner(width=5)


def test_unknown_key_is_named_with_the_allowed_ones():
    with pytest.raises(Esc50Error, match=r"outer: unknown setting\(s\) nmae; allowed: name, inner"):
        Outer.from_dict({"nmae": "z"})
    with pytest.raises(Esc50Error, match=r"Inner: unknown setting\(s\) depth"):
        Outer.from_dict({"inner": {"depth": 1}})


def test_not_a_dict():
    with pytest.raises(Esc50Error, match="expected a dict of settings; received list"):
        Inner.from_dict([1, 2])


def test_check_names_setting_value_and_allowed():
    with pytest.raises(Esc50Error, match=r"Inner.width=0 is not allowed; allowed: an integer >= 1"):
        Inner(width=0)
    with pytest.raises(Esc50Error, match="width=0"):
        Inner().replace(width=0)


def test_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Inner().width = 4


def _esc50tf_classes():
    import importlib
    import pkgutil

    import esc50tf

    for info in pkgutil.walk_packages(esc50tf.__path__, "esc50tf."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for value in vars(module).values():
            if isinstance(value, type) and value.__module__ == info.name:
                yield value


def test_every_config_of_the_package_is_a_frozen_config():
    # One base for every config: a dataclass named ...Config or ...Options anywhere in
    # esc50tf derives from Config, and every Config subclass is a frozen dataclass.
    classes = list(_esc50tf_classes())
    configs = [c for c in classes if dataclasses.is_dataclass(c)
               and c.__name__.endswith(("Config", "Options"))]
    assert len(configs) >= 8, [c.__name__ for c in configs]
    assert [c.__qualname__ for c in configs if not issubclass(c, Config)] == []
    subclasses = [c for c in classes if issubclass(c, Config) and c is not Config]
    assert [c.__qualname__ for c in subclasses
            if not (dataclasses.is_dataclass(c) and c.__dataclass_params__.frozen)] == []
