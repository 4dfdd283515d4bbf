"""EfficientAT's MobileNetV3s (`mn`) and dynamic MobileNets (`dymn`): parity with the
reference code, parameter counts, conversion of the release's bare state dicts, the
registered classifiers in the pipeline.

The fixtures in tests/fixtures/efficientat were made with the reference's own classes
(github.com/fschmid56/EfficientAT, `models.mn.model.get_model`,
`models.dymn.model.get_model` and `AugmentMelSTFT` in eval mode) by
tools/make_efficientat_fixtures.py, at reduced widths (mn 0.1, 0.2; dymn 0.05) with random
weights, and saved as the release files are: `torch.save(model.state_dict(), path)`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from esc50tf.errors import Esc50Error
from esc50tf.frontend import FeatureConfig
from esc50tf.models import ModelConfig
from esc50tf.models import efficientat as mn
from esc50tf.models.build import build_model
from esc50tf.pretrained import efficientat as arch

FIXTURES = Path(__file__).parent / "fixtures" / "efficientat"
# Fixture -> (the architecture it is converted as, its width). The DyMN's outputs share the
# mn fixtures' log-Mel (one front end, the same waveforms).
FIXTURE_MODELS = {"mn_w010": ("mn10", 0.1), "mn_w020": ("mn10", 0.2),
                  "dymn_w005": ("dymn10", 0.05)}
LOGMEL_FIXTURE = "mn_w010"
INPUTS = ("clips", "short", "long")
# sum(p.numel() for p in get_model(width_mult=W, num_classes=527).parameters()) of
# models.mn.model / models.dymn.model, printed by tools/make_efficientat_fixtures.py with the
# reference checkout (the DyMN's 10,548,479 + its 26,645 buffers are the README's "10.57 M").
REFERENCE_PARAMS = {"mn04": 983_599, "mn05": 1_431_239, "mn10": 4_876_831,
                    "mn20": 17_909_287, "mn30": 39_086_367, "mn40": 68_427_303,
                    "dymn04": 1_961_239, "dymn10": 10_548_479, "dymn20": 39_966_143}
LOGMEL_ATOL = 1e-3  # in the normalised scale (ln + 4.5) / 5
REL_TOL = 1e-4  # ||keras - reference|| / ||reference||, per input set


def _waves(key):
    return np.load(FIXTURES / "waveforms.npz")[key].astype(np.float32) / 32768.0


def _relative(a, b):
    return float(np.linalg.norm(np.asarray(a) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module", params=sorted(FIXTURE_MODELS))
def converted_model(request):
    """(Keras reference model with the fixture's weights, the reference's outputs)."""
    from esc50tf.pretrained import convert
    from esc50tf.pretrained.checkpoint import read_torch_checkpoint

    stem = request.param
    name, width = FIXTURE_MODELS[stem]
    state = read_torch_checkpoint(FIXTURES / f"{stem}.pt")
    assert arch.width_of(state) == width
    model = mn.build_reference(name, width=width)
    convert.load_into(model, arch.convert_checkpoint_state(state, name)[0])
    reference = dict(np.load(FIXTURES / f"{LOGMEL_FIXTURE}.outputs.npz"))
    reference.update(np.load(FIXTURES / f"{stem}.outputs.npz"), stem=stem)
    return model, reference


@pytest.fixture(scope="module")
def weights_w010(convert_fixture):
    return convert_fixture("mn10", "efficientat/mn_w010.pt")


@pytest.fixture(scope="module")
def dymn_weights(convert_fixture):
    return convert_fixture("dymn10", "efficientat/dymn_w005.pt")


# --- the front end -----------------------------------------------------------------------

def test_kaldi_filterbank_equals_torchaudios():
    from esc50tf.frontend.kaldi import kaldi_mel_filterbank

    ours = kaldi_mel_filterbank(32000, 1024, 128, 0.0, 15000.0).T  # [128, 513]
    reference = np.load(FIXTURES / "waveforms.npz")["mel_banks"]
    assert reference.shape == ours.shape == (128, 513)
    np.testing.assert_array_equal(ours.astype(np.float32), reference)
    assert not ours[:, -1].any()  # the Nyquist bin gets no weight


@pytest.mark.parametrize("key", INPUTS)
def test_log_mel_matches_the_reference(key):
    from esc50tf.frontend.kaldi import KaldiMelSpectrogram

    reference = np.load(FIXTURES / "mn_w010.outputs.npz")[f"{key}_logmel"]
    layer = KaldiMelSpectrogram(**{k: v for k, v in arch.feature_settings().items()
                                   if k != "kind"})
    ours = np.asarray(layer(_waves(key)))
    assert ours.shape == reference.shape  # 1 + (samples - 1) // 320 frames
    np.testing.assert_allclose(ours, reference, atol=LOGMEL_ATOL)


def test_kaldi_mel_is_a_front_end_kind_and_round_trips(tmp_path):
    import keras

    from esc50tf.frontend import build_frontend
    from esc50tf.frontend.kaldi import KaldiMelSpectrogram

    config = FeatureConfig(**arch.feature_settings("mn10"))
    layer = build_frontend(config)
    assert isinstance(layer, KaldiMelSpectrogram) and config.n_bins == 128
    x = _waves("clips")[:2]
    assert config.num_frames(x.shape[1]) == layer(x).shape[1] == 200
    model = keras.Sequential([keras.Input((x.shape[1],)), layer])
    model.save(tmp_path / "f.keras")
    again = keras.models.load_model(tmp_path / "f.keras")
    np.testing.assert_allclose(np.asarray(again(x)), np.asarray(model(x)), atol=1e-6)
    np.testing.assert_allclose(np.asarray(layer.compute_tf(x)), np.asarray(layer(x)), atol=1e-5)


def test_kaldi_mel_refuses_bad_settings():
    from esc50tf.frontend.kaldi import KaldiMelSpectrogram, kaldi_mel_filterbank

    with pytest.raises(ValueError, match="fmax"):
        kaldi_mel_filterbank(32000, 1024, 128, 0.0, 20000.0)
    with pytest.raises(ValueError, match="win_length"):
        KaldiMelSpectrogram(win_length=2048, n_fft=1024)


# --- the network ---------------------------------------------------------------------------

@pytest.mark.parametrize("key", INPUTS)
def test_embeddings_and_logits_match_the_reference(converted_model, key):
    model, reference = converted_model
    out = model(_waves(key))
    for name in ("embedding", "logits"):
        want = reference[f"{key}_{name}"]
        assert out[name].shape == want.shape
        assert _relative(out[name], want) < REL_TOL, name


@pytest.mark.parametrize("key", INPUTS)
def test_embeddings_and_logits_are_within_float32_rounding_of_the_float64_reference(
        converted_model, key):
    """Against the reference run in float64 (`make_efficientat_fixtures.py --float64`), the
    float32 answer every float32 implementation aims at: within 1e-4, and within twice
    the reference's own float32 distance (the README's table has both)."""
    model, ref = converted_model
    exact = np.load(FIXTURES / f"{ref['stem']}.float64.npz")
    out = model(_waves(key))
    for name in ("embedding", "logits"):
        truth = exact[f"{key}_{name}"].astype(np.float64)
        ours = _relative(out[name], truth)
        reference = _relative(ref[f"{key}_{name}"], truth)
        assert ours < REL_TOL and ours < 2 * reference, (name, ours, reference)


# The network alone, fed the reference's log-Mel (six clips): the mn agree to ~5e-6; the
# width-0.05 DyMN to 2e-5, where the reference's own float32 logits are 3.3e-5 from its
# float64 ones (esc50tf's 7e-6: benchmarks/results/efficientat_parity-full-cpu.md).
NETWORK_TOL = {"mn_w010": 1e-5, "mn_w020": 1e-5, "dymn_w005": 5e-5}


def test_the_network_matches_the_reference_on_its_own_log_mel(converted_model):
    """Front end aside: the trunk and head given the reference's log-Mel agree."""
    import keras

    model, reference = converted_model
    net = keras.Model(model.get_layer("to_frequency_time").input,
                      [model.get_layer("embedding").output, model.get_layer("logits").output])
    embedding, logits = net(reference["clips_logmel"])
    tol = NETWORK_TOL[reference["stem"]]
    assert _relative(embedding, reference["clips_embedding"]) < tol
    assert _relative(logits, reference["clips_logits"]) < tol


