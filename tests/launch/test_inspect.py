"""`objectax objectives` and `objectax inspect`: what a researcher reads about an objective."""
import re

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
