"""The pretrained checkpoints esc50tf knows: the official PANNs and EfficientAT files.

The authors published their AudioSet-trained checkpoints on Zenodo, record
3987831 (https://zenodo.org/records/3987831). What is recorded here and
where it comes from:

- file names and URLs: the Zenodo record's file list (the names carry the
  AudioSet mAP the authors report: `Cnn14_mAP=0.431.pth`...);
- md5 and size: the digest and byte size Zenodo publishes for each file
  (as quoted, identically, by several projects that verified their
  downloads against the record; this machine cannot reach Zenodo);
- sha256: NOT published by the authors or Zenodo. The values recorded are
  the sha256 of md5-verified downloads as documented, identically, by at
  least four independent projects per file; a download must match size,
  md5 and sha256, and the sha256 of every converted file is kept in its
  metadata;
- licence: the record's licence, Creative Commons Attribution 4.0 (its
  metadata `license.id = cc-by-4.0`, as quoted by users of the record).

More entries (a mirror, a checkpoint of your own in the same layout) can be
added without editing esc50tf: point the `ESC50TF_PRETRAINED_CATALOG`
environment variable at a JSON file holding a list of objects with the
fields of :class:`Checkpoint`. The tests use this for a reduced-width
checkpoint served from a `file://` URL.
"""

from __future__ import annotations

import dataclasses
import os

from esc50tf.errors import Esc50Error
from esc50tf.io import read_json

__all__ = ["CATALOG_ENV", "Checkpoint", "CHECKPOINTS", "checkpoints", "get"]

CATALOG_ENV = "ESC50TF_PRETRAINED_CATALOG"
ZENODO_RECORD = "https://zenodo.org/records/3987831"
_LICENCE = "CC BY 4.0"


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """One downloadable checkpoint.

    Args:
        name: str. What users type (`pretrained download NAME`,
            `train --weights NAME`).
        architecture: str. A key of `esc50tf.pretrained.architectures.ARCHITECTURES`.
        file_name: str. The file's name at its source.
        url: str. Where to download it (http(s):// or file://).
        md5: str or None. Published md5 of the file.
        sha256: str or None. Published sha256 of the file.
        size: int or None. Size in bytes.
        licence: str. Licence of the weights.
        audioset_map: float or None. AudioSet mAP the authors report.
        widths: tuple of ints or None. Conv widths, None for the
            architecture's own (only reduced test checkpoints set it).
        note: str. Shown by `pretrained list`.
    """

    name: str
    architecture: str
    file_name: str
    url: str
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None
    licence: str = _LICENCE
    audioset_map: float | None = None
    widths: tuple | None = None
    note: str = ""

    def __post_init__(self):
        if self.widths is not None:
            object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))


def _zenodo(file_name):
    return f"{ZENODO_RECORD}/files/{file_name.replace('=', '%3D')}?download=1"


CHECKPOINTS = {
    c.name: c
    for c in (
        Checkpoint("cnn14", "cnn14", "Cnn14_mAP=0.431.pth", _zenodo("Cnn14_mAP=0.431.pth"),
                   md5="541141fa2ee191a88f24a3219fff024e", size=327_428_481,
                   sha256="0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31",
                   audioset_map=0.431, note="CNN14, 32 kHz"),
        Checkpoint("cnn14_16k", "cnn14_16k", "Cnn14_16k_mAP=0.438.pth",
                   _zenodo("Cnn14_16k_mAP=0.438.pth"),
                   md5="362fc5ff18f1d6ad2f6d464b45893f2c", size=358_668_570,
                   sha256="e2ee543a27919542c2ea03eabaa70b24dcd4e6c8e05621de6b67a94e4c5058e6",
                   audioset_map=0.438,
                   note="CNN14, 16 kHz front end (512 / 160, 50-8000 Hz)"),
        Checkpoint("cnn14_sed", "cnn14_sed", "Cnn14_DecisionLevelMax_mAP=0.385.pth",
                   _zenodo("Cnn14_DecisionLevelMax_mAP=0.385.pth"),
                   md5="70539c43c18b6a289b3199c503a82c5a", size=327_428_481,
                   sha256="dd3b4043a87d4ec13df8082c0fcfee3fb5084151808e47e060987a95eabdd142",
                   audioset_map=0.385,
                   note="CNN14 decision-level max (frame-wise outputs), 32 kHz"),
    )
}
"""The official checkpoints, by esc50tf name."""