@pytest.mark.parametrize("stem", sorted(FIXTURE_MODELS))
def test_fixture_outputs_depend_on_the_input(stem):
    """The parity tests could fail: the reference's outputs differ between clips."""
    reference = np.load(FIXTURES / f"{stem}.outputs.npz")
    for name in ("embedding", "logits"):
        out = reference[f"clips_{name}"]
        spread = np.linalg.norm(out - out.mean(0), axis=1) / np.linalg.norm(out, axis=1)
        assert spread.min() > 100 * REL_TOL, name


@pytest.mark.parametrize("name", [
    "mn04", "mn05", "mn10", "dymn04", "dymn10",
    pytest.param("mn20", marks=pytest.mark.slow),
    pytest.param("mn30", marks=pytest.mark.slow),
    pytest.param("mn40", marks=pytest.mark.slow),
    pytest.param("dymn20", marks=pytest.mark.slow),
])
def test_parameter_counts_match_reference(name):
    model = mn.build_reference(name)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == REFERENCE_PARAMS[name]
    _last, embedding, _hidden = arch.last_channels(arch.get(name)["width"])
    assert model.get_layer("embedding").output.shape[-1] == embedding


@pytest.mark.parametrize("stem, layer, key, shape", [
    # mn: a squeeze-excitation Linear; a depthwise kernel (kh, kw, C, 1).
    ("mn_w010", "features_4_block_1_conc_se_layers_0_fc1",
     "features.4.block.1.conc_se_layers.0.fc1.weight", None),
    ("mn_w010", "features_1_block_0_0", "features.1.block.0.0.weight", (3, 3, 8, 1)),
    # dymn: the 4 kernels of a dynamic depthwise conv (kh, kw, C, K) and of a dynamic 1x1
    # conv (K, in, out); a Dy-ReLU's Linear and buffers; a context 1x1 conv as a Dense.
    ("dymn_w005", "layers_3_depth_conv", "layers.3.depth_conv.weight", (5, 5, 8, 4)),
    ("dymn_w005", "layers_14_proj_conv", "layers.14.proj_conv.weight", (4, 48, 8)),
    ("dymn_w005", "layers_0_depth_act", "layers.0.depth_act.coef_net.0.weight", (8, 32)),
    ("dymn_w005", "layers_5_context_gen_conv_t", "layers.5.context_gen.conv_t.weight", (8, 8)),
])
def test_layer_names_follow_the_state_dict(stem, layer, key, shape):
    from esc50tf.pretrained.checkpoint import read_torch_checkpoint

    name, width = FIXTURE_MODELS[stem]
    state = read_torch_checkpoint(FIXTURES / f"{stem}.pt")
    converted, sources, _sizes = arch.convert_checkpoint_state(state, name)
    model = mn.build_reference(name, width=width)
    loadable = {x.name for x in model.layers if x.weights and "frontend" != x.name}
    assert set(converted) == loadable
    assert layer in loadable and sources[layer][0] == key
    if shape is not None:
        assert converted[layer][0].shape == shape


