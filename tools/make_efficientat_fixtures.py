"""Makes the EfficientAT parity fixtures (`mn` and `dymn`) in tests/fixtures/efficientat/.

The reference is a checkout of github.com/fschmid56/EfficientAT (MIT; e.g. a
snapshot brought with the search tool's fetch). Neither it nor PyTorch is a
dependency of esc50tf or its tests: run this script in a separate
environment, e.g.

    python3 -m venv /work/refenv-efficientat
    /work/refenv-efficientat/bin/pip install torch==2.9.1 torchvision==0.24.1 \
        'torchaudio==2.9.*' numpy
    git clone /work/.mirror/fschmid56+EfficientAT/repo /tmp/efficientat
    /work/refenv-efficientat/bin/python tools/make_efficientat_fixtures.py \
        --reference /tmp/efficientat --sample-clip ../shared/esc50-sample/audio/2-104877-A-3.wav

It builds the reference's own classes: `models.mn.model.get_model(width_mult=W)`
(the MobileNetV3 with its MLP head and channel squeeze-excitation, as the
AudioSet checkpoints were trained), `models.dymn.model.get_model(width_mult=W,
T_max=1.0)` (the dynamic MobileNet; its Dy-Conv temperature is the one
`get_model` sets for an AudioSet-pretrained name, `pretrain_final_temp` 1.0,
as `inference.py` builds it) and `models.preprocess.AugmentMelSTFT`
with the settings of the reference's `inference.py` / `ex_esc50.py`
(n_mels 128, 32 kHz, window 800, hop 320, n_fft 1024, fmin 0, fmax None ->
15000 Hz), both in eval mode. Weights are random (fixed seed) at a REDUCED
width (small files): for the DyMN, the Linear layers that compute the
kernel attention and the Dy-ReLU coefficients redrawn with gain 0.5 (the
reference's N(0, 0.01) initialisation would make every attention uniform
and every Dy-ReLU a plain ReLU, hiding an error in either); batch-norm
statistics from a few training-mode passes (the DyMN's variances raised to at
least 0.01: `VARIANCE_FLOOR`), then every batch-norm gamma/beta and every bias
randomised so that each array the converter moves matters.

What the official checkpoints are and what the fixture mirrors: the release
files (`mn10_as_mAP_471.pt`... at github.com/fschmid56/EfficientAT/releases/
tag/v0.0.1) are read by `torch.hub.load_state_dict_from_url` and passed to
`model.load_state_dict`, i.e. they are a bare `state_dict()` (an OrderedDict
with `_metadata`) written by `torch.save` in its zip format; the fixture
`mn_w<W>.pt` is exactly `torch.save(model.state_dict(), path)`; the DyMN
releases (`dymn10_as.pt`... , `models/dymn/model.py`) are loaded the same
way, and so is `dymn_w<W>.pt` saved.

Files (W = the width, e.g. 0.1 -> `w010`):
- `waveforms.npz`: int16 PCM at 32 kHz (both sides read `pcm / 32768`):
  `clips` [6, 64000]: 0 two seconds of a
  real ESC-50 clip (2-104877-A, "Cows muing", CC0; linearly resampled from
  44.1 kHz), 1 a chirp in noise, 2 quiet noise with 0.5 s of digital
  silence, 3 digital silence throughout, 4 the chirp clipped at full
  scale, 5 0.5 s of clip 0 zero-padded to 2 s; `short` [1, 3200] (0.1 s)
  and `long` [1, 320000] (10 s, the AudioSet clip length) of noise + chirp;
  `mel_banks` [128, 513], torchaudio's Kaldi filterbank as the reference
  pads it (eval-mode fmin 0, fmax 15000).
- `mn_<W>.pt`: the state dict; `mn_<W>.outputs.npz`: for each input set
  (`clips`, `short`, `long`), the reference's normalised log-Mel
  (time-major, `[b, frames, 128]`), `embedding` (the pooled last conv) and
  `logits`, plus `width` and `params` (its parameter count).
- `dymn_<W>.pt`, `dymn_<W>.outputs.npz`: the same for the DyMN, without the
  log-Mel (the same front end's as in `mn_<W>.outputs.npz`).

With `--full-size --out DIR` it writes the same for mn10 and dymn10 at
width 1.0 with random weights (about 20 and 42 MB, not for the repository),
which `python -m benchmarks.efficientat_parity --fixtures DIR` compares.
`--networks` picks the families (default: both).

With `--float64 DIR` it runs the reference once more in float64 (front end
and network, `torch.set_default_dtype(torch.float64)` so that the Kaldi
filterbank is built in float64 too) on the checkpoints `<network>_<W>.pt`
already in DIR and writes `<network>_<W>.float64.npz`: each input set's
`embedding` and `logits` (and, for the mn, `logmel` unless `--skip-logmel`),
rounded to float32 at the end. Both float32 implementations are measured
against it: how far apart they may be is how far float32 rounding alone
takes each of them.
Parameter counts of every width with 527 classes are printed (the test
`test_parameter_counts_match_reference` records them).
"""

