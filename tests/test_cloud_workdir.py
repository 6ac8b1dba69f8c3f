"""Work directories on cloud storage: every file of a run but its checkpoints, on an object store.

The object store is `memory_storage.memory_bucket()`: gs:// paths that go through etils.epath land in
fsspec's in-memory file system, which refuses to append as GCS does. Each test runs in an empty
current directory and checks that it stays empty: a write that bypasses epath (open, os.makedirs,
os.replace on a "gs://..." string) would land there, under "gs:/". Checkpoints stay local (orbax writes
arrays with tensorstore, which has no in-memory fsspec driver): the training test points the run's
checkpoint directory at a local one and keeps everything else of the work directory in memory.
"""

from __future__ import annotations

import io
import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image
from tensorboardX.proto.event_pb2 import SessionLog

import tiny_training
from memory_storage import local_files, memory_bucket, tree
from test_logging import event_files, jsonl_scalars, read_events, tensorboard_scalars
from cli_helpers import QUICKSTART
from overfeat_jax import checkpoint_io, export, files, run_info, shipped_configs
from overfeat_jax.config import base_config
from overfeat_jax.data import transforms
from overfeat_jax.errors import WorkdirError
from overfeat_jax.evaluation import detection, feature_export, outputs
from overfeat_jax.evaluation import run as eval_run
from overfeat_jax.models.overfeat import feature_layer
from overfeat_jax.tasks import classification
from overfeat_jax.training import checkpoint as checkpoint_lib
from overfeat_jax.training import loop


@pytest.fixture
def bucket(tmp_path, monkeypatch):
  """A fresh in-memory gs:// bucket, with an empty current directory that must stay empty."""
  cwd = tmp_path / "cwd"
  cwd.mkdir()
  monkeypatch.chdir(cwd)
  with memory_bucket() as uri:
    yield uri
  assert local_files(cwd) == []  # nothing bypassed epath


def test_the_test_store_is_an_object_store(bucket):
  path = files.as_path(f"{bucket}/a.txt")
  path.write_text("x")
  with pytest.raises(OSError, match="cannot append"):
    path.open("a")
  assert tree(bucket) == {"a.txt": 1}
  os.makedirs(f"{bucket}/run")  # bypasses epath: what the fixture's check catches
  name = bucket[len("gs://"):]
  assert local_files(".") == ["gs:", f"gs:/{name}", f"gs:/{name}/run"]
  shutil.rmtree("gs:")


def test_files_on_an_object_store(bucket):
  run = f"{bucket}/run"
  assert files.absolute(run) == run and files.is_local("runs/a") and not files.is_local(run)
  files.replace_file(f"{run}/eval/metrics.json", '{"a": 1}\n')
  files.replace_file(f"{run}/eval/metrics.json", '{"a": 2}\n')  # replaced, no temporary left behind
  files.add_line(f"{run}/changes.jsonl", "one")
  files.add_line(f"{run}/changes.jsonl", "two")
  log = files.GrowingFile(f"{run}/log.bin", b"ab")
  log.extend(b"cd")
  log.extend(b"e")
  assert tree(bucket) == {"run/eval/metrics.json": 9, "run/changes.jsonl": 8, "run/log.bin": 5}
  assert files.read_text(f"{run}/eval/metrics.json") == '{"a": 2}\n'
  assert files.read_text(f"{run}/changes.jsonl") == "one\ntwo\n"
  assert files.read_bytes(f"{run}/log.bin") == b"abcde"
  assert files.listdir(run) == ["changes.jsonl", "eval", "log.bin"] and files.listdir(f"{run}/none") == []
  with pytest.raises(WorkdirError, match=rf"cannot write {run}/log.bin/x: {run}/log.bin is a file"):
    files.replace_file(f"{run}/log.bin/x", "x")


