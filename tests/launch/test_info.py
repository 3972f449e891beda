"""`objectax info`: sizes from abstract evaluation, checked against real initialisation."""
import json
import os
import subprocess
import sys

import jax
import pytest

from objectax.launch import configure, main
from objectax.launch.tools import info
from objectax.models import config as model_config_lib


def _info(*bindings, devices=1):
  configure.parse(["run/quickstart.gin"], list(bindings))
  return info.compute(devices)


def test_counts_match_the_model_and_the_flops_formula():
  got = _info("Experiment.size='small'")
  assert got.num_params == model_config_lib.num_params(got.model)  # 37,757,440 at vocab 8192
  assert got.model.vocab_size == 8192  # 8,000 pieces + 100 sentinels, rounded up to 128
  assert got.flops_per_token == model_config_lib.flops_per_token(got.model, 128)
  # float32 AdamW: parameters 4 bytes each, optimizer state (mu, nu) 8 bytes each.
  assert got.param_bytes_per_device == 4 * got.num_params
  assert abs(got.optimizer_bytes_per_device - 8 * got.num_params) < 64


def test_fsdp_bytes_per_device_scale_as_one_over_n():
  base = None
  for n in (1, 2, 4, 8):
    got = _info("Experiment.size='small'", "MeshConfig.rules='fsdp'",
                "MeshConfig.axes=(('data', 1), ('fsdp', -1), ('tensor', 1))", devices=n)
    assert got.mesh == {"data": 1, "fsdp": n, "tensor": 1}
    if base is None:
      base = got.total_bytes_per_device
    # Everything with an embed axis is sharded; the norm scales (2 per block) stay whole.
    assert abs(got.total_bytes_per_device * n / base - 1) < 0.05, (n, got)


@pytest.mark.e2e
@pytest.mark.slow
def test_bytes_equal_the_shards_the_trainer_lays_out(tmp_path):
  """On 8 simulated devices: info's figure == bytes of device 0's shards of the real state."""
  script = tmp_path / "shards.py"
  script.write_text(
      "import json, jax\n"
      "from objectax.launch import configure, sharding, step\n"
      "from objectax.launch.tools import info\n"
      "from objectax.launch import config\n"
      "from objectax.models import registry\n"
      "from objectax.models.config import ModelConfig\n"
      "from objectax.objectives import registry as objectives\n"
      "configure.parse(['run/quickstart.gin', 'mesh/fsdp.gin'], ['Experiment.size=\"small\"'])\n"
      "got = info.compute()\n"
      "exp, tc, mc = config.Experiment(), config.TrainConfig(), sharding.MeshConfig()\n"
      "arch = registry.get(exp.arch)\n"
      "obj = objectives.get(exp.objective)\n"
      "lengths = obj.lengths(obj.config_cls(), exp.sequence_length)\n"
      "mesh = sharding.make_mesh(mc)\n"
      "spec = arch.batch_spec(lengths.feature_lengths(), tc.batch_size)\n"
      "model = arch.make_model(ModelConfig().with_vocab_size(got.model.vocab_size))\n"
      "with sharding.activate(mesh, mc):\n"
      "  _, _, init = step.abstract_and_init(model, step.make_optimizer(tc), spec, mesh, mc, 0)\n"
      "  state = init()\n"
      "dev = jax.devices()[0]\n"
      "def on_dev0(tree):\n"
      "  return sum(s.data.nbytes for x in jax.tree.leaves(tree) for s in x.addressable_shards"
      " if s.device == dev)\n"
      "print(json.dumps([got.param_bytes_per_device, on_dev0(state.params),"
      " got.optimizer_bytes_per_device, on_dev0(state.opt_state), got.mesh]))\n")
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
         "JAX_PLATFORMS": "cpu"}
  out = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
  assert out.returncode == 0, out.stderr[-2000:]
  p_info, p_real, o_info, o_real, mesh = json.loads(out.stdout.strip().splitlines()[-1])
  assert mesh == {"data": 1, "fsdp": 8, "tensor": 1}
  assert p_info == p_real and o_info == o_real


def test_cli_prints_the_figures_and_rejects_bad_meshes(capsys):
  assert main.run(["info", "--devices", "8", "--gin_file=mesh/fsdp.gin"]) == 0
  out = capsys.readouterr().out
  assert "parameters: 1,573,504" in out and "{'data': 1, 'fsdp': 8, 'tensor': 1}" in out
  assert "training FLOPs per token" in out and "optimizer state" in out
  assert main.run(["info", "--devices", "6",
                   "--gin.MeshConfig.axes=(('data', 4), ('fsdp', -1), ('tensor', 1))"]) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and "does not divide 6 devices" in err[0]


def _matmul_params(tree, prefix):
  """Parameters of 2-d or larger arrays under top-level keys starting with `prefix`."""
  import math  # pylint: disable=g-import-not-at-top
  from objectax.launch import step  # pylint: disable=g-import-not-at-top
  params = step.unbox(tree)
  return sum(math.prod(x.shape) for k, v in params.items() if k.startswith(prefix)
             for x in jax.tree.leaves(v) if x.ndim >= 2)


def test_flops_count_the_parameters_model_side_objectives_add():
  """Extra heads and generators add 6 FLOPs per matmul parameter (counted from the real
  parameter tree) plus their attention; ELECTRA drops the encoder's unused LM head."""
  base = _info("Experiment.objective=full_lm").flops_per_token
  configure.parse(["run/quickstart.gin"], ["Experiment.objective=mtp"])
  su = info.setup(1)
  m, length = su.model, su.lengths.budget
  attention = 12 * m.num_heads * m.head_dim * length
  extra = 6 * _matmul_params(su.abstract.params, "mtp_block_") + 3 * (
      6 * m.d_model * m.vocab_size + attention)
  assert abs(info.compute(1).flops_per_token - base - extra) < 1e-6 * base

  configure.parse(["run/quickstart.gin"], ["Experiment.arch=encoder_only",
                                           "Experiment.objective=bert_mlm"])
  mlm = info.compute(1).flops_per_token
  configure.parse(["run/quickstart.gin"], ["Experiment.arch=encoder_only",
                                           "Experiment.objective=electra"])
  su = info.setup(1)
  gen = su.abstract.params  # generator + rtd head matmuls, tied generator logits, attention
  from objectax.models import rtd  # pylint: disable=g-import-not-at-top
  g = rtd.generator_config(su.model, 0.25)
  extra = (6 * (_matmul_params(gen, "generator") + _matmul_params(gen, "rtd_head") + m.d_model)
           + g.num_layers * 12 * g.num_heads * g.head_dim * length)
  assert abs(info.compute(1).flops_per_token - mlm - extra) < 1e-6 * mlm
