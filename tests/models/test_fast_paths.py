"""Every fast path of ModelConfig trains like the plain path (same losses, so they are safe).

Ten optimizer steps from one initialisation on one synthetic batch stream: remat (full,
save_dots), scan over layers (plain parameters converted with `stack_block_params`),
chunked cross-entropy and the cuDNN attention switch (which on a CPU must fall back to the
XLA path) give the plain path's losses within 1e-5; bfloat16 compute with float32 master
weights within 1e-2 relative.
"""
import dataclasses

import jax
import numpy as np
import pytest

from objectax.launch import config, step
from objectax.models import layers, model_objectives, registry
from objectax.models.config import ModelConfig

# Ten optimizer steps per configuration: real (if short) training runs.
pytestmark = pytest.mark.e2e

STEPS = 10
VOCAB = 300
BASE = ModelConfig(d_model=32, num_heads=2, head_dim=16, mlp_dim=64, num_layers=3,
                   num_encoder_layers=2).with_vocab_size(VOCAB)
LENGTHS = {"causal_decoder": {"targets": 24},
           "encoder_decoder": {"inputs": 20, "targets": 12},
           "encoder_only": {"inputs": 24, "targets": 24}}
STACKS = {"causal_decoder": [("block", "num_layers")],
          "encoder_only": [("block", "num_layers")],
          "encoder_decoder": [("encoder_block", "encoder_layers"), ("decoder_block", "num_layers")]}


def _losses(arch_name: str, cfg: ModelConfig, params=None):
  """Per-step training losses, and the initial parameters (plain layout) used.

  float32 matmuls at full precision: on a GPU the default lets XLA use TF32, whose rounding
  depends on the matmul's shape (chunked logits differ from whole ones by ~1e-4).
  """
  with jax.default_matmul_precision("highest"):
    return _train(arch_name, cfg, params)


def _train(arch_name: str, cfg: ModelConfig, params=None):
  arch = registry.get(arch_name)
  model, loss = model_objectives.build(arch, cfg, None, None, model_objectives.Vocab(VOCAB, 0))
  tc = config.TrainConfig(steps=STEPS, batch_size=4, warmup_steps=2, learning_rate=1e-2)
  tx = step.make_optimizer(tc)
  spec = arch.batch_spec(LENGTHS[arch_name], tc.batch_size)
  if params is None:
    params = step.unbox(step._init_fn(model, tx, spec)(jax.random.key(0)).params)  # pylint: disable=protected-access
  state = step.TrainState(step=jax.numpy.zeros((), jax.numpy.int32), params=params,
                          opt_state=tx.init(params))
  train_step = jax.jit(step.make_train_step(model, loss, tx, tc))
  out = []
  for i in range(STEPS):
    batch = arch.synthetic_batch(spec, VOCAB, np.random.default_rng(i))
    state, m = train_step(state, batch, jax.random.key(1))
    out.append(float(m["loss"]))
  return np.asarray(out), params


def _scanned(arch_name: str, params):
  for name, attr in STACKS[arch_name]:
    params = layers.stack_block_params(params, name, getattr(BASE, attr))
  return params


@pytest.fixture(scope="module")
def plain():
  return {a: _losses(a, BASE) for a in ("causal_decoder", "encoder_decoder")}


@pytest.mark.parametrize("change", [
    dict(remat="full"), pytest.param(dict(remat="save_dots"), marks=pytest.mark.slow),
    dict(logits_chunk=40), dict(attention="cudnn")],
                         ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_fast_path_matches_plain_causal_decoder(plain, change, capsys):
  reference, params = plain["causal_decoder"]
  layers._warned.clear()  # pylint: disable=protected-access
  got, _ = _losses("causal_decoder", dataclasses.replace(BASE, **change), params)
  assert reference[-1] < reference[0] - 0.1  # the runs learn something
  np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)
  if change.get("attention") == "cudnn" and jax.devices()[0].platform == "cpu":
    assert "attention='cudnn' falls back to 'xla': the backend is cpu" in capsys.readouterr().out


@pytest.mark.parametrize("arch_name", ["causal_decoder", "encoder_decoder"])
def test_scan_over_layers_matches_plain(plain, arch_name):
  reference, params = plain[arch_name]
  cfg = dataclasses.replace(BASE, scan_layers=True, remat="full")
  got, _ = _losses(arch_name, cfg, _scanned(arch_name, params))
  np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # for time: the same loss code as the causal decoder's chunked case
def test_encoder_decoder_chunked_loss_matches_plain(plain):
  reference, params = plain["encoder_decoder"]
  got, _ = _losses("encoder_decoder", dataclasses.replace(BASE, logits_chunk=7), params)
  np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-5)


def test_bfloat16_compute_with_float32_master_weights(plain):
  reference, params = plain["causal_decoder"]
  got, _ = _losses("causal_decoder", dataclasses.replace(BASE, dtype="bfloat16"), params)
  assert all(p.dtype == np.float32 for p in jax.tree.leaves(params))
  np.testing.assert_allclose(got, reference, rtol=1e-2)
  assert not np.allclose(got, reference, rtol=1e-6)  # bfloat16 really ran


def test_scanned_parameters_carry_the_layers_axis_and_skip_norm_decay():
  arch = registry.get("causal_decoder")
  cfg = dataclasses.replace(BASE, scan_layers=True)
  model = arch.make_model(cfg)
  spec = arch.batch_spec(LENGTHS["causal_decoder"], 2)
  boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), {
      k: jax.numpy.zeros(s.shape, s.dtype) for k, s in spec.items()})["params"])
  query = boxed["scan_block"]["attention"]["query"]
  assert query.names == ("layers", "embed", "heads", "kv")
  assert query.value.shape == (3, 32, 2, 16)
  decay = step.decay_matrices_only(step.unbox(boxed))
  assert decay["scan_block"]["attention"]["query"] is True
  assert decay["scan_block"]["mlp_norm"]["scale"] is False
  assert decay["final_norm"]["scale"] is False


def test_bad_fast_path_settings_are_one_line_errors():
  from objectax.models.registry import ConfigError
  with pytest.raises(ConfigError, match="remat.*valid choices: none, full, save_dots"):
    ModelConfig(remat="some")
  with pytest.raises(ConfigError, match="attention.*valid choices: xla, cudnn"):
    ModelConfig(attention="flash")
  with pytest.raises(ConfigError, match="logits_chunk"):
    ModelConfig(logits_chunk=-1)


@pytest.mark.skipif(jax.devices()[0].platform != "gpu",
                    reason="cuDNN attention runs on an NVIDIA GPU; elsewhere the fallback is "
                           "checked by test_fast_path_matches_plain_causal_decoder")
@pytest.mark.parametrize("arch_name", ["causal_decoder", "encoder_decoder"])
def test_cudnn_attention_matches_xla_in_bfloat16_on_gpu(arch_name, capsys):
  bf16 = dataclasses.replace(BASE, dtype="bfloat16")
  reference, params = _losses(arch_name, bf16)
  layers._warned.clear()  # pylint: disable=protected-access
  got, _ = _losses(arch_name, dataclasses.replace(bf16, attention="cudnn"), params)
  assert "falls back" not in capsys.readouterr().out  # cuDNN really ran
  np.testing.assert_allclose(got, reference, rtol=1e-2)
