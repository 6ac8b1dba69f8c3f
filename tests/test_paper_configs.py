"""The paper's ImageNet configs run end to end (train a couple of steps, dense evaluation) on TFDS
mock data, with the width multiplier shrinking the channels so that a CPU manages it."""

from __future__ import annotations

import json

import pytest
import tensorflow_datasets as tfds

from overfeat_jax.evaluation import run as evaluation
from overfeat_jax.training import loop

from test_config import load_config


@pytest.mark.parametrize("name, crop", [("overfeat_fast_imagenet", 231),
                                        ("overfeat_accurate_imagenet", 221)])
def test_paper_config_trains_and_evaluates_on_mock_imagenet(tmp_path, name, crop):
  config = load_config(name)
  config.model.width = 1 / 32  # The multiplier: same layers, 1/32 of the channels.
  config.input.batch_size = 4
  config.input.eval_batch_size = 2
  config.input.num_workers = 0  # grain workers would not see mock_data's in-process patch.
  config.train.max_steps = 2
  config.train.log_every = 1
  config.eval.num_examples = 3
  # The mock images fall in two shape buckets (two compiles): the smallest and the largest of the
  # six scales keep that short (test_dense_eval pins every scale's shapes against SPEC A4).
  config.eval.multi_scales = (0, 5)
  workdir = str(tmp_path / name)
  with tfds.testing.mock_data(num_examples=8):
    result = loop.run(config, workdir)
    assert result.step == 2 and result.stopped_by is None
    metrics = evaluation.run(config, workdir, verbose=False)
  records = [json.loads(line) for line in open(f"{workdir}/metrics.jsonl")]
  assert [r["step"] for r in records] == [1, 2]
  assert metrics["num_examples"] == 3 and len(metrics["rows"]) == 6
  assert metrics["rows"]["centre crop"]["title"].startswith(f"centre crop ({crop}x{crop}")
  # 1000 classes and 2 steps: chance level, but every count is a whole number of the 3 examples.
  for row in metrics["rows"].values():
    assert round(row["top1_error"] * 3 / 100, 6).is_integer()
