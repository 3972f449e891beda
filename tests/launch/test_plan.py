"""`objectax plan`: per-array layout and per-device totals, without the devices."""
from objectax.launch import configure, main, sharding
from objectax.launch.tools import info
from objectax.launch.tools import plan


def _setup(*bindings, devices=1):
  configure.parse(["run/quickstart.gin"], list(bindings))
  return info.setup(devices)


def test_plan_rows_add_up_to_info_and_fold_repeated_layers(capsys):
  code = main.run(["plan", "--devices", "4", "--gin_file=mesh/fsdp.gin",
                   "--gin.Experiment.size=small", "--device_memory_gib", "16"])
  out = capsys.readouterr().out
  assert code == 0
  got = info.compute(4)
  rows = [l for l in out.splitlines() if l.startswith("  ") and " x" in l.split("  ")[1]]
  # small has 8 decoder blocks: each block parameter is one folded row "block_*/... x8".
  assert rows and all("block_*/" in r and " x8 " in r + " " for r in rows), rows
  assert "mesh {'data': 1, 'fsdp': 4, 'tensor': 1}" in out
  su = info.setup(4)
  rules = sharding.rules(su.mesh_cfg)
  table = info.shards(su.abstract.params, su.mesh, rules)
  assert sum(s.bytes_per_device for s in table) == got.param_bytes_per_device
  query = next(s for s in table if s.path == "block_0/attention/query")
  assert query.logical == ("embed", "heads", "kv") and query.spec == ("fsdp", None, None)
  assert out.strip().splitlines()[-1].startswith("fits: ")


def test_activation_estimate_follows_batch_and_tensor_parallelism():
  base = plan.activation_bytes(_setup("TrainConfig.batch_size=8"))
  assert plan.activation_bytes(_setup("TrainConfig.batch_size=16")) == 2 * base
  # Splitting the batch over 4 data shards leaves a quarter per device.
  quarter = plan.activation_bytes(_setup("TrainConfig.batch_size=8", devices=4))
  assert abs(quarter * 4 - base) <= 4
  # Tensor parallelism divides the head, MLP and vocabulary terms, not the residual stream.
  tp = plan.activation_bytes(_setup("TrainConfig.batch_size=8", "MeshConfig.rules='fsdp_tensor'",
                                    "MeshConfig.axes=(('data', 1), ('fsdp', 1), ('tensor', 2))",
                                    devices=2))
  assert 0.5 * base < tp < base


def test_rule_overrides_apply_and_bad_ones_are_one_line(capsys):
  su = _setup("MeshConfig.rules='fsdp'", "MeshConfig.axes=(('data', 1), ('fsdp', -1), ('tensor', 1))",
              "MeshConfig.rule_overrides=(('mlp', 'fsdp'), ('embed', None))", devices=4)
  up = next(s for s in info.shards(su.abstract.params, su.mesh, sharding.rules(su.mesh_cfg))
            if s.path == "block_0/mlp/up")
  assert up.spec == (None, "fsdp")
  for override, message in [("(('vocabb', 'fsdp'),)", "unknown logical axis 'vocabb'; valid choices: batch"),
                            ("(('vocab', 'fdsp'),)", "unknown mesh axis 'fdsp'; valid choices: data, fsdp, tensor")]:
    code = main.run(["plan", f"--gin.MeshConfig.rule_overrides={override}"])
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert code == 2 and len(err) == 1 and message in err[0], err
  code = main.run(["plan", "--devices", "3", "--gin.TrainConfig.batch_size=8"])
  err = capsys.readouterr().err
  assert code == 2 and "batch_size=8 must be divisible by the data-parallel size 3" in err


def test_activation_estimate_falls_with_remat_and_logit_chunks():
  none = plan.activation_bytes(_setup("TrainConfig.batch_size=8", "Experiment.size='small'"))
  dots = plan.activation_bytes(_setup("TrainConfig.batch_size=8", "Experiment.size='small'",
                                      "ModelConfig.remat='save_dots'"))
  full = plan.activation_bytes(_setup("TrainConfig.batch_size=8", "Experiment.size='small'",
                                      "ModelConfig.remat='full'"))
  assert full < dots < none
  # Full remat keeps each layer's input (D per token) plus one layer recomputed at a time,
  # and the logits term is untouched: the difference is exactly the layers not held.
  su = _setup("TrainConfig.batch_size=8", "Experiment.size='small'")
  cfg, length, b = su.model, 128, su.batch_per_replica
  layer = length * plan._per_token_layer_elements(cfg, length, 1)  # pylint: disable=protected-access
  expected = b * 4 * ((cfg.num_layers - 1) * layer - cfg.num_layers * length * cfg.d_model)
  assert abs((none - full) - expected) <= 8
  # Logits a chunk of tokens at a time: the (B, L, V) float32 term shrinks to the chunk's.
  chunked = plan.activation_bytes(_setup("TrainConfig.batch_size=8", "Experiment.size='small'",
                                         "ModelConfig.logits_chunk=64"))
  assert none - chunked == (b * length - 64) * 2 * cfg.vocab_size * 4


def test_every_wang_xxl_cell_fits_32_gib_chips_on_the_slice_the_readme_names(capsys):
  cells = ["causal_decoder_full_lm", "causal_decoder_span_corruption",
           "prefix_decoder_prefix_lm", "prefix_decoder_span_corruption",
           "encoder_decoder_prefix_lm", "encoder_decoder_span_corruption"]
  for cell in cells:
    code = main.run(["plan", "--devices", "64", "--device_memory_gib", "32",
                     f"--gin_file=experiments/wang2022/{cell}_wang_xxl_c4.gin"])
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert code == 0 and last.startswith("fits: "), (cell, last)
