"""The train step path imports and runs without TensorFlow or seqio (as on GPU hosts), and
counts the padding of the batches it reads."""
import subprocess
import sys

import jax
import numpy as np
import pytest

import no_tensorflow  # pylint: disable=g-bad-import-order
from objectax.launch import step

_SCRIPT = no_tensorflow.BLOCK + r'''
import jax, numpy as np
from objectax.launch import config, sharding, step
from objectax.models import model_objectives, registry
from objectax.models.config import ModelConfig
arch = registry.get("causal_decoder")
model = arch.make_model(ModelConfig(d_model=32, num_heads=2, head_dim=16, mlp_dim=64,
                                    num_layers=1).with_vocab_size(300))
tc = config.TrainConfig(steps=4, batch_size=2, warmup_steps=1)
mesh_cfg = sharding.MeshConfig()
mesh = sharding.make_mesh(mesh_cfg)
spec = arch.batch_spec({"targets": 16}, 2)
tx = step.make_optimizer(tc)
with sharding.activate(mesh, mesh_cfg):
  _, shardings, init = step.abstract_and_init(model, tx, spec, mesh, mesh_cfg, 0)
  state = init()
  train_step = jax.jit(step.make_train_step(
      model, model_objectives.token_loss(arch.targets_key, arch.weights_key), tx, tc), donate_argnums=(0,))
  batch = arch.synthetic_batch(spec, 300, np.random.default_rng(0))
  losses = []
  for _ in range(4):
    state, m = train_step(state, batch, jax.random.key(0))
    losses.append(float(m["loss"]))
assert losses[-1] < losses[0], losses
# The step's padding_fraction is the host count of the same (global) batch.
assert abs(float(m["padding_fraction"]) - step.padding_fraction(batch)) < 1e-6, m
assert 0 < float(m["padding_fraction"]) < 1, m
''' + no_tensorflow.CHECK + r'''
print("ok", losses)
'''


@pytest.mark.e2e
def test_train_step_runs_without_tensorflow_or_seqio(tmp_path):
  out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("ok")


# --------------------------------------------------------------- padding of hand-made batches

_A = lambda *rows: np.asarray(rows, np.int32)


def _counts(batch):
  return {k: (int(real), total) for k, (real, total) in step.token_counts(batch).items()}


def test_packed_decoder_padding_is_segment_id_zero():
  """seqio's packed prefix-LM row (models/decoder.py): two examples, one padding slot;
  the second example's inputs begin with the BOS 0 mid-row and still count."""
  batch = {"decoder_target_tokens": _A([7, 8, 5, 1, 3, 9, 1, 8, 4, 9, 3, 1, 4, 1, 0]),
           "decoder_input_tokens": _A([0, 7, 8, 5, 1, 3, 9, 0, 8, 4, 9, 3, 1, 4, 0]),
           "decoder_loss_weights": _A([0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 0]),
           "decoder_positions": _A([0, 1, 2, 3, 4, 5, 6, 0, 1, 2, 3, 4, 5, 6, 0]),
           "decoder_segment_ids": _A([1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 0]),
           "decoder_causal_attention": _A([1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1, 0, 0])}
  assert _counts(batch) == {"decoder": (14, 15)}
  assert step.padding_fraction(batch) == pytest.approx(1 / 15)


def test_unpacked_decoder_padding_is_target_zero_not_input_zero():
  """Unpacked, the inputs start with the BOS 0 and the EOS is shifted into the first
  padding slot: counting inputs == 0 would call a full row's BOS padding."""
  batch = {"decoder_target_tokens": _A([7, 8, 5, 1], [3, 1, 0, 0], [0, 0, 0, 0]),
           "decoder_input_tokens": _A([0, 7, 8, 5], [0, 3, 1, 0], [0, 0, 0, 0]),
           "decoder_loss_weights": _A([1, 1, 1, 1], [1, 1, 0, 0], [0, 0, 0, 0])}
  assert _counts(batch) == {"decoder": (6, 12)}
  assert step.padding_fraction(batch) == pytest.approx(0.5)


def test_encoder_decoder_counts_both_streams():
  """Packed (models/encdec.py's example) and unpacked; both streams are pooled."""
  packed = {"encoder_input_tokens": _A([7, 8, 5, 1, 8, 4, 9, 3, 1, 0]),
            "encoder_segment_ids": _A([1, 1, 1, 1, 2, 2, 2, 2, 2, 0]),
            "encoder_positions": _A([0, 1, 2, 3, 0, 1, 2, 3, 4, 0]),
            "decoder_target_tokens": _A([3, 9, 1, 4, 1, 0, 0]),
            "decoder_input_tokens": _A([0, 3, 9, 0, 4, 0, 0]),
            "decoder_loss_weights": _A([1, 1, 1, 1, 1, 0, 0]),
            "decoder_segment_ids": _A([1, 1, 1, 2, 2, 0, 0]),
            "decoder_positions": _A([0, 1, 2, 0, 1, 0, 0])}
  assert _counts(packed) == {"encoder": (9, 10), "decoder": (5, 7)}
  assert step.padding_fraction(packed) == pytest.approx(3 / 17)
  unpacked = {"encoder_input_tokens": _A([5, 6, 1, 0], [9, 1, 0, 0]),
              "decoder_target_tokens": _A([3, 1, 0], [4, 2, 1]),
              "decoder_input_tokens": _A([0, 3, 1], [0, 4, 2]),
              "decoder_loss_weights": _A([1, 1, 0], [1, 1, 1])}
  assert _counts(unpacked) == {"encoder": (5, 8), "decoder": (5, 6)}
  assert step.padding_fraction(unpacked) == pytest.approx(4 / 14)


def test_encoder_only_padding_ignores_targets():
  """encoder_only's targets are 0 wherever there is no loss: not padding (models/encoder.py's
  packed example; and unpacked, where input 0 is the padding)."""
  packed = {"encoder_input_tokens": _A([3, 358, 5, 6, 7, 1, 9, 10, 11, 358, 77, 1, 0, 0]),
            "encoder_target_tokens": _A([0, 4, 5, 0, 0, 0, 0, 0, 0, 12, 13, 0, 0, 0]),
            "encoder_loss_weights": _A([0, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0]),
            "encoder_segment_ids": _A([1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 0, 0]),
            "encoder_positions": _A([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5, 0, 0])}
  assert _counts(packed) == {"encoder": (12, 14)}
  unpacked = {k: v for k, v in packed.items() if k not in ("encoder_segment_ids",
                                                           "encoder_positions")}
  unpacked["encoder_input_tokens"] = _A([3, 358, 5, 6, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
  assert _counts(unpacked) == {"encoder": (5, 14)}
  assert step.padding_fraction(unpacked) == pytest.approx(9 / 14)


def test_padding_fraction_is_the_same_jitted_and_refuses_a_batch_without_streams():
  batch = {"encoder_input_tokens": _A([5, 6, 1, 0], [9, 1, 0, 0]),
           "decoder_target_tokens": _A([3, 1, 0], [4, 2, 1]),
           "decoder_input_tokens": _A([0, 3, 1], [0, 4, 2]),
           "component_ids": _A([1, 1, 0], [2, 2, 2])}  # a mixture's tags change nothing
  jitted = jax.jit(step.padding_fraction)(jax.tree.map(jax.numpy.asarray, batch))
  assert float(jitted) == pytest.approx(step.padding_fraction(batch)) == pytest.approx(4 / 14)
  with pytest.raises(ValueError, match="no token stream"):
    step.padding_fraction({"targets": _A([1, 2])})