def test_dymn_buffers_and_temperature_are_the_references():
    """Dy-ReLU's lambdas / init_v come from the state dict (where the reference keeps them);
    the kernel attention runs at the AudioSet checkpoints' inference temperature, 1."""
    from esc50tf.pretrained.checkpoint import read_torch_checkpoint

    state = read_torch_checkpoint(FIXTURES / "dymn_w005.pt")
    np.testing.assert_array_equal(state["layers.7.depth_act.lambdas"], [1.0, 1.0, 0.5, 0.5])
    np.testing.assert_array_equal(state["layers.7.depth_act.init_v"], [1.0, 0.0, 0.0, 0.0])
    model = mn.build_reference("dymn10", width=0.05)
    act = model.get_layer("layers_7_depth_act")
    assert [w.path.split("/")[-1] for w in act.non_trainable_weights] == ["lambdas", "init_v"]
    assert {model.get_layer(f"layers_{i}_{c}_conv").temperature
            for i in range(1, 15) for c in ("depth", "proj")} == {1.0}


@pytest.mark.slow  # a JAX process: about 45 s on 2 CPU cores
def test_runs_under_jax():
    code = (
        "import numpy as np\n"
        "from esc50tf.models import efficientat as mn\n"
        "from esc50tf.frontend.kaldi import KaldiMelSpectrogram\n"
        "for name, width in (('mn10', 0.1), ('dymn10', 0.05)):\n"
        "    m = mn.build_reference(name, width=width)\n"
        "    out = m(np.zeros((2, 8000), 'float32'))\n"
        "    print(tuple(out['embedding'].shape), tuple(out['logits'].shape))\n"
        "x = np.random.default_rng(0).standard_normal((2, 8000)).astype('float32')\n"
        "f = KaldiMelSpectrogram(fmax=15000.0, fmin_jitter=10, fmax_jitter=2000, seed=1)\n"
        "a, b = np.asarray(f(x, training=True)), np.asarray(f(x, training=True))\n"
        "print('jitter', bool(np.isfinite(a).all()), bool(np.abs(a - b).max() > 0),\n"
        "      float(np.abs(np.asarray(f(x)) - np.asarray(KaldiMelSpectrogram(fmax=15000.0)(x))).max()))\n"
    )
    env = dict(os.environ, KERAS_BACKEND="jax")
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "(2, 96) (2, 527)" in done.stdout and "(2, 48) (2, 527)" in done.stdout
    assert "jitter True True 0.0" in done.stdout  # training draws move; inference does not


