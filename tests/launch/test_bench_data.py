"""`objectax bench data` measures each objective on the pre-tokenized embedded corpus."""
from objectax.launch import bench_data, main


def test_bench_data_prints_one_row_per_objective(tfds_data_dir, capsys):
  lines = []
  results = bench_data.run(budget=128, seconds=0.3, objectives=["full_lm", "span_corruption"],
                           out=lines.append)
  assert [r.objective for r in results] == ["full_lm", "span_corruption"]
  for r in results:
    assert r.examples_per_second > 0
    # Source tokens are what an example consumes: the objective's raw length.
    assert abs(r.source_tokens_per_second - r.examples_per_second * r.lengths.raw) < 1e-6 * (
        r.source_tokens_per_second + 1)
  assert len(lines) == 4 and lines[2].startswith("full_lm") and lines[3].startswith("span_corruption")
  assert "104" in lines[3] and "24" in lines[3]  # budget 128 -> inputs 104 + targets 24


def test_bench_rejects_unknown_objective_in_one_line(capsys):
  assert main.run(["bench", "data", "--objective", "spam"]) == 2
  err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
  assert len(err) == 1 and "unknown objective 'spam'; valid choices: full_lm" in err[0]
