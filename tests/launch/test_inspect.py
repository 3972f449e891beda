"""`objectax objectives` and `objectax inspect`: what a researcher reads about an objective."""
import re

import pytest

from objectax.launch import main
from objectax.objectives import registry as objective_registry


def test_objectives_lists_each_with_description_and_architectures(capsys):
  assert main.run(["objectives"]) == 0
  lines = capsys.readouterr().out.splitlines()
  names = objective_registry.OBJECTIVES.names()
  assert len(lines) == len(names)
  for name, line in zip(names, lines):
    obj = objective_registry.get(name)
    assert line.startswith(name) and obj.description in line
    for arch in obj.architectures:
      assert arch in line


@pytest.mark.e2e
def test_inspect_span_corruption_marks_exactly_the_targets(tfds_data_dir, capsys):
  text = "Thank you for inviting me to your party last week."
  assert main.run(["inspect", "span_corruption", "--text", text, "--seed", "1",
                   "--gin.Experiment.sequence_length=48"]) == 0
  out = capsys.readouterr().out
  header, inputs, targets, loss, stream = out.strip().splitlines()
  lengths = {k: int(v) for k, v in re.findall(r"'(\w+)': (\d+)", header)}
  assert "<extra_id_0>" in inputs and targets.strip().startswith("targets: <extra_id_0>")
  assert inputs.rstrip().endswith("</s>") and targets.rstrip().endswith("</s>")
  assert f"{lengths['targets']} of {lengths['inputs'] + lengths['targets']} positions" in loss
  assert stream.count("⟦") == 1 and stream.rstrip().endswith("</s>⟧")
  marked = stream[stream.index("⟦") + 1:-1]
  assert marked == targets.split("targets: ", 1)[1].strip()
  assert "Thank you" in inputs


@pytest.mark.e2e
def test_inspect_full_lm_puts_loss_everywhere_and_seeds_differ(tfds_data_dir, capsys):
  outs = []
  for seed in ("0", "1"):
    assert main.run(["inspect", "full_lm", "--seed", seed,
                     "--gin.Experiment.sequence_length=32"]) == 0
    outs.append(capsys.readouterr().out)
  for out in outs:
    assert "32 of 32 positions" in out
    stream = out.strip().splitlines()[-1]
    assert stream.count("⟦") == 1 and stream.split("stream: ", 1)[1].startswith("⟦")
  assert outs[0] != outs[1]


@pytest.mark.e2e
@pytest.mark.slow
def test_inspect_ul2_shows_every_denoiser_with_its_mode_token(tfds_data_dir, capsys):
  assert main.run(["inspect", "ul2", "--gin.Experiment.sequence_length=48",
                   "--gin.Experiment.arch=prefix_decoder"]) == 0
  out = capsys.readouterr().out
  blocks = out.split("\n--- ")[1:]
  from objectax.objectives.ul2 import DEFAULT_DENOISERS  # pylint: disable=g-import-not-at-top
  assert [b.split(":", 1)[0] for b in blocks] == [d[0] for d in DEFAULT_DENOISERS]
  for block, (name, mode, mu, _) in zip(blocks, DEFAULT_DENOISERS):
    head, inputs, targets, loss, stream = block.strip().splitlines()
    assert ("prefix_lm" if not mu else "span_corruption") in head and "share 14.3%" in head
    assert inputs.strip().startswith(f"inputs: {mode}")  # the mode token leads every example
    assert stream.strip().startswith(f"stream: {mode}") and stream.count("⟦") == 1
    if mu:  # span corruption: sentinels on both sides
      assert "<extra_id_0>" in inputs and "<extra_id_0>" in targets
  n_loss, n_all = map(int, re.search(r"(\d+) of (\d+) positions", blocks[-1]).groups())
  assert n_all == 48 and 0 < n_loss < 48  # the S-denoiser fills the budget exactly


@pytest.mark.e2e
def test_inspect_bert_mlm_marks_the_selected_positions(tfds_data_dir, capsys):
  text = "The quick brown fox jumps over the lazy dog. It was not amused at all."
  assert main.run(["inspect", "bert_mlm", "--text", text, "--gin.Experiment.sequence_length=40",
                   "--seed", "3"]) == 0
  out = capsys.readouterr().out.strip().splitlines()
  assert "on encoder_only" in out[0]  # the causal decoder cannot run it: its own model
  n_loss = int(re.search(r"(\d+) of 40 positions", out[2]).group(1))
  # 15% of the non-EOS positions; the repeated text puts one EOS per copy in the chunk.
  assert n_loss in {round(0.15 * (40 - k)) for k in range(1, 5)}, out
  assert 1 <= out[3].count("⟦") <= n_loss  # adjacent selected positions share a bracket
