"""The sounds of the synthetic ESC-50 (`esc50tf.data.synth`): each class's recipe, each
recording's variation, and the rendering of a clip from them (numpy only).

See `esc50tf.data.synth` for what the sounds are like and why.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np

_KINDS = ("harmonic", "chirp", "noise", "bursts", "am", "fm", "bell")
_NOUNS = {
    "harmonic": "hum",
    "chirp": "chirp",
    "noise": "hiss",
    "bursts": "rattle",
    "am": "throb",
    "fm": "siren",
    "bell": "chime",
}
# Register of each family in Hz (f0, sweep centre, band centre, resonance,
# carrier, ...) for sample rates >= 15 kHz; lower rates scale it down.
_RANGES = {
    "harmonic": (90.0, 900.0),
    "chirp": (400.0, 3000.0),  # centre of the sweep
    "noise": (150.0, 6000.0),
    "bursts": (300.0, 5000.0),
    "am": (150.0, 3000.0),
    "fm": (300.0, 2500.0),
    "bell": (200.0, 2500.0),
}
_REGISTERS = ("deep", "low", "warm", "mellow", "mid", "bright", "high", "sharp", "shrill", "piercing")
_PEAK = 10 ** (-1.0 / 20)  # loudest clip peaks at -1 dBFS
_GAIN_DB = (-20.0, 0.0)
_SNR_DB = (3.0, 30.0)
_PITCH_SEMITONES = 2.0
_TEMPO_OCTAVES = 0.25
_DISTRACTOR_P = 0.3
_DISTRACTOR_DB = (-24.0, -12.0)


@dataclasses.dataclass(frozen=True)
class _Recipe:
    """How one class sounds. Field meanings depend on `kind` (see `_render_event`)."""

    target: int
    category: str
    kind: str
    freq: float  # Hz: f0, sweep centre, band centre, resonance, carrier
    rate: float  # Hz: vibrato, sweeps, texture, bursts, AM, FM or strikes per second
    depth: float  # vibrato/FM semitones, AM depth, texture depth, decay seconds
    spread: float  # sweep octaves, bandwidth octaves, noise share of a burst
    partials: tuple  # frequency ratios of the partials
    amps: tuple  # their amplitudes
    duration: float  # typical event length, seconds
    max_events: int
    attack: float  # seconds


@dataclasses.dataclass(frozen=True)
class _Recording:
    """What the takes of one `src_file` share."""

    pitch: float  # frequency factor
    tempo: float  # rate factor
    timbre: tuple  # per-partial amplitude factors
    tilt: float  # background noise slope: 0 white, 1 pink, 2 brown


def make_recipes(num_classes, sample_rate, seed):
    """One recipe per class; families and registers spread over the classes."""
    order = np.random.default_rng([seed, 0]).permutation(num_classes)
    kind_ids = order % len(_KINDS)
    ranks = order // len(_KINDS)
    counts = np.bincount(kind_ids, minlength=len(_KINDS))
    scale = min(1.0, sample_rate / 15000.0)
    recipes, names = [], set()
    for target in range(num_classes):
        rng = np.random.default_rng([seed, 1, target])
        kind = _KINDS[kind_ids[target]]
        # Evenly spaced registers within a family, so neighbours overlap once
        # the per-recording pitch shift is added.
        pos = (ranks[target] + 0.5 + rng.uniform(-0.2, 0.2)) / counts[kind_ids[target]]
        lo, hi = _RANGES[kind]
        freq = scale * lo * (hi / lo) ** pos
        name = f"{_REGISTERS[min(int(pos * len(_REGISTERS)), len(_REGISTERS) - 1)]}_{_NOUNS[kind]}"
        base, n = name, 2
        while name in names:
            name, n = f"{base}_{n}", n + 1
        names.add(name)

        spread = 0.0
        if kind == "harmonic":
            partials = tuple(range(1, 9))
            slope = rng.uniform(-12.0, -2.0)  # dB per harmonic
            even = rng.uniform(0.1, 1.0)
            amps = tuple(10 ** (slope * (k - 1) / 20) * (even if k % 2 == 0 else 1.0) for k in partials)
            rate, depth = rng.uniform(3.0, 8.0), rng.uniform(0.1, 0.8)
            duration, attack = rng.uniform(0.4, 2.0), rng.uniform(0.01, 0.15)
        elif kind == "chirp":
            partials, amps = (1, 2, 3), (1.0, rng.uniform(0.0, 0.5), rng.uniform(0.0, 0.25))
            spread = rng.uniform(0.5, 1.5) * rng.choice([-1.0, 1.0])
            rate = rng.uniform(2.5, 12.0)  # sweeps per second
            depth = rng.uniform(0.3, 0.9)  # share of each period that sweeps
            duration, attack = rng.uniform(0.3, 1.5), 0.005
        elif kind == "noise":
            partials, amps = (1,), (1.0,)
            spread = rng.uniform(0.3, 1.2)
            rate, depth = rng.uniform(1.0, 20.0), rng.uniform(0.0, 0.8)
            duration, attack = rng.uniform(0.5, 3.0), rng.uniform(0.02, 0.3)
        elif kind == "bursts":
            partials, amps = (1,), (1.0,)
            spread = rng.uniform(0.2, 0.9)
            rate, depth = rng.uniform(2.0, 20.0), rng.uniform(0.003, 0.03)
            duration, attack = rng.uniform(0.3, 2.0), 0.002
        elif kind == "am":
            partials, amps = (1, 2, 3), (1.0, rng.uniform(0.0, 0.6), rng.uniform(0.0, 0.3))
            rate, depth = rng.uniform(3.0, 40.0), rng.uniform(0.5, 1.0)
            duration, attack = rng.uniform(0.4, 2.5), rng.uniform(0.01, 0.1)
        elif kind == "fm":
            partials, amps = (1, 2), (1.0, rng.uniform(0.0, 0.5))
            rate, depth = rng.uniform(0.3, 6.0), rng.uniform(2.0, 12.0)
            duration, attack = rng.uniform(0.5, 2.5), rng.uniform(0.02, 0.2)
        else:  # bell
            partials = (1.0, *np.sort(rng.uniform(1.3, 6.5, size=3)).tolist())
            amps = (1.0, *rng.uniform(0.3, 1.0, size=3).tolist())
            rate, depth = rng.uniform(0.5, 4.0), rng.uniform(0.1, 1.0)
            duration, attack = rng.uniform(0.3, 2.5), 0.002
        recipes.append(
            _Recipe(
                target=target,
                category=name,
                kind=kind,
                freq=float(freq),
                rate=float(rate),
                depth=float(depth),
                spread=float(spread),
                partials=tuple(float(p) for p in partials),
                amps=tuple(float(a) for a in amps),
                duration=float(duration),
                max_events=int(rng.integers(1, 5)),
                attack=float(attack),
            )
        )
    return recipes


def make_recording(recipe, rng):
    return _Recording(
        pitch=2.0 ** (rng.uniform(-_PITCH_SEMITONES, _PITCH_SEMITONES) / 12),
        tempo=2.0 ** rng.uniform(-_TEMPO_OCTAVES, _TEMPO_OCTAVES),
        timbre=tuple(np.exp(rng.normal(0.0, 0.2, size=len(recipe.partials))).tolist()),
        tilt=float(rng.uniform(0.0, 2.0)),
    )


_NEUTRAL = _Recording(pitch=1.0, tempo=1.0, timbre=(1.0,) * 8, tilt=0.0)


def _sin_cycles(cycles):
    """sin(2 pi cycles) as float32; wrapping first keeps float32 exact and fast."""
    frac = (cycles - np.floor(cycles)).astype(np.float32)
    return np.sin(np.float32(2 * np.pi) * frac)


def _partial_sum(cycles, ratios, amps, f_max, nyquist):
    """Sum of amps[k] * sin(2 pi ratios[k] cycles), skipping partials above `nyquist`.

    `cycles` is the float64 running phase in cycles. Integer ratios use the
    recurrence sin((k+1)x) = 2cos(x)sin(kx) - sin((k-1)x): one multiply-add
    per harmonic instead of one sine.
    """
    out = np.zeros(len(cycles), dtype=np.float32)
    if all(float(r).is_integer() for r in ratios):
        frac = np.float32(2 * np.pi) * (cycles - np.floor(cycles)).astype(np.float32)
        prev, cur = np.zeros_like(out), np.sin(frac)
        two_cos = 2 * np.cos(frac) if max(ratios) > 1 else None
        for k in range(1, int(max(ratios)) + 1):
            if k * f_max >= nyquist:
                break
            if k in ratios:
                out += np.float32(amps[ratios.index(k)]) * cur
            if two_cos is not None:
                prev, cur = cur, two_cos * cur - prev
        return out
    for r, a in zip(ratios, amps):
        if r * f_max < nyquist:
            out += np.float32(a) * _sin_cycles(r * cycles)
    return out


def _smooth_noise(n, sr, rate, rng):
    """Random float32 curve with about `rate` wiggles per second, roughly in [-2, 2]."""
    points = int(n / sr * rate) + 2
    knots = np.linspace(0, n - 1, points, dtype=np.float32)
    return np.interp(np.arange(n, dtype=np.float32), knots, rng.standard_normal(points)).astype(np.float32)


def _fade(n, sr, attack, release):
    i = np.arange(n, dtype=np.float32)
    a = np.float32(1 / max(attack * sr, 1.0))
    r = np.float32(1 / max(release * sr, 1.0))
    return np.minimum(np.float32(1), np.minimum((i + 1) * a, (n - i) * r))


def _place(n, template, times, gains):
    """Adds `template` at sample offsets `times`, scaled by `gains`."""
    out = np.zeros(n, dtype=np.float32)
    for t, g in zip(times, gains):
        m = min(len(template), n - t)
        if m > 0:
            out[t : t + m] += np.float32(g) * template[:m]
    return out


def _fft_size(n):
    """Smallest 2**a * 3**b * 5**c >= n: FFTs of such sizes are fast."""
    best = 1 << max(n - 1, 0).bit_length()
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            size = p35 << max((n - 1) // p35, 0).bit_length()
            best = min(best, size)
            p35 *= 3
        p5 *= 5
    return best


@functools.lru_cache(maxsize=64)
def _log2_freqs(n, sr):
    """log2(f / 1 kHz) of the rfft bins of an `n`-point signal, DC clamped to 20 Hz."""
    f = np.maximum(np.arange(n // 2 + 1) * (sr / n), 20.0)
    out = np.log2(f / 1000.0).astype(np.float32)
    out.flags.writeable = False
    return out


def _spectral_noise(n, sr, gain_of_log2f, rng):
    """Noise with amplitude spectrum `gain_of_log2f(log2(f / 1 kHz))`, float32.

    Uniform real and imaginary parts are cheaper to draw than Gaussian ones;
    the inverse FFT sums so many of them that the waveform is Gaussian anyway.
    """
    size = _fft_size(n)
    m = size // 2 + 1
    shape = gain_of_log2f(_log2_freqs(size, sr))
    shape[0] = 0.0
    spec = np.empty(m, dtype=np.complex64)
    spec.real = rng.random(m, dtype=np.float32) - np.float32(0.5)
    spec.imag = rng.random(m, dtype=np.float32) - np.float32(0.5)
    spec *= shape
    return np.fft.irfft(spec, size)[:n].astype(np.float32, copy=False)


def _band_noise(n, sr, centre, octaves, rng):
    """Noise with a Gaussian band around `centre`, `octaves` wide, in log frequency."""
    mid = np.float32(math.log2(centre / 1000.0))
    inv = np.float32(2.0 / octaves)
    return _spectral_noise(n, sr, lambda lf: np.exp(np.float32(-0.5) * ((lf - mid) * inv) ** 2), rng)


def _background(n, sr, tilt, rng):
    """Noise with power falling as f**-tilt."""
    return _spectral_noise(n, sr, lambda lf: np.exp2(np.float32(-tilt / 2) * lf), rng)


def _render_event(recipe, rec, n, sr, rng):
    """One float32 event of `n` samples, peak 1."""
    nyquist = 0.45 * sr
    freq = recipe.freq * rec.pitch
    rate = recipe.rate * rec.tempo
    amps = [a * w for a, w in zip(recipe.amps, rec.timbre)]
    kind = recipe.kind
    if kind in ("harmonic", "am", "fm"):
        t = np.arange(n, dtype=np.float64) / sr
        if kind == "am":
            # Slow drift in semitones.
            semis = np.float32(0.1) * _smooth_noise(n, sr, 2.0, rng)
            f_max = freq * 2 ** (0.3 / 12)
        else:
            semis = np.float32(recipe.depth) * _sin_cycles(rate * t + rng.random())
            f_max = freq * 2 ** (recipe.depth / 12)
            if kind == "harmonic":
                semis += np.float32(0.15) * _smooth_noise(n, sr, 10.0, rng)  # jitter
                f_max *= 2 ** (0.3 / 12)
        inst = np.float32(freq / sr) * np.exp2(semis * np.float32(1 / 12))  # cycles per sample
        cycles = np.cumsum(inst, dtype=np.float64) + rng.random()
        x = _partial_sum(cycles, recipe.partials, amps, f_max, nyquist)
        if kind == "am":
            lfo = _sin_cycles(rate * t + rng.random())
            x *= np.float32(1 - recipe.depth / 2) + np.float32(recipe.depth / 2) * lfo
        x *= _fade(n, sr, recipe.attack, 0.1)
    elif kind == "chirp":
        period = max(int(sr / rate), 2)
        sweep = max(int(period * recipe.depth), 2)
        u = np.arange(sweep, dtype=np.float64) / sweep  # [sweep]
        # Exponential sweep over `spread` octaves centred on `freq`, phase
        # integrated in closed form.
        start = freq * 2 ** (-recipe.spread / 2)
        k = recipe.spread * math.log(2)
        cycles = start * (sweep / sr) * np.expm1(k * u) / k
        f_max = freq * 2 ** (abs(recipe.spread) / 2)
        chirp = _partial_sum(cycles, recipe.partials, amps, f_max, nyquist)
        chirp *= np.sin(np.float32(np.pi) * u.astype(np.float32)) ** 2  # [sweep]
        starts = np.arange(0, n, period)
        starts = starts + rng.integers(0, max(period // 8, 1), size=len(starts))
        x = _place(n, chirp, starts, rng.uniform(0.6, 1.0, size=len(starts)))
    elif kind == "noise":
        x = _band_noise(n, sr, freq, recipe.spread, rng)
        x *= np.float32(1) + np.float32(recipe.depth / 2) * np.tanh(_smooth_noise(n, sr, rate, rng))
        x *= _fade(n, sr, recipe.attack, 0.2)
    elif kind == "bursts":
        m = max(int(6 * recipe.depth * sr), 8)
        tt = np.arange(m, dtype=np.float64) / sr
        tone = _sin_cycles(min(freq, nyquist) * tt)
        noise = _band_noise(m, sr, freq, 2.0, rng)
        noise /= np.max(np.abs(noise)) + np.float32(1e-12)
        burst = np.exp(-tt / recipe.depth).astype(np.float32) * (
            np.float32(1 - recipe.spread) * tone + np.float32(recipe.spread) * noise
        )
        period = sr / rate
        count = int(n / period) + 1
        times = (np.arange(count) + rng.normal(0.0, 0.1, size=count)) * period
        times = np.clip(times.astype(np.int64), 0, n - 1)
        x = _place(n, burst, times, rng.uniform(0.5, 1.0, size=count))
    else:  # bell
        m = min(int(4 * recipe.depth * sr), n)
        tt = np.arange(m, dtype=np.float64) / sr
        decay = np.exp(-tt / recipe.depth).astype(np.float32)  # [m]
        strike = np.zeros(m, dtype=np.float32)
        for r, a in zip(recipe.partials, amps):
            if r * freq < nyquist:
                # Higher partials die away faster, as in real bells.
                strike += np.float32(a) * _sin_cycles(r * freq * tt) * decay ** np.float32(r)
        period = sr / rate
        count = int(n / period) + 1
        times = (np.arange(count) + rng.uniform(0.0, 0.3, size=count)) * period
        times = np.clip(times.astype(np.int64), 0, n - 1)
        x = _place(n, strike, times, rng.uniform(0.4, 1.0, size=count))
        x *= _fade(n, sr, 0.0, 0.05)
    peak = np.max(np.abs(x))
    return x / peak if peak > 0 else x


def _add_events(x, recipe, rec, sr, rng, level):
    n = len(x)
    for _ in range(int(rng.integers(1, recipe.max_events + 1))):
        seconds = recipe.duration / rec.tempo * math.exp(rng.normal(0.0, 0.35))
        length = int(min(max(seconds, 0.1), n / sr) * sr)
        length = max(min(length, n), 1)
        start = int(rng.integers(0, n - length + 1))
        gain = np.float32(level * 10 ** (rng.uniform(-6.0, 0.0) / 20))
        x[start : start + length] += gain * _render_event(recipe, rec, length, sr, rng)


def render_clip(recipes, target, rec, n, sr, rng):
    """A full clip as int16: events, maybe a faint distractor, background, gain."""
    x = np.zeros(n, dtype=np.float32)
    _add_events(x, recipes[target], rec, sr, rng, 1.0)
    if rng.random() < _DISTRACTOR_P:
        other = int(rng.integers(0, len(recipes) - 1))
        other += other >= target
        _add_events(x, recipes[other], _NEUTRAL, sr, rng, 10 ** (rng.uniform(*_DISTRACTOR_DB) / 20))
    noise = _background(n, sr, rec.tilt, rng)
    snr = rng.uniform(*_SNR_DB)
    ratio = float(np.dot(x, x)) / 10 ** (snr / 10) / (float(np.dot(noise, noise)) + 1e-20)
    x += np.float32(math.sqrt(ratio)) * noise
    gain = _PEAK * 10 ** (rng.uniform(*_GAIN_DB) / 20)
    x *= np.float32(gain / (float(np.max(np.abs(x))) + 1e-20) * 32767)
    return np.round(x).astype(np.int16)
