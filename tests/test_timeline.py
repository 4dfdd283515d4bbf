"""esc50tf.timeline: `predict --timeline` over long recordings with planted events."""

import csv
import json
import tracemalloc

import numpy as np
import pytest
import soundfile as sf

from esc50tf.errors import Esc50Error

RATE = 16000
BACKGROUND_RMS = 0.003  # -50 dBFS of white noise between the events


def _planted_recording(trained_run, path, seconds, rate=RATE, channels=1, seed=1):
    """Background noise with events of 3 test-fold clips of one class, 8-14 s apart.

    Uses test clips the run's model classifies right with probability > 0.9 (the
    timeline is under test here, not the classifier). Returns [(start, end, class)].
    """
    import soxr

    run, esc50, _ = trained_run
    pred = np.load(run / "fold1" / "predictions.npz")
    names = [c["category"] for c in json.loads((run / "classes.json").read_text())]
    good = {}
    for f, y, p in zip(pred["filenames"], pred["y_true"], pred["y_prob"]):
        if p.argmax() == y and p.max() > 0.9:
            good.setdefault(int(y), []).append(str(f))
    rng = np.random.default_rng(seed)
    x = (BACKGROUND_RMS * rng.standard_normal(int(seconds * RATE))).astype(np.float32)
    classes = sorted(good)
    planted, t, i = [], 5.0, 0
    while True:
        c = classes[i % len(classes)]
        clips = [sf.read(esc50 / "audio" / good[c][(i + j) % len(good[c])], dtype="float32")[0]
                 for j in range(3)]
        event = np.concatenate(clips)
        if t + len(event) / RATE > seconds - 5:
            break
        start = int(round(t * RATE))
        x[start:start + len(event)] += event
        planted.append((start / RATE, (start + len(event)) / RATE, names[c]))
        t = (start + len(event)) / RATE + rng.uniform(8, 14)
        i += 1
    if rate != RATE:
        x = soxr.resample(x, RATE, rate).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    sf.write(path, x, rate, subtype="PCM_16")
    return planted


def _assert_events_match(events, planted, hop):
    assert [e["class"] for e in events] == [c for _, _, c in planted]
    for e, (start, end, _) in zip(events, planted):
        assert abs(e["start"] - start) <= hop + 1e-6, (e, start)
        assert abs(e["end"] - end) <= hop + 1e-6, (e, end)