def test_a_local_growing_file_grows_in_place(tmp_path):
  # TensorBoard keeps an event file open and reads on: the file must stay the same one as it grows.
  path = tmp_path / "events"
  log = files.GrowingFile(str(path), b"ab")
  inode = os.stat(path).st_ino
  with open(path, "rb") as reader:
    assert reader.read() == b"ab"
    log.extend(b"cd")
    assert reader.read() == b"cd" and os.stat(path).st_ino == inode
  assert path.read_bytes() == b"abcd"


def test_a_training_run_and_its_resume_on_an_object_store(bucket, tmp_path, monkeypatch, capsys):
  workdir = f"{bucket}/run"
  local_checkpoints = tmp_path / "checkpoints"
  monkeypatch.setattr(checkpoint_lib, "checkpoint_dir", lambda _: str(local_checkpoints))

  def train(max_steps, log_every):
    config = tiny_training.tiny_config(max_steps=max_steps, checkpoint_every=4, log_every=log_every)
    return config, loop.train(config, workdir, tiny_training.tiny_task(config))

  train(6, 2)  # checkpoints at 4 and 6
  assert [json.loads(line)["step"] for line in files.read_text(f"{workdir}/metrics.jsonl").splitlines()] \
      == [2, 4, 6]
  # As if killed before its step-6 checkpoint: the resume from 4 drops step 6 from metrics.jsonl and
  # (by a SessionLog START at 5) from TensorBoard's view, then logs 8; log_every changes, as allowed.
  (local_checkpoints / "6").rename(tmp_path / "set_aside")
  config, result = train(8, 4)
  assert result.step == 8 and "8" in os.listdir(local_checkpoints)

  stored = tree(workdir)
  events = event_files(files.as_path(workdir))
  assert len(events) == 2
  assert set(stored) == {"config.json", "config_changes.jsonl", "run_info.json", "metrics.jsonl",
                         *(os.path.basename(path) for path in events)}
  assert json.loads(files.read_text(f"{workdir}/config.json")) == json.loads(config.to_json())
  assert [json.loads(line) for line in files.read_text(f"{workdir}/config_changes.jsonl").splitlines()] \
      == [{"step": 4, "changes": {"train.log_every": [2, 4], "train.max_steps": [6, 8]}}]
  assert [(r["command"], r["step"]) for r in run_info.read_runs(workdir)] == [("train", 0), ("train", 4)]
  records = [json.loads(line) for line in files.read_text(f"{workdir}/metrics.jsonl").splitlines()]
  assert [r["step"] for r in records] == [2, 4, 8]
  assert tensorboard_scalars(files.as_path(workdir)) == jsonl_scalars(f"{workdir}/metrics.jsonl")
  starts = [(e.step, e.session_log.status) for path in events for e in read_events(path)
            if e.HasField("session_log")]
  assert starts == [(1, SessionLog.START), (5, SessionLog.START)]
  captured = capsys.readouterr()
  assert captured.err.count(f"warning: --workdir {workdir} is not on a local file system: it is not "
                            "locked") == 2
  assert (f"metrics in {workdir}/metrics.jsonl and TensorBoard (tensorboard --logdir {workdir})"
          in captured.out)


