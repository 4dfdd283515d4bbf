"""`esc50tf predict MODEL long.wav --timeline`: what sounds when, over long recordings.

The recording is streamed: `soundfile` reads blocks, each is mixed to mono
and (if its rate differs from the model's) resampled by a streaming `soxr`
resampler, and windows of the model's input length are cut every `hop`
seconds from a buffer that never holds more than a block plus a window. The
windows are classified in batches; only one row of numbers per window is
kept (for the events and the heat map), so memory stays bounded for hours of
audio. A window past the end is zero-padded.

Written per recording into `OUT/<stem>/`:

- `windows.csv`: start, end (s), the top classes with their probabilities,
  then every class's probability;
- `timeline.json`: the same windows (top classes), the merged events and the
  settings;
- `timeline.png`: a heat map of class probability over time, under the
  waveform's envelope, with the events marked and a colour bar of probability.

Events: windows are cut every `hop` seconds, a quarter of the model's window
by default (`HOPS_PER_WINDOW`): an event as long as one window is then read
whole by one window and by most of several more, instead of by one window
and two halves at half-window hops. Each class's probability is
median-filtered over `smooth` consecutive windows (3 by default: a lone
window straddling an event's edge, half sound and half background, is often
confidently wrong; a median keeps the edges of real events where they are),
except that a window whose own top class reaches `CONFIDENT` (0.9) keeps its
own probabilities: a median over 3 windows would erase a short event seen
confidently by one window alone. A window is labelled with its top class
when that class's (smoothed) probability reaches `threshold`, and
consecutive windows with the same label merge into one event. Each window
speaks for the `hop` seconds around its centre, so an event runs from the
first window's centre - hop / 2 to the last one's centre + hop / 2 (clipped
to the recording): its edges are resolved to the hop. A window whose
sound fills only a small part of it is still often labelled when the rest is
quiet, which would stretch the event by up to half a window on each side; so
edges are then trimmed, hop by hop, while the hop at the edge is no louder
than the recording's background: its RMS within `QUIET_DB` (6) dB of the
10th percentile of all hops' RMS (hops of digital silence, every sample
zero, left out: a recording muted for a while has no background there).
A window (or step) of digital silence carries no label, whatever the model
answers for it: there is no sound to name, and a classifier never trained on
all-zero input can be confident there (the tests' model says one class at
0.98 for every silent window).

Frame-wise outputs: a Keras model (run folder or `.keras` file) of the SED
kind (`cnn14_sed`: per-step class scores `segment_logits`, max over time,
softmax) is read at its per-step resolution instead. A sub-model of the same
graph gives, per window, a softmax over each step's logits (the same logits
and the same normalisation the clip-level softmax applies to their maximum
over time); step `j` of a window starting at `s` covers `[s + j * step,
s + (j + 1) * step)`, `step` being 32 frames of the front end's hop (0.32 s
for PANNs at 32 kHz; the last step also stands for the window's few frames
past the last whole step, as `FramewiseUpsample` does). The hop is rounded to
a whole number of steps so that the windows share one grid; the estimates of
overlapping windows for the same step are averaged, and rows, events,
smoothing (over steps) and the heat map are then per step. Exported
SavedModel / TFLite files keep the per-window output. `output` in
timeline.json and windows.csv says which was used ("window" or "framewise").

MODEL is a run folder, a `.keras` file, an export folder of `esc50tf
export`, an exported SavedModel folder or a `.tflite` file (the last two read
the classes and sample rate from the `model_card.json` beside them).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
from pathlib import Path

import numpy as np

from esc50tf.errors import Esc50Error
from esc50tf.io import atomic_dir, dumps_json

TOP_K = 3
HOPS_PER_WINDOW = 4  # the default hop: a quarter of the model's window
SMOOTH = 3  # the default median filter length (windows)
CONFIDENT = 0.9  # a window whose own top class reaches this keeps its label through the median
THRESHOLD = 0.5  # the default top-class probability of an event's windows
QUIET_DB = 6.0
BACKGROUND_PERCENTILE = 10
PLOT_COLUMNS = 2000  # the heat map's time columns at most (the PNG is 1200 pixels wide)
BATCH = 32
BLOCK_SECONDS = 1.0  # read granularity: a decode error is placed within a second


@dataclasses.dataclass
class WindowModel:
    """Any saved model as `[batch, num_samples] -> probabilities`, with what feeds it.

    Args:
        predict: callable. Waveforms `[batch, num_samples]` float32 -> `[batch, classes]`.
        class_names: list of str, in label order.
        sample_rate: int.
        num_samples: int. Window length in samples.
        source: str. What was loaded.
        steps: callable or None. Waveforms `[batch, num_samples]` -> per-step
            probabilities `[batch, steps, classes]`, for models with frame-wise outputs.
        step_samples: int or None. Samples per step (at `sample_rate`).
    """

    predict: object
    class_names: list
    sample_rate: int
    num_samples: int
    source: str
    steps: object = None
    step_samples: int = None


def load_window_model(path, sample_rate=None):
    """Loads a run folder, `.keras` file, export folder, SavedModel or `.tflite` file."""
    from esc50tf import export
    from esc50tf.predict import is_export, load_exported, load_predictor

    path = Path(path)
    if not is_export(path):
        p = load_predictor(path, sample_rate)

        def predict(batch, models=p.models):
            return export.keras_reference(models, batch)

        model = WindowModel(predict, p.class_names, p.sample_rate, p.num_samples, str(path))
        from esc50tf.models.build import framewise_model

        framewise = [framewise_model(m) for m in getattr(p, "models", None) or []]
        if framewise and all(f is not None for f in framewise):
            model.steps = lambda batch: export.keras_reference([f for f, _ in framewise], batch)
            model.step_samples = framewise[0][1]
        return model
    p = load_exported(path, sample_rate)
    return WindowModel(p.runner, p.class_names, p.sample_rate, p.num_samples, str(path))


def _read_blocks(path, sample_rate, block_seconds, progress):
    """Yields mono float32 blocks at `sample_rate`; Esc50Error names the file and position."""
    import soundfile as sf
    import soxr
    from esc50tf.progress import bar as progress_bar

    path = str(path)
    if not os.path.isfile(path):
        raise Esc50Error(f"{path}: no such audio file")
    try:
        f = sf.SoundFile(path)
    except Exception as err:  # noqa: BLE001 - soundfile raises several types
        raise Esc50Error(f"{path}: cannot decode audio ({err})") from None
    with f, progress_bar(total=round(f.frames / f.samplerate, 1) if f.frames > 0 else None,
                         unit="s", desc=os.path.basename(path), disable=not progress,
                         leave=False) as bar:
        rate = f.samplerate
        resampler = None
        if rate != sample_rate:
            resampler = soxr.ResampleStream(rate, sample_rate, 1, dtype="float32", quality="VHQ")
        block = max(1, int(block_seconds * rate))
        pos = 0
        while True:
            try:
                data = f.read(block, dtype="float32", always_2d=True)
            except Exception as err:  # noqa: BLE001
                raise Esc50Error(f"{path}: cannot decode audio at {pos / rate:.2f} s "
                                 f"(frame {pos}) ({err})") from None
            last = len(data) < block
            if not np.all(np.isfinite(data)):
                bad = pos + int(np.argmax(~np.isfinite(data).all(axis=1)))
                raise Esc50Error(f"{path}: NaN or infinite samples at {bad / rate:.2f} s "
                                 f"(frame {bad})")
            mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            pos += len(data)
            bar.update(round(len(data) / rate, 1))
            yield np.ascontiguousarray(mono, dtype=np.float32)
            if last:
                return


def stream_windows(blocks, num_samples, hop):
    """Cuts windows every `hop` samples from a stream of blocks.

    Yields:
        (start, window, valid, envelope): start sample, the window
        `[num_samples]` (zero-padded past the end), how many of its samples
        are audio, and the RMS of its first `hop` samples.
    """
    buf = np.zeros(0, np.float32)
    buf_start = 0  # stream position of buf[0]
    start = 0  # next window's start
    emitted_end = 0
    for block in blocks:
        buf = np.concatenate([buf, block])
        while start + num_samples <= buf_start + len(buf):
            w = buf[start - buf_start:start - buf_start + num_samples]
            yield start, w, num_samples, _rms(w[:hop])
            emitted_end = start + num_samples
            start += hop
        drop = min(start - buf_start, len(buf))
        buf, buf_start = buf[drop:], buf_start + drop
    total = buf_start + len(buf)
    if total == 0:
        return
    if emitted_end < total and start < total:
        w = np.zeros(num_samples, np.float32)
        tail = buf[start - buf_start:]
        w[:len(tail)] = tail
        yield start, w, len(tail), _rms(tail[:hop])


def _rms(x):
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if len(x) else 0.0


def merge_events(starts, top, top_prob, class_names, window, hop, duration, threshold):
    """Consecutive windows with the same top class at or above `threshold` -> events.

    Args:
        starts: seconds, per window. top: int class per window (-1: none). top_prob:
            its probability.
        window, hop, duration: seconds.

    Returns:
        list of {"start", "end", "class", "peak_probability", "windows"}.
    """
    events = []
    current = None
    for s, c, p in zip(starts, top, top_prob):
        label = int(c) if p >= threshold else -1
        centre = s + window / 2
        if current is not None and label == current["label"]:
            current["last"] = centre
            current["peak"] = max(current["peak"], float(p))
            current["windows"] += 1
            continue
        if current is not None:
            events.append(current)
        current = ({"label": label, "first": centre, "last": centre, "peak": float(p),
                    "windows": 1} if label >= 0 else None)
    if current is not None:
        events.append(current)
    out = []
    for e in events:
        end = min(duration, e["last"] + hop / 2)
        # A clip shorter than a window has its window centre past its end: the event
        # is then the part of the clip before `end`, never one that starts after it.
        start = max(0.0, min(e["first"] - hop / 2, end - min(hop, end)))
        out.append({"start": round(start, 4), "end": round(end, 4),
                    "class": class_names[e["label"]], "peak_probability": round(e["peak"], 6),
                    "windows": e["windows"]})
    return out


def _background_floor(envelope, quiet_db=QUIET_DB):
    """The RMS at or below which a hop is background, or None (all digital silence)."""
    sound = envelope[envelope > 0]
    if not len(sound):
        return None
    return np.percentile(sound, BACKGROUND_PERCENTILE) * 10.0 ** (quiet_db / 20.0)


def extend_loud_edges(events, starts, envelope, hop, reach, quiet_db=QUIET_DB):
    """Moves each event's edges outwards over loud hops its windows cover (changed in place).

    An event's windows cover `reach` seconds (half a window less half a hop)
    beyond its edges at the windows' centres; a hop there that is louder than
    the background (see `trim_quiet_edges`), with only loud hops between it
    and the event, and that no other event holds, is taken in. An event as
    long as one window, named by the aligned window alone, so ends where its
    sound does, to the hop, instead of half a hop around that window's centre.
    """
    floor = _background_floor(envelope, quiet_db)
    if floor is None or reach <= 0:
        return events
    loud = envelope > floor
    for i, e in enumerate(events):
        low = max(e["start"] - reach, events[i - 1]["end"] if i else 0.0)
        high = min(e["end"] + reach, events[i + 1]["start"] if i + 1 < len(events) else np.inf)
        j = int(np.searchsorted(starts, e["start"] - 1e-6)) - 1  # the hop holding the start
        while j >= 0 and starts[j] >= low - 1e-6 and loud[j]:
            e["start"] = round(min(e["start"], float(starts[j])), 4)
            j -= 1
        j = int(np.searchsorted(starts, e["end"] - 1e-6))  # the first hop after the end
        while j < len(starts) and starts[j] + hop <= high + 1e-6 and loud[j]:
            e["end"] = round(max(e["end"], float(starts[j] + hop)), 4)
            j += 1
    return events


def trim_quiet_edges(events, starts, envelope, hop, quiet_db=QUIET_DB):
    """Moves each event's edges inwards past hops as quiet as the recording's background.

    A hop is background when its RMS is within `quiet_db` of the
    `BACKGROUND_PERCENTILE`th percentile of the RMS of every hop that is not
    digital silence (RMS 0; a silent hop is always background).

    Args:
        events: from `merge_events` (changed in place and returned).
        starts: seconds, per window; hop `j` is `[starts[j], starts[j] + hop)`.
        envelope: RMS of hop `j`, per window.
        hop: seconds.
    """
    floor = _background_floor(envelope, quiet_db)
    if floor is None:
        return events
    for e in events:
        inside = np.flatnonzero((starts + hop > e["start"]) & (starts < e["end"]))
        loud = inside[envelope[inside] > floor]
        if not len(loud):
            continue
        e["start"] = round(max(e["start"], float(starts[loud[0]])), 4)
        e["end"] = round(min(e["end"], float(starts[loud[-1]] + hop)), 4)
    return events


def smooth_rows(probs, smooth=SMOOTH, confident=CONFIDENT):
    """Each class's probability median-filtered over `smooth` rows, confident rows kept.

    Args:
        probs: `[rows, classes]` probabilities.
        smooth: int, odd. Median filter length in rows; 1: none.
        confident: float or None. A row whose own top probability reaches it
            is kept as it is, so that one confident window alone (a short
            event) is not erased by its neighbours; None: every row filtered.

    Returns:
        `[rows, classes]` float32.
    """
    probs = np.asarray(probs, np.float32)
    if smooth <= 1 or not len(probs):
        return probs
    from scipy.ndimage import median_filter

    smoothed = median_filter(probs, size=(smooth, 1), mode="nearest")
    if confident is not None:
        keep = probs.max(axis=1) >= confident
        smoothed[keep] = probs[keep]
    return smoothed


def timeline(model, audio, out, hop=None, threshold=THRESHOLD, smooth=SMOOTH, overwrite=False,
             progress=True, batch_size=BATCH, block_seconds=BLOCK_SECONDS, confident=CONFIDENT,
             extend_edges=True):
    """Classifies `audio` window by window and writes the timeline into `out`.

    Args:
        model: WindowModel.
        audio: path of the recording (any rate and channel count).
        out: folder to write (must not exist unless `overwrite`).
        hop: float or None. Seconds between windows; None: the window / `HOPS_PER_WINDOW`.
        threshold: float. Minimum top-class probability of an event's windows.
        smooth: int. Median filter length (windows) before thresholding; 1: none.
        confident: float or None. Windows at or above it keep their own
            probabilities through the median (`smooth_rows`); None: none do.
        extend_edges: bool. Edges move out over loud hops the event's windows
            cover (`extend_loud_edges`) before quiet ones are trimmed.

    Returns:
        dict: the timeline.json content without the windows.
    """
    out = Path(out)
    rate, n = model.sample_rate, model.num_samples
    window_s = n / rate
    hop_s = window_s / HOPS_PER_WINDOW if hop is None else float(hop)
    hop_n = int(round(hop_s * rate))
    if not 1 <= hop_n <= n:
        raise Esc50Error(f"--hop {hop!r}: allowed: from one sample (1/{rate} s) to the model's "
                         f"window of {window_s:g} s")
    if model.steps is not None:  # frame-wise: windows on the steps' grid
        step = model.step_samples
        hop_n = min(max(step, int(round(hop_n / step)) * step), n // step * step)
    hop_s = hop_n / rate
    if not 0.0 <= threshold <= 1.0:
        raise Esc50Error(f"--threshold {threshold!r}: allowed: a probability in [0, 1]")
    if not (isinstance(smooth, int) and smooth >= 1 and smooth % 2 == 1):
        raise Esc50Error(f"--smooth {smooth!r}: allowed: an odd number of windows >= 1")
    if confident is not None and not 0.0 <= confident <= 1.0:
        raise Esc50Error(f"confident={confident!r}: allowed: a probability in [0, 1] or None")
    if out.exists() and not overwrite:
        raise Esc50Error(f"{out}: already exists; choose another --out or pass --overwrite")
    with atomic_dir(out, overwrite=overwrite) as staging:
        summary = _write(model, audio, staging, n, hop_n, window_s, hop_s, threshold, smooth,
                         confident, extend_edges, progress, batch_size, block_seconds)
    return summary


def _write(model, audio, folder, n, hop_n, window_s, hop_s, threshold, smooth, confident,
           extend_edges, progress, batch_size, block_seconds):
    names = model.class_names
    k = min(TOP_K, len(names))
    rate = model.sample_rate
    framewise = model.steps is not None
    output = "framewise" if framewise else "window"
    step_n = model.step_samples if framewise else None
    starts, envelope, all_probs, silent = [], [], [], []
    # The rows' JSON goes to a scratch file as it comes (memory stays flat) and is
    # copied into timeline.json at the end.
    scratch = folder / ".windows.json.part"
    with open(folder / "windows.csv", "w", newline="") as fcsv, open(scratch, "w") as fjson:
        writer = csv.writer(fcsv)
        writer.writerow(["start", "end"] + [f"{c}{i}" for i in range(1, k + 1)
                                            for c in ("class", "prob")] + ["output"] + names)

        def emit(start, end, p, env, is_silent):
            """One row (a window, or a step of the frame-wise grid) out."""
            if not np.isfinite(p).all():
                raise Esc50Error(f"{model.source}: the model gives non-finite probabilities "
                                 f"for the window at {start:.2f} s; no timeline is written")
            order = np.argsort(-p)[:k]
            top = [(names[i], float(p[i])) for i in order]
            writer.writerow([f"{start:.4f}", f"{end:.4f}"]
                            + [v for c, q in top for v in (c, f"{q:.6f}")] + [output]
                            + [f"{q:.6f}" for q in p])
            fjson.write(",\n" if starts else "\n")
            fjson.write(dumps_json({"start": round(start, 4), "end": round(end, 4),
                                    "top": [{"class": c, "probability": round(q, 6)}
                                            for c, q in top]}, indent=None))
            starts.append(start)
            envelope.append(env)
            silent.append(is_silent)
            all_probs.append(p.astype(np.float16))

        steps = {}  # frame-wise: grid step -> [sum of estimates, count, RMS]

        def emit_steps(before, audio_end=None):
            """Writes the steps before grid index `before`: no later window reaches them."""
            last = max(steps, default=None) if audio_end is not None else None
            for g in sorted(i for i in steps if i < before):
                total, count, env = steps.pop(g)
                end = (g + 1) * step_n
                if last is not None:  # the last step also stands for the frames past it
                    end = audio_end if g == last else min(end, audio_end)
                emit(g * step_n / rate, end / rate, total / count, env, env == 0.0)

        pending = []
        num_windows = 0

        def flush():
            batch = np.stack([w for _, w, _, _ in pending])
            if not framewise:
                probs = np.asarray(model.predict(batch), np.float64)
                for (s, w, valid, env), p in zip(pending, probs):
                    emit(s / rate, (s + valid) / rate, p, env, not w[:valid].any())
                pending.clear()
                return
            probs = np.asarray(model.steps(batch), np.float64)  # [b, steps, classes]
            for (s, w, valid, _), p in zip(pending, probs):
                first = s // step_n
                emit_steps(first)
                for j, q in enumerate(p):
                    if j * step_n >= valid:  # past the end of the recording
                        break
                    if first + j not in steps:
                        steps[first + j] = [np.zeros_like(q), 0,
                                            _rms(w[j * step_n:min((j + 1) * step_n, valid)])]
                    steps[first + j][0] += q
                    steps[first + j][1] += 1
            pending.clear()

        blocks = _read_blocks(audio, rate, block_seconds, progress)
        end = 0
        for s, w, valid, env in stream_windows(blocks, n, hop_n):
            pending.append((s, w.copy(), valid, env))
            num_windows += 1
            end = s + valid
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
        emit_steps(float("inf"), audio_end=end)
    if not starts:
        raise Esc50Error(f"{audio}: audio has no samples")
    duration = end / rate
    # Rows: windows (each speaking for `hop` around its centre) or steps (each for itself).
    row_window, row_hop = (step_n / rate, step_n / rate) if framewise else (window_s, hop_s)
    probs = np.stack(all_probs).astype(np.float32)  # [rows, classes]
    smoothed = smooth_rows(probs, smooth, confident)
    top = smoothed.argmax(axis=1)
    top_prob = smoothed[np.arange(len(top)), top]
    top[np.asarray(silent, bool)] = -1  # digital silence: nothing to name
    events = merge_events(starts, top, top_prob, names, row_window, row_hop, duration, threshold)
    if extend_edges:
        events = extend_loud_edges(events, np.asarray(starts), np.asarray(envelope), row_hop,
                                   (row_window - row_hop) / 2)
    events = trim_quiet_edges(events, np.asarray(starts), np.asarray(envelope), row_hop)
    summary = {
        "file": str(audio), "model": model.source, "sample_rate": rate,
        "duration": round(duration, 4), "window": window_s, "hop": hop_s,
        "output": output, "step": row_hop if framewise else None,
        "threshold": threshold, "smooth": smooth, "confident": confident, "classes": names, "num_windows": num_windows,
        "num_rows": len(starts), "events": events,
    }
    head = dumps_json({**summary, "windows": []}, indent=1)
    with open(folder / "timeline.json", "w") as f, open(scratch) as windows:
        f.write(head[:head.rindex("[]") + 1])  # `..."windows": [`
        shutil.copyfileobj(windows, f)
        f.write("\n ]\n}\n")
    scratch.unlink()
    plot_timeline(probs, np.asarray(starts), envelope, names,
                  row_window, row_hop, duration, events, folder / "timeline.png",
                  title=os.path.basename(str(audio)))
    return summary


def plot_timeline(probs, starts, envelope, names, window, hop, duration, events, path, title=""):
    """Heat map (classes x time) under the envelope, events outlined, with a colour bar
    of probability; writes a PNG."""
    from matplotlib.patches import Rectangle

    from esc50tf.plotting import figure

    centres = starts + window / 2
    env = np.asarray(envelope)
    if len(probs) > PLOT_COLUMNS:  # hours of audio: the maximum over runs of windows
        cuts = np.linspace(0, len(probs), PLOT_COLUMNS + 1).astype(int)[:-1]
        probs = np.maximum.reduceat(probs, cuts, axis=0)
        env = np.maximum.reduceat(env, cuts)
        centres = centres[cuts]
        hop = duration / len(cuts)
    height = 2.0 + 0.22 * len(names)
    ratios = [1, max(2, len(names) / 4)]
    with figure(path, (12, height), dpi=100, tight=False, layout="constrained", nrows=2, ncols=1,
                sharex=True,
                gridspec_kw={"height_ratios": ratios}) as (fig, (ax_env, ax)):
        ax_env.fill_between(centres, -env, env, color="0.3", linewidth=0)
        ax_env.set_ylabel("RMS")
        ax_env.set_title(title)
        image = ax.imshow(probs.T, aspect="auto", origin="lower", cmap="magma", vmin=0, vmax=1,
                  interpolation="nearest",
                  extent=[centres[0] - hop / 2, centres[-1] + hop / 2, -0.5, len(names) - 0.5])
        index = {c: i for i, c in enumerate(names)}
        for e in events:
            i = index[e["class"]]
            ax.add_patch(Rectangle((e["start"], i - 0.5), e["end"] - e["start"], 1,
                                   fill=False, edgecolor="cyan", linewidth=1))
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlim(0, duration)
        ax.set_xlabel("time (s)")
        fig.colorbar(image, ax=[ax_env, ax], label="probability", fraction=0.03, pad=0.01)


def run_timelines(model_path, files, out, hop=None, threshold=THRESHOLD, smooth=SMOOTH,
                  overwrite=False, sample_rate=None, as_json=False, progress=True):
    """`esc50tf predict --timeline`: one timeline folder per file in `out`.

    A file that fails (missing, or not decoding, even in the middle of the
    stream) is reported naming the file and position and leaves no folder;
    the others are still done. Returns the exit status (1 if any failed).
    """
    import sys

    model = load_window_model(model_path, sample_rate)
    stems = [Path(f).stem for f in files]
    if len(set(stems)) != len(stems):
        raise Esc50Error("two audio files share a name; their timelines would collide in "
                         f"{out}: {', '.join(sorted({s for s in stems if stems.count(s) > 1}))}")
    results, failed = [], 0
    for f, stem in zip(files, stems):
        try:
            summary = timeline(model, f, Path(out) / stem, hop=hop, threshold=threshold,
                               smooth=smooth, overwrite=overwrite, progress=progress)
        except Esc50Error as err:
            print(f"esc50tf predict: error: {err}", file=sys.stderr)
            failed += 1
            continue
        summary["folder"] = str(Path(out) / stem)
        results.append(summary)
        if not as_json:
            steps = (f", frame-wise in {summary['num_rows']} steps of {summary['step']:g} s"
                     if summary["output"] == "framewise" else "")
            print(f"{f} ({summary['duration']:g} s, {summary['num_windows']} windows of "
                  f"{summary['window']:g} s every {summary['hop']:g} s{steps}): "
                  f"{len(summary['events'])} event(s) -> {summary['folder']}")
            for e in summary["events"]:
                print(f"  {e['start']:9.2f} - {e['end']:9.2f} s  {e['class']:<24} "
                      f"peak {e['peak_probability']:.3f}")
    if as_json:
        print(dumps_json({"results": results}))
    return 1 if failed else 0
