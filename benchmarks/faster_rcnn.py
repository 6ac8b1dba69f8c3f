"""Faster R-CNN (ours) beside torchvision's FasterRCNN built the same way, on the CPU (issue 8, point 8).

  python benchmarks/faster_rcnn.py                       # both cases; torchvision too where importable
  python benchmarks/faster_rcnn.py --cases tiny --runs 10
  python benchmarks/faster_rcnn.py --cases vgg16 --vgg-runs 3 --vgg-roi align
  PYTHONPATH=. /path/to/torch-venv/bin/python benchmarks/faster_rcnn.py   # a venv with torch + jax

Cases, each on the same random inputs for both libraries, timed in turns (`_timing.time_interleaved`),
the process pinned to --cpus cores (torch.set_num_threads likewise):

tiny   a small detector, batch 8 of 128 x 160 normalised images with 1..--max-boxes random boxes
       each: the `tiny` backbone (3x3 convs 3-32-64-128-128, 2x2 pools after the first three,
       stride 8), anchors (16, 32, 64) x (0.5, 1, 2), RPN conv 128, 2,000 -> 2,000 training
       proposals, 512 sampled RoIs per image (25% foreground), RoIAlign 7x7 (sampling ratio 2), two
       256-wide FC layers (no dropout: torchvision's TwoMLPHead has none), 11 classes (10 +
       background); test proposals 6,000 -> 300 (there are only 2,880 anchors), score 0.05, per-class
       NMS 0.3, 100 detections. Ours: the faster_rcnn task's loss in `training.steps.
       compile_train_step` (what train.py runs; SGD momentum 0.9, weight decay 1e-4) and
       `tasks.faster_rcnn.make_predict_fn` jitted over the mesh (what evaluate.py's pictures run;
       its Evaluator also asks for the recall proposals). torchvision: forward + backward +
       `torch.optim.SGD` step in train mode, the forward under torch.no_grad in eval mode.
       Target: ours >= 3x torchvision's img/s, training and inference.
vgg16  inference, batch 1 of 600 x 1000: ours is configs/faster_rcnn_vgg16_voc07.py (VGG-16 conv5_3,
       RPN 512, 6,000 -> 300 test proposals, RoI pooling 7x7, fc6 / fc7 4096, 21 classes) with
       random He-initialised weights; torchvision's FasterRCNN on torchvision's vgg16().features
       without pool5, the same anchors, counts, head and RoI op (--vgg-roi: "pool" as the paper,
       torchvision.ops.roi_pool swapped in for MultiScaleRoIAlign; or "align", sampling ratio 2, both).
       Also the floor: the issue's 381 GFLOP for VGG-16 at 600 x 1000 at the measured float32 matmul
       GFLOP/s (`_timing.matmul_gflops`, the faster of a measurement before and after).

torchvision's transform normalises with mean 0, std 1 (the inputs are already normalised, as ours
are by the input pipeline, outside the step), keeps 128 x 160 and 600 x 1000 (scale 1; it still
interpolates, a row shows what the whole transform costs), and pads to a multiple of 8 (not its
default 32, which would make 600 x 1000 into 608 x 1024). The script checks the sizes.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable

import numpy as np

CASES = ("tiny", "vgg16")
TARGET_SPEEDUP = 3.0  # the issue's: ours >= 3x torchvision's img/s on the tiny detector
VGG16_GFLOP = 381.0  # the figure for VGG-16 at 600 x 1000 (see the analytic count printed)
STEPS_PER_EPOCH = 10_000  # for the learning-rate schedule only (no boundary is reached)


def parse_args() -> argparse.Namespace:
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import _timing

  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--cases", default=",".join(CASES),
                      help=f"comma-separated cases from {', '.join(CASES)} (default: both)")
  parser.add_argument("--runs", type=int, default=5, help="timed calls per tiny-case function (5)")
  parser.add_argument("--vgg-runs", type=int, default=2,
                      help="timed calls per VGG-16 function (default 2; seconds each on 2 cores)")
  parser.add_argument("--vgg-roi", choices=("pool", "align"), default="pool",
                      help="the VGG-16 detectors' RoI op: 'pool' (paper, default) or 'align'")
  parser.add_argument("--batch", type=int, default=8, help="tiny case: images per batch (8)")
  parser.add_argument("--max-boxes", type=int, default=8,
                      help="tiny case: ground-truth slots per image (1..this many boxes; 8)")
  parser.add_argument("--cpus", type=int, default=0,
                      help="pin the process to this many cores, 0 = all it may use (default 0)")
  parser.add_argument("--no-torch", action="store_true", help="skip torchvision even if present")
  _timing.add_machine_args(parser)
  args = parser.parse_args()
  args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
  unknown = sorted(set(args.cases) - set(CASES))
  if unknown:
    parser.error(f"unknown case(s) {unknown}; known: {', '.join(CASES)}")
  return args


def pin_cpus(count: int) -> tuple[int, str]:
  """Pins this process (and the thread pools jax and torch start later) to `count` cores, or to all
  the cores it may use (count 0); returns (how many, a description)."""
  allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
  if not allowed:
    return os.cpu_count() or 1, "not pinned"
  cores = allowed[:count] if count > 0 else allowed
  os.sched_setaffinity(0, cores)
  return len(cores), f"pinned to core(s) {cores}"


# ------------------------------------------------------------------------------------------------
# Inputs (numpy, shared by both libraries)


def random_scene(rng: np.random.Generator, batch: int, height: int, width: int, max_boxes: int,
                 num_classes: int) -> dict[str, np.ndarray]:
  """A detection batch as data.detection makes them: normalised images [B, H, W, 3], each image
  with 1..max_boxes boxes (sqrt(area) 16-64 px, aspect 0.5-2, inside the image) padded to
  max_boxes, labels in [0, K), valid masks; size = (H, W) and scale 1 (no resizing)."""
  counts = rng.integers(1, max_boxes + 1, batch)
  side = np.exp(rng.uniform(np.log(16), np.log(64), (batch, max_boxes)))
  aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), (batch, max_boxes)))  # height / width
  w, h = side / np.sqrt(aspect), side * np.sqrt(aspect)
  x1, y1 = rng.uniform(0, width - w), rng.uniform(0, height - h)
  boxes = np.stack([x1, y1, x1 + w, y1 + h], -1).astype(np.float32)  # [B, M, 4]
  valid = np.arange(max_boxes)[None] < counts[:, None]
  return {
      "image": rng.standard_normal((batch, height, width, 3)).astype(np.float32),
      "size": np.tile(np.array([height, width], np.int32), (batch, 1)),
      "scale": np.ones((batch, 2), np.float32),
      "boxes": np.where(valid[..., None], boxes, 0.0).astype(np.float32),
      "box_labels": np.where(valid, rng.integers(0, num_classes, (batch, max_boxes)), -1).astype(
          np.int32),
      "box_valid": valid,
  }


# ------------------------------------------------------------------------------------------------
# Configs (ours)


def tiny_config(args: argparse.Namespace) -> Any:
  """base_config + the faster_rcnn keys of the tiny case (module docstring), validated."""
  from overfeat_jax.config import base_config, validate_config

  config = base_config()
  config.task = "faster_rcnn"
  config.dataset.num_classes = 10
  config.input.batch_size = config.input.eval_batch_size = args.batch
  config.input.max_boxes = args.max_boxes
  config.model.width = 1.0  # the backbone's channels as listed (base_config's 0.125 is the OverFeat's)
  config.model.init = "he"
  config.model.dropout_rate = 0.0  # torchvision's TwoMLPHead has no dropout
  config.optimizer.learning_rate = 0.02
  config.optimizer.momentum = 0.9
  config.optimizer.weight_decay = 1e-4
  f = config.faster_rcnn
  f.backbone = "tiny"
  f.anchor_sizes = (16, 32, 64)
  f.anchor_ratios = (0.5, 1.0, 2.0)
  f.rpn_channels = 0  # the backbone's 128, as torchvision's RPNHead
  f.train_pre_nms = 2000
  f.train_post_nms = 2000
  f.proposal_min_size = 1e-3  # torchvision's RPN min_size
  f.roi_op = "align"
  f.roi_size = 7
  f.roi_sampling_ratio = 2
  f.head_hidden = 256
  f.num_rois = 512
  f.fg_fraction = 0.25
  f.bg_iou = (0.0, 0.5)  # torchvision: background below box_bg_iou_thresh 0.5
  f.test.pre_nms = 6000
  f.test.post_nms = 300
  f.test.score_threshold = 0.05
  f.test.nms_iou = 0.3
  f.test.max_detections = 100
  validate_config(config)
  return config


def vgg16_config(roi_op: str) -> Any:
  """configs/faster_rcnn_vgg16_voc07.py with random weights (no ImageNet file) and `roi_op`."""
  import _timing
  from overfeat_jax.config import validate_config

  config = _timing.load_config("faster_rcnn_vgg16_voc07")
  config.faster_rcnn.backbone_init = "none"
  config.faster_rcnn.backbone_weights = ""
  # He init keeps a random VGG-16's activations O(1), as trained weights have them (the paper's
  # N(0, 0.01^2) everywhere would shrink them ~1e-7 by conv5_3).
  config.model.init = "he"
  config.faster_rcnn.roi_op = roi_op
  validate_config(config)
  return config


def detector_gflop(config: Any, height: int, width: int, rois: int) -> dict[str, float]:
  """Analytic GFLOP (2 x multiply-adds) of one image's test pass: backbone convs, RPN, box head on
  `rois` RoIs."""
  from overfeat_jax.tasks import faster_rcnn as task

  backbone, s = task.backbone_from_config(config), task.settings_from_config(config)
  size, c_in, convs = (height, width), 3, 0.0
  for stage in backbone.stages:
    conv = stage.conv
    size = tuple((n + 2 * conv.padding - conv.kernel) // conv.stride + 1 for n in size)
    convs += 2.0 * size[0] * size[1] * conv.kernel ** 2 * c_in * conv.features
    c_in = conv.features
    if stage.pool:
      size = tuple((n + 2 * stage.pool.padding - stage.pool.size) // stage.pool.stride + 1
                   for n in size)
  cells = size[0] * size[1]
  rpn = 2.0 * cells * (9 * c_in * s.rpn_channels + s.rpn_channels * 5 * s.num_anchors)
  head = 2.0 * rois * (s.roi_size ** 2 * c_in * s.head_hidden + s.head_hidden ** 2
                       + s.head_hidden * 5 * (s.num_classes + 1))
  return {"backbone": convs / 1e9, "rpn": rpn / 1e9, "head": head / 1e9}


# ------------------------------------------------------------------------------------------------
# Ours


class Ours:
  """The library's jitted train step and predict function of `config` on one batch (numpy dict)."""

  def __init__(self, config: Any, batch: dict[str, np.ndarray], *, train: bool):
    import functools

    import jax
    from overfeat_jax import mesh as mesh_lib
    from overfeat_jax.models.faster_rcnn import init_params
    from overfeat_jax.tasks import faster_rcnn as task
    from overfeat_jax.training import optim, steps
    from overfeat_jax.training.state import TrainState

    mesh = mesh_lib.make_mesh()
    self.model = model = task.model_from_config(config)
    self.batch = mesh_lib.to_global(batch, mesh)
    params = init_params(model, jax.random.key(config.seed))
    # Inference runs on the initial weights (a copy: the train step donates its state), as
    # torchvision's does, so that both score the same near-uniform class probabilities.
    self.params = jax.device_put(jax.tree.map(lambda x: x.copy(), params), mesh_lib.replicated(mesh))
    self.state = None
    if train:  # training.loop.train's pieces for the faster_rcnn task (tasks.faster_rcnn.training_task)
      tx = optim.make_optimizer(config.optimizer, STEPS_PER_EPOCH)
      tx = optim.only_trainable(tx, functools.partial(task.trainable, model.backbone))
      schedule = optim.learning_rate_schedule(config.optimizer, STEPS_PER_EPOCH)
      loss_fn = task.faster_rcnn_loss_fn(model, joint=config.faster_rcnn.training == "joint",
                                         min_size_original=config.faster_rcnn.proposal_min_size)
      self.train_step = steps.compile_train_step(loss_fn, tx, schedule, mesh)
      self.state = jax.device_put(TrainState.create(params, tx), mesh_lib.replicated(mesh))
    self.rng = jax.device_put(jax.random.key(0), mesh_lib.replicated(mesh))
    self.predict_fn = jax.jit(task.make_predict_fn(config, model),
                              in_shardings=(mesh_lib.replicated(mesh), mesh_lib.batch_sharded(mesh)),
                              out_shardings=mesh_lib.batch_sharded(mesh))
    self.metrics: dict[str, Any] = {}

  def train(self) -> Any:
    self.state, self.metrics = self.train_step(self.state, self.batch, self.rng)  # state donated
    return self.metrics

  def predict(self) -> Any:
    return self.predict_fn(self.params, self.batch)


