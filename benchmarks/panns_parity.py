"""PANNs conversion parity: esc50tf's CNN14s against the reference implementation's outputs.

Reads the committed fixtures of `tools/make_panns_fixtures.py` (made in a
separate environment with PyTorch and `panns-inference`: each architecture
from the reference package's own classes at reduced width, random weights,
saved in both PyTorch formats, with the reference outputs for three 2 s
waveforms), converts every checkpoint with esc50tf (no PyTorch), runs the
Keras model on the same int16 samples and reports, per architecture and
format: the log-Mel's max |difference| in dB over the bins within 80 dB of
each clip's peak, and for the embedding, the logits and the clip-wise (and,
for the SED variant, frame-wise) outputs max |difference| / max |reference|.
`tests/test_pretrained.py` holds these to 0.01 dB and 1e-4.

Usage:
    python -m benchmarks.panns_parity       # seconds; no --quick needed

Writes `OUT/panns_parity-full-cpu.json` and `.md` (OUT defaults to
benchmarks/results) and prints the table.
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
    return parser.parse_args(argv)


def relative(got, want):
    import numpy as np

    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def measure(arch, fmt):
    """One architecture read from one checkpoint format: its row of differences."""
    import keras
    import numpy as np

    from esc50tf.models.panns import build_reference
    from esc50tf.pretrained.checkpoint import read_torch_checkpoint
    from esc50tf.pretrained.convert import convert_state_dict, load_into

    with np.load(FIXTURES / f"{arch}.outputs.npz") as data:
        ref = dict(data)
    with np.load(FIXTURES / f"waveforms_{RATES[arch]}.npz") as data:
        x = data["pcm"].astype(np.float32) / 32768.0
    widths = tuple(int(w) for w in ref["widths"])
    model = build_reference(arch, widths=widths, embedding_size=int(ref["embedding_size"]))
    state = read_torch_checkpoint(FIXTURES / f"{arch}.{fmt}.pth")
    load_into(model, convert_state_dict(arch, state, widths=widths))
    out = {k: np.asarray(v) for k, v in model(x, training=False).items()}
    out["logits"] = np.asarray(keras.Model(model.input,
                                           model.get_layer("fc_audioset").output)(x))
    peak = ref["logmel"].max(axis=(1, 2), keepdims=True)
    near = ref["logmel"] >= peak - RANGE_DB
    row = {"name": f"{arch}-{fmt}", "arch": arch, "format": fmt,
           "logmel_max_db": float(np.max(np.abs(out["logmel"] - ref["logmel"])[near])),
           "logmel_bins_compared": round(float(near.mean()), 4)}
    if arch == "cnn14_sed":  # the reference has per-step fc1 only: its maximum over time
        ref["embedding"] = ref["embedding"].max(axis=1)
    for key in OUTPUTS:
        row[f"{key}_relative"] = relative(out[key], ref[key]) if key in ref else None
    return row


def main(argv=None):
    args, env = common.start(parse_args, argv)
    rows = []
    for arch in RATES:
        for fmt in FORMATS:
            common.log(f"{arch} ({fmt})")
            rows.append(measure(arch, fmt))
    payload = common.new_payload("panns_parity", args.quick)
    payload.update({
        "device": {"label": "cpu"}, "environment": common.finish_environment(env),
        "config": {"fixtures": str(FIXTURES.relative_to(common.REPO_ROOT)),
                   "logmel_range_db": RANGE_DB, "command": common.command_line(argv)},
        "results": rows,
        "notes": ["logmel_max_db: max |esc50tf - reference| over the bins within 80 dB of "
                  "each clip's peak; *_relative: max |difference| / max |reference|.",
                  "Reduced-width models with random weights (tools/make_panns_fixtures.py); "
                  "the official checkpoints are not read here."],
    })
    columns = [("model, format", lambda r: f"`{r['name']}`"),
               ("log-Mel max dB", lambda r: r["logmel_max_db"])]
    columns += [(key, lambda r, key=key: r[f"{key}_relative"]) for key in OUTPUTS]
    markdown = "\n".join([
        "# panns_parity (CPU)", "",
        f"{payload['created']}; esc50tf's conversion of the fixtures in "
        f"`{payload['config']['fixtures']}` against the reference outputs.", "",
        common.markdown_table(rows, columns)])
    common.write_report(args.out, "cpu", payload, markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