# --- conversion and the catalog --------------------------------------------------------------

def test_convert_records_the_width_and_refuses_other_state_dicts(weights_w010, tmp_path):
    from esc50tf.cli import pretrained as cli
    from esc50tf.pretrained import store

    _path, meta = store.resolve_weights(weights_w010)
    assert meta["model"] == "mn10" and meta["architecture"]["width"] == 0.1
    assert meta["architecture"]["classes_num"] == 527
    panns = Path(__file__).parent / "fixtures" / "panns" / "cnn14_16k.zip.pth"
    with pytest.raises(Esc50Error, match="features.0.0.weight"):
        store.convert_checkpoint("mn10", panns, tmp_path / "x.npz", build=cli.build_reference,
                                 log=lambda _: None)
    assert not (tmp_path / "x.npz").exists()
    with pytest.raises(Esc50Error, match="already exists"):
        store.convert_checkpoint("mn10", FIXTURES / "mn_w010.pt", weights_w010,
                                 build=cli.build_reference, log=lambda _: None)


def test_convert_refuses_a_dymn_state_dict_that_is_not_one(dymn_weights, tmp_path):
    """As `pretrained convert dymn10 FILE`: the width recorded, other state dicts refused."""
    from esc50tf.cli import main
    from esc50tf.pretrained import store
    from esc50tf.pretrained.checkpoint import read_torch_checkpoint

    _path, meta = store.resolve_weights(dymn_weights)
    assert meta["model"] == "dymn10" and meta["architecture"]["width"] == 0.05
    assert meta["architecture"]["network"] == "dymn"
    out = tmp_path / "x.npz"
    assert main(["pretrained", "convert", "dymn04", str(FIXTURES / "dymn_w005.pt"),
                 "--out", str(out)]) == 0
    assert store.resolve_weights(out)[1]["model"] == "dymn04"
    out = tmp_path / "y.npz"
    assert main(["pretrained", "convert", "dymn10", str(FIXTURES / "mn_w010.pt"),
                 "--out", str(out)]) != 0
    assert not out.exists()
    state = read_torch_checkpoint(FIXTURES / "dymn_w005.pt")
    with pytest.raises(Esc50Error, match="features.0.0.weight"):
        arch.convert_checkpoint_state(state, "mn10")
    broken = dict(state)
    del broken["layers.6.depth_act.init_v"]
    with pytest.raises(Esc50Error, match="layers.6.depth_act"):
        arch.convert_checkpoint_state(broken, "dymn10")
    broken = dict(state, **{"layers.2.ca.weight": np.zeros(3, np.float32)})
    with pytest.raises(Esc50Error, match="unexpected key.*layers.2.ca"):
        arch.convert_checkpoint_state(broken, "dymn10")
    broken = dict(state, **{"layers.7.exp_conv.weight": np.zeros((1, 1, 3, 128), np.float32)})
    with pytest.raises(Esc50Error, match=r"layers.7.exp_conv.weight has shape \(1, 1, 3, 128\)"):
        arch.convert_checkpoint_state(broken, "dymn10")


