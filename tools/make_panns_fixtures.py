"""Makes the PANNs parity fixtures in tests/fixtures/panns/ with the reference code.

The reference is the `panns-inference` package (PyTorch, torchlibrosa). It
is NOT a dependency of esc50tf or of its tests: run this script in a
separate environment that has it, e.g.

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch --index-url https://download.pytorch.org/whl/cpu
    /work/torchenv/bin/pip install panns-inference torchlibrosa librosa matplotlib soundfile
    /work/torchenv/bin/python tools/make_panns_fixtures.py \
        --sample-clip ../shared/esc50-sample/audio/2-104877-A-3.wav

For each architecture (cnn14, cnn14_16k, cnn14_sed) it instantiates the
reference class (`Cnn14`, `Cnn14_DecisionLevelMax`) with the official front
end settings, then swaps its conv blocks, fc1 and fc_audioset for the same
reference classes (`ConvBlock`, `nn.Linear`) at REDUCED widths: the key
layout and the forward code are the reference's own, only the channel counts
shrink so that the files are small enough to commit. Weights are random
(fixed seed); batch-norm running statistics come from a few training-mode
passes over the fixture waveforms (so bn0 really normalises log-Mel dB
values), then gamma/beta and the linear biases are randomised so that every
array the converter moves matters.

Written files:

- `<arch>.zip.pth` and `<arch>.legacy.pth`: `{"model": state_dict,
  "iteration": 0}` saved by `torch.save` in its zip format and with
  `_use_new_zipfile_serialization=False` (the legacy format). The STFT's
  DFT matrices (`spectrogram_extractor.stft.conv_*.weight`, 4 MB at 32 kHz)
  are left out to keep the files small; everything else, `logmel_extractor.melW`
  included, is the reference's state dict.
- `waveforms_<rate>.npz`: the int16 waveforms (`pcm`, [3, samples]) and
  their `names`; both sides read `pcm / 32768` as float32, so resampling is
  not part of the comparison. Clip 0 is 2 s of a real ESC-50 clip
  (2-104877-A, "Cows muing.wav" by Kulanen, freesound.org/s/104877, CC0),
  resampled with librosa; clip 1 a chirp in noise; clip 2 quiet noise with
  0.5 s of digital silence.
- `<arch>.outputs.npz`: the reference outputs in eval mode: `logmel`
  [3, frames, 64] (the log-Mel before bn0), `logits` (fc_audioset's output:
  [3, classes] or, for the SED variant, [3, segments, classes]),
  `clipwise`, `embedding` (the 'embedding' output; for the SED variant, the
  per-segment ReLU(fc1) `[3, segments, D]`), `framewise` (SED only), and the
  reduced `widths` / `embedding_size`.

It also prints the full-size parameter counts recorded in
tests/test_pretrained.py.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "panns"
WIDTHS = (4, 8, 8, 16, 16, 32)
EMBEDDING = 32
CLASSES = 527
SECONDS = 2.0
SETTINGS = {
    "cnn14": dict(cls="Cnn14", sample_rate=32000, window_size=1024, hop_size=320,
                  mel_bins=64, fmin=50, fmax=14000),
    "cnn14_16k": dict(cls="Cnn14", sample_rate=16000, window_size=512, hop_size=160,
                      mel_bins=64, fmin=50, fmax=8000),
    "cnn14_sed": dict(cls="Cnn14_DecisionLevelMax", sample_rate=32000, window_size=1024,
                      hop_size=320, mel_bins=64, fmin=50, fmax=14000),
}


def reference_models():
    """`panns_inference.models` without running the package's __init__.

    The package's __init__ imports its config module, which shells out to
    wget for the AudioSet label list; the model classes need none of that.
    """
    import panns_inference  # noqa: F401  (only to locate the files)
    spec = importlib.util.find_spec("panns_inference")
    folder = Path(spec.origin).parent
    package = types.ModuleType("panns_ref")
    package.__path__ = [str(folder)]
    sys.modules["panns_ref"] = package
    for name in ("pytorch_utils", "models"):
        spec = importlib.util.spec_from_file_location(f"panns_ref.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[f"panns_ref.{name}"] = module
        spec.loader.exec_module(module)
    return sys.modules["panns_ref.models"]


def waveforms(rate, clip_path):
    import librosa
    import soundfile as sf

    n = int(SECONDS * rate)
    audio, sr = sf.read(clip_path, dtype="float32", always_2d=True)
    audio = librosa.resample(audio.mean(axis=1), orig_sr=sr, target_sr=rate)
    # The loudest 2 s of the clip (RMS over a sliding window).
    energy = np.convolve(audio**2, np.ones(n), mode="valid")
    start = int(np.argmax(energy)) if len(energy) else 0
    real = np.zeros(n, np.float32)
    piece = audio[start : start + n]
    real[: len(piece)] = piece
    rng = np.random.default_rng(rate)
    t = np.arange(n) / rate
    chirp = 0.4 * np.sin(2 * np.pi * (100 * t + (rate / 5 - 100) / (2 * SECONDS) * t**2))
    chirp += 0.02 * rng.standard_normal(n)
    quiet = 0.003 * rng.standard_normal(n)
    quiet[n // 4 : n // 2] = 0.0  # digital silence: the log floor
    pcm = np.stack([real, chirp, quiet])
    return np.clip(np.round(pcm * 32767), -32768, 32767).astype(np.int16)


def build(models, torch, arch):
    nn = torch.nn
    s = dict(SETTINGS[arch])
    cls = getattr(models, s.pop("cls"))
    model = cls(classes_num=CLASSES, **s)
    channels = (1,) + WIDTHS
    for i in range(6):
        setattr(model, f"conv_block{i + 1}", models.ConvBlock(channels[i], channels[i + 1]))
    model.fc1 = nn.Linear(WIDTHS[-1], EMBEDDING, bias=True)
    model.fc_audioset = nn.Linear(EMBEDDING, CLASSES, bias=True)
    return model


def calibrate(model, torch, x):
    """Realistic running statistics, then random affine parameters."""
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average over the passes
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(x)
        for bn in bns:
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
        for fc in (model.fc1, model.fc_audioset):
            fc.bias.normal_(0.0, 0.1)
    model.eval()


def state_dict(model):
    return {k: v for k, v in model.state_dict().items()
            if not k.startswith("spectrogram_extractor.stft.")}


def run(model, torch, x, sed):
    captured = {}
    model.fc1.register_forward_hook(lambda m, i, o: captured.__setitem__("fc1", o))
    model.fc_audioset.register_forward_hook(lambda m, i, o: captured.__setitem__("logits", o))
    model.logmel_extractor.register_forward_hook(
        lambda m, i, o: captured.__setitem__("logmel", o[:, 0]))
    with torch.no_grad():
        out = model(x)
    result = {
        "logmel": captured["logmel"].numpy(),
        "logits": captured["logits"].numpy(),
        "clipwise": out["clipwise_output"].numpy(),
    }
    if sed:
        result["embedding"] = torch.relu(captured["fc1"]).numpy()
        result["framewise"] = out["framewise_output"].numpy()
    else:
        result["embedding"] = out["embedding"].numpy()
    return {k: v.astype(np.float32) for k, v in result.items()}


def full_size_counts(models, torch):
    """Parameter counts of the full-size reference models (see test_pretrained.py)."""
    for arch, s in SETTINGS.items():
        s = dict(s)
        model = getattr(models, s.pop("cls"))(classes_num=CLASSES, **s)
        front = ("spectrogram_extractor.", "logmel_extractor.")
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        stored = sum(v.numel() for k, v in model.state_dict().items()
                     if not k.startswith(front) and not k.endswith("num_batches_tracked"))
        print(f"{arch}: trainable={trainable} state_dict_without_front_end={stored}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sample-clip", required=True, type=Path,
                        help="the real ESC-50 clip to excerpt (2-104877-A-3.wav, CC0)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()

    import torch

    torch.use_deterministic_algorithms(True)
    models = reference_models()
    args.out.mkdir(parents=True, exist_ok=True)
    names = np.array([f"{args.sample_clip.name} (2 s excerpt)", "chirp in noise",
                      "quiet noise with silence"])
    pcm_by_rate = {}
    for rate in sorted({s["sample_rate"] for s in SETTINGS.values()}):
        pcm_by_rate[rate] = waveforms(rate, args.sample_clip)
        np.savez_compressed(args.out / f"waveforms_{rate // 1000}k.npz",
                            pcm=pcm_by_rate[rate], names=names)
    for i, arch in enumerate(SETTINGS):
        torch.manual_seed(args.seed + i)
        s = SETTINGS[arch]
        model = build(models, torch, arch)
        x = torch.from_numpy(pcm_by_rate[s["sample_rate"]].astype(np.float32) / 32768.0)
        calibrate(model, torch, x)
        checkpoint = {"model": state_dict(model), "iteration": 0}
        torch.save(checkpoint, args.out / f"{arch}.zip.pth")
        torch.save(checkpoint, args.out / f"{arch}.legacy.pth",
                   _use_new_zipfile_serialization=False)
        outputs = run(model, torch, x, sed=s["cls"] != "Cnn14")
        np.savez_compressed(args.out / f"{arch}.outputs.npz", widths=np.array(WIDTHS),
                            embedding_size=np.array(EMBEDDING), **outputs)
        print(arch, {k: v.shape for k, v in outputs.items()})
    full_size_counts(models, torch)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{args.out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