# ------------------------------------------------------------------------------------------------
# torchvision


def torch_available(args: argparse.Namespace) -> bool:
  if args.no_torch:
    return False
  try:
    import torch  # noqa: F401
    import torchvision  # noqa: F401
  except ImportError:
    return False
  return True


def torch_inputs(batch: dict[str, np.ndarray]) -> tuple[list[Any], list[dict[str, Any]]]:
  """The same batch for torchvision: images [3, H, W] each, targets with the valid boxes only and
  labels + 1 (torchvision's class 0 is the background)."""
  import torch

  images = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))) for im in batch["image"]]
  targets = [{"boxes": torch.from_numpy(b[v]), "labels": torch.from_numpy(lab[v].astype(np.int64) + 1)}
             for b, lab, v in zip(batch["boxes"], batch["box_labels"], batch["box_valid"])]
  return images, targets


def _roi_pool_module(output_size: int, spatial_scale: float) -> Any:
  """A box_roi_pool for torchvision's RoIHeads with RoI max pooling (MultiScaleRoIAlign's call
  signature: features dict, per-image boxes, image sizes)."""
  import torch
  import torchvision

  class RoIPool(torch.nn.Module):
    def forward(self, features, proposals, image_shapes):
      del image_shapes
      return torchvision.ops.roi_pool(features["0"], proposals, output_size, spatial_scale)

  return RoIPool()


