"""Check that real ESC-50 files go through esc50tf exactly as they should.

Builds TFRecords from a real ESC-50-layout folder (e.g. the full dataset or a
sample of it), reads them back through the tf.data pipeline and checks:

1. every stored clip's int16 PCM equals the WAV file's samples bit for bit;
2. the log-Mel and STFT of the front-end layers agree with librosa (when
   librosa is installed): max and RMS dB error over every bin, both sides
   clamped at each clip's peak - 80 dB (as tests/test_features.py compares).

Not a test (users' machines do not have the real data); run it by hand, and
with `--out` to write the figures the README quotes:

    python tools/check_real_clips.py ../shared/esc50-sample \
        --out benchmarks/results/check_real_clips-esc50-sample.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import soundfile as sf  # noqa: E402


def check_pcm(data_dir, tfr_dir):
    from esc50tf.data.dataset import DatasetOptions, TFRecordFolder
    from esc50tf.data.splits import Selection

    folder = TFRecordFolder(tfr_dir)
    ds = folder.dataset(Selection(tuple(folder.folds)), DatasetOptions(
        batch_size=8, with_metadata=True, waveform_dtype="int16"))
    checked = 0
    for x, _, meta in ds:
        for pcm, name in zip(x.numpy(), meta["filename"].numpy()):
            wav, _ = sf.read(os.path.join(data_dir, "audio", name.decode()), dtype="int16")
            if not np.array_equal(pcm[: len(wav)], wav):
                raise SystemExit(f"PCM differs for {name.decode()}")
            checked += 1
    return checked


def db_errors(ours, ref, floor_db=80.0):
    ours = np.maximum(ours, ours.max() - floor_db)
    ref = np.maximum(ref, ref.max() - floor_db)
    err = np.abs(ours - ref)
    return float(err.max()), float(np.sqrt(np.mean(err**2)))


def check_parity(data_dir, files):
    import librosa

    from esc50tf.frontend import FeatureConfig, build_frontend

    rows = []
    settings = [("mel", "slaney", "slaney"), ("mel", "htk", None), ("stft", None, None)]
    for kind, scale, norm in settings:
        kwargs = {"mel_scale": scale, "norm": norm} if kind == "mel" else {}
        cfg = FeatureConfig(kind=kind, sample_rate=44100, **kwargs)
        layer = build_frontend(cfg)
        worst = (0.0, 0.0)
        for name in files:
            y, sr = sf.read(os.path.join(data_dir, "audio", name), dtype="float32")
            ours = np.asarray(layer(y[None]))[0].T  # [bins, frames]
            if kind == "mel":
                s = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=512,
                                                   n_mels=128, htk=scale == "htk", norm=norm,
                                                   pad_mode="constant")
            else:
                s = np.abs(librosa.stft(y, n_fft=2048, hop_length=512, pad_mode="constant")) ** 2
            ref = librosa.power_to_db(s, ref=1.0, amin=1e-10, top_db=None)
            mx, rms = db_errors(ours, ref)
            worst = (max(worst[0], mx), max(worst[1], rms))
        rows.append((f"{kind} {scale or ''} {norm or ''}".strip(), *worst))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir", help="ESC-50-layout folder (meta/esc50.csv + audio/)")
    parser.add_argument("--out", metavar="FILE.json", default=None,
                        help="Also write the figures as JSON (with this command line).")
    args = parser.parse_args(argv)

    from esc50tf.data.metadata import load_metadata
    from esc50tf.data.build import build_tfrecords

    meta = load_metadata(args.data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        build_tfrecords(args.data_dir, os.path.join(tmp, "tfr"), progress=False)
        n = check_pcm(args.data_dir, os.path.join(tmp, "tfr"))
    print(f"PCM: {n} clips stored bit-identical to their WAV files")
    try:
        rows = check_parity(args.data_dir, list(meta["filename"]))
    except ImportError:
        print("librosa not installed: parity check skipped (pip install librosa)")
        return 0
    print("front end vs librosa (worst clip; every bin, both clamped at the peak - 80 dB):")
    for name, mx, rms in rows:
        print(f"  {name:<20} max {mx:.4f} dB   rms {rms:.5f} dB")
    if args.out:
        from esc50tf.io import write_json

        write_json(args.out, {
            "command": " ".join(["tools/check_real_clips.py", *(argv or sys.argv[1:])]),
            "clips": len(meta), "pcm_identical": n,
            "comparison": "worst clip; every bin, both sides clamped at the clip's peak - 80 dB",
            "rows": [{"front_end": name, "max_db": mx, "rms_db": rms} for name, mx, rms in rows],
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
