"""What `esc50tf inspect` reports about a TFRecord folder: its manifest, shards and splits.

`summarise` reads the manifest, checks the shards (sha256 and record counts
with `verify`), and makes the splits of a protocol, checking that no
`src_file` crosses sides; `summary_lines` turns the result into the lines the
command prints. A protocol that cannot be made is reported in the summary
(`split_error`) rather than raised, so the counts and warnings still show.

Example:

>>> summary = summarise("tfrecords", protocol="test-fold", test_fold=1)
>>> print("\\n".join(summary_lines(summary)))
"""

from __future__ import annotations

import types

from esc50tf.data import splits
from esc50tf.data import tfrecords as tfr
from esc50tf.data.decode import describe_issues
from esc50tf.errors import Esc50Error

__all__ = ["summarise", "summary_lines"]


def summarise(data, verify=False, protocol=None, test_fold=None, split_ratio=None,
              val_fraction=0.1, seed=0):
    """The manifest summary, warnings and split sizes of TFRecord folder `data`.

    Args:
        data: str. A folder made by build-tfrecords.
        verify: bool. Recompute every shard's sha256 and record count.
        protocol: str or None. "cv", "test-fold" or "split"; None: "cv", or
            "split" at 0.8 for a folder with a single fold (the one protocol it allows).
        test_fold, split_ratio, val_fraction, seed: as in
            `esc50tf.run_config.TrainConfig`.

    Returns:
        dict: "data", "verified", "counts", "folds", "num_classes", "config",
        "skipped", "issues", "shards", "warnings", "splits" (name -> sizes) and
        "split_error" (str or None).
    """
    manifest = tfr.read_manifest(data)
    tfr.verify_shards(data, manifest, full=verify)
    index = splits.load_index(data)
    warnings = splits.fold_warnings(index, split_chosen=protocol == "split")
    if protocol is None:
        protocol = "split" if index["fold"].nunique() < 2 else "cv"
        split_ratio = 0.8 if protocol == "split" else split_ratio
    chosen = types.SimpleNamespace(protocol=protocol, test_fold=test_fold,
                                   split_ratio=split_ratio, val_fraction=val_fraction, seed=seed)
    try:  # the summary and the warnings are shown even when the protocol cannot be made
        made = splits.protocol_splits(chosen, index)
        sizes = {s.name: splits.check_disjoint(s, index) for s in made}
        split_error = None
        warnings += splits.class_warnings(made, index,
                                          [c["category"] for c in manifest["classes"]])
    except Esc50Error as err:
        sizes, split_error = {}, str(err)
    return {"data": str(data), "verified": verify, "counts": manifest["counts"],
            "folds": manifest["folds"], "num_classes": manifest["num_classes"],
            "config": manifest["config"], "skipped": manifest["skipped"],
            "issues": manifest.get("issues", []), "shards": len(manifest["shards"]),
            "warnings": warnings, "splits": sizes,
            "split_error": split_error}


def summary_lines(summary):
    """The human-readable report of `summarise`'s result, one line each (no split error)."""
    cfg, counts = summary["config"], summary["counts"]
    lines = [
        f"{summary['data']}: {counts['total']} clips, {summary['num_classes']} classes, "
        f"{summary['shards']} shards ({'verified' if summary['verified'] else 'present'})",
        f"  audio: {cfg['sample_rate']} Hz, {cfg['clip_seconds']} s ({cfg['num_samples']} "
        f"samples), compression {cfg['compression']}",
        "  clips per fold: " + ", ".join(f"{k}: {v}" for k, v in counts["per_fold"].items()),
    ]
    if summary["skipped"]:
        lines.append(f"  skipped at build time: {len(summary['skipped'])} clip(s)")
        lines += [f"    {item['error']}" for item in summary["skipped"][:10]]
    if summary["issues"]:
        lines.append(f"  suspicious clips kept at build time: {len(summary['issues'])} "
                     "suspicious clip(s) (build-tfrecords --strict refuses them)")
        lines += [f"    {line}" for line in describe_issues(summary["issues"])]
    lines += [f"  warning: {line}" for line in summary["warnings"]]
    if summary["split_error"] is None:
        lines.append("  splits (no src_file on two sides):")
        lines += [f"    {name:>10}: " + ", ".join(f"{k} {v}" for k, v in size.items())
                  for name, size in summary["splits"].items()]
    return lines
