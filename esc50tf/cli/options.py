"""What the command groups share: value types, the config option tables, run flags.

The option tables are not written here: every config field declared with a
`flag` (`esc50tf.config.setting`) becomes an option, with the field's help,
type and choices. An option defaults to None, so that only the options a
user gives override the preset and any --config file (`overrides`).
"""

from __future__ import annotations

import argparse
import dataclasses

from esc50tf.config import about, cli_options
from esc50tf.run_config import RunConfig, TrainConfig


def number(parse, ok, expected, out_of_range=None):
    """An argparse type: `parse(text)` (int or float) must succeed and satisfy `ok`."""
    def convert(text):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {out_of_range or expected}, got {text!r}")
        return value
    return convert


positive_int = number(int, lambda v: v >= 1, "a positive integer")
positive_float = number(float, lambda v: v > 0, "a positive number")
ratio = number(float, lambda v: 0 < v < 1, "a ratio like 0.9", "a ratio in (0, 1) like 0.9")
fraction = number(float, lambda v: 0 <= v <= 1, "a fraction like 0.9",
                  "a fraction in [0, 1] like 0.9")


def pair(text):
    """`MIN,MAX` -> [min, max] floats."""
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected MIN,MAX like 10,30, got {text!r}") from None
    return [lo, hi]


def optional_float(text):
    """A number, or `none`."""
    if text.lower() == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


# The value types a config field names by string (`setting(type="positive_int")`).
VALUE_TYPES = {"positive_int": positive_int, "positive_float": positive_float, "ratio": ratio,
               "fraction": fraction, "pair": pair, "optional_float": optional_float}


def _table(cls, section):
    out = []
    for flag, sect, key, kwargs in cli_options(cls, section):
        if isinstance(kwargs.get("type"), str):
            kwargs = {**kwargs, "type": VALUE_TYPES[kwargs["type"]]}
        out.append((flag, sect, key, kwargs))
    return out


# Section -> [(flag, section, key, add_argument keywords)], from the run config's fields.
OPTIONS = {section: _table(cls, section) for section, cls in RunConfig.nested.items()}
TRAIN_OPTIONS, MODEL_OPTIONS = OPTIONS["train"], OPTIONS["model"]
FEATURE_OPTIONS, AUGMENT_OPTIONS = OPTIONS["features"], OPTIONS["augment"]


def add_config_options(p, cls):
    """Options for the flagged fields of `cls`, a config made from flags alone (no preset):
    each option defaults to its field's default."""
    defaults = {f.name: f.default for f in dataclasses.fields(cls)}
    for flag, _section, key, kwargs in _table(cls, cls.__name__):
        if "default" not in kwargs["help"]:
            kwargs = {**kwargs, "help": kwargs["help"] + " (default: %(default)s)"}
        p.add_argument(flag, dest=key, default=defaults[key], **kwargs)


def config_from_args(args, cls, **fields):
    """`cls` built from the options `add_config_options` added, and further `fields`."""
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)
                  if about(f).flag is not None}, **fields)


def texts(add_fn):
    """argparse's help, description and epilog of a command, from `add_fn`'s docstring.

    The docstring's first line is the one-line help of `esc50tf --help`; the
    next paragraph, unless it starts with "example", the description (one
    paragraph, re-wrapped by argparse); the rest, kept as written, the epilog.
    """
    import inspect

    first, _, rest = inspect.cleandoc(add_fn.__doc__).partition("\n\n")
    out = {"help": first}
    if rest and not rest.startswith("example"):
        description, _, rest = rest.partition("\n\n")
        out["description"] = " ".join(description.split())
    if rest:
        out["epilog"] = rest
    return out


def add_options(p, table, title, leave_out=()):
    """Adds the options of `table` (but the flags in `leave_out`) as group `title` of `p`."""
    group = p.add_argument_group(title)
    for flag, section, key, kwargs in table:
        if flag in leave_out:
            continue
        if "choices" not in kwargs and "metavar" not in kwargs and "action" not in kwargs:
            kwargs = {**kwargs, "metavar": key.upper()}
        text = kwargs.get("help", "")
        extra = _preset_default(section, key) if "default" not in text else ""
        if not extra and _family_recipes(section, key):
            extra = f" ({_family_recipes(section, key)})"
        kwargs = {**kwargs, "help": text + extra}
        group.add_argument(flag, dest=f"opt_{key}", default=None, **kwargs)
    return group


