r"""Export a trained model's inference function with `jax.export`: StableHLO, no TensorFlow.

  python -m overfeat_jax.export --config configs/quickstart.py --workdir workdirs/quickstart \
      --out exported/quickstart [--batch N] [--height H --width W] [--platforms cpu,cuda,tpu]

Restores the newest intact checkpoint in --workdir and writes three files:
  OUT          the serialized `jax.export.Exported` of predict(params, images) (`Exported.serialize()`);
  OUT.npz      the parameters, one array per path ("extractor/conv1/kernel", ...);
  OUT.json     what it takes and returns (names, shapes, dtypes), the platforms, the checkpoint step.
Anything with jax and numpy (no flax, no code of this project) runs it:

  exported = jax.export.deserialize(bytearray(open(OUT, "rb").read()))
  outputs = exported.call(dict(np.load(OUT + ".npz")), images)

The parameters are an argument, not constants baked into the program: the paper's networks have 145M
of them, which as constants would make a 580 MB program that XLA constant-folds at every compile; as an
argument the program is a few tens of KB and the weights a plain npz any numpy reads (and could swap).
The batch is symbolic ("batch": any size at call time) unless --batch fixes it; the image height and
width are fixed at export (default: the network's training size), since the pooling layers' floor
divisions make symbolic spatial sizes fragile. `--platforms` lists where the program may run (default
cpu, cuda and tpu: one file for all, lowered on any machine).

The classifier's function (`classifier_predict`) takes uint8 RGB images [B, H, W, 3] (0..255; the
config's input normalisation is inside) and returns {'logits': float32 [B, K], 'probabilities':
float32 [B, K]}: at the training size the network's logits, at a larger size the spatial maximum of its
class map (SPEC A4's spatial max, coarse stride, one scale). The mechanism (`export_function`,
`write_export`) takes any predict function of (params, *inputs) with input specs; each task adds a
builder to `EXPORTERS`. The Faster R-CNN detector's (`faster_rcnn_predict`) takes uint8 images on a
fixed canvas (default the test sizes: input.min_size x input.max_size, times
faster_rcnn.test.size_factor) with each image's size, and returns its padded detections {'boxes', 'scores', 'classes',
'valid'} (D = faster_rcnn.test.max_detections slots).
"""

from __future__ import annotations

import dataclasses
import io
import json
import sys
from typing import Any, Callable, Sequence

from overfeat_jax import stop_signals

# First (and only when run as a command), so that a Ctrl-C during the imports below exits cleanly too.
if __name__ == "__main__":
  stop_signals.exit_on_signals("export abandoned")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402
from flax import traverse_util  # noqa: E402

from overfeat_jax import checkpoint_io, cli, files, tasks  # noqa: E402
from overfeat_jax.config import faster_rcnn_test_sizes, validate_config  # noqa: E402
from overfeat_jax.cpu_flags import use_fast_cpu_convolutions  # noqa: E402
from overfeat_jax.errors import ConfigError  # noqa: E402

USAGE = ("python -m overfeat_jax.export --config CONFIG --workdir WORKDIR --out FILE [--batch N] "
         "[--height H --width W] [--platforms cpu,cuda,tpu]")
DEFAULT_PLATFORMS = ("cpu", "cuda", "tpu")
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # what jax.export lowers for
FORMAT = "overfeat_jax.export/1"  # OUT.json's "format"; changes when the files' meaning does
BATCH = "batch"  # the symbolic batch dimension's name


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """One input of an exported function (after the parameters).

  Attributes:
    name: for OUT.json, e.g. "images".
    shape: in `jax.export.symbolic_shape` syntax, e.g. "batch, 58, 58, 3"; a name is a symbolic
      dimension, the same name in several inputs the same size.
    dtype: e.g. "uint8".
    meaning: for OUT.json, e.g. "RGB pixels 0..255".
  """
  name: str
  shape: str
  dtype: str
  meaning: str = ""


def flatten_params(params: Any) -> dict[str, np.ndarray]:
  """A parameter tree as {"a/b/c": numpy array}: what OUT.npz holds and the exported function takes."""
  return {path: np.asarray(leaf) for path, leaf in traverse_util.flatten_dict(params, sep="/").items()}


