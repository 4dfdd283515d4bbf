"""A resolved search space as KerasTuner hyperparameters, and a trial's values as a RunConfig."""

from __future__ import annotations

import copy

from esc50tf.models import registry
from esc50tf.tune.space import PARAMS, condition_of, round_value, snr_pair


class SearchSpace:
    """Declares the space on a `keras_tuner.HyperParameters` and maps values to RunConfigs.

    Args:
        space: dict. A resolved space (`resolve_space`).
        models: tuple of str. Candidate Keras models; more than one adds a
            "model" choice.
        base: dict. Config sections every trial starts from (flags, data, protocol).
        preset: str. "default" or "seed".
    """

    def __init__(self, space, models, base, preset="default"):
        from esc50tf.run_config import resolve_config

        self.space = dict(space)
        self.models = tuple(models)
        self.base = copy.deepcopy(base)
        self.preset = preset
        self._resolve = resolve_config
        # Values a setting takes when it is not searched, per model (preset + flags).
        self._base_configs = {m: resolve_config(m, preset, base=self.base) for m in self.models}
        self.base_config = self._base_configs[self.models[0]]
        if not any(c.model.weights for c in self._base_configs.values()):
            # Only pretrained backbones are frozen or learn more slowly than the head.
            for name in ("freeze_backbone", "backbone", "trunk_lr_scale"):
                self.space.pop(name, None)
        # Settings bounded by another: no trial may draw a value it cannot build.
        self._bound("hop_length", lambda: self._fewest("n_fft"))  # no sample skipped
        self._bound("n_mels", lambda: self._fewest("n_fft") // 2 + 1)  # one band per bin
        self._bound("n_mfcc", lambda: self._fewest("n_mels"))  # coefficients <= bands

    def _fewest(self, name):
        """The smallest value `name` can take in this search."""
        entry = self.space.get(name)
        if entry is not None and entry["type"] == "int":
            return int(entry["min"])
        return min(int(v) for v in self._candidates(name))

    def _bound(self, name, limit):
        """Drops the values of `name` above `limit()` (a fixed entry at the limit if none is
        left); a no-op when `name` is not searched."""
        entry = self.space.get(name)
        if entry is None or entry["type"] not in ("choice", "int"):
            return
        most = limit()
        if entry["type"] == "int":
            if entry["max"] > most:
                entry = (dict(entry, max=most) if entry["min"] < most
                         else {"type": "fixed", "value": most})
        else:
            kept = [v for v in entry["values"] if v <= most]
            if not kept:
                entry = {"type": "fixed", "value": most}
            elif len(kept) < len(entry["values"]):
                default = entry.get("default")
                entry = dict(entry, values=kept, default=default if default in kept else kept[0])
        self.space[name] = entry

    def _candidates(self, name):
        """Every value `name` can take in this search."""
        if name == "model":
            return list(self.models)
        entry = self.space.get(name)
        if entry is not None:
            if entry["type"] == "choice":
                return list(entry["values"])
            if entry["type"] == "fixed":
                return [entry["value"]]
            return None  # a range: never a parent
        p = PARAMS[name]
        return sorted({getattr(getattr(c, p.section), p.key) for c in self._base_configs.values()},
                      key=str)

    def condition(self, name):
        """None (always searched), False (never: cannot apply) or `(parent, values)`."""
        when = condition_of(name)
        if when is None:
            return None
        parent, wanted = when
        candidates = self._candidates(parent)
        active = [v for v in candidates if v in wanted]
        if not active:
            return False
        if len(active) == len(candidates):
            return None
        if parent in self.space or (parent == "model" and len(self.models) > 1):
            return parent, active
        return None  # the parent varies with the model's preset: apply it anyway

    def declare(self, hp):
        """Declares every hyperparameter on `hp`; returns the active values by name."""
        values = {}
        if len(self.models) > 1:
            values["model"] = hp.Choice("model", list(self.models), default=self.models[0])
        for name, entry in self.space.items():
            cond = self.condition(name)
            if cond is False:
                continue
            kw = {"parent_name": cond[0], "parent_values": list(cond[1])} if cond else {}
            kind = entry["type"]
            if kind == "float":
                value = hp.Float(name, entry["min"], entry["max"], step=entry.get("step"),
                                 sampling=entry.get("sampling", "linear"),
                                 default=entry.get("default"), **kw)
            elif kind == "int":
                value = hp.Int(name, entry["min"], entry["max"], step=entry.get("step"),
                               sampling=entry.get("sampling", "linear"),
                               default=entry.get("default"), **kw)
            elif kind == "choice":
                value = hp.Choice(name, entry["values"], default=entry.get("default"), **kw)
            elif kind == "fixed":
                value = hp.Fixed(name, entry["value"], **kw)
            else:
                value = hp.Boolean(name, default=entry.get("default", False), **kw)
            if value is not None:  # None: inactive in this trial
                values[name] = value
        return values

    def run_config(self, values, **train):
        """The full RunConfig of a trial's values.

        Args:
            values: dict name -> value (from `declare`, or a trial's values).
            **train: further train settings (out, epochs, protocol...).
        """
        model = values.get("model", self.models[0])
        base = copy.deepcopy(self.base)
        base.setdefault("train", {}).update(train)
        base_mix = self._base_configs.get(model, self._base_configs[self.models[0]]).augment.mix
        over = {"train": {}, "model": {}, "features": {}, "augment": {}}
        for name, value in values.items():
            p = PARAMS.get(name)
            if p is None or name == "model":
                continue  # e.g. Hyperband's tuner/epochs
            if p.kind == "int":
                value = int(value)
            elif p.kind == "real":
                value = round_value(value)
            elif p.kind == "bool":
                value = bool(value)
            if name == "noise_snr":
                value = snr_pair(value)
            if name == "mixup_alpha":
                if value == 0:
                    over["augment"]["mix"] = "none"
                else:
                    over["augment"]["mix"] = base_mix if base_mix != "none" else "mixup"
                    over["augment"]["mixup_alpha"] = value
                continue
            over[p.section][p.key] = value
        registry.fit_trial(model, base, over)  # what the family cannot take
        return self._resolve(model, self.preset, base=base, overrides=over)

    def default_values(self):
        """The values of a trial at every entry's default (for an early sanity check)."""
        import keras_tuner as kt

        return self.declare(kt.HyperParameters())