from __future__ import annotations

import argparse
import os
import sys
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "efficientat"
RATE = 32000
SECONDS = 2.0
# Per network: the reduced widths of the committed fixtures, the release widths.
TEST_WIDTHS = {"mn": (0.1, 0.2), "dymn": (0.05,)}
ALL_WIDTHS = {"mn": (0.4, 0.5, 1.0, 2.0, 3.0, 4.0), "dymn": (0.4, 1.0, 2.0)}
SPREAD = 0.02  # of the randomised gamma/beta/biases: small, so outputs still follow the input
# The least BN running variance. The random DyMN at width 0.05 has channels that hardly
# vary on the clips the statistics come from (variances down to 4e-4); on other inputs, or
# with gammas 2% off, their 1 / sqrt(var + 1e-3) grows the activations 1e9-fold over its
# 15 blocks (measured: a floor of 0.003 still does). With 0.01 its outputs stay O(1) on
# every input set and differ between clips by 24% or more (0.03 or more: under 0.5%).
VARIANCE_FLOOR = {"mn": 0.0, "dymn": 0.01}
# DyMN Linear layers redrawn: the kernel attention and the Dy-ReLU coefficients.
DYNAMIC_LINEARS = (".residuals.0.weight", ".coef_net.0.weight")
# Their gain: at 1 the width-0.05 fixture's 10 s clip is ill-conditioned (the reference's own
# float32 logits 6.6e-5 from its float64 ones); at 0.5 every input set is within 3.3e-5 and
# the attention still moves from example to example.
DYNAMIC_GAIN = 0.5


def width_tag(width):
    return f"w{int(round(width * 100)):03d}"


def _read_wav(path, seconds):
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise SystemExit(f"{path}: expected 16-bit PCM")
        rate, n = f.getframerate(), f.getnframes()
        pcm = np.frombuffer(f.readframes(n), "<i2").reshape(-1, f.getnchannels())[:, 0]
    x = pcm.astype(np.float64) / 32768.0
    t_out = np.arange(int(seconds * RATE)) / RATE
    return np.interp(t_out, np.arange(len(x)) / rate, x).astype(np.float32)


def _chirp(n, rng, noise=0.05):
    t = np.arange(n) / RATE
    sweep = 0.5 * np.sin(2 * np.pi * (100 * t + 4000 * t ** 2))
    return (sweep + noise * rng.standard_normal(n)).astype(np.float32)