@pytest.mark.slow
def test_ten_minute_recording(trained_run, exports, tmp_path, capsys):
    from esc50tf import cli

    audio = tmp_path / "long.wav"
    planted = _planted_recording(trained_run, audio, 600.0)
    assert len(planted) >= 30
    # The default hop, half a window. (At 0.25 s one event of this fixture started 0.28 s
    # late: the planted truth is the clips' edges, and a clip's sound can start after its edge.)
    hop = 0.5
    code = cli.main(["predict", str(exports["float"] / "model.tflite"), str(audio), "--timeline",
                     "--out", str(tmp_path / "tl"), "--json"])
    assert code == 0
    folder = tmp_path / "tl" / "long"
    timeline = json.loads((folder / "timeline.json").read_text())
    assert timeline["hop"] == hop
    assert timeline["num_windows"] == len(timeline["windows"]) == 1199  # 1 s every 0.5 s
    assert timeline["duration"] == pytest.approx(600.0)
    _assert_events_match(timeline["events"], planted, hop)
    printed = json.loads(capsys.readouterr().out)
    assert printed["results"][0]["events"] == timeline["events"]
    with open(folder / "windows.csv") as f:
        rows = list(csv.reader(f))
    names = timeline["classes"]
    assert rows[0][:4] == ["start", "end", "class1", "prob1"] and rows[0][-len(names):] == names
    assert len(rows) == 1 + 1199
    probs = np.array([[float(v) for v in r[-len(names):]] for r in rows[1:]])
    assert np.allclose(probs.sum(1), 1.0, atol=1e-4)
    assert [r[2] for r in rows[1:]] == [names[i] for i in probs.argmax(1)]
    assert (folder / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_every_model_kind_gives_the_same_timeline(trained_run, exports, tmp_path):
    """Run folder, .keras, export folder, SavedModel and .tflite; a 22.05 kHz stereo file."""
    from esc50tf.timeline import load_window_model, timeline

    run, _, _ = trained_run
    audio = tmp_path / "rec.wav"
    planted = _planted_recording(trained_run, audio, 40.0, rate=22050, channels=2)
    assert len(planted) >= 2
    sources = {"run": run, "keras": run / "fold1" / "model.keras",
               "export": exports["savedmodel"],
               "saved_model": exports["savedmodel"] / "saved_model",
               "tflite": exports["float"] / "model.tflite"}
    results = {}
    for name, path in sources.items():
        model = load_window_model(path)
        assert model.sample_rate == RATE and model.num_samples == RATE
        summary = timeline(model, audio, tmp_path / name, hop=0.5, progress=False)
        windows = json.loads((tmp_path / name / "timeline.json").read_text())["windows"]
        results[name] = (summary["events"], [w["top"][0]["probability"] for w in windows])
        _assert_events_match(summary["events"], planted, 0.5)
    for name, (events, top) in results.items():
        assert events == results["run"][0], name
        assert np.abs(np.array(top) - results["run"][1]).max() <= 1e-4, name


def test_reading_is_streamed_in_bounded_memory(tmp_path):
    """10 minutes at 22.05 kHz through the resampler: memory of a few blocks, not the file."""
    from esc50tf.timeline import _read_blocks, stream_windows

    rate, seconds = 22050, 600
    with sf.SoundFile(tmp_path / "long.wav", "w", rate, 1, "PCM_16") as f:
        rng = np.random.default_rng(0)
        for _ in range(seconds // 10):
            f.write(0.1 * rng.standard_normal(rate * 10))
    tracemalloc.start()
    count, last = 0, None
    for start, window, valid, _ in stream_windows(
            _read_blocks(tmp_path / "long.wav", RATE, 1.0, progress=False), RATE, RATE // 2):
        count, last = count + 1, (start, valid)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert count == 2 * seconds - 1 and last == ((2 * seconds - 2) * RATE // 2, RATE)
    whole = seconds * RATE * 4  # the recording as float32 at the model's rate: 38 MB
    assert peak < whole / 20, peak


def test_stream_windows_equal_slicing():
    from esc50tf.timeline import stream_windows

    rng = np.random.default_rng(0)
    x = rng.standard_normal(10_007).astype(np.float32)
    cuts = np.sort(rng.choice(np.arange(1, len(x)), size=12, replace=False))
    blocks = np.split(x, cuts)
    got = list(stream_windows(iter(blocks), 1000, 300))
    starts = [s for s, _, _, _ in got]
    assert starts == list(range(0, 9001 + 300, 300))[:len(starts)]
    for s, w, valid, env in got:
        expected = np.zeros(1000, np.float32)
        expected[:min(1000, len(x) - s)] = x[s:s + 1000]
        assert np.array_equal(w, expected) and valid == min(1000, len(x) - s)
        assert env == pytest.approx(np.sqrt(np.mean(x[s:s + 300].astype(np.float64) ** 2)))
    assert got[-1][0] + got[-1][2] == len(x)  # the last window reaches the end
    assert list(stream_windows(iter([x[:500]]), 1000, 300))[0][2] == 500  # shorter than a window


def test_merge_events():
    from esc50tf.timeline import merge_events

    starts = np.arange(8) * 0.5  # windows of 1 s every 0.5 s
    top = np.array([0, 0, 1, 1, 1, 0, 0, 0])
    prob = np.array([0.2, 0.9, 0.8, 0.95, 0.7, 0.9, 0.9, 0.3])
    events = merge_events(starts, top, prob, ["a", "b"], 1.0, 0.5, 4.5, 0.5)
    assert [(e["class"], e["start"], e["end"], e["windows"]) for e in events] == [
        ("a", 0.75, 1.25, 1), ("b", 1.25, 2.75, 3), ("a", 2.75, 3.75, 2)]
    assert events[1]["peak_probability"] == pytest.approx(0.95)


@pytest.mark.slow
def test_decode_error_mid_stream_names_file_and_position(exports, tmp_path, capsys):
    from esc50tf import cli

    x = (0.1 * np.random.default_rng(0).standard_normal(RATE * 60)).astype(np.float32)
    sf.write(tmp_path / "bad.flac", x, RATE)
    data = bytearray((tmp_path / "bad.flac").read_bytes())
    data[len(data) // 2:len(data) // 2 + 20000] = bytes(20000)
    (tmp_path / "bad.flac").write_bytes(bytes(data))
    sf.write(tmp_path / "good.wav", x[:RATE * 5], RATE)
    code = cli.main(["predict", str(exports["float"] / "model.tflite"), str(tmp_path / "bad.flac"),
                     str(tmp_path / "good.wav"), "--timeline", "--out", str(tmp_path / "tl")])
    assert code == 1
    err = capsys.readouterr().err
    assert "bad.flac: cannot decode audio at " in err and "(frame " in err
    position = float(err.split("cannot decode audio at ")[1].split(" s")[0])
    assert 5.0 < position < 60.0  # in the middle, not at the start
    assert not (tmp_path / "tl" / "bad").exists()  # no partial timeline
    assert (tmp_path / "tl" / "good" / "timeline.json").is_file()
    assert not list((tmp_path / "tl").glob(".*"))


@pytest.mark.slow
def test_bad_timeline_input(exports, tmp_path):
    from esc50tf.timeline import load_window_model, timeline

    model = load_window_model(exports["float"])
    sf.write(tmp_path / "a.wav", np.zeros(RATE * 3, np.float32), RATE)
    with pytest.raises(Esc50Error, match="--hop 2.0"):
        timeline(model, tmp_path / "a.wav", tmp_path / "o", hop=2.0)
    with pytest.raises(Esc50Error, match="missing.wav: no such audio file"):
        timeline(model, tmp_path / "missing.wav", tmp_path / "o")
    (tmp_path / "taken").mkdir()
    with pytest.raises(Esc50Error, match="already exists"):
        timeline(model, tmp_path / "a.wav", tmp_path / "taken")
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes((exports["float"] / "model.tflite").read_bytes())
    with pytest.raises(Esc50Error, match="no model_card.json"):
        load_window_model(lonely)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.wav", "lonely.tflite", "taken"]
