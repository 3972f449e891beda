"""The train step path imports and runs without TensorFlow or seqio (as on GPU hosts)."""
import subprocess
import sys

import pytest

import no_tensorflow  # pylint: disable=g-bad-import-order

pytestmark = pytest.mark.e2e

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
''' + no_tensorflow.CHECK + r'''
print("ok", losses)
'''


def test_train_step_runs_without_tensorflow_or_seqio(tmp_path):
  out = subprocess.run([sys.executable, "-c", _SCRIPT], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  assert out.stdout.startswith("ok")