def test_catalog_lists_the_release_files_without_hashes():
    from esc50tf.pretrained import catalog

    entries = catalog.checkpoints()
    for name in ("mn04_as", "mn05_as", "mn10_as", "mn20_as", "mn30_as", "mn40_as",
                 "mn40_as_ext", "dymn04_as", "dymn10_as", "dymn20_as"):
        c = entries[name]
        assert c.url.startswith("https://github.com/fschmid56/EfficientAT/releases/download/")
        assert c.licence == "MIT" and c.sha256 is None and "no published hash" in c.note
        assert c.architecture == name.split("_")[0] and 0.43 <= c.audioset_map <= 0.50
    assert [entries[f"dymn{w}_as"].audioset_map for w in ("04", "10", "20")] == \
        [0.450, 0.477, 0.491]  # the README's table
    assert entries["dymn20_as"].file_name == "dymn20_as_mAP_493.pt"  # what get_model loads


def test_download_pins_the_first_sha256_and_refuses_a_different_file(tmp_path, monkeypatch):
    import shutil

    from esc50tf.cli import pretrained as cli
    from esc50tf.pretrained import catalog, store

    entries = [{"name": "mn10_tiny", "architecture": "mn10", "file_name": "mn_w010.pt",
                "url": (FIXTURES / "mn_w010.pt").as_uri(), "licence": "MIT"}]
    listing = tmp_path / "catalog.json"
    listing.write_text(json.dumps(entries))
    monkeypatch.setenv(catalog.CATALOG_ENV, str(listing))
    cache = tmp_path / "cache"
    path, meta = store.download("mn10_tiny", build=cli.build_reference, cache_dir=cache,
                                progress=False, log=lambda _: None)
    assert meta["architecture"]["width"] == 0.1
    assert store.pinned_sha256("mn10_tiny", cache) == meta["source"]["sha256"]
    other = tmp_path / "other.pt"
    shutil.copy(FIXTURES / "mn_w020.pt", other)
    with pytest.raises(Esc50Error, match="first verified download"):
        store.download("mn10_tiny", build=cli.build_reference, url=other.as_uri(),
                       cache_dir=cache, overwrite=True, progress=False, log=lambda _: None)
    assert path.is_file()  # the cached weights are untouched


# --- the registered classifiers ----------------------------------------------------------------

def test_registered_with_their_rate_and_front_end():
    from esc50tf import models
    from esc50tf.pretrained import architectures

    for name in arch.ARCHITECTURES:
        spec = models.get(name)
        assert spec.family == "efficientat" and spec.pretrained == name
        assert architectures.get(name)["sample_rate"] == 32000
        assert architectures.feature_settings(name)["kind"] == "kaldi_mel"


@pytest.mark.parametrize("weights, name, layers", [
    ("weights_w010", "mn10", ("features_0_0", "features_16_1", "classifier_2")),
    ("dymn_weights", "dymn10", ("in_c_0", "layers_3_depth_conv", "layers_9_depth_act",
                                "layers_14_context_gen_joint_norm", "out_c_1", "classifier_2")),
])
def test_classifier_loads_the_trunk_and_freezes(weights, name, layers, request, tmp_path):
    import keras

    from esc50tf.pretrained import store

    weights = request.getfixturevalue(weights)
    converted, _meta = store.load_weights(weights)
    cfg = ModelConfig(name=name, weights=str(weights), freeze_backbone=True,
                      normalization="none")
    features = FeatureConfig(**arch.feature_settings(name))
    model = build_model(cfg, features, num_classes=3, num_samples=16000)
    for name in layers:
        for got, want in zip(model.get_layer(name).get_weights(), converted[name]):
            np.testing.assert_array_equal(got, want)
        assert not model.get_layer(name).trainable
    assert [w.path for w in model.trainable_weights] == ["predictions/kernel", "predictions/bias"]
    x = np.random.default_rng(0).uniform(-0.3, 0.3, (2, 16000)).astype("float32")
    probs = np.asarray(model(x, training=False))
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(np.asarray(again(x, training=False)), probs, atol=1e-6)