def export_function(predict: Callable[..., Any], params: Any, inputs: Sequence[InputSpec], *,
                    platforms: Sequence[str] = DEFAULT_PLATFORMS) -> jax.export.Exported:
  """Exports predict(params, *inputs) as a function of (flat params, *inputs), lowered for `platforms`.

  Args:
    predict: a pure function of a parameter tree and arrays shaped as `inputs`, returning a pytree of
      arrays (e.g. a dict); it is traced once, with symbolic dimensions where the specs name them.
    params: the parameter tree, nested dicts (as Flax's); arrays or ShapeDtypeStructs: only the
      shapes and dtypes are fixed in the export, not the values.
    inputs: the other arguments, in order.
  Returns:
    The Exported; `.call(flatten_params(params), *arrays)` runs it.
  """

  def flat_predict(flat: dict[str, jax.Array], *args: jax.Array) -> Any:
    return predict(traverse_util.unflatten_dict(flat, sep="/"), *args)

  scope = jax.export.SymbolicScope()
  specs = [jax.ShapeDtypeStruct(jax.export.symbolic_shape(spec.shape, scope=scope), jnp.dtype(spec.dtype))
           for spec in inputs]
  param_specs = {path: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype)
                 for path, leaf in traverse_util.flatten_dict(params, sep="/").items()}
  return jax.export.export(jax.jit(flat_predict), platforms=tuple(platforms))(param_specs, *specs)


def _shape(aval: Any) -> list[int | str]:
  return [d if isinstance(d, int) else str(d) for d in aval.shape]


def describe(exported: jax.export.Exported, inputs: Sequence[InputSpec]) -> dict[str, Any]:
  """OUT.json's description of the function: inputs and outputs (shapes with symbolic names)."""
  outputs = jax.tree_util.tree_unflatten(
      exported.out_tree, [{"shape": _shape(a), "dtype": str(a.dtype)} for a in exported.out_avals])
  args = exported.in_avals[-len(inputs):] if inputs else ()
  return {"format": FORMAT, "platforms": list(exported.platforms),
          "call": "jax.export.deserialize(OUT).call(dict(numpy.load(OUT.npz)), " + ", ".join(
              spec.name for spec in inputs) + ")",
          "inputs": [{"name": s.name, "shape": _shape(a), "dtype": str(a.dtype), "meaning": s.meaning}
                     for s, a in zip(inputs, args)],
          "outputs": outputs}


@dataclasses.dataclass(frozen=True)
class ExportFiles:
  """The three files `write_export` wrote: the program, the parameters and their description."""
  program: str
  params: str
  description: str


def write_export(out: str, exported: jax.export.Exported, params: Any,
                 description: dict[str, Any]) -> ExportFiles:
  """Writes OUT (the serialized program), OUT.npz (`flatten_params(params)`) and OUT.json, each
  atomically.

  Raises:
    WorkdirError: a file cannot be written (names it).
  """
  buffer = io.BytesIO()
  np.savez(buffer, **flatten_params(params))
  written = ExportFiles(program=out, params=out + ".npz", description=out + ".json")
  files.replace_file(written.program, bytes(exported.serialize()))
  files.replace_file(written.params, buffer.getvalue())
  files.replace_file(written.description, json.dumps(description, indent=2) + "\n")
  return written


# ---------------------------------------------------------------------------------------------
# What each task exports: its predict function of (params, *inputs) and the input specs.

def classifier_predict(model: Any, mean: Sequence[float], std: Sequence[float]) -> Callable[..., Any]:
  """predict(params, images uint8 [B, H, W, 3]) -> {'logits', 'probabilities'}: float32 [B, K].

  The images are normalised as the input pipeline does (`data.transforms.normalize`: x / 255, minus
  `mean`, over `std`); logits are the class map's maximum over positions (at the training size the
  map is 1x1: the network's logits).
  """
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)

  def predict(params: Any, images: jax.Array) -> dict[str, jax.Array]:
    x = (images.astype(jnp.float32) * np.float32(1 / 255) - mean) / std
    class_map = model.apply({"params": params}, x, method="class_map")  # [B, h, w, K]
    logits = jnp.max(class_map, axis=(1, 2))  # [B, K]
    return {"logits": logits, "probabilities": jax.nn.softmax(logits, axis=-1)}

  return predict


@dataclasses.dataclass(frozen=True)
class ExportPlan:
  """What a task exports.

  Attributes:
    predict: predict(params, *inputs) -> a pytree of arrays.
    inputs: the specs of `inputs`.
    params_template: the parameters' shapes (ShapeDtypeStructs), as the task's params_template.
    notes: JSON for OUT.json (what the outputs mean, the normalisation, class count, ...).
  """
  predict: Callable[..., Any]
  inputs: list[InputSpec]
  params_template: Any
  notes: dict[str, Any]


