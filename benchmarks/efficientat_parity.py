"""EfficientAT conversion parity: esc50tf's `mn` and `dymn` models against the reference.

Reads fixtures of `tools/make_efficientat_fixtures.py` (made in a separate
environment with PyTorch and a checkout of fschmid56/EfficientAT: the
reference's own `get_model` (mn and dymn) and `AugmentMelSTFT` in eval mode,
random weights, saved as the release files are, with the reference outputs
for six 2 s clips, a 0.1 s and a 10 s one), converts each checkpoint with
esc50tf (no PyTorch), runs the Keras model on the same int16 samples and
reports, per network, width and input set: the log-Mel's max |difference|
(normalised scale; the DyMN fixtures share the mn ones' front end), and for
the embedding and the logits ||difference|| / ||reference|| and
max |difference| / max |reference|, plus the parameter counts of both; with
the reference's float64 outputs beside a checkpoint (`--float64`), how far
each float32 implementation is from them.
`tests/test_efficientat.py` holds the reduced widths to 1e-3 and 1e-4.

Usage:
    python -m benchmarks.efficientat_parity       # the committed fixtures (mn 0.1, 0.2; dymn 0.05)
    # mn10 and dymn10 at their real width (random weights; PyTorch in another venv):
    /work/refenv-efficientat/bin/python tools/make_efficientat_fixtures.py \
        --reference CHECKOUT --full-size --out /tmp/mnfull \
        --sample-clip ../shared/esc50-sample/audio/2-104877-A-3.wav
    python -m benchmarks.efficientat_parity --fixtures /tmp/mnfull

Writes `OUT/efficientat_parity-full-cpu.json` and `.md` (with `--fixtures`,
`efficientat_parity_full_size-full-cpu`; OUT defaults to benchmarks/results).
"""

from __future__ import annotations

import sys

from benchmarks import common

FIXTURES = common.REPO_ROOT / "tests" / "fixtures" / "efficientat"
INPUTS = ("clips", "short", "long")


def parse_args(argv=None):
    parser = common.make_parser(__doc__.split("\n\n")[0], full_help="every fixture.",
                                quick_help="the same (it takes seconds).", data_help=None)
    parser.add_argument("--fixtures", metavar="DIR", default=None,
                        help="fixtures made by `tools/make_efficientat_fixtures.py "
                             "--full-size --out DIR` (default: the committed reduced widths)")
    return parser.parse_args(argv)


# The network of a fixture file `<network>_w<W>.pt` -> the architecture it is built as.
ARCHITECTURE = {"mn": "mn10", "dymn": "dymn10"}


def measure(checkpoint, fixtures):
    """Rows (one per input set) for one fixture checkpoint `mn_<tag>.pt` or `dymn_<tag>.pt`."""
    import time

    import keras
    import numpy as np

    from esc50tf.models.efficientat import build_reference
    from esc50tf.pretrained import efficientat
    from esc50tf.pretrained.checkpoint import read_torch_checkpoint
    from esc50tf.pretrained.convert import load_into

    ref = {}
    for outputs in (sorted(fixtures.glob("mn_*.outputs.npz"))[0],  # the shared log-Mel
                    checkpoint.with_suffix(".outputs.npz")):
        with np.load(outputs) as data:
            ref.update(data)
    truth = checkpoint.with_suffix(".float64.npz")  # `--float64`: the reference in float64
    exact = dict(np.load(truth)) if truth.exists() else {}
    start = time.perf_counter()
    state = read_torch_checkpoint(checkpoint)
    name = ARCHITECTURE[efficientat.network_of(state)]
    arrays, _sources, sizes = efficientat.convert_checkpoint_state(state, name)
    model = build_reference(name, width=sizes["width"])
    load_into(model, arrays)
    width = sizes["width"]
    seconds = time.perf_counter() - start
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    network = keras.Model(model.get_layer("to_frequency_time").input,
                          [model.get_layer("embedding").output, model.get_layer("logits").output])
    rows = []
    with np.load(fixtures / "waveforms.npz") as data:
        waves = {k: data[k].astype(np.float32) / 32768.0 for k in INPUTS}
    for key in INPUTS:
        out = {k: np.asarray(v, np.float64) for k, v in model(waves[key]).items()}
        row = {"name": f"{checkpoint.stem}-{key}", "width": width, "inputs": key,
               "shape": list(waves[key].shape),
               "logmel_max_abs": float(np.max(np.abs(out["logmel"] - ref[f"{key}_logmel"]))),
               "params": params, "reference_params": int(ref["params"]),
               "convert_seconds": round(seconds, 2)}
        # The network alone, given the reference's own log-Mel (front-end rounding aside).
        on_ref = [np.asarray(v, np.float64) for v in network(ref[f"{key}_logmel"])]
        for name, alone in zip(("embedding", "logits"), on_ref):
            want = ref[f"{key}_{name}"].astype(np.float64)
            diff = out[name] - want
            row[f"{name}_norm_relative"] = float(np.linalg.norm(diff) / np.linalg.norm(want))
            row[f"{name}_max_relative"] = float(np.max(np.abs(diff)) / np.max(np.abs(want)))
            row[f"{name}_on_reference_logmel"] = float(np.linalg.norm(alone - want)
                                                       / np.linalg.norm(want))
            if f"{key}_{name}" in exact:
                # Each float32 implementation against the reference in float64.
                truth64 = exact[f"{key}_{name}"].astype(np.float64)
                for who, value in (("", out[name]), ("reference_", want)):
                    row[f"{name}_{who}vs_float64"] = float(np.linalg.norm(value - truth64)
                                                           / np.linalg.norm(truth64))
        if f"{key}_logmel" in exact:
            row["logmel_vs_float64_max_abs"] = float(np.max(np.abs(out["logmel"]
                                                                   - exact[f"{key}_logmel"])))
            row["logmel_reference_vs_float64_max_abs"] = float(np.max(np.abs(
                ref[f"{key}_logmel"] - exact[f"{key}_logmel"])))
        rows.append(row)
    return rows


