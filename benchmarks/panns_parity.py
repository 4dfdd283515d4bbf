"""PANNs conversion parity: esc50tf's CNN14s against the reference implementation's outputs.

Reads the committed fixtures of `tools/make_panns_fixtures.py` (made in a
separate environment with PyTorch and `panns-inference`: each architecture
from the reference package's own classes at reduced width, random weights,
saved in both PyTorch formats, with the reference outputs for three 2 s
waveforms), converts every checkpoint with esc50tf (no PyTorch), runs the
Keras model on the same int16 samples and reports, per architecture and
format: the log-Mel's max |difference| in dB over every bin, both sides
clamped at 80 dB below the clip's peak (digital silence, at the reference's
-100 dB floor, is compared wherever that floor is within 80 dB of the peak),
and for the embedding, the logits and the clip-wise (and,
for the SED variant, frame-wise) outputs max |difference| / max |reference|.
`tests/test_pretrained.py` holds these to 0.01 dB and 1e-4.

Usage:
    python -m benchmarks.panns_parity       # seconds; no --quick needed
    # the models at their real widths (writes about 2 GB; PyTorch in another venv):
    /work/torchenv/bin/python tools/make_panns_fixtures.py --full-size --out /tmp/fullsize \
        --sample-clip ../shared/esc50-sample/audio/2-104877-A-3.wav --training-code CHECKOUT
    python -m benchmarks.panns_parity --fixtures /tmp/fullsize

Writes `OUT/panns_parity-full-cpu.json` and `.md` (with `--fixtures`,
`panns_parity_full_size-full-cpu`; OUT defaults to benchmarks/results) and
prints the table, with the seconds each conversion took (read, convert, load
into the model) and the process's peak resident memory after it.
"""

from __future__ import annotations

import sys

from benchmarks import common

FIXTURES = common.REPO_ROOT / "tests" / "fixtures" / "panns"
RATES = {"cnn14": "32k", "cnn14_16k": "16k", "cnn14_sed": "32k"}
FORMATS = ("zip", "legacy")
RANGE_DB = 80.0
OUTPUTS = ("embedding", "logits", "clipwise", "framewise")


def parse_args(argv=None):
    parser = common.make_parser(__doc__.split("\n\n")[0], full_help="every fixture.",
                                quick_help="the same (it takes seconds).", data_help=None)
    parser.add_argument("--fixtures", metavar="DIR", default=None,
                        help="fixtures made by `tools/make_panns_fixtures.py --full-size "
                             "--out DIR` (default: the committed reduced-width ones)")
    return parser.parse_args(argv)


def relative(got, want):
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def measure(arch, fmt, fixtures=FIXTURES):
    """One architecture read from one checkpoint format: its row of differences."""
    import resource
    import time

    import keras
    import numpy as np

    from esc50tf.models.panns import build_reference
    from esc50tf.pretrained.checkpoint import read_torch_checkpoint
    from esc50tf.pretrained.convert import convert_state_dict, load_into

    with np.load(fixtures / f"{arch}.outputs.npz") as data:
        ref = dict(data)
    with np.load(fixtures / f"waveforms_{RATES[arch]}.npz") as data:
        x = data["pcm"].astype(np.float32) / 32768.0
    widths = tuple(int(w) for w in ref["widths"])
    model = build_reference(arch, widths=widths, embedding_size=int(ref["embedding_size"]))
    start = time.perf_counter()
    state = read_torch_checkpoint(fixtures / f"{arch}.{fmt}.pth")
    load_into(model, convert_state_dict(arch, state, widths=widths))
    seconds = time.perf_counter() - start
    del state
    out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    out["logits"] = np.asarray(keras.Model(model.input,
                                           model.get_layer("fc_audioset").output)(x))
    floor = ref["logmel"].max(axis=(1, 2), keepdims=True) - RANGE_DB
    clamped = [np.maximum(v, floor) for v in (out["logmel"], ref["logmel"])]
    row = {"name": f"{arch}-{fmt}", "arch": arch, "format": fmt,
           "logmel_max_db": float(np.max(np.abs(clamped[0] - clamped[1]))),
           "logmel_bins_at_the_floor": round(float((ref["logmel"] <= floor).mean()), 4),
           "widths": list(widths), "convert_seconds": round(seconds, 2),
           "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
    if arch == "cnn14_sed":  # the reference has per-step fc1 only: its maximum over time
        ref["embedding"] = ref["embedding"].max(axis=1)
    for key in OUTPUTS:
        row[f"{key}_relative"] = relative(out[key], ref[key]) if key in ref else None
    return row


def main(argv=None):
    from pathlib import Path

    args, env = common.start(parse_args, argv)
    fixtures = Path(args.fixtures) if args.fixtures else FIXTURES
    rows = []
    for arch in RATES:
        for fmt in FORMATS:
            common.log(f"{arch} ({fmt})")
            rows.append(measure(arch, fmt, fixtures))
    name = "panns_parity_full_size" if args.fixtures else "panns_parity"
    payload = common.new_payload(name, args.quick)
    payload.update({
        "device": {"label": "cpu"}, "environment": common.finish_environment(env),
        "config": {"fixtures": (str(FIXTURES.relative_to(common.REPO_ROOT))
                                if fixtures == FIXTURES else str(fixtures)),
                   "logmel_range_db": RANGE_DB, "command": common.command_line(argv)},
        "results": rows,
        "notes": ["logmel_max_db: max |esc50tf - reference| over every bin, both sides "
                  "clamped at each clip's peak - 80 dB; *_relative: max |difference| / "
                  "max |reference|.",
                  ("Reduced-width models" if fixtures == FIXTURES else "Full-size models")
                  + " with random weights (tools/make_panns_fixtures.py); the official "
                  "checkpoints are not read here.",
                  "convert_seconds: reading the checkpoint, converting it and loading it "
                  "into the model; peak_rss_mb: the process's peak after it (cumulative)."],
    })
    columns = [("model, format", lambda r: f"`{r['name']}`"),
               ("log-Mel max dB", lambda r: r["logmel_max_db"])]
    columns += [(key, lambda r, key=key: r[f"{key}_relative"]) for key in OUTPUTS]
    columns += [("convert s", lambda r: r["convert_seconds"]),
                ("peak RSS MB", lambda r: r["peak_rss_mb"])]
    common.write_parity_report(args.out, name, payload, rows, columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
