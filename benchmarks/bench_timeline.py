"""Timelines that find the events: event-based F1 and edge errors, old and new defaults.

Recordings are made of a trained run's own test clips, planted one clip per
event over -50 dBFS white noise, in two layouts: with 1-4 s of background
between the events (`gaps`), and back to back (`back_to_back`, every clip
edge an event edge). Each recording gets `esc50tf predict --timeline`
(`esc50tf.timeline.timeline`) under several settings:

- `old`: the previous defaults, a hop of half a window and a median over 3
  windows that every window goes through;
- `old hop, keep confident`, `new hop only`, `new hop, keep confident`: one
  change at a time;
- `new`: the defaults now, a hop of a quarter window (`HOPS_PER_WINDOW`), the
  median that a window at p >= `CONFIDENT` goes around, and edges moved out
  over the loud hops that an event's windows cover (`extend_loud_edges`).

The events are scored against the planted clips with sed_eval's
event-based metrics (DCASE's definition: an estimated event matches a
reference event of its class when its onset is within a 200 ms collar, and
its offset within max(200 ms, 20% of the event's length); F1 over all
events, micro-averaged), with and without the offset condition, and the
onset and offset errors of the reference events that an estimated event of
their class overlaps (the one overlapping most), in seconds.

The run: `--run RUN` (a Keras run folder whose test-fold predictions name its
clips) with `--audio DIR` (the ESC-50-layout folder holding them); otherwise
one is trained here like the tests' shared run (the demo's recipe on 10
synthetic classes x 30 clips of 1 s at 16 kHz, 25 epochs; quick: 10 x 10
clips, 8 epochs).

Usage:
    python -m benchmarks.bench_timeline --quick     # about 3 min on 2 CPU cores
    python -m benchmarks.bench_timeline             # about 8 min

Needs sed_eval (`pip install sed_eval`: a benchmark dependency, not the
package's). Writes `OUT/bench_timeline-<quick|full>-cpu.json` and `.md`.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import common

SCRIPT = "bench_timeline"
RATE = 16000
BACKGROUND_RMS = 0.003  # -50 dBFS
GAP_SECONDS = (1.0, 4.0)
COLLAR_S = 0.2  # DCASE's onset collar
OFFSET_LENGTH = 0.2  # and offset collar as a share of the event's length
FULL = {"num_classes": 10, "clips_per_class": 30, "epochs": 25, "recordings": 3}
QUICK = {"num_classes": 10, "clips_per_class": 10, "epochs": 8, "recordings": 1}


def variants():
    """name -> timeline settings (hop in windows, smooth, confident)."""
    from esc50tf import timeline as tl

    return {
        "old": dict(hop=0.5, smooth=3, confident=None, extend_edges=False),
        "old hop, keep confident": dict(hop=0.5, smooth=3, confident=tl.CONFIDENT,
                                        extend_edges=False),
        "new hop only": dict(hop=1 / tl.HOPS_PER_WINDOW, smooth=tl.SMOOTH, confident=None,
                             extend_edges=False),
        "new hop, keep confident": dict(hop=1 / tl.HOPS_PER_WINDOW, smooth=tl.SMOOTH,
                                        confident=tl.CONFIDENT, extend_edges=False),
        "new": dict(hop=1 / tl.HOPS_PER_WINDOW, smooth=tl.SMOOTH, confident=tl.CONFIDENT,
                    extend_edges=True),
    }


def parse_args(argv):
    parser = common.make_parser(
        __doc__.split("\n\n")[0],
        full_help=f"a run trained {FULL['epochs']} epochs, {FULL['recordings']} recordings "
                  "per layout.",
        quick_help=f"a run trained {QUICK['epochs']} epochs, 1 recording per layout.",
        data_help=None)
    parser.add_argument("--run", metavar="RUN", default=None,
                        help="An existing Keras run folder (its test-fold clips are planted).")
    parser.add_argument("--audio", metavar="DIR", default=None,
                        help="With --run: the ESC-50-layout folder holding its clips.")
    parser.add_argument("--workdir", metavar="DIR", default=None,
                        help="Keep the trained run and its data here (reused when there); "
                             "default: a temporary folder.")
    args = parser.parse_args(argv)
    if bool(args.run) != bool(args.audio):
        parser.error("--run and --audio go together")
    return args


def make_run(args, workdir):
    """(run folder, audio folder, origin): --run, or one trained here."""
    if args.run:
        return Path(args.run), Path(args.audio), f"given run {args.run}"
    from esc50tf.data.synth import SynthConfig, synthesize_tfrecords
    from esc50tf.data.tfrecords import BuildConfig
    from esc50tf.presets import DEMO_FEATURES, DEMO_MODEL, DEMO_TRAIN
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    mode = QUICK if args.quick else FULL
    workdir = Path(workdir)
    origin = (f"{DEMO_MODEL}, the demo's recipe on {mode['num_classes']} synthetic classes x "
              f"{mode['clips_per_class']} clips of 1 s at {RATE} Hz, {mode['epochs']} epochs, "
              "test fold 1")
    if (workdir / "run" / "report.json").is_file():
        return workdir / "run", workdir / "esc50", origin
    synth = SynthConfig(num_classes=mode["num_classes"], clips_per_class=mode["clips_per_class"],
                        sample_rate=RATE, clip_seconds=1.0, seed=0)
    synthesize_tfrecords(workdir / "esc50", workdir / "tfr", synth,
                         BuildConfig(sample_rate=RATE, clip_seconds=1.0, shards_per_fold=1),
                         workers=1, progress=False, log=lambda _: None, reuse=True)
    common.log(f"training {origin}")
    cfg = resolve_config(DEMO_MODEL, overrides={
        "train": {**DEMO_TRAIN, "epochs": mode["epochs"], "data": str(workdir / "tfr"),
                  "out": str(workdir / "run"), "seed": 0, "export": False},
        "features": DEMO_FEATURES, "augment": {"mix": "none"}})
    train(cfg, verbose=0)
    return workdir / "run", workdir / "esc50", origin


def test_clips(run):
    """[(file name, class name)] of the run's first split's test side."""
    run = Path(run)
    names = [c["category"] for c in json.loads((run / "classes.json").read_text())]
    (predictions, *_) = sorted(run.glob("*/predictions.npz"))
    with np.load(predictions) as p:
        return [(str(f), names[int(y)]) for f, y in zip(p["filenames"], p["y_true"])]


def plant(clips, audio_dir, layout, seed, path):
    """Writes a recording of `clips` (shuffled) in `layout`; returns the reference events."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    order = rng.permutation(len(clips))
    events, t = [], 2.0
    waves = [sf.read(Path(audio_dir) / "audio" / clips[i][0], dtype="float32")[0] for i in order]
    for i, wave in zip(order, waves):
        events.append((t, t + len(wave) / RATE, clips[i][1]))
        t += len(wave) / RATE + (rng.uniform(*GAP_SECONDS) if layout == "gaps" else 0.0)
    x = BACKGROUND_RMS * rng.standard_normal(int((events[-1][1] + 2.0) * RATE))
    for (start, _, _), wave in zip(events, waves):
        s = int(round(start * RATE))
        x[s:s + len(wave)] += wave
    sf.write(path, np.clip(x, -1, 1).astype(np.float32), RATE, subtype="PCM_16")
    return [(round(s, 4), round(e, 4), c) for s, e, c in events]


