"""Evaluation of trained runs: the yardstick (bits per byte), zero-shot rank classification
and the `objectax eval` command that runs them on a workdir."""