def torch_detector(config: Any, height: int, width: int) -> Any:
  """torchvision's FasterRCNN with `config`'s backbone (tiny or vgg16), anchors, proposal counts,
  RoI op, head and test settings (module docstring)."""
  import torch
  from torch import nn
  import torchvision
  from torchvision.models.detection import FasterRCNN
  from torchvision.models.detection.anchor_utils import AnchorGenerator
  from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
  from overfeat_jax.models.faster_rcnn import BBOX_PRED_STD, NEW_LAYER_STD
  from overfeat_jax.tasks import faster_rcnn as task

  f, s = config.faster_rcnn, task.settings_from_config(config)
  ours = task.backbone_from_config(config)
  if f.backbone == "vgg16":
    backbone = torchvision.models.vgg16(weights=None).features[:-1]  # conv1_1 ... conv5_3 + ReLU
  else:
    layers, c_in = [], 3
    for stage in ours.stages:
      layers += [nn.Conv2d(c_in, stage.conv.features, stage.conv.kernel, stage.conv.stride,
                           stage.conv.padding), nn.ReLU(inplace=True)]
      if stage.pool:
        layers.append(nn.MaxPool2d(stage.pool.size, stage.pool.stride, stage.pool.padding))
      c_in = stage.conv.features
    backbone = nn.Sequential(*layers)
  backbone.out_channels = ours.channels
  if s.rpn_channels != ours.channels:
    raise ValueError("torchvision's RPNHead is as wide as the backbone")
  pooled = s.roi_size
  model = FasterRCNN(
      backbone, min_size=min(height, width), max_size=max(height, width),
      image_mean=[0.0] * 3, image_std=[1.0] * 3, size_divisible=8,
      rpn_anchor_generator=AnchorGenerator(sizes=(tuple(int(a) for a in s.anchor_sizes),),
                                           aspect_ratios=(tuple(s.anchor_ratios),)),
      rpn_pre_nms_top_n_train=s.train_pre_nms, rpn_post_nms_top_n_train=s.train_post_nms,
      rpn_pre_nms_top_n_test=s.test_pre_nms, rpn_post_nms_top_n_test=s.test_post_nms,
      rpn_nms_thresh=s.proposal_nms_iou, rpn_fg_iou_thresh=s.rpn_pos_iou,
      rpn_bg_iou_thresh=s.rpn_neg_iou, rpn_batch_size_per_image=s.rpn_batch,
      rpn_positive_fraction=s.rpn_positive_fraction,
      box_roi_pool=torchvision.ops.MultiScaleRoIAlign(["0"], pooled, s.roi_sampling_ratio),
      box_head=TwoMLPHead(ours.channels * pooled ** 2, s.head_hidden),
      box_predictor=FastRCNNPredictor(s.head_hidden, s.num_classes + 1),
      box_score_thresh=s.score_threshold, box_nms_thresh=s.detection_nms_iou,
      box_detections_per_img=s.max_detections, box_fg_iou_thresh=s.fg_iou,
      box_bg_iou_thresh=s.bg_iou[1], box_batch_size_per_image=s.num_rois,
      box_positive_fraction=s.fg_fraction)
  if s.roi_op == "pool":  # the constructor only takes MultiScaleRoIAlign
    model.roi_heads.box_roi_pool = _roi_pool_module(pooled, 1.0 / ours.stride)
  # The predictor initialised as ours (py-faster-rcnn's N(0, 0.01^2) / N(0, 0.001^2), zero biases;
  # torchvision keeps nn.Linear's default): both then start from near-uniform class probabilities
  # and run the same per-class detection work.
  predictor = model.roi_heads.box_predictor
  for layer, std in ((predictor.cls_score, NEW_LAYER_STD), (predictor.bbox_pred, BBOX_PRED_STD)):
    torch.nn.init.normal_(layer.weight, std=std)
    torch.nn.init.zeros_(layer.bias)
  return model


