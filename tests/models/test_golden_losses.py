"""Golden losses: two training steps of each architecture at the tiny size, pinned.

A refactor that silently changes the numerics of a model, its loss, its masks, its
synthetic batches or the optimizer fails here. The constants were computed by running
`_two_losses` below, unchanged, against a pristine copy of the code as it was before the
refactor that moved the launch/ tools and the architecture-specific code around (float32
on the CPU). The helper uses only APIs that exist in both versions (models.registry.get,
models.config.ModelConfig, models.model_objectives.build/Vocab, launch.step,
launch.config.TrainConfig), so it runs unchanged on either.

If a change of the numerics is intended, recompute the constants and say why in the
commit; never adjust them only to make this test pass.
"""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from objectax.launch import config as launch_config
from objectax.launch import step
from objectax.models import model_objectives, registry
from objectax.models.config import ModelConfig

VOCAB = 512
# gin/size/tiny.gin, at a small vocabulary, float32.
TINY = dict(d_model=128, num_layers=2, num_heads=4, head_dim=32, mlp_dim=512)
LENGTHS = {  # 32 tokens per example on every architecture
    "causal_decoder": {"targets": 32},
    "prefix_decoder": {"inputs": 16, "targets": 16},  # with decoder_causal_attention
    "encoder_decoder": {"inputs": 16, "targets": 16},
    "encoder_only": {"inputs": 32, "targets": 32},
}
# (loss of step 1, loss of step 2): see the module docstring for where they come from.
GOLDEN = {
    "causal_decoder": (8.092278480529785, 4.417665481567383),
    "prefix_decoder": (8.153796195983887, 3.270202875137329),
    "encoder_decoder": (7.379605770111084, 4.173833847045898),
    "encoder_only": (7.913196563720703, 2.7774105072021484),
}


def _two_losses(arch_name: str) -> tuple[float, float]:
  """Losses of the first two train steps from seed 0 on one synthetic packed batch."""
  arch = registry.get(arch_name)
  model_cfg = ModelConfig(vocab_size=VOCAB, dtype="float32", param_dtype="float32", **TINY)
  model, loss = model_objectives.build(arch, model_cfg, None, None,
                                       model_objectives.Vocab(VOCAB, 0))
  # No warm-up, so that the first update moves the parameters and step 2 checks AdamW.
  tc = launch_config.TrainConfig(warmup_steps=0)
  tx = step.make_optimizer(tc)
  spec = arch.batch_spec(LENGTHS[arch_name], 2, pack=True)
  batch = {k: jnp.asarray(v) for k, v in
           arch.synthetic_batch(spec, VOCAB, np.random.default_rng(0)).items()}
  rng = jax.random.key(0)
  dummy = {k: jnp.zeros(s.shape, s.dtype) for k, s in spec.items()}
  params = step.unbox(model.init({"params": rng, "dropout": rng}, dummy,
                                 deterministic=True)["params"])
  state = step.TrainState(step=jnp.zeros((), jnp.int32), params=params,
                          opt_state=tx.init(params))
  train_step = jax.jit(step.make_train_step(model, loss, tx, tc))
  state, first = train_step(state, batch, jax.random.key(1))
  state, second = train_step(state, batch, jax.random.key(1))
  return float(first["loss"]), float(second["loss"])


@pytest.mark.parametrize("arch_name", sorted(GOLDEN))
def test_two_step_losses_match_the_golden_values(arch_name):
  losses = _two_losses(arch_name)
  assert losses[1] < losses[0], losses  # the optimizer step lowered the loss
  np.testing.assert_allclose(losses, GOLDEN[arch_name], rtol=1e-5)


if __name__ == "__main__":  # prints the constants (run with the code to take them from)
  for name in sorted(GOLDEN):
    print(f"    {name!r}: {_two_losses(name)!r},")