@pytest.mark.parametrize("weights, model, held", [("weights_w010", "mn04", "mn10"),
                                                  ("dymn_weights", "mn10", "dymn10"),
                                                  ("weights_w010", "dymn10", "mn10")])
def test_weights_of_another_width_family_are_refused(weights, model, held, request):
    weights = request.getfixturevalue(weights)
    cfg = ModelConfig(name=model, weights=str(weights), normalization="none")
    with pytest.raises(Esc50Error, match=f"holds {held} weights"):
        build_model(cfg, FeatureConfig(**arch.feature_settings(model)), num_classes=3,
                    num_samples=16000)


@pytest.mark.parametrize("weights, size", [("weights_w010", 96), ("dymn_weights", 48)])
def test_linear_probe_on_mn_embeddings(weights, size, tiny_tfrecords, tmp_path, request):
    """`embed` and the linear probe take mn and dymn weights as they take CNN14's (8 kHz clips
    resampled)."""
    from esc50tf.cli import main
    from esc50tf.run_config import resolve_config
    from esc50tf.train import train

    weights = request.getfixturevalue(weights)
    emb = tmp_path / "emb.npz"
    assert main(["embed", str(weights), str(tiny_tfrecords), "--out", str(emb),
                 "--no-progress"]) == 0
    with np.load(emb) as f:
        assert f["embeddings"].shape == (40, size) and np.isfinite(f["embeddings"]).all()
    cfg = resolve_config("logreg", overrides={
        "train": {"data": str(tiny_tfrecords), "out": str(tmp_path / "probe"),
                  "protocol": "test-fold", "test_fold": 1},
        "model": {"classic_features": "embeddings", "weights": str(weights)}})
    report = train(cfg)
    assert 0.0 <= report["accuracy"] <= 1.0
    result = json.loads((tmp_path / "probe" / "fold1" / "result.json").read_text())
    assert result["feature_dim"] == size


@pytest.mark.parametrize("weights, model", [("weights_w010", "mn10"), ("dymn_weights", "dymn10")])
def test_finetune_preset_is_the_reference_recipe(weights, model, request):
    from esc50tf.models.optimizers import WarmupRampdown
    from esc50tf.recipe import learning_rate
    from esc50tf.run_config import resolve_config

    weights = request.getfixturevalue(weights)
    cfg = resolve_config(model, overrides={"model": {"weights": str(weights)}})
    t = cfg.train
    assert t.preset == "finetune" and t.optimizer == "adam" and t.lr == 6e-5
    assert (t.batch_size, t.epochs, t.schedule, t.warmup_epochs) == (128, 80, "rampdown", 10.0)
    assert cfg.augment.mix == "mixup" and cfg.augment.mixup_alpha == 0.3
    assert tuple(cfg.augment.gain_db) == (-12.0, 12.0)
    # AugmentMelSTFT(fmin_aug_range=10, fmax_aug_range=2000), ex_esc50.py's defaults
    assert (cfg.augment.fmin_jitter_hz, cfg.augment.fmax_jitter_hz) == (10, 2000)
    assert cfg.features.kind == "kaldi_mel" and cfg.model.normalization == "none"
    schedule = learning_rate(t, t.lr, steps_per_epoch=1)
    assert isinstance(schedule, WarmupRampdown)
    # ex_esc50.py's factors: exp(-5 (1 - e / 10)^2) while warming up, 1 at epoch 10, linear
    # to 0.01 at epoch 75, then 0.01.
    for epoch, factor in ((0, np.exp(-5 * 0.95 ** 2)), (5, np.exp(-5 * 0.25)), (10, 1.0),
                          (42.5, 0.505), (75, 0.01), (79, 0.01)):
        assert float(schedule(epoch)) == pytest.approx(6e-5 * factor, rel=1e-4), epoch