class Torch:
  """torchvision's train step (forward + backward + SGD) and inference on one batch; inference on
  a copy of the initial weights (as ours)."""

  def __init__(self, model: Any, config: Any, batch: dict[str, np.ndarray], *, train: bool):
    import copy

    import torch

    self.model = model.train(train)
    self.inference_model = (copy.deepcopy(model) if train else model).eval()
    self.images, self.targets = torch_inputs(batch)
    if train:
      o = config.optimizer
      self.optimizer = torch.optim.SGD(model.parameters(), lr=o.learning_rate, momentum=o.momentum,
                                       weight_decay=o.weight_decay)

  def train(self) -> Any:
    self.model.train()
    losses = self.model(self.images, self.targets)
    loss = sum(losses.values())
    self.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    self.optimizer.step()
    return loss.detach()

  def predict(self) -> Any:
    import torch

    with torch.no_grad():
      return self.inference_model(self.images)

  def transform(self) -> Any:
    """The model's transform alone (normalise, resize at scale 1, batch), in eval mode."""
    import torch

    with torch.no_grad():
      return self.inference_model.transform(self.images)[0].tensors

  def proposal_count(self, *, train: bool) -> float:
    """Mean proposals per image its RPN keeps, training (the trained model) or test (the initial
    weights): with random weights NMS may leave fewer than the post-NMS counts, and torchvision's
    later work shrinks with them."""
    import torch

    model, targets = (self.model, self.targets) if train else (self.inference_model, None)
    with torch.no_grad():
      image_list, targets = model.transform(self.images, targets)
      proposals, _ = model.rpn(image_list, {"0": model.backbone(image_list.tensors)}, targets)
    return float(np.mean([len(p) for p in proposals]))