EFFICIENTAT_RELEASE = "https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1"
"""Where EfficientAT's `models/mn/model.py` and `models/dymn/model.py` download their AudioSet
weights from.

The release publishes neither a size nor a hash for its files (the
reference loads them with `torch.hub.load_state_dict_from_url` and no
`check_hash`), so these entries have none: a download is accepted when it
reads as the architecture's state dict and loads into the Keras model, and
its sha256 is then recorded in the cache (`pinned_sha256.json`); every later
download of that name must match it. The mAP is the authors', from the file
name (mn) or the README's model table (dymn); the licence is the repository's
(MIT)."""

_NO_HASH = "no published hash: sha256 pinned at the first verified download"


def _efficientat(name, file_name, audioset_map, note):
    return Checkpoint(name, name.split("_")[0], file_name, f"{EFFICIENTAT_RELEASE}/{file_name}",
                      licence="MIT", audioset_map=audioset_map, note=f"{note}; {_NO_HASH}")


CHECKPOINTS.update({
    c.name: c
    for c in (
        _efficientat("mn04_as", "mn04_as_mAP_432.pt", 0.432,
                     "EfficientAT MobileNetV3 width 0.4 (0.98 M parameters), 32 kHz"),
        _efficientat("mn05_as", "mn05_as_mAP_443.pt", 0.443,
                     "EfficientAT MobileNetV3 width 0.5 (1.43 M parameters), 32 kHz"),
        _efficientat("mn10_as", "mn10_as_mAP_471.pt", 0.471,
                     "EfficientAT MobileNetV3 width 1.0 (4.88 M parameters), 32 kHz"),
        _efficientat("mn20_as", "mn20_as_mAP_478.pt", 0.478,
                     "EfficientAT MobileNetV3 width 2.0 (17.9 M parameters), 32 kHz"),
        _efficientat("mn30_as", "mn30_as_mAP_482.pt", 0.482,
                     "EfficientAT MobileNetV3 width 3.0 (39.1 M parameters), 32 kHz"),
        _efficientat("mn40_as", "mn40_as_mAP_484.pt", 0.484,
                     "EfficientAT MobileNetV3 width 4.0 (68.4 M parameters), 32 kHz"),
        _efficientat("mn40_as_ext", "mn40_as_ext_mAP_487.pt", 0.487,
                     "EfficientAT MobileNetV3 width 4.0, longer training (68.4 M parameters), "
                     "32 kHz"),
        # The files models/dymn/model.py names "dymn04_as", "dymn10_as", "dymn20_as".
        _efficientat("dymn04_as", "dymn04_as.pt", 0.450,
                     "EfficientAT dynamic MobileNet width 0.4 (1.96 M parameters), 32 kHz"),
        _efficientat("dymn10_as", "dymn10_as.pt", 0.477,
                     "EfficientAT dynamic MobileNet width 1.0 (10.5 M parameters), 32 kHz"),
        _efficientat("dymn20_as", "dymn20_as_mAP_493.pt", 0.491,
                     "EfficientAT dynamic MobileNet width 2.0 (40.0 M parameters), 32 kHz; "
                     "mAP .491 as the README's table gives it (the file name says .493)"),
    )
})


def _extra(path):
    entries = read_json(path)  # names the file if it is missing or not JSON
    if not isinstance(entries, list):
        raise Esc50Error(f"{CATALOG_ENV}={path}: expected a JSON list of checkpoints")
    fields = {f.name for f in dataclasses.fields(Checkpoint)}
    extra = {}
    for i, entry in enumerate(entries):
        unknown = set(entry) - fields if isinstance(entry, dict) else {"(not an object)"}
        if unknown:
            raise Esc50Error(f"{CATALOG_ENV}={path}: entry {i}: unknown field(s) "
                             f"{', '.join(sorted(unknown))}; allowed: {', '.join(sorted(fields))}")
        try:
            c = Checkpoint(**entry)
        except TypeError as err:
            raise Esc50Error(f"{CATALOG_ENV}={path}: entry {i}: {err}") from None
        extra[c.name] = c
    return extra


def checkpoints():
    """Every known checkpoint: the official ones, then those of `$ESC50TF_PRETRAINED_CATALOG`."""
    found = dict(CHECKPOINTS)
    if os.environ.get(CATALOG_ENV):
        found.update(_extra(os.environ[CATALOG_ENV]))
    return found


def get(name):
    """The checkpoint called `name`; Esc50Error listing the known names otherwise."""
    known = checkpoints()
    if name not in known:
        raise Esc50Error(f"unknown pretrained checkpoint {name!r}; known: {', '.join(known)}")
    return known[name]