def test_the_family_answers_through_the_registry_hooks(weights_w010):
    """register_family("efficientat"): its rate, front end and refusals, asked of the registry."""
    from esc50tf import models
    from esc50tf.models import registry
    from esc50tf.run_config import resolve_config

    assert ("efficientat", "EfficientAT") in [(f.name, f.label) for f in models.families()]
    assert registry.required_sample_rate("mn10") == 32000
    assert registry.required_sample_rate("cnn_small") is None
    assert registry.reads_converted_weights(ModelConfig(name="mn04"))
    cfg = resolve_config("mn10")
    assert cfg.features.to_dict() == FeatureConfig(**arch.feature_settings("mn10")).to_dict()
    assert cfg.train.preset == "default"  # no weights: the random trunk, not the finetune recipe
    weights = {"weights": str(weights_w010)}
    for over, match in (({"features": {"n_mels": 64}}, "mn10 front end.*n_mels=128"),
                        ({"model": {"normalization": "frequency"}}, r"\(x \+ 4.5\) / 5"),
                        ({"model": {"freeze_backbone": True}}, "random trunk"),
                        ({"model": weights, "train": {"trunk_lr_scale": 0.1}},
                         "change nothing on mn10's mn10 trunk")):
        with pytest.raises(Esc50Error, match=match):
            resolve_config("mn10", overrides=over)
    manifest = {"config": {"sample_rate": 8000}, "source": {"data_dir": "ESC-50"}}
    with pytest.raises(Esc50Error, match=r"(?s)takes 32000 Hz.*--sample-rate 32000"):
        registry.check_data(ModelConfig(name="mn10"), manifest, "data")
    manifest["config"]["sample_rate"] = 32000
    registry.check_data(ModelConfig(name="mn10"), manifest, "data")
    base, over = {"features": {"kind": "mel"}}, {"features": {"n_mels": 64}, "model": {},
                                                 "train": {}}
    registry.fit_trial("mn10", base, over)  # tune's front-end draws do not reach the trunk
    assert over["features"] == {} and "features" not in base


def test_band_edge_jitter_is_training_only_and_refused_where_it_cannot_apply(weights_w010):
    """The finetune recipe's fmin/fmax jitter lives in the model's front end, trains, and
    leaves inference (evaluate, export, predict) exactly as without it."""
    from esc50tf.run_config import resolve_config

    cfg = resolve_config("mn10", overrides={"model": {"weights": str(weights_w010)}})
    with_jitter = build_model(cfg.model, cfg.features, 5, 16000, cfg.augment, seed=0)
    front = with_jitter.get_layer("frontend")
    assert (front.fmin_jitter, front.fmax_jitter) == (10, 2000)
    plain = build_model(cfg.model, cfg.features, 5, 16000, None, seed=0)
    assert plain.get_layer("frontend").fmax_jitter == 0
    plain.set_weights(with_jitter.get_weights())
    x = np.random.default_rng(0).standard_normal((2, 16000)).astype("float32") * 0.1
    np.testing.assert_array_equal(np.asarray(with_jitter(x)), np.asarray(plain(x)))
    logmel = [np.asarray(front(x, training=True)) for _ in range(2)]
    assert np.abs(logmel[0] - logmel[1]).max() > 1e-3  # a new draw each training batch
    with pytest.raises(Esc50Error, match="kaldi_mel front end.*'mel'"):
        resolve_config("cnn_small", overrides={"augment": {"fmax_jitter_hz": 2000}})
    with pytest.raises(Esc50Error, match="16001 Hz, above the Nyquist.*at most 2001"):
        resolve_config("mn10", overrides={"augment": {"fmax_jitter_hz": 2003}})
    with pytest.raises(Esc50Error, match="fmin_jitter_hz=-1"):
        resolve_config("mn10", overrides={"augment": {"fmin_jitter_hz": -1}})


