"""Makes the PANNs parity fixtures in tests/fixtures/panns/ with the reference code.

Two references, neither a dependency of esc50tf or of its tests: the
`panns-inference` package (PyTorch, torchlibrosa) for the model classes, and
a checkout of the authors' training code (github.com/qiuqiangkong/
audioset_tagging_cnn, e.g. a snapshot brought with the search tool's fetch)
for the sampler whose state the training script saves beside the weights.
Run this script in a separate environment that has them, e.g.

    python3 -m venv /work/torchenv
    /work/torchenv/bin/pip install torch==2.13.0
    /work/torchenv/bin/pip install panns-inference torchlibrosa librosa soundfile h5py pandas scipy
    git clone /work/.mirror/qiuqiangkong+audioset_tagging_cnn/repo /tmp/audioset_tagging_cnn
    /work/torchenv/bin/python tools/make_panns_fixtures.py \
        --sample-clip ../shared/esc50-sample/audio/2-104877-A-3.wav \
        --training-code /tmp/audioset_tagging_cnn

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

What the official checkpoints are, and what each fixture mirrors:

- `Cnn14_mAP=0.431.pth`, `Cnn14_16k_mAP=0.438.pth` and
  `Cnn14_DecisionLevelMax_mAP=0.385.pth` (zenodo.org/records/3987831) were
  written by the training script `pytorch/main.py` of audioset_tagging_cnn,
  which saves every 100,000 iterations
  `torch.save({"iteration": iteration, "model": model.module.state_dict(),
  "sampler": train_sampler.state_dict()}, path)`; panns-inference reads
  them back with `torch.load(path)["model"]`. So the `model` entry is the
  `OrderedDict` that `Module.state_dict()` returns, with its `_metadata`
  attribute (per-module versions, restored by a pickle BUILD), holding
  every buffer, the torchlibrosa front end's (`spectrogram_extractor.stft.
  conv_real/conv_imag.weight`, `logmel_extractor.melW`) included. The
  `sampler` entry is the state of the default `BalancedTrainSampler`
  (`--balanced=balanced`): `indexes_per_class` (a list of int64 numpy
  arrays, one per class), `queue` and `pointers_of_classes` (lists of
  Python ints). Files of 2019-2020 (PyTorch < 1.6) are in the legacy
  serialisation; later ones in the zip format.
- `<arch>.zip.pth` and `<arch>.legacy.pth`: exactly that dict, made the same
  way: `model.state_dict()` unchanged (an `OrderedDict` with `_metadata`,
  the front end's DFT matrices included), the `sampler` entry from the
  training code's own `BalancedTrainSampler` over a small index file written
  as its `utils/create_indexes.py` writes one (600 clips, 527 classes), after
  drawing a few batches as training does; `torch.save` in its zip format and
  with `_use_new_zipfile_serialization=False` (the legacy format). Two
  differences remain, both outside what the reader interprets: the official
  weights were saved from a GPU (storage location "cuda:0"; here "cpu"), and
  their numpy arrays were pickled by numpy 1.x (`numpy.core.multiarray`;
  numpy 2 writes `numpy._core.multiarray`, both accepted).
- `waveforms_<rate>.npz`: the int16 waveforms (`pcm`, [6, samples]) and
  their `names`; both sides read `pcm / 32768` as float32, so resampling is
  not part of the comparison. Clip 0 is 2 s of a real ESC-50 clip
  (2-104877-A, "Cows muing.wav" by Kulanen, freesound.org/s/104877, CC0),
  resampled with librosa; clip 1 a chirp in noise; clip 2 quiet noise with
  0.5 s of digital silence; then the inputs users have that models get wrong
  most easily: 3 digital silence throughout, 4 the chirp clipped at full
  scale, 5 0.5 s of clip 0 zero-padded to 2 s.
- `<arch>.outputs.npz`: the reference outputs in eval mode: `logmel`
  [6, frames, 64] (the log-Mel before bn0), `logits` (fc_audioset's output:
  [6, classes] or, for the SED variant, [6, segments, classes]),
  `clipwise`, `embedding` (the 'embedding' output; for the SED variant, the
  per-segment ReLU(fc1) `[6, segments, D]`), `framewise` (SED only), and the
  reduced `widths` / `embedding_size`.

It also prints the full-size parameter counts recorded in
tests/test_pretrained.py. With `--full-size --out DIR` it writes the same
files for the models at their real widths (about 330 MB a checkpoint, not
for the repository), which `python -m benchmarks.panns_parity --fixtures DIR`
then compares.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "panns"
WIDTHS = (4, 8, 8, 16, 16, 32)
EMBEDDING = 32
FULL_WIDTHS = (64, 128, 256, 512, 1024, 2048)  # the reference's own
FULL_EMBEDDING = 2048
CLASSES = 527
SECONDS = 2.0
# The training script saves at multiples of 100,000 iterations.
ITERATION = 600_000
SAMPLER_CLIPS = 600
SAMPLER_BATCHES = 10
BATCH_SIZE = 64  # the script's 32, doubled by its mixup
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
    silence = np.zeros(n, np.float32)
    clipped = np.clip(4.0 * chirp, -1.0, 1.0)  # full scale, flat-topped
    padded = np.zeros(n, np.float32)
    padded[: n // 4] = real[: n // 4]  # a short clip zero-padded to length
    pcm = np.stack([real, chirp, quiet, silence, clipped, padded])
    return np.clip(np.round(pcm * 32767), -32768, 32767).astype(np.int16)


def build(models, torch, arch, full_size=False):
    nn = torch.nn
    s = dict(SETTINGS[arch])
    cls = getattr(models, s.pop("cls"))
    model = cls(classes_num=CLASSES, **s)
    if full_size:
        return model
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


def sampler_state(training_code, out_dir, seed):
    """`train_sampler.state_dict()` of the training code's BalancedTrainSampler.

    The index file is written as `utils/create_indexes.py` writes one (the
    datasets `audio_name` S20, `target` bool [clips, classes], `hdf5_path`
    S200, `index_in_hdf5` int32); every class gets at least one clip, as in
    AudioSet. The sampler then draws a few batches, as training does, so the
    queue and pointers are mid-epoch.
    """
    import h5py

    sys.path.insert(0, str(Path(training_code) / "utils"))
    from data_generator import BalancedTrainSampler

    rng = np.random.default_rng(seed)
    target = np.zeros((SAMPLER_CLIPS, CLASSES), bool)
    target[np.arange(SAMPLER_CLIPS), np.arange(SAMPLER_CLIPS) % CLASSES] = True
    extra = rng.integers(0, CLASSES, size=(SAMPLER_CLIPS, 2))
    target[np.arange(SAMPLER_CLIPS)[:, None], extra] = True
    path = Path(out_dir) / "indexes.h5"
    with h5py.File(path, "w") as hw:
        names = [f"Y{i:011d}.wav".encode() for i in range(SAMPLER_CLIPS)]
        hw.create_dataset("audio_name", data=names, dtype="S20")
        hw.create_dataset("target", data=target, dtype=bool)
        hw.create_dataset("hdf5_path", data=[b"balanced_train.h5"] * SAMPLER_CLIPS,
                          dtype="S200")
        hw.create_dataset("index_in_hdf5", data=np.arange(SAMPLER_CLIPS), dtype=np.int32)
    sampler = BalancedTrainSampler(indexes_hdf5_path=str(path), batch_size=BATCH_SIZE)
    batches = iter(sampler)
    for _ in range(SAMPLER_BATCHES):
        next(batches)
    return sampler.state_dict()


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
    parser.add_argument("--training-code", required=True, type=Path,
                        help="a checkout of audioset_tagging_cnn (its utils/data_generator.py)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--full-size", action="store_true",
                        help="the models at their real widths (about 330 MB a file; for "
                             "`python -m benchmarks.panns_parity --fixtures OUT`, not for "
                             "the repository): --out must name another folder")
    args = parser.parse_args()
    if args.full_size and args.out.resolve() == OUT.resolve():
        parser.error("--full-size writes about 2 GB: give --out a folder outside tests/")
    widths, embedding = (FULL_WIDTHS, FULL_EMBEDDING) if args.full_size else (WIDTHS, EMBEDDING)

    import torch

    torch.use_deterministic_algorithms(True)
    models = reference_models()
    args.out.mkdir(parents=True, exist_ok=True)
    names = np.array([f"{args.sample_clip.name} (2 s excerpt)", "chirp in noise",
                      "quiet noise with silence", "digital silence",
                      "chirp clipped at full scale", "0.5 s of the excerpt, zero-padded"])
    pcm_by_rate = {}
    for rate in sorted({s["sample_rate"] for s in SETTINGS.values()}):
        pcm_by_rate[rate] = waveforms(rate, args.sample_clip)
        np.savez_compressed(args.out / f"waveforms_{rate // 1000}k.npz",
                            pcm=pcm_by_rate[rate], names=names)
    for i, arch in enumerate(SETTINGS):
        torch.manual_seed(args.seed + i)
        s = SETTINGS[arch]
        model = build(models, torch, arch, args.full_size)
        x = torch.from_numpy(pcm_by_rate[s["sample_rate"]].astype(np.float32) / 32768.0)
        calibrate(model, torch, x)
        with tempfile.TemporaryDirectory() as scratch:
            sampler = sampler_state(args.training_code, scratch, args.seed + i)
        # The training script's dict, in its order; the state dict unchanged.
        checkpoint = {"iteration": ITERATION, "model": model.state_dict(),
                      "sampler": sampler}
        torch.save(checkpoint, args.out / f"{arch}.zip.pth")
        torch.save(checkpoint, args.out / f"{arch}.legacy.pth",
                   _use_new_zipfile_serialization=False)
        outputs = run(model, torch, x, sed=s["cls"] != "Cnn14")
        np.savez_compressed(args.out / f"{arch}.outputs.npz", widths=np.array(widths),
                            embedding_size=np.array(embedding), **outputs)
        print(arch, {k: v.shape for k, v in outputs.items()})
    full_size_counts(models, torch)
    total = sum(p.stat().st_size for p in args.out.iterdir())
    print(f"{args.out}: {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