def torch_versions() -> str:
  import torch
  import torchvision
  return f"torch {torch.__version__}, torchvision {torchvision.__version__}"


# ------------------------------------------------------------------------------------------------
# The cases


def run_tiny(args: argparse.Namespace, with_torch: bool, threads: int) -> None:
  import jax
  import _timing

  config = tiny_config(args)
  height, width = 128, 160
  batch = random_scene(np.random.default_rng(0), args.batch, height, width, args.max_boxes,
                       config.dataset.num_classes)
  ours = Ours(config, batch, train=True)
  fns: dict[tuple[str, str], Callable[[], Any]] = {("ours", "train"): ours.train,
                                                   ("ours", "inference"): ours.predict}
  theirs = None
  if with_torch:
    import torch
    torch.manual_seed(0)
    theirs = Torch(torch_detector(config, height, width), config, batch, train=True)
    shape = tuple(theirs.transform().shape)
    if shape != (args.batch, 3, height, width):
      raise SystemExit(f"torchvision's transform made {shape}, not {height}x{width}")
    fns.update({("torch", "train"): theirs.train, ("torch", "inference"): theirs.predict,
                ("torch", "transform"): theirs.transform})
  seconds = _timing.time_interleaved(fns, runs=args.runs)
  med = {k: _timing.median(v) for k, v in seconds.items()}

  print(f"\n== tiny detector: batch {args.batch} of {height}x{width}, 11 classes, 2,000 -> 2,000 "
        f"training proposals, 512 RoIs, RoIAlign 7x7, 256-d head; median of {args.runs} calls ==")
  rows = []
  for what in ("train", "inference"):
    mine = args.batch / med[("ours", what)]
    other = args.batch / med[("torch", what)] if theirs else None
    ratio = mine / other if other else None
    verdict = "" if ratio is None else (
        f"{'PASS' if ratio >= TARGET_SPEEDUP else 'FAIL'} (>= {TARGET_SPEEDUP:g}x)")
    rows.append([what, _timing.fmt(mine), _timing.fmt(1e3 * med[("ours", what)]),
                 _timing.fmt(other), _timing.fmt(None if not theirs else 1e3 * med[("torch", what)]),
                 "n/a" if ratio is None else f"{ratio:.2f}x", verdict])
  print(_timing.format_table(["tiny", "ours img/s", "ours ms/batch", "torchvision img/s",
                              "torchvision ms/batch", "ours / torchvision (img/s)", "target"], rows))

  # What each did: our counts are static shapes with valid masks; torchvision's shrink with NMS.
  out = jax.device_get(ours.predict())
  metrics = jax.device_get(ours.metrics)
  print(f"ours per image: {float(metrics['num_proposals']):,.0f} valid training proposals, "
        f"{float(metrics['num_fg_rois']):.1f} foreground RoIs of 512, "
        f"{out['proposal_valid'].sum(1).mean():,.0f} test proposals, "
        f"{out['valid'].sum(1).mean():.1f} detections")
  if theirs:
    train_props, test_props = (theirs.proposal_count(train=t) for t in (True, False))
    detections = np.mean([len(d["boxes"]) for d in theirs.predict()])
    print(f"torchvision per image: {train_props:,.0f} training proposals, {test_props:,.0f} test "
          f"proposals, {detections:.1f} detections; its transform (normalise, resize x1, batch) "
          f"takes {1e3 * med[('torch', 'transform')]:.1f} ms of each call")