def score(reference, estimated, labels):
    """sed_eval event-based F1 (with and without offsets) and edge errors (s)."""
    import dcase_util
    import sed_eval

    def container(events):
        return dcase_util.containers.MetaDataContainer([
            {"event_label": c, "onset": float(s), "offset": float(e), "filename": "rec.wav"}
            for s, e, c in events])

    out = {}
    for name, offset in (("f1", True), ("onset_f1", False)):
        metrics = sed_eval.sound_event.EventBasedMetrics(
            event_label_list=labels, t_collar=COLLAR_S, percentage_of_length=OFFSET_LENGTH,
            evaluate_onset=True, evaluate_offset=offset)
        metrics.evaluate(reference_event_list=container(reference),
                         estimated_event_list=container(estimated))
        overall = metrics.results_overall_metrics()["f_measure"]
        out[name] = round(float(overall["f_measure"]), 4)
        if offset:
            out["precision"] = round(float(overall["precision"]), 4)
            out["recall"] = round(float(overall["recall"]), 4)
    onset, offset = [], []
    for s, e, c in reference:
        overlaps = [(min(e, e2) - max(s, s2), s2, e2) for s2, e2, c2 in estimated
                    if c2 == c and min(e, e2) > max(s, s2)]
        if overlaps:
            _, s2, e2 = max(overlaps)
            onset.append(abs(s2 - s))
            offset.append(abs(e2 - e))
    out["overlapped"] = len(onset)
    out["onset_error_s"] = round(float(np.mean(onset)), 3) if onset else None
    out["offset_error_s"] = round(float(np.mean(offset)), 3) if offset else None
    out["max_edge_error_s"] = round(float(max(onset + offset)), 3) if onset else None
    return out