def test_evaluation_outputs_on_an_object_store(bucket, monkeypatch, capsys):
  workdir = f"{bucket}/run"
  picture = np.arange(12 * 16 * 3, dtype=np.uint8).reshape(12, 16, 3)
  result = {"checkpoint_step": 7, "error": 12.5}
  detections = [{"image_id": 0, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 4.0], "score": 0.9}]

  def evaluate(config, workdir, verbose):  # the writers every evaluator uses, on made-up results
    outputs.write_metrics(workdir, result)
    detection.write_eval_files(workdir, {**result, "mAP": 0.5}, detections)
    outputs.write_pictures(workdir, [("00000", picture)], verbose=verbose)
    return result

  monkeypatch.setitem(eval_run.EVALUATORS, "classification", evaluate)
  monkeypatch.setitem(eval_run.SCALARS, "classification", lambda r: {"eval/error": r["error"]})
  monkeypatch.setitem(eval_run.SUMMARIES, "classification", lambda r: f"error {r['error']}")
  config = base_config()
  eval_run.run(config, workdir)
  eval_run.run(config, workdir)  # evaluating the same step again replaces its record

  eval_dir = f"{workdir}/eval"
  stored = tree(eval_dir)
  assert {name for name in stored if "tfevents" not in name} == {
      "metrics.json", "detections.json", "pictures/00000.png", "metrics.jsonl", "run_info.json"}
  assert json.loads(files.read_text(f"{eval_dir}/metrics.json")) == {**result, "mAP": 0.5}
  assert json.loads(files.read_text(f"{eval_dir}/detections.json")) == detections
  with Image.open(io.BytesIO(files.read_bytes(f"{eval_dir}/pictures/00000.png"))) as png:
    np.testing.assert_array_equal(np.asarray(png), picture)
  assert [json.loads(line) for line in files.read_text(f"{eval_dir}/metrics.jsonl").splitlines()] \
      == [{"step": 7, "eval/error": 12.5}]
  assert tensorboard_scalars(files.as_path(eval_dir)) == {"eval/error": [(7, 12.5)]}
  assert [(r["command"], r["step"]) for r in run_info.read_runs(eval_dir)] == [("evaluate", 7)] * 2
  assert f"pictures: 1 PNG(s) in {eval_dir}/pictures" in capsys.readouterr().out


def test_features_and_an_export_on_an_object_store(bucket, tmp_path):
  config = shipped_configs.load(QUICKSTART)
  model = classification.model_from_config(config)
  params = jax.jit(lambda key: classification.init_params(model, key))(jax.random.key(0))  # one compile
  local_run = tmp_path / "run"  # checkpoints stay local
  checkpoint_io.save_params(str(local_run), params,
                            checkpoint_io.make_signature(classification.model_signature(config), params))

  image = np.random.RandomState(0).randint(0, 256, (70, 80, 3)).astype(np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(image).save(buffer, format="PNG")
  files.replace_file(f"{bucket}/images/cat.png", buffer.getvalue())
  layer = feature_layer(model.arch, 2)
  exported = feature_export.export_features(config, str(local_run), [f"{bucket}/images/cat.png"],
                                            layer=layer.index, out_dir=f"{bucket}/features", verbose=False)
  assert exported[0].npy == f"{bucket}/features/cat.npy"
  assert set(tree(f"{bucket}/features")) == {"cat.npy", "cat.json"}
  fmap = np.load(io.BytesIO(files.read_bytes(exported[0].npy)))
  normalized = transforms.normalize(image[None], config.input.mean, config.input.std)
  expected = model.apply({"params": params}, normalized, layer.index, method="features")[0]
  np.testing.assert_allclose(fmap, expected, rtol=1e-4, atol=1e-5)
  assert json.loads(files.read_text(exported[0].json))["shape"] == list(fmap.shape)

  def scale(p, x):
    return {"y": x * p["w"]}

  program = jax.export.export(jax.jit(scale))({"w": jax.ShapeDtypeStruct((3,), jnp.float32)},
                                              jax.ShapeDtypeStruct((2, 3), jnp.float32))
  written = export.write_export(f"{bucket}/exported/scale", program, {"w": np.arange(3, dtype=np.float32)},
                                {"what": "scale"})
  assert set(tree(f"{bucket}/exported")) == {"scale", "scale.npz", "scale.json"}
  loaded = jax.export.deserialize(bytearray(files.read_bytes(written.program)))
  weights = dict(np.load(io.BytesIO(files.read_bytes(written.params))))
  np.testing.assert_array_equal(loaded.call(weights, np.ones((2, 3), np.float32))["y"],
                                np.tile(np.arange(3, dtype=np.float32), (2, 1)))
  assert json.loads(files.read_text(written.description)) == {"what": "scale"}