def make_waveforms(sample_clip, seed=0):
    rng = np.random.default_rng(seed)
    n = int(SECONDS * RATE)
    real = _read_wav(sample_clip, SECONDS) if sample_clip else _chirp(n, rng, 0.2)
    chirp = _chirp(n, rng)
    quiet = (0.01 * rng.standard_normal(n)).astype(np.float32)
    quiet[n // 4:n // 4 + RATE // 2] = 0.0
    clipped = np.clip(4.0 * chirp, -1.0, 1.0)
    padded = np.zeros(n, np.float32)
    padded[:RATE // 2] = real[:RATE // 2]
    clips = np.stack([real, chirp, quiet, np.zeros(n, np.float32), clipped, padded])
    pcm = {"clips": clips, "short": _chirp(RATE // 10, rng)[None],
           "long": _chirp(10 * RATE, rng, 0.1)[None]}
    return {k: np.round(np.clip(v, -1, 1) * 32767).astype(np.int16) for k, v in pcm.items()}


def as_float(pcm):
    """int16 -> float32 in [-1, 1), as both sides read the fixture waveforms."""
    return (pcm.astype(np.float32) / 32768.0).astype(np.float32)


def reference_classes(reference):
    """`{network: model builder}` and `AugmentMelSTFT` from the checkout.

    Its modules import by repository path; a builder takes `(width)` and
    returns the network as the reference's inference builds it (527 classes).
    """
    sys.path.insert(0, str(reference))
    cwd = os.getcwd()
    os.chdir(reference)  # helpers/utils.py reads metadata/class_labels_indices.csv at import
    try:
        from models.dymn.model import get_model as get_dymn
        from models.mn.model import get_model
        from models.preprocess import AugmentMelSTFT
    finally:
        os.chdir(cwd)
    builders = {
        "mn": lambda width: get_model(width_mult=width, num_classes=527, head_type="mlp",
                                      se_dims="c"),
        # T_max: the temperature get_model gives a pretrained name (pretrain_final_temp).
        "dymn": lambda width: get_dymn(width_mult=width, num_classes=527, T_max=1.0),
    }
    return builders, AugmentMelSTFT


def build(builder, width, seed):
    import contextlib
    import io

    import torch

    torch.manual_seed(seed)
    with contextlib.redirect_stdout(io.StringIO()):  # get_model prints the module tree
        return builder(width)


def randomise(model, mel, waves, seed, variance_floor=0.0):
    """Dynamic Linears redrawn, BN statistics from training-mode passes (variances
    raised to `variance_floor`), then random gamma/beta/biases."""
    import torch

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(DYNAMIC_LINEARS):
                p.copy_(DYNAMIC_GAIN * torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in norms:  # cumulative averages: the statistics of these clips, not 3% of them
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        x = mel(torch.from_numpy(waves)).unsqueeze(1)
        for _ in range(3):
            model(x)
        for m in norms:
            m.momentum = 0.01  # the reference's (not saved in the state dict)
            m.running_var.clamp_(min=variance_floor)
        for name, p in model.named_parameters():
            if name.endswith("bias") or (p.dim() == 1 and name.endswith("weight")):
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + SPREAD * torch.randn(p.shape, generator=g))
            elif name.startswith("classifier"):  # the reference initialises these N(0, 0.01)
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
    model.eval()


def outputs(model, mel, waves):
    import torch

    with torch.no_grad():
        spec = mel(torch.from_numpy(waves))  # [b, 128, frames]
        logits, embedding = model(spec.unsqueeze(1))
    return {"logmel": spec.transpose(1, 2).numpy(), "embedding": embedding.numpy(),
            "logits": logits.numpy()}


def write(network, builder, AugmentMelSTFT, width, waves, out, seed=0):
    import torch

    mel = AugmentMelSTFT(n_mels=128, sr=RATE, win_length=800, hopsize=320, n_fft=1024,
                         freqm=0, timem=0, fmin=0.0, fmax=None, fmin_aug_range=10,
                         fmax_aug_range=2000)
    mel.eval()
    model = build(builder, width, seed)
    randomise(model, mel, as_float(waves["clips"]), seed, VARIANCE_FLOOR[network])
    stem = f"{network}_{width_tag(width)}"
    torch.save(model.state_dict(), out / f"{stem}.pt")
    arrays = {"width": np.float32(width),
              "params": np.int64(sum(p.numel() for p in model.parameters()))}
    for key, x in waves.items():
        for name, value in outputs(model, mel, as_float(x)).items():
            if name != "logmel" or network == "mn":  # one copy of the shared front end's
                arrays[f"{key}_{name}"] = value.astype(np.float32)
    np.savez_compressed(out / f"{stem}.outputs.npz", **arrays)
    print(f"{out / f'{stem}.pt'}: width {width:g}, {int(arrays['params']):,} parameters")


def write_float64(builders, AugmentMelSTFT, folder, skip_logmel=False):
    """`<network>_<W>.float64.npz` for each `<network>_<W>.pt` of `folder`: the reference in
    float64."""
    import torch

    waves = np.load(folder / "waveforms.npz")
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        for path in sorted(folder.glob("*_w*.pt")):
            network, tag = path.stem.split("_w")
            width = int(tag) / 100
            mel = AugmentMelSTFT(n_mels=128, sr=RATE, win_length=800, hopsize=320, n_fft=1024,
                                 freqm=0, timem=0, fmin=0.0, fmax=None, fmin_aug_range=10,
                                 fmax_aug_range=2000).double().eval()
            model = build(builders[network], width, 0)
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            model.double().eval()
            arrays = {}
            for key in ("clips", "short", "long"):
                x = (waves[key].astype(np.float64) / 32768.0)
                for name, value in outputs(model, mel, x).items():
                    if name != "logmel" or (network == "mn" and not skip_logmel):
                        arrays[f"{key}_{name}"] = value.astype(np.float32)
            out = folder / f"{path.stem}.float64.npz"
            np.savez_compressed(out, **arrays)
            print(f"{out}: the reference in float64, width {width:g}")
    finally:
        torch.set_default_dtype(previous)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--reference", required=True, type=Path,
                   help="checkout of github.com/fschmid56/EfficientAT")
    p.add_argument("--sample-clip", type=Path, default=None,
                   help="a 16-bit ESC-50 WAV for clip 0 (default: a synthetic one)")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--full-size", action="store_true",
                   help="width 1.0 (mn10, dymn10; random weights) instead of the test widths")
    p.add_argument("--networks", nargs="+", choices=sorted(TEST_WIDTHS),
                   default=sorted(TEST_WIDTHS), help="which fixtures to write (default: all)")
    p.add_argument("--float64", type=Path, default=None, metavar="DIR",
                   help="only write <network>_<W>.float64.npz for the checkpoints already in DIR")
    p.add_argument("--skip-logmel", action="store_true",
                   help="with --float64: embeddings and logits only (small files)")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    builders, AugmentMelSTFT = reference_classes(args.reference.resolve())
    if args.float64 is not None:
        write_float64(builders, AugmentMelSTFT, args.float64, args.skip_logmel)
        return
    args.out.mkdir(parents=True, exist_ok=True)
    waves = make_waveforms(args.sample_clip)
    import torchaudio

    # The filterbank AugmentMelSTFT builds in eval mode, as it builds it.
    banks, _centres = torchaudio.compliance.kaldi.get_mel_banks(
        128, 1024, RATE, 0.0, 15000.0, vtln_low=100.0, vtln_high=-500.0, vtln_warp_factor=1.0)
    np.savez_compressed(args.out / "waveforms.npz", **waves,
                        mel_banks=torch.nn.functional.pad(banks, (0, 1)).numpy())
    for network in args.networks:
        for width in ((1.0,) if args.full_size else TEST_WIDTHS[network]):
            write(network, builders[network], AugmentMelSTFT, width, waves, args.out)
    for network in args.networks:
        for width in ALL_WIDTHS[network]:
            model = build(builders[network], width, 0)
            print(f"params {network} width {width:g} (527 classes): "
                  f"{sum(p.numel() for p in model.parameters()):,}")


if __name__ == "__main__":
    main()