def main(argv=None):
    args, environment = common.start(parse_args, argv)
    from esc50tf.timeline import load_window_model, timeline

    mode = QUICK if args.quick else FULL
    settings = variants()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_timeline-") as workdir:
        run, audio_dir, origin = make_run(args, args.workdir or workdir)
        model = load_window_model(run)
        window = model.num_samples / model.sample_rate
        clips = test_clips(run)
        labels = sorted({c for _, c in clips})
        for layout in ("gaps", "back_to_back"):
            recordings = []
            for r in range(mode["recordings"]):
                path = Path(workdir) / f"{layout}-{r}.wav"
                recordings.append((path, plant(clips, audio_dir, layout, seed=r, path=path)))
            for name, s in settings.items():
                reference, estimated, windows = [], [], 0
                for k, (path, planted) in enumerate(recordings):
                    summary = timeline(model, path, Path(workdir) / "tl" / f"{name}-{path.stem}",
                                       hop=s["hop"] * window, smooth=s["smooth"],
                                       confident=s["confident"],
                                       extend_edges=s["extend_edges"], progress=False)
                    shift = 10000.0 * k  # one list of events: the recordings kept apart
                    reference += [(a + shift, b + shift, c) for a, b, c in planted]
                    estimated += [(e["start"] + shift, e["end"] + shift, e["class"])
                                  for e in summary["events"]]
                    windows += summary["num_windows"]
                row = {"name": f"{layout}: {name}", "layout": layout, "settings": name,
                       "hop_s": round(s["hop"] * window, 4), "smooth": s["smooth"],
                       "confident": s["confident"], "extend_edges": s["extend_edges"],
                       "events_planted": len(reference),
                       "events_found": len(estimated), "windows": windows,
                       **score(reference, estimated, labels)}
                results.append(row)
                common.log(f"{row['name']}: F1 {row['f1']:.3f}, onset-only F1 "
                           f"{row['onset_f1']:.3f}, onset error {row['onset_error_s']} s, "
                           f"offset error {row['offset_error_s']} s")
    payload = common.new_payload(SCRIPT, args.quick)
    payload.update({
        "device": {"name": common.cpu_description()["model"], "kind": "CPU", "label": "cpu",
                   "cpu": common.cpu_description()},
        "environment": common.finish_environment(environment),
        "config": {"run": origin, "window_s": window, "clips_per_recording": len(clips),
                   "recordings_per_layout": mode["recordings"], "gap_s": list(GAP_SECONDS),
                   "background_dbfs": -50, "t_collar_s": COLLAR_S,
                   "percentage_of_length": OFFSET_LENGTH, "settings": settings,
                   "command": common.command_line(argv)},
        "results": results,
        "notes": [
            "F1: sed_eval EventBasedMetrics (onset within 200 ms, offset within max(200 ms, "
            "20% of the event)), micro-averaged over all events; onset F1: the offset not "
            "checked.",
            "Edge errors: mean |estimated - planted| onset and offset over the planted events "
            "that an estimated event of their class overlaps (the most overlapping one); "
            "`overlapped` counts them.",
            "hop in seconds; smooth in windows; confident: the top-class probability at which "
            "a window keeps its own probabilities through the median (none: every window "
            "filtered).",
        ],
    })
    common.write_report(args.out, "cpu", payload, render_markdown(payload))
    return 0


def render_markdown(payload):
    cfg = payload["config"]
    columns = [
        ("recording: settings", lambda r: r["name"]),
        ("hop s", lambda r: r["hop_s"]),
        ("smooth", lambda r: r["smooth"]),
        ("confident", lambda r: r["confident"] if r["confident"] is not None else "none"),
        ("edges out over loud hops", lambda r: "yes" if r["extend_edges"] else "no"),
        ("event F1", lambda r: r["f1"]),
        ("onset-only F1", lambda r: r["onset_f1"]),
        ("precision", lambda r: r["precision"]),
        ("recall", lambda r: r["recall"]),
        ("found / planted", lambda r: f"{r['events_found']} / {r['events_planted']}"),
        ("onset err s", lambda r: r["onset_error_s"]),
        ("offset err s", lambda r: r["offset_error_s"]),
        ("max edge err s", lambda r: r["max_edge_error_s"]),
    ]
    return "\n".join([
        f"# bench_timeline ({payload['mode']}, CPU)",
        "",
        f"{payload['created']}; {payload['device']['name']}.",
        "",
        f"Run: {cfg['run']}; window {cfg['window_s']:g} s. Each recording plants the "
        f"{cfg['clips_per_recording']} test clips, one per event, over -50 dBFS noise "
        f"({cfg['recordings_per_layout']} recording(s) per layout, shuffled).",
        "",
        common.markdown_table(payload["results"], columns),
    ])


if __name__ == "__main__":
    sys.exit(main())