def run_vgg16(args: argparse.Namespace, with_torch: bool) -> None:
  import _timing

  config = vgg16_config(args.vgg_roi)
  height, width = 600, 1000
  batch = random_scene(np.random.default_rng(1), 1, height, width, 8, config.dataset.num_classes)
  matmul_before = _timing.matmul_gflops(args.matmul_size)
  ours = Ours(config, batch, train=False)
  fns: dict[tuple[str, str], Callable[[], Any]] = {("ours", "inference"): ours.predict}
  theirs = None
  if with_torch:
    import torch
    torch.manual_seed(0)
    theirs = Torch(torch_detector(config, height, width), config, batch, train=False)
    shape = tuple(theirs.transform().shape)
    if shape != (1, 3, height, width):
      raise SystemExit(f"torchvision's transform made {shape}, not {height}x{width}")
    fns[("torch", "inference")] = theirs.predict
  seconds = _timing.time_interleaved(fns, runs=args.vgg_runs)
  # On a shared machine one measurement is noisy: the faster of before and after is the reference.
  matmul_after = _timing.matmul_gflops(args.matmul_size)
  matmul = max(matmul_before, matmul_after)
  mine = _timing.median(seconds[("ours", "inference")])
  other = _timing.median(seconds[("torch", "inference")]) if theirs else None
  floor = VGG16_GFLOP / matmul
  gflop = detector_gflop(config, height, width, config.faster_rcnn.test.post_nms)
  total = sum(gflop.values())

  roi = "RoI pooling 7x7" if args.vgg_roi == "pool" else "RoIAlign 7x7 (sampling ratio 2)"
  print(f"\n== VGG-16 Faster R-CNN inference: batch 1 of {height}x{width}, 6,000 -> 300 proposals, "
        f"{roi}, fc6 / fc7 4096, 21 classes; median of {args.vgg_runs} calls ==")
  print(f"matmul reference: float32 {args.matmul_size}^2 jnp.dot {matmul_before:,.1f} GFLOP/s before, "
        f"{matmul_after:,.1f} after; the floor uses {matmul:,.1f}")
  rows = [["ours (faster_rcnn_vgg16_voc07)", _timing.fmt(mine, 2), f"{mine / floor:.2f}x",
           f"{mine / other:.2f}x" if other else "n/a"]]
  if theirs:
    rows.append(["torchvision FasterRCNN", _timing.fmt(other, 2), f"{other / floor:.2f}x", "1.00x"])
  rows.append([f"floor: {VGG16_GFLOP:g} GFLOP / {matmul:,.1f} GFLOP/s", _timing.fmt(floor, 2),
               "1.00x", ""])
  rows.append([f"floor: analytic {total:,.1f} GFLOP / {matmul:,.1f} GFLOP/s",
               _timing.fmt(total / matmul, 2), f"{total / VGG16_GFLOP:.2f}x", ""])
  print(_timing.format_table(["VGG-16", "s/img", f"x the {VGG16_GFLOP:g}-GFLOP floor",
                              "ours / torchvision (s/img)"], rows))
  print(f"analytic GFLOP per image (2 x multiply-adds): backbone {gflop['backbone']:,.1f}, RPN "
        f"{gflop['rpn']:,.1f}, box head on 300 RoIs {gflop['head']:,.1f}")
  if theirs:
    test_props = theirs.proposal_count(train=False)
    print(f"torchvision keeps {test_props:,.0f} test proposals per image (ours: 300 slots)")


def main() -> None:
  args = parse_args()  # imports jax (via _timing) but starts no backend: pinning still applies
  threads, pinning = pin_cpus(args.cpus)  # before jax or torch start their thread pools
  os.environ.setdefault("JAX_PLATFORMS", "cpu")
  import _timing
  _timing.request_cpu_conv(args.cpu_conv)  # before jax initialises the CPU backend
  with_torch = torch_available(args)
  if with_torch:
    import torch
    torch.set_num_threads(threads)

  print("Faster R-CNN beside torchvision's FasterRCNN (issue 8 point 8), random data and weights")
  print(_timing.machine_header())
  print(f"process {pinning}; {threads} thread(s) each; "
        + (torch_versions() if with_torch else "torchvision: not importable or --no-torch"),
        flush=True)
  if "tiny" in args.cases:
    run_tiny(args, with_torch, threads)
  if "vgg16" in args.cases:
    run_vgg16(args, with_torch)


if __name__ == "__main__":
  main()
