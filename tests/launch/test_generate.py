"""`objectax generate`: prompts continued and blanks filled by a trained run's checkpoint."""
import dataclasses

import seqio
import pytest

from objectax.launch import main
from objectax.launch.tools import generate
from objectax.models.registry import ConfigError

BYTES = seqio.ByteVocabulary(extra_ids=10)  # sentinels count down from vocab_size - 1


def test_markers_become_sentinels_and_spans_go_back_in_place():
  ids, spans = generate.infill_ids(BYTES, "Thank you <X> me to your party <Y> week.")
  top = BYTES.vocab_size - 1
  assert spans == [0, 1] and ids[-1] == 1
  assert ids.count(top) == 1 and ids.count(top - 1) == 1
  assert BYTES.decode([i for i in ids if i < top - 1 and i != 1]) == "Thank youme to your partyweek."
  targets = [top, *BYTES.encode("for inviting"), top - 1, *BYTES.encode("last"), 1, 99]
  assert generate.fill(BYTES, "Thank you <X> me to your party <Y> week.", targets) == \
      "Thank you for inviting me to your party last week."
  # <extra_id_N> markers, and a span the model left out.
  assert generate.fill(BYTES, "a <extra_id_1> b <X> c", [top, *BYTES.encode("z"), 1]) == \
      "a [?] b z c"
  with pytest.raises(ConfigError, match="at least one marker"):
    generate.infill_ids(BYTES, "no blanks here")
  with pytest.raises(ConfigError, match="markers are <X>"):
    generate.split_markers("a <B> c")


@pytest.mark.e2e
def test_generate_continues_a_prompt_after_the_quickstart(trained_quickstart, capsys):
  code = main.run(["generate", f"--workdir={trained_quickstart}", "--prompt", "def ",
                   "--prompt", "The", "--max_new_tokens", "12"])
  out = capsys.readouterr().out
  assert code == 0
  blocks = [b for b in out.split("\n\n") if b.strip()]
  assert [b.splitlines()[0] for b in blocks] == ["prompt: def ", "prompt: The"]
  for b in blocks:
    assert b.splitlines()[1].startswith("output: ") and len(b.splitlines()[1]) > len("output: ")
  # Sampling is deterministic for a seed.
  again = [main.run(["generate", f"--workdir={trained_quickstart}", "--prompt", "def ",
                     "--temperature", "1", "--seed", "5", "--max_new_tokens", "8"])
           for _ in range(2)]
  first, second = capsys.readouterr().out.split("prompt: def ")[1:]
  assert again == [0, 0] and first.strip() == second.strip()


@pytest.mark.e2e
@pytest.mark.parametrize("mesh", ["fsdp", pytest.param("fsdp_tensor", marks=pytest.mark.slow)])
def test_generate_on_eight_devices_gives_the_one_device_tokens(trained_quickstart, mesh, capsys):
  """The run's checkpoint decoded on 8 simulated devices under a sharded mesh preset (the
  parameters stay sharded) prints exactly what one device prints."""
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from objectax.launch import configure  # pylint: disable=g-import-not-at-top
  args = ["generate", f"--workdir={trained_quickstart}", "--prompt", "def ", "--prompt",
          "The module", "--prompt", "x", "--max_new_tokens", "16"]
  assert main.run(args) == 0
  alone = capsys.readouterr().out
  preset = open(os.path.join(configure.GIN_DIR, "mesh", f"{mesh}.gin")).read()
  bindings = [f"--gin.{line.replace(' = ', '=')}" for line in preset.splitlines()
              if line.startswith("MeshConfig.")]
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  out = subprocess.run([sys.executable, "-m", "objectax.launch.main", *args, *bindings],
                       env=env, capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "on 8 device(s)" in out.stderr and "'fsdp': " in out.stderr
  assert out.stdout == alone


@pytest.mark.parametrize("arch", ["causal_decoder", "prefix_decoder", "encoder_decoder"])
def test_bench_decode_prints_both_paths_and_they_agree(arch, capsys):
  code = main.run(["bench", "decode", f"--gin.Experiment.arch={arch}", "--new_tokens", "6",
                   "--prompt_length", "5", "--batch_size", "2"])
  out = capsys.readouterr().out
  assert code == 0
  assert "cached:" in out and "recompute:" in out
  assert "same greedy tokens on both paths: yes" in out


def test_bench_decode_refuses_the_encoder_only_model(capsys):
  assert main.run(["bench", "decode", "--gin.Experiment.arch=encoder_only"]) == 2
  assert "does not decode left to right" in capsys.readouterr().err


def test_the_encoder_only_model_fills_each_blank_in_one_pass():
  """Each sentinel position gets the model's argmax there, each row as it gets alone."""
  import sys  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "models"))
  from model_testing import tiny_config  # pylint: disable=g-import-not-at-top
  from objectax.models import encoder  # pylint: disable=g-import-not-at-top
  vocabulary = seqio.ByteVocabulary(extra_ids=10)
  model = encoder.Model(dataclasses.replace(tiny_config(), vocab_size=0).with_vocab_size(
      vocabulary.vocab_size))
  params = model.init(jax.random.key(0),
                      {"encoder_input_tokens": jnp.ones((1, 8), jnp.int32)})["params"]
  rows = [generate.infill_ids(vocabulary, "ab <X> cd <Y>")[0],
          generate.infill_ids(vocabulary, "a <X>")[0]]
  together = generate._fill_in_one_pass(model, params, rows, vocabulary)  # pylint: disable=protected-access
  alone = [generate._fill_in_one_pass(model, params, [r], vocabulary)[0] for r in rows]  # pylint: disable=protected-access
  assert together == alone
  top = vocabulary.vocab_size - 1
  assert together[0][0::2][:2] == [top, top - 1] and together[0][-1] == 1
  logits = model.apply({"params": params}, {"encoder_input_tokens": jnp.asarray([rows[1]])})
  position = rows[1].index(top)
  assert together[1][1] == int(jnp.argmax(logits[0, position, :vocabulary.vocab_size]))