def main(argv=None):
    from pathlib import Path

    args, env = common.start(parse_args, argv)
    fixtures = Path(args.fixtures) if args.fixtures else FIXTURES
    rows = []
    for checkpoint in sorted(fixtures.glob("mn_*.pt")) + sorted(fixtures.glob("dymn_*.pt")):
        common.log(checkpoint.name)
        rows.extend(measure(checkpoint, fixtures))
    name = "efficientat_parity_full_size" if args.fixtures else "efficientat_parity"
    payload = common.new_payload(name, args.quick)
    payload.update({
        "device": {"label": "cpu"}, "environment": common.finish_environment(env),
        "config": {"fixtures": (str(FIXTURES.relative_to(common.REPO_ROOT))
                                if fixtures == FIXTURES else str(fixtures)),
                   "command": common.command_line(argv)},
        "results": rows,
        "notes": ["logmel_max_abs: max |esc50tf - reference| of the normalised log-Mel "
                  "(ln(S + 1e-5) + 4.5) / 5; *_norm_relative: ||difference|| / ||reference||; "
                  "*_max_relative: max |difference| / max |reference|; *_on_reference_logmel: "
                  "the network alone, fed the reference's log-Mel, ||difference|| / "
                  "||reference||.",
                  ("Reduced-width models" if fixtures == FIXTURES else "Full-size mn10, dymn10")
                  + " with random weights (tools/make_efficientat_fixtures.py); the "
                  "official checkpoints are not read here (no network to GitHub releases).",
                  "params: trainable parameters of the Keras model; reference_params: "
                  "sum(p.numel()) of the reference module (527 classes).",
                  "*_vs_float64: esc50tf (float32) against the reference run in float64 "
                  "(tools/make_efficientat_fixtures.py --float64), ||difference|| / "
                  "||float64||; *_reference_vs_float64: the reference's own float32 outputs "
                  "against the same: how far float32 rounding alone takes it."],
    })
    columns = [("checkpoint, inputs", lambda r: f"`{r['name']}`"),
               ("width", lambda r: r["width"]),
               ("log-Mel max abs", lambda r: r["logmel_max_abs"]),
               ("embedding rel", lambda r: r["embedding_norm_relative"]),
               ("logits rel", lambda r: r["logits_norm_relative"]),
               ("logits rel, reference log-Mel in", lambda r: r["logits_on_reference_logmel"]),
               ("logits rel to float64: ours / reference's float32",
                lambda r: (f"{r['logits_vs_float64']:.3g} / "
                           f"{r['logits_reference_vs_float64']:.3g}")
                if "logits_vs_float64" in r else "-"),
               ("params (ours / ref)", lambda r: f"{r['params']:,} / {r['reference_params']:,}")]
    common.write_parity_report(args.out, name, payload, rows, columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