def _classification(config: ml_collections.ConfigDict, batch: str, height: int, width: int) -> ExportPlan:
  task = tasks.get_task(config)
  model = task.model_from_config(config)
  size = model.arch.train_size
  height, width = height or size, width or size
  images = InputSpec("images", f"{batch}, {height}, {width}, 3", "uint8", "RGB pixels 0..255")
  notes = {"num_classes": config.dataset.num_classes, "architecture": model.arch.name,
           "input_normalisation": {"mean": list(config.input.mean), "std": list(config.input.std),
                                   "applied": "inside the function: (images / 255 - mean) / std"},
           "logits": "the class map's maximum over positions (the network's logits at the training "
                     f"size {size}x{size})"}
  return ExportPlan(predict=classifier_predict(model, config.input.mean, config.input.std),
                    inputs=[images], params_template=task.params_template(model), notes=notes)


def faster_rcnn_predict(config: ml_collections.ConfigDict, model: Any) -> Callable[..., Any]:
  """predict(params, images uint8 [B, H, W, 3], sizes int32 [B, 2]) -> the detector's padded outputs.

  `sizes` holds each image's (height, width) inside the canvas (the images at the top left, the rest
  padding, as the input pipeline lays them out); images and sizes are in network-input pixels (the
  caller resizes), so the proposal layer's minimum box side is `faster_rcnn.proposal_min_size` pixels.
  The images are normalised inside (x / 255, minus the mean, over the std; zeros outside `sizes`, as
  `data.transforms.NormalizeBatch`). Returns {'boxes' float32 [B, D, 4] (x1, y1, x2, y2), 'scores'
  float32 [B, D], 'classes' int32 [B, D], 'valid' bool [B, D]}, D = faster_rcnn.test.max_detections.
  """
  mean = np.asarray(config.input.mean, np.float32)
  std = np.asarray(config.input.std, np.float32)
  min_size = float(config.faster_rcnn.proposal_min_size)

  def predict(params: Any, images: jax.Array, sizes: jax.Array) -> dict[str, jax.Array]:
    _, h, w, _ = images.shape
    inside = ((jnp.arange(h)[None, :, None] < sizes[:, 0, None, None])
              & (jnp.arange(w)[None, None, :] < sizes[:, 1, None, None]))  # [B, H, W]
    x = (images.astype(jnp.float32) * np.float32(1 / 255) - mean) / std
    x = jnp.where(inside[..., None], x, 0.0)
    outputs = model.apply({"params": params}, x, sizes, jnp.full((images.shape[0],), min_size))
    d = outputs.detections
    return {"boxes": d.boxes, "scores": d.scores, "classes": d.classes, "valid": d.valid}

  return predict


def _faster_rcnn(config: ml_collections.ConfigDict, batch: str, height: int, width: int) -> ExportPlan:
  if config.faster_rcnn.test.proposal_ranking != "objectness":
    # Random proposals are an ablation (README "Ablations"), seeded per image id: not a detector.
    raise ConfigError(f"faster_rcnn.test.proposal_ranking={config.faster_rcnn.test.proposal_ranking!r} "
                      "cannot be exported: export a detector that ranks its proposals by objectness")
  task = tasks.get_task(config)
  model = task.model_from_config(config)
  # Default canvas: the test short side by the test long-side cap (a landscape image at the largest
  # aspect the config allows): input.min_size x input.max_size times faster_rcnn.test.size_factor.
  test_min, test_max = faster_rcnn_test_sizes(config)
  height, width = height or test_min, width or test_max
  inputs = [InputSpec("images", f"{batch}, {height}, {width}, 3", "uint8",
                      "RGB pixels 0..255, each image at the top left of the canvas"),
            InputSpec("sizes", f"{batch}, 2", "int32", "each image's (height, width) in the canvas")]
  notes = {"num_classes": config.dataset.num_classes, "backbone": config.faster_rcnn.backbone,
           "input_normalisation": {"mean": list(config.input.mean), "std": list(config.input.std),
                                   "applied": "inside the function: (images / 255 - mean) / std, "
                                              "zeros outside sizes"},
           "outputs": "boxes (x1, y1, x2, y2) in canvas pixels, scores, classes in [0, K), valid "
                      "(False: a padding slot)"}
  return ExportPlan(predict=faster_rcnn_predict(config, model), inputs=inputs,
                    params_template=task.params_template(model), notes=notes)


