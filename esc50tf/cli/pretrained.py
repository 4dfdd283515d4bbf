"""`esc50tf pretrained list | download NAME | convert NAME CHECKPOINT --out FILE`."""

from __future__ import annotations

import json

from esc50tf.cli.command import Command
from esc50tf.cli.options import add_quiet


def _add_pretrained(p):
    """list, download or convert AudioSet-pretrained PANNs and EfficientAT weights

    AudioSet-pretrained checkpoints: PANNs (Kong et al. 2020, Zenodo record 3987831) and
    EfficientAT's MobileNetV3s (Schmid et al. 2023, GitHub releases of fschmid56/EfficientAT):
    list them, download one into the cache (converted to Keras weights), or convert a .pth
    you already have. Reading a checkpoint needs no PyTorch, and a checkpoint whose pickle
    asks for anything but tensors is refused.
    """
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True

    ls = actions.add_parser("list", help="every supported checkpoint, with its source and licence")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.add_argument("--cache-dir", help="weights cache (default: $XDG_CACHE_HOME/esc50tf/"
                    "pretrained or ~/.cache/esc50tf/pretrained); marks what is cached")
    ls.set_defaults(handler=_run_list)

    dl = actions.add_parser(
        "download", help="download a checkpoint, verify it, convert it into the cache",
        description="Download the official checkpoint NAME with a progress bar (resuming an "
        "interrupted download where the server allows it), verify its checksum, convert it "
        "to Keras weights and store them in the cache, where `train --weights NAME` and "
        "`embed NAME` find them.")
    dl.add_argument("name", metavar="NAME", help="a name from `esc50tf pretrained list`")
    dl.add_argument("--url", help="download from here instead (a mirror, or file:///path); "
                    "the file must still match the catalog's checksum")
    dl.add_argument("--cache-dir", help="weights cache (default: $XDG_CACHE_HOME/esc50tf/"
                    "pretrained or ~/.cache/esc50tf/pretrained)")
    dl.add_argument("--keep-checkpoint", action="store_true",
                    help="keep the downloaded .pth in CACHE/downloads")
    dl.add_argument("--overwrite", action="store_true", help="convert again if already cached")
    add_quiet(dl)
    dl.set_defaults(handler=_run_download)

    cv = actions.add_parser(
        "convert", help="convert a .pth you have into a Keras weights file (offline)",
        description="Convert a PANNs or EfficientAT checkpoint you fetched yourself into an "
        "esc50tf weights file (.npz, no pickle) with a JSON sidecar recording the model, the "
        "source file, its sha256 and the date. NAME is the architecture, not the catalog "
        "name: `esc50tf pretrained convert mn10 mn10_as_mAP_471.pt --out mn10.weights.npz`.")
    cv.add_argument("name", metavar="NAME", help="its architecture: "
                    + ", ".join(_architectures()))
    cv.add_argument("checkpoint", metavar="CHECKPOINT.pth", help="the PyTorch checkpoint")
    cv.add_argument("--out", required=True, metavar="FILE",
                    help="weights file to write (e.g. cnn14.weights.npz, mn10.weights.npz)")
    cv.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    cv.set_defaults(handler=_run_convert)


def _architectures():
    from esc50tf.pretrained import architectures

    return architectures.names()


def _size(n):
    return f"{n / 1e6:.1f} MB" if n else "-"


def _pinned(name, cache_dir):
    from esc50tf.pretrained import store

    pinned = store.pinned_sha256(name, cache_dir)
    if pinned:
        return f"{pinned} (recorded at the first verified download; none published)"
    return "not recorded"


def _run_list(args):
    from esc50tf.pretrained import catalog, store

    rows = []
    for c in catalog.checkpoints().values():
        cached = store.weights_path(c.name, args.cache_dir).is_file()
        rows.append({
            "name": c.name, "architecture": c.architecture, "file": c.file_name,
            "url": c.url, "size": c.size, "md5": c.md5,
            "sha256": c.sha256 or _pinned(c.name, args.cache_dir), "licence": c.licence,
            "audioset_map": c.audioset_map, "cached": cached, "note": c.note,
        })
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        mark = " (cached)" if r["cached"] else ""
        mAP = f"{r['audioset_map']:.3f}" if r["audioset_map"] is not None else "-"
        print(f"{r['name']}{mark}: {r['note']}")
        print(f"  file {r['file']}, {_size(r['size'])}, AudioSet mAP {mAP} (authors'), "
              f"licence {r['licence']}")
        print(f"  md5 {r['md5'] or '-'}, sha256 {r['sha256']}")
        print(f"  {r['url']}")
    return 0


def build_reference(architecture, **kwargs):
    """The reference model of `architecture`, built by its family's module (PANNs, EfficientAT)."""
    from esc50tf.models import registry

    return registry.trunk_module(architecture).build_reference(architecture, **kwargs)


def _run_download(args):
    from esc50tf.pretrained import store

    path, meta = store.download(args.name, build=build_reference, url=args.url,
                                cache_dir=args.cache_dir, overwrite=args.overwrite,
                                keep_checkpoint=args.keep_checkpoint,
                                progress=not args.quiet)
    print(path)
    return 0


def _run_convert(args):
    from esc50tf.pretrained import store

    path, meta = store.convert_checkpoint(args.name, args.checkpoint, args.out,
                                          build=build_reference, overwrite=args.overwrite)
    print(path)
    return 0


# Downloading and converting build the model in Keras.
COMMANDS = (Command("pretrained", _add_pretrained, None,
                    tensorflow=lambda args: args.action != "list"),)