def _preset_default(section, key):
    """' (default: V; ...)' for a train setting the default preset fixes, else ''."""
    from esc50tf import presets

    if section != "train":
        return ""
    value = presets.preset("default").get(section, {}).get(key)
    recipes = _family_recipes(section, key)
    if value is None and not recipes:
        return ""
    if value is None:
        value = {f.name: f.default for f in dataclasses.fields(TrainConfig)}[key]
    shown = "; ".join(v for v in (_shown(value), recipes) if v)
    return f" (default: {shown}; --preset seed sets it per model)"


def _family_recipes(section, key):
    """"rnn family's recipe: 3e-3" for each family recipe that sets the setting, or ''."""
    from esc50tf.models import registry

    return "; ".join(f"{f.name} family's recipe: {_shown(f.recipe[section][key])}"
                     for f in registry.families() if key in (f.recipe or {}).get(section, {}))


def _shown(value):
    return value if isinstance(value, str) else f"{value:g}"


def overrides(args, *tables):
    """{section: {key: value}} of the options of `tables` the user gave."""
    out = {}
    fields = {s: {f.name: f for f in dataclasses.fields(c)} for s, c in RunConfig.nested.items()}
    for table in tables:
        for _flag, section, key, _ in table:
            value = getattr(args, f"opt_{key}", None)
            if value is None:
                continue
            if value == "none" and None in (about(fields[section][key]).choices or ()):
                value = None  # a None choice, spelled `none` on the command line
            out.setdefault(section, {})[key] = value
    return out


def add_run_flags(p, overwrite_help, every_run=False):
    """The flags `train` and `study` share; `every_run`: study's wording, and no --features
    (study has its own list of front ends)."""
    each = " (every run)" if every_run else ""
    p.add_argument("--jit-compile", action="store_true", default=None, help="XLA-compile the training step")
    p.add_argument("--deterministic", action="store_true", default=None,
                   help="TensorFlow op determinism: bit-identical reruns with the same --seed (slower)")
    p.add_argument("--freeze-backbone", action="store_true", default=None, help="keep the CNN backbone's (or PANNs trunk's) weights fixed; train only the new head")
    p.add_argument("--no-augment", action="store_true", help="switch every augmentation off")
    p.add_argument("--no-export", action="store_true", help="skip the SavedModel export" + each)
    p.add_argument("--overwrite", action="store_true", help=overwrite_help)
    add_options(p, TRAIN_OPTIONS, "training" + each)
    add_options(p, MODEL_OPTIONS, "model" + each)
    add_options(p, FEATURE_OPTIONS, f"front end ({'every run; ' if every_run else ''}librosa names)",
                leave_out=("--features",) if every_run else ())
    add_options(p, AUGMENT_OPTIONS, "augmentation (training batches only)")


def run_overrides(args, protocol=False):
    """Config overrides from the option tables and the on/off switches of train, study and tune."""
    over = overrides(args, *OPTIONS.values())
    t = over.setdefault("train", {})
    if protocol:
        if args.test_fold is not None:
            t.update(protocol="test-fold", test_fold=args.test_fold)
        elif args.split is not None:
            t.update(protocol="split", split_ratio=args.split)
        elif args.cv:
            t.update(protocol="cv")
    for switch in ("jit_compile", "deterministic"):
        if getattr(args, switch, None):
            t[switch] = True
    if getattr(args, "no_export", False):
        t["export"] = False
    if getattr(args, "freeze_backbone", None):
        over.setdefault("model", {})["freeze_backbone"] = True
    return over


def fit_verbosity(args):
    """Keras fit verbosity of a command with --quiet: one line per epoch, or progress bars."""
    return 2 if getattr(args, "quiet", False) else 1


def add_quiet(p, alias=False):
    """`--quiet` (and `--no-progress` with `alias`): no progress bars or per-epoch bars."""
    flags = ("--quiet", "--no-progress") if alias else ("--quiet",)
    p.add_argument(*flags, dest="quiet", action="store_true",
                   help="no progress bars (train, tune, study: one line per epoch)")