# config.task -> its ExportPlan for (config, batch dimension: "batch" or a number, height, width);
# height / width 0 = the task's default input size.
EXPORTERS: dict[str, Callable[[ml_collections.ConfigDict, str, int, int], ExportPlan]] = {
    "classification": _classification,
    "faster_rcnn": _faster_rcnn,
}


def export_model(config: ml_collections.ConfigDict, workdir: str, out: str, *, batch: int = 0,
                 height: int = 0, width: int = 0,
                 platforms: Sequence[str] = DEFAULT_PLATFORMS) -> ExportFiles:
  """Exports the predict function of `config.task` with the newest intact checkpoint of `workdir`.

  Args:
    batch: a fixed batch size; 0 = symbolic (any batch at call time).
    height, width: the input size; 0 = the task's default (the classifier's training size).
    platforms: a subset of PLATFORMS.
  Returns:
    The files written (see the module docstring).
  Raises:
    ConfigError: a bad config value, a negative size, an unknown platform or a task that cannot be
      exported yet.
    InputSizeError: the input size is below the network's field of view.
    CheckpointError: no intact checkpoint in `workdir`, or one of another model.
    WorkdirError: a file cannot be written.
  """
  validate_config(config)
  task = tasks.get_task(config)
  if config.task not in EXPORTERS:
    raise ConfigError(f"config.task {config.task!r} cannot be exported yet (exportable: "
                      f"{', '.join(EXPORTERS)})")
  for name, value, zero in (("--batch", batch, "any batch"), ("--height", height, "the training size"),
                            ("--width", width, "the training size")):
    if value < 0:
      raise ConfigError(f"{name}={value} is invalid: expected >= 0 (0 = {zero})")
  if not platforms or any(p not in PLATFORMS for p in platforms):
    raise ConfigError(f"--platforms {','.join(platforms)} is invalid: expected some of "
                      f"{', '.join(PLATFORMS)}")
  plan = EXPORTERS[config.task](config, str(batch) if batch else BATCH, height, width)
  # Traced on shapes first: a bad input size fails here, before the checkpoint is read.
  exported = export_function(plan.predict, plan.params_template, plan.inputs, platforms=platforms)
  params, step = task.restore_params(config, workdir)
  description = {**describe(exported, plan.inputs), "task": config.task, **plan.notes,
                 "checkpoint_step": step,
                 "checkpoint_dir": checkpoint_io.checkpoint_dir(workdir), "jax_version": jax.__version__}
  return write_export(out, exported, params, description)


def main(argv: list[str]) -> int:
  """Runs the command on `argv` (the arguments after the program name); returns 0.

  Raises:
    SystemExit(2) after printing a one-line error on stderr (`cli.fail`) for a user error.
  """
  if "--help" in argv or "-h" in argv:
    print(__doc__)
    return 0
  use_fast_cpu_convolutions()  # before the first computation (jax itself is imported already)
  flag_values = flags.FlagValues()
  config, workdir = cli.define_config_flags(flag_values, argv)
  out = flags.DEFINE_string("out", None, "The file to write (and FILE.npz, FILE.json beside it).",
                            flag_values=flag_values)
  batch = flags.DEFINE_integer("batch", 0, "Fixed batch size; 0 = any batch at call time.",
                               flag_values=flag_values)
  height = flags.DEFINE_integer("height", 0, "Input height; 0 = the training size.",
                                flag_values=flag_values)
  width = flags.DEFINE_integer("width", 0, "Input width; 0 = the training size.", flag_values=flag_values)
  platforms = flags.DEFINE_list("platforms", list(DEFAULT_PLATFORMS), "Where the program may run.",
                                flag_values=flag_values)
  rest = cli.parse_flags(["export"] + list(argv), flag_values=flag_values, config=config,
                         workdir=workdir)[1:]
  if rest:
    cli.fail(f"unexpected positional arguments: {' '.join(rest)} ({USAGE})")
  if not out.value:
    cli.fail(f"--out is required: {USAGE}")
  cli.quiet_library_logs()

  def run() -> None:
    written = export_model(config.value, workdir.value, out.value, batch=batch.value,
                           height=height.value, width=width.value, platforms=platforms.value)
    description = json.loads(files.read_text(written.description))
    shapes = ", ".join(f"{i['name']} {i['dtype']}{i['shape']}" for i in description["inputs"])
    print(f"exported {config.value.task} (checkpoint step {description['checkpoint_step']}) for "
          f"{'/'.join(description['platforms'])}: predict(params, {shapes}) -> {written.program}, "
          f"parameters {written.params}, description {written.description}")

  cli.report_user_errors(run)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