@pytest.mark.slow
def test_predict_timeline_runs_on_an_int8_mn_export(weights_w010, tmp_path):
    """An mn10 fine-tuned through the CLI, exported as int8 TFLite (front end inside), gives
    `predict --timeline` at its own 32 kHz over a 44.1 kHz stereo recording: every window
    is there, and each is within int8 rounding of the Keras run's window."""
    import soundfile as sf
    import soxr

    from esc50tf import cli
    from esc50tf.timeline import load_window_model, timeline

    data, tfr, run, out = (tmp_path / n for n in ("esc50", "tfr", "run", "int8"))
    assert cli.main(["synth", "--out", str(data), "--classes", "3", "--clips-per-class", "8",
                     "--sample-rate", "32000", "--clip-seconds", "1"]) == 0
    assert cli.main(["build-tfrecords", "--data-dir", str(data), "--out", str(tfr),
                     "--sample-rate", "32000", "--clip-seconds", "1", "--quiet"]) == 0
    assert cli.main(["train", "--model", "mn10", "--weights", str(weights_w010), "--data",
                     str(tfr), "--out", str(run), "--test-fold", "1", "--epochs", "2",
                     "--batch-size", "8", "--quiet"]) == 0
    assert cli.main(["export", str(run), "--format", "tflite", "--quantize", "int8",
                     "--min-agreement", "0", "--out", str(out)]) == 0
    card = json.loads((out / "model_card.json").read_text())
    assert card["input"]["sample_rate"] == 32000 and card["quantization"] == "int8"
    assert card["front_end"]["kind"] == "kaldi_mel" and card["tflite"]["builtin_only"]

    # 12 s: three synthetic clips between quiet noise and digital silence, at 44.1 kHz, stereo.
    rng = np.random.default_rng(0)
    x = np.zeros(12 * 32000, np.float32)
    x[: 6 * 32000] = 0.003 * rng.standard_normal(6 * 32000)
    for k, wav in enumerate(sorted((data / "audio").glob("*.wav"))[:3]):
        clip, rate = sf.read(wav, dtype="float32")
        assert rate == 32000
        x[(1 + 3 * k) * 32000:(1 + 3 * k) * 32000 + len(clip)] += clip
    audio = tmp_path / "recording.wav"
    stereo = soxr.resample(x, 32000, 44100)
    sf.write(audio, np.stack([stereo, 0.5 * stereo], axis=1), 44100, subtype="PCM_16")

    assert cli.main(["predict", str(out), str(audio), "--timeline", "--out",
                     str(tmp_path / "tl"), "--quiet"]) == 0
    got = json.loads((tmp_path / "tl" / "recording" / "timeline.json").read_text())
    assert got["hop"] == 0.25 and got["num_windows"] == len(got["windows"]) == 45
    keras_model = load_window_model(run)
    assert (keras_model.sample_rate, keras_model.num_samples) == (32000, 32000)
    timeline(keras_model, audio, tmp_path / "keras", progress=False)
    want = json.loads((tmp_path / "keras" / "timeline.json").read_text())

    def probabilities(t):
        return np.array([[c["probability"] for c in sorted(w["top"], key=lambda c: c["class"])]
                         for w in t["windows"]])

    p_int8, p_keras = probabilities(got), probabilities(want)
    assert p_int8.shape == p_keras.shape == (45, 3) and np.isfinite(p_int8).all()
    np.testing.assert_allclose(p_int8.sum(1), 1.0, atol=0.02)
    # int8 rounding on a model trained for 2 epochs: per window, the largest change of a
    # probability is 0.02 at the median; one window (a clip cut off by digital silence) moved
    # by 0.25 when measured. Windows wholly in digital silence agree within 0.01.
    dp = np.abs(p_int8 - p_keras).max(axis=1)
    assert np.median(dp) < 0.05 and np.percentile(dp, 90) < 0.1 and dp.max() < 0.4, dp
    silent = [i for i, w in enumerate(got["windows"]) if w["start"] >= 9.0]
    assert len(silent) == 9 and dp[silent].max() < 0.01
