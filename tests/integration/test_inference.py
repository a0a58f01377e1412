"""The inference API: ``load_predictor(DIR).forward(images)``."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hyper_sapiens_jax.inference import load_predictor
from hyper_sapiens_jax.models import ModelConfig, Sapiens
from hyper_sapiens_jax.models.weights import WeightsError, flat_params, save_weights


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    config = ModelConfig(arch="tiny", image_size=(64, 32), heads=("pose", "depth", "normal"), num_keypoints=5)
    model = Sapiens(config, rngs=nnx.Rngs(3))
    directory = save_weights(tmp_path_factory.mktemp("w") / "ckpt", config, flat_params(model))
    return directory, model


def test_forward_shapes_and_values(weights_dir):
    directory, model = weights_dir
    predictor = load_predictor(directory)
    images = np.random.default_rng(0).standard_normal((3, 64, 32, 3)).astype(np.float32)
    out = predictor.forward(images)
    assert {k: v.shape for k, v in out.items()} == {
        "features": (3, 4, 2, 64),
        "pose": (3, 16, 8, 5),
        "depth": (3, 64, 32, 1),
        "normal": (3, 32, 16, 3),
    }
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in out.values())
    direct = model(jnp.asarray(images))
    for k in out:
        np.testing.assert_allclose(out[k], np.asarray(direct[k]), rtol=1e-5, atol=1e-5)


def test_bf16_override(weights_dir):
    directory, _ = weights_dir
    predictor = load_predictor(directory, dtype="bfloat16")
    assert predictor.config.dtype == "bfloat16"
    out = predictor.forward(np.zeros((1, 64, 32, 3), np.float32))
    assert out["pose"].dtype == np.float32 and np.isfinite(out["pose"]).all()


def test_bad_inputs(weights_dir, tmp_path):
    directory, _ = weights_dir
    with pytest.raises(ValueError, match=r"images must have shape \(B, 64, 32, 3\)"):
        load_predictor(directory).forward(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(WeightsError, match="holds no model weights"):
        load_predictor(tmp_path)
    with pytest.raises(WeightsError, match="is not a directory"):
        load_predictor(tmp_path / "nope")
    bad = tmp_path / "bad"
    save_weights(
        bad,
        ModelConfig(arch="tiny", image_size=(64, 32), heads=("pose",)),
        flat_params(Sapiens(ModelConfig(arch="tiny", image_size=(64, 32), heads=("pose",)), rngs=nnx.Rngs(0))),
    )
    (bad / "model_config.json").write_text('{"arch": "tiny", "heads": ["pose", "depth"], "image_size": [64, 32]}')
    with pytest.raises(WeightsError, match="does not match model_config.json"):
        load_predictor(bad)
