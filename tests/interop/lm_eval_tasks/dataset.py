"""Loads a JSON-lines file of this folder as the harness's dataset (one "test" split).

lm-eval resolves `!function` names from the task YAML's folder but `data_files` of
`dataset_path: json` from the working directory, so a task that ships its data beside its
YAML loads it here; built in memory (no Hugging Face cache, no network).
"""
import json
import os

import datasets


def load(data_file: str, **unused):
  """{"test": the rows of `data_file` (relative to this folder)}."""
  del unused  # the task's metadata, which lm-eval passes along
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), data_file)
  with open(path, encoding="utf-8") as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
