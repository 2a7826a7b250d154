"""Every registered encoder, through the same checks (as scenic's test_models does)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hive import config as config_lib
from hive.models import ENCODERS, SpeakerModel, abstract_params, carried_over, init_params

SMALL = {"lstm": dict(hidden=16, layers=1), "rescnn": dict(channels=(4, 8), blocks_per_stage=1),
         "tdnn": dict(channels=16, dilations=(2, 3))}


def small_config(encoder: str, dtype: str = "float32"):
  c = config_lib.base_config()
  c.model.encoder, c.model.embed_dim, c.model.dtype = encoder, 12, dtype
  c.model[encoder] = SMALL[encoder]
  c.data.crop_frames, c.data.n_mels = 24, 10
  return c


def model_and_params(encoder, dtype="float32", num_speakers=5):
  from hive.models import create_model
  c = small_config(encoder, dtype)
  return c, create_model(c.model, num_speakers), init_params(c, num_speakers,
                                                             jax.random.PRNGKey(0))


def test_every_registered_encoder_is_covered():
  assert set(ENCODERS) == set(SMALL)


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_outputs_are_unit_norm_and_shaped(encoder, dtype):
  c, model, params = model_and_params(encoder, dtype)
  x = jax.random.normal(jax.random.PRNGKey(1), (3, 24, 10))
  out = model.apply({"params": params}, x)
  assert out["embedding"].shape == (3, 12) and out["embedding"].dtype == jnp.float32
  np.testing.assert_allclose(np.linalg.norm(out["embedding"], axis=1), 1.0, rtol=1e-3)
  assert out["speaker_logits"].shape == (3, 5) and out["gender_logit"].shape == (3,)
  assert np.all(np.isfinite(out["speaker_logits"]))
  embedded = model.apply({"params": params}, x, method=SpeakerModel.embed)
  np.testing.assert_allclose(embedded, out["embedding"], atol=1e-6)
  # Parameters stay float32 whatever the compute dtype (mixed precision).
  assert {leaf.dtype for leaf in jax.tree.leaves(params)} == {jnp.dtype(jnp.float32)}


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_bfloat16_embeds_close_to_float32(encoder):
  _, model32, params = model_and_params(encoder, "float32")
  _, model16, _ = model_and_params(encoder, "bfloat16")
  x = jax.random.normal(jax.random.PRNGKey(2), (4, 24, 10))
  a = model32.apply({"params": params}, x, method=SpeakerModel.embed)
  b = model16.apply({"params": params}, x, method=SpeakerModel.embed)
  assert np.min(np.sum(np.asarray(a) * np.asarray(b), axis=1)) > 0.98  # Cosine.


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_masking_where_supported(encoder):
  c, model, params = model_and_params(encoder)
  x = jax.random.normal(jax.random.PRNGKey(3), (2, 24, 10))
  lengths = jnp.array([24, 17])
  if not getattr(model.encoder, "supports_mask", False):
    with pytest.raises(ValueError, match="cannot embed padded batches"):
      model.apply({"params": params}, x, lengths, method=SpeakerModel.embed)
    return
  padded = model.apply({"params": params}, x.at[1, 17:].set(99.0), lengths,
                       method=SpeakerModel.embed)
  alone = model.apply({"params": params}, x[1:, :17], method=SpeakerModel.embed)
  np.testing.assert_allclose(padded[1], alone[0], atol=1e-5)  # Padding is invisible.


@pytest.mark.parametrize("encoder", sorted(ENCODERS))
def test_abstract_params_match_initialised_ones(encoder):
  c, _, params = model_and_params(encoder)
  abstract = abstract_params(c, 5)
  assert jax.tree.structure(abstract) == jax.tree.structure(params)
  for a, p in zip(jax.tree.leaves(abstract), jax.tree.leaves(params)):
    assert (a.shape, a.dtype) == (p.shape, p.dtype)


def test_fine_tuning_keeps_the_speaker_head_only_for_the_same_speakers():
  _, _, params = model_and_params("tdnn")
  assert set(carried_over(params, same_speakers=True)) == set(params)
  assert set(carried_over(params, same_speakers=False)) == set(params) - {"speaker"}


def test_unknown_encoder_is_named():
  c = small_config("lstm")
  c.model.encoder = "transformer"
  from hive.models import create_model
  with pytest.raises(ValueError, match="unknown encoder 'transformer'"):
    create_model(c.model, 3)
