"""The base experiment config: every key the library reads, with its default and what it means.

Experiment files under `configs/` call `base_config()` and override what differs, so a key that is
not here does not exist (ml_collections rejects it on the command line and `validate_config` rejects
it in code). Nothing in the library calls `config.get(key, default)`.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections


def base_config() -> ml_collections.ConfigDict:
  """Returns the full config tree with defaults (the small CPU OverFeat on the embedded data)."""
  c = ml_collections.ConfigDict()
  c.task = "classification"  # What is trained and evaluated: one of TASKS (overfeat_jax/tasks/).
  c.seed = 0  # One seed for parameters, dropout and the data order: same seed, same numbers on CPU.

  c.dataset = ml_collections.ConfigDict()
  c.dataset.name = "digits_in_scenes/classification"  # TFDS name[/config]; see overfeat_jax.data.registry.
  c.dataset.data_dir = ""  # TFDS data dir; "" means TFDS's default ($TFDS_DATA_DIR or ~/tensorflow_datasets).
  c.dataset.train_split = "train"  # TFDS split used for training.
  c.dataset.eval_split = "test"  # TFDS split used by evaluate.py.
  c.dataset.num_classes = 10  # Number of classes (must match the dataset; checked at start).
  c.dataset.prepare = True  # Build our own builders' data on first use (never downloads anything).

  c.input = ml_collections.ConfigDict()
  c.input.resize_short = 64  # Training: resize so the short side is this many pixels (paper: 256).
  c.input.crop_size = 58  # Training: random square crop (paper: 231 fast / 221 accurate).
  c.input.random_flip = True  # Training: random horizontal flips (paper: yes).
  # Training: draw the random crop among those that contain the labelled object's box whole (where the
  # dataset has boxes; else a plain random crop). Paper: no (ImageNet objects are mostly large and
  # central); small scenes with small objects need it, or half the crops cut the object.
  c.input.crop_keeps_object = False
  # With crop_keeps_object: the fraction of the box's area each crop must hold (1.0 = the whole box).
  # Below 1, crops that cut part of the object are drawn too, labelled with its class, so that the
  # windows of the dense evaluation that cut an object still see its class (SPEC A4 takes a spatial max).
  c.input.crop_object_fraction = 1.0
  # With crop_keeps_object: this share of the training crops is drawn instead among those holding
  # less than off_object_max_fraction of the object's box area, labelled "no class" and trained toward
  # the uniform distribution, so that dense windows that cut the object or miss it stay unsure and
  # the spatial max (SPEC A4) is taken where the whole object is. Paper: 0 (plain random crops).
  c.input.off_object_crops = 0.0
  c.input.off_object_max_fraction = 0.5
  # Training scale jitter: the short side is drawn uniformly from [resize_short, resize_short_max]
  # per image (0 = always resize_short, the paper's single training scale). Small nets evaluated at
  # several scales (SPEC A4) need to have seen objects at those sizes.
  c.input.resize_short_max = 0
  c.input.mean = (0.485, 0.456, 0.406)  # Per-channel mean of [0, 1] pixels, subtracted.
  c.input.std = (0.229, 0.224, 0.225)  # Per-channel std of [0, 1] pixels, divided.
  c.input.batch_size = 64  # Global training batch (split over all devices and hosts).
  c.input.eval_batch_size = 64  # Global evaluation batch; the last batch is padded and masked.
  c.input.max_boxes = 16  # Ground truth padded to this many boxes per image (with a valid mask).
  # Detection batches (train and eval, overfeat_jax/data/detection.py): each whole image resized,
  # aspect kept, so its short side is min_size unless its long side would then pass max_size (then
  # the long side is max_size); paper (SPEC B5): 600 / 1000. The embedded images are 128-192 px.
  c.input.min_size = 128
  c.input.max_size = 224
  # Detection training only: each image's short side drawn uniformly from these (multi-scale
  # training, py-faster-rcnn's TRAIN.SCALES), then, where that would not fit its shape bucket's
  # canvas (the canvases stay those of min_size, so a step costs the same), shrunk until it fits.
  # () = min_size for every image.
  c.input.train_min_sizes = ()
  # Detection batches' shape buckets (one compiled program each), as eval.aspect_buckets: increasing
  # long / short bounds; a batch holds one bucket, its images padded bottom / right into its canvas.
  c.input.aspect_buckets = (1.25, 2.0)
  c.input.num_workers = 0  # grain worker processes (0 = in the main process; deterministic either way).
  c.input.prefetch = 2  # grain read-ahead buffer size (batches).

  c.model = ml_collections.ConfigDict()
  c.model.variant = "fast"  # "fast" or "accurate" (SPEC A2).
  c.model.width = 0.125  # Channel multiplier on every layer but the last (1.0 = the paper's model).
  c.model.stem_kernel = 3  # Layer-1 filter size; 0 = the paper's (11 fast, 7 accurate).
  c.model.stem_stride = 1  # Layer-1 stride; 0 = the paper's (4 fast, 2 accurate).
  c.model.dropout_rate = 0.5  # Dropout on the first two fully connected layers (paper: 0.5).
  c.model.init = "he"  # "paper" = N(0, 0.01^2) weights; "he" = variance scaling (small nets learn faster).
  c.model.compute_dtype = "float32"  # "float32" or "bfloat16" (activations; parameters stay float32).
  # Weight-standardised convolutions (models/overfeat.py, `standardize_kernel`): each conv kernel is
  # re-centred and re-scaled to He's statistics at every step, with a learned gain per output. Not the
  # paper's; a small net without normalisation learns far faster with it (README, quickstart). A
  # localizer, detector or Faster R-CNN backbone started from such a classifier gets the plain
  # kernels it amounts to (`fold_standardization`).
  c.model.weight_standardization = False

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 0.02  # Initial learning rate (paper: 5e-2).
  c.optimizer.momentum = 0.9  # SGD momentum (paper: 0.6).
  # Momentum dampening d: v <- momentum * v + (1 - d) * g. 0 = heavy-ball (optax's SGD); Torch7's
  # optim.sgd, which the paper used, defaults to d = momentum (a (1 - m)x smaller effective step).
  c.optimizer.dampening = 0.0
  c.optimizer.weight_decay = 1e-5  # L2 weight decay added to the gradient (paper: 1e-5).
  c.optimizer.warmup_epochs = 0.0  # Linear warm-up of the learning rate from 0 over this many epochs.
  # Halve the learning rate after these epochs (paper: 30,50,60,70,80); fractions fall on the nearest
  # step, for runs shorter than an epoch (the OverFeat detector's quickstart).
  c.optimizer.halve_at_epochs = (6, 9, 11)
  # The factor applied to the learning rate after each of those epochs: 0.5 halves it (OverFeat,
  # SPEC A3); Faster R-CNN divides it by 10 (SPEC B5: 1e-3 -> 1e-4).
  c.optimizer.decay_factor = 0.5

  c.train = ml_collections.ConfigDict()
  c.train.num_epochs = 12  # Training length in epochs of the train split.
  c.train.max_steps = 0  # If > 0, stop after this many steps (smoke tests); 0 = num_epochs decides.
  c.train.log_every = 50  # Print and log (metrics.jsonl, TensorBoard) every this many steps.
  # Evaluate on the eval split after every this many steps, logged as the training metrics are
  # ("eval/..." keys); 0 = never. train.py wires the task's evaluator (config.eval) in.
  c.train.eval_every = 0
  # Examples of the eval split that evaluation uses: the first N (0 = those evaluate.py uses, i.e.
  # eval.num_examples). The same examples every time, so that the curve compares like with like.
  c.train.eval_num_examples = 0
  c.train.tensorboard = True  # Also write TensorBoard event files beside each metrics.jsonl.
  c.train.checkpoint_every = 500  # Save a checkpoint every this many steps (and at the end, and on SIGTERM).
  c.train.keep_checkpoints = 2  # How many recent checkpoints to keep.

  # Several processes (one per host, or per GPU) training or evaluating as one run over all their devices
  # (README "Multi-host"). train.py and evaluate.py call jax.distributed.initialize() before anything
  # else touches jax, as `initialize` says:
  #   "never"    never (one process: a laptop, CI, one machine with several GPUs);
  #   "auto"     with no arguments: jax finds the processes itself on Cloud TPU, SLURM, Open MPI and
  #              Kubernetes (its cluster detection; JAX_COORDINATOR_ADDRESS / JAX_COORDINATOR_PORT, if
  #              set, give the coordinator); the three keys below stay unset;
  #   "explicit" with the three keys below, all required (e.g. a plain multi-node GPU cluster).
  c.distributed = ml_collections.ConfigDict()
  c.distributed.initialize = "never"
  c.distributed.coordinator_address = ""  # "host:port" of process 0's coordinator service ("explicit").
  c.distributed.num_processes = 0  # How many processes take part ("explicit"; 0 = unset).
  c.distributed.process_id = -1  # This process's id, 0 .. num_processes - 1 ("explicit"; -1 = unset).

  c.eval = ml_collections.ConfigDict()
  c.eval.resize_short = 64  # Centre-crop / 10-view protocol: resize the short side to this, then crop.
  # Test scales (H, W). Every scale sees the WHOLE image (aspect kept, never cropped): it is resized
  # by the smallest factor that makes it cover the box min(H, W) x max(H, W) laid along its own long
  # side, f = max(min(H, W) / short side, max(H, W) / long side); so a landscape image at least as
  # wide as W / H gets height H (a portrait one: width H), a squarer one its long side max(H, W).
  # Details and the padded canvases: overfeat_jax/data/buckets.py.
  c.eval.scales = ((64, 64), (72, 80), (80, 96), (96, 112), (104, 120), (112, 136))
  c.eval.single_scale = 0  # Index into `scales` used by the single-scale rows (paper: scale 1).
  c.eval.multi_scales = (0, 1, 2, 3, 4, 5)  # Indices into `scales` used by the multi-scale rows.
  # Shape buckets: increasing bounds on an image's long / short side. Images with long / short <= the
  # first bound share a "square" bucket; each further bound closes a landscape and a portrait bucket
  # (n bounds: 2n - 1 buckets, one compiled evaluation program each; more bounds, less padding).
  # Images more elongated than the last bound go to the last pair, shrunk to fit its canvas.
  c.eval.aspect_buckets = (1.25, 2.0)
  c.eval.spatial_reduce = "max"  # How a class map becomes one score per class: "max" (paper) or "mean".
  c.eval.num_examples = 0  # If > 0, evaluate only the first N examples of the split.
  # Pictures of the first N images of the eval split, as PNGs in <workdir>/eval/pictures/ (0 = none;
  # evaluate.py --pictures N sets it). Drawn in a separate pass after the metrics are written.
  c.eval.pictures = 0
  # Localization (SPEC A5 (a)-(d)): at each scale the boxes of this many classes (the top ones by the
  # scale's spatial max) are merged; at least 5 for the top-5 (class, box) guesses.
  c.eval.merge_top_k = 5
  # The greedy merge stops when the lowest match_score of any pair of boxes exceeds this (SPEC A5
  # (d): centre distance in original-image pixels + intersection area in pixels^2, the paper's sum;
  # the paper gives no value). Boxes of one object overlap by about its area, so only a threshold
  # above the objects' areas merges them, and then the far, little-overlapping boxes merge first;
  # inf merges all boxes of a class into one. 0 merges nothing (distinct boxes score > 0): each class
  # answers with its best-scoring window's box. On the embedded data 0 did best: 3-scale top-1
  # localization error 35% at 0, 61% at inf, 73% at 1,000 (README, "Localization").
  c.eval.merge_threshold = 0.0
  # The greedy merge's match_score (ops/merge.py): "paper" = SPEC A5's literal centre distance +
  # intersection area (threshold in px + px^2); "overlap" = 1 - IoU, so the boxes of one object merge
  # first and a threshold t merges pairs with IoU >= 1 - t (detection: README, "Detection (OverFeat)").
  c.eval.merge_score = "paper"
  # How the merge averages the two boxes it merges (ops/merge.py): "pair" = SPEC A5's mean of the
  # two; "weighted" = their mean weighted by their confidences, so that a merged box is the
  # score-weighted mean of all its windows' boxes rather than an average of averages in which the
  # last box merged weighs 1/2 (detection: README, "Detection (OverFeat)").
  c.eval.merge_average = "pair"

  # Localization (config.task = "localization", SPEC A5): a box regressor trained on the frozen
  # feature extractor of a classification run.
  c.localization = ml_collections.ConfigDict()
  # The classification run (its --workdir) whose newest checkpoint gives the frozen feature extractor
  # and classifier; its model must be config.model (the architecture keys) and config.dataset's
  # classes. Required for the localization task; a relative path is relative to the working directory.
  c.localization.classifier_workdir = ""
  # "scr": one regressor for all classes (4 outputs); "pcr": one per class (4 x K outputs, the
  # true class's trained, the predicted class's used at test). The paper found SCR better.
  c.localization.regressor = "scr"
  # Training scales: each image's short side at each scale (the whole image, aspect kept; its
  # long side as input.max_size / input.min_size allows). The batches come at input.min_size
  # (data/detection.py) and are resized on device by scale / input.min_size; every step trains on
  # every scale's fine grid (SPEC A5: "at several scales"). Each must be >= the fine grid's
  # smallest input (the field of view + (last pool - 1) x its stride).
  c.localization.train_scales = (64, 72, 80)
  # A window learns a box when it holds at least this fraction of the box's area (SPEC A5: 0.5).
  c.localization.min_coverage = 0.5

  # Detection (config.task = "detection", SPEC A6; overfeat_jax/tasks/detection.py): the classifier
  # with a background class (K + 1 outputs) and a box regressor (SCR or PCR), trained on whole images.
  c.detection = ml_collections.ConfigDict()
  # The classification run whose newest checkpoint gives the (frozen) feature extractor and the
  # starting classifier layers; its model must be config.model and config.dataset's K classes.
  c.detection.classifier_workdir = ""
  # Training scales: each image's short side (as localization.train_scales); every step trains on
  # every scale's fine grid. Each must be >= the fine grid's smallest input.
  c.detection.train_scales = (128,)
  # Train on the fine grid (every pooling offset, SPEC A4) or the coarse one (offset 0: a quarter of
  # the windows of the fast model, 1/9 of the accurate's; much faster). Evaluation is always fine.
  c.detection.train_fine_grid = True
  # Fine-tune the feature extractor too (False: frozen, as localization's; no backward pass through
  # the convolutions, a much faster step on CPU).
  c.detection.train_extractor = False
  # Test scales (short sides, same meaning): the whole image at each, all merged (SPEC A6).
  c.detection.test_scales = (128,)
  # Window labels (tasks/detection.py window_labels): class c when the window holds >= min_coverage
  # of a box of class c whose long side is >= min_box_fraction x the window side; background when
  # it holds < max_background_coverage of every box; ignored otherwise.
  c.detection.min_coverage = 0.5
  c.detection.min_box_fraction = 0.3
  c.detection.max_background_coverage = 0.2
  # Negatives per image and training scale, chosen in the step: the most offending background
  # windows (highest non-background probability), then random other background windows.
  c.detection.hard_negatives = 16
  c.detection.random_negatives = 16
  c.detection.box_loss_weight = 1.0  # Weight of the regressor's L2 loss beside the cross-entropy.
  # "scr": one box per window for every class (4 outputs); "pcr": one per digit class (4 x K outputs,
  # a positive window trains its class's; class c's merge reads class c's boxes).
  c.detection.regressor = "scr"
  # Test: a window's box enters class c's merge when its probability of c is >= this; of those, at
  # most max_boxes_per_class (the most probable, all scales together) per class and image.
  c.detection.min_window_score = 0.1
  c.detection.max_boxes_per_class = 256
  # A window's box enters only the merge of its most probable digit class (False: of every class it
  # gives >= min_window_score; each such class then keeps a copy of the same box).
  c.detection.top_class_only = False
  # After the per-class merge, a merged box is dropped when its IoU with a more confident merged box
  # of its class is > this (1.0: none is, the paper's). The merge averages only boxes that overlap
  # by more than 1 - eval.merge_threshold, so a digit can keep two clusters; this keeps the better.
  # (With the "overlap" score no two merged boxes keep an IoU >= 1 - merge_threshold: at or above
  # that IoU this drops nothing.)
  c.detection.merged_nms_iou = 1.0
  c.detection.max_detections = 100  # Merged boxes kept per image (the highest confidences; COCO's 100).
  # Faster R-CNN (config.task = "faster_rcnn", SPEC Part B; models/faster_rcnn.py). The backbone's
  # width, initialisation, the head's dropout and the compute dtype come from config.model (width,
  # init, dropout_rate, compute_dtype; stem_kernel / stem_stride for the overfeat_* backbones only).
  # Ground-truth boxes marked difficult (VOC) or crowd (COCO) are not trained on (py-faster-rcnn).
  c.faster_rcnn = f = ml_collections.ConfigDict()
  f.backbone = "vgg16"  # One of models.backbones.BACKBONE_NAMES: vgg16, zf, overfeat_fast/_accurate, tiny.
  # Where the backbone's weights start (SPEC B5: ImageNet): "none" (config.model.init), "torchvision"
  # (torchvision's VGG-16 state_dict as a safetensors file, models/pretrained.py; vgg16 at width 1)
  # or "classifier" (a classification run's work directory; overfeat_* backbones of its model).
  f.backbone_init = "none"
  f.backbone_weights = ""  # The safetensors file or the classification workdir of backbone_init.
  # How many of the backbone's first conv stages training keeps fixed (no update, no backward pass
  # through them); -1 = the backbone's own (VGG-16: conv1_1 ... conv2_2, as Fast R-CNN; others none).
  f.frozen_stages = -1
  # SPEC B5: "approximate_joint" (proposals are constants), "joint" (gradients through the proposal
  # coordinates; needs roi_op "align") or "alternating" (4 stages, faster_rcnn.alternating).
  f.training = "approximate_joint"
  # Exact joint training only: the factor on the gradient that reaches the RPN through the proposal
  # coordinates (the forward pass is unchanged). 1 = the exact gradient; 0 = approximate joint
  # training's. On the quickstart it is 46-122x the RPN's own on the delta layer (README "Ablations").
  f.joint_box_gradient_scale = 1.0
  f.anchor_sizes = (128, 256, 512)  # Anchor sizes, sqrt of the area in network-input pixels (SPEC B1).
  f.anchor_ratios = (0.5, 1.0, 2.0)  # Anchor aspect ratios, height / width (SPEC B1).
  f.rpn_channels = 0  # The RPN's 3x3 conv width; 0 = the backbone's channels (512 VGG-16, 256 ZF).
  f.rpn_batch = 256  # Anchors sampled per image for the RPN loss (SPEC B2).
  f.rpn_positive_fraction = 0.5  # At most this fraction of them positive (1:1).
  f.rpn_pos_iou = 0.7  # Anchor positive above this IoU with a ground-truth box (or its best anchor).
  f.rpn_neg_iou = 0.3  # Anchor negative below this IoU with every ground-truth box.
  f.rpn_lambda = 10.0  # lambda, the weight of the RPN's box loss (SPEC B2).
  # N_reg of the RPN's box loss: "positions" (anchor positions h * w, the paper's ~2,400) or
  # "samples" (the sampled anchors, 256; SPEC B2: "also fine").
  f.rpn_reg_normalizer = "positions"
  # The RPN and the detector share the backbone's features (the paper's Faster R-CNN), or (False)
  # each has its own copy of the backbone, both starting from the same weights (SPEC B6's
  # "unshared" ablation; approximate or exact joint training only).
  f.shared_features = True
  f.train_pre_nms = 12000  # Training proposals: the top N by objectness before NMS (SPEC B3) ...
  f.train_post_nms = 2000  # ... and kept after it.
  f.proposal_nms_iou = 0.7  # NMS IoU of the proposal layer in training (test: test.proposal_nms_iou).
  # Proposals narrower or shorter than this many ORIGINAL-image pixels are dropped (py-faster-rcnn:
  # 16, times the resize factor in network-input pixels).
  f.proposal_min_size = 16.0
  f.roi_op = "pool"  # "pool" (RoI max pooling, the paper) or "align" (RoIAlign, bilinear).
  f.roi_size = 7  # RoI pooling output p x p (SPEC B4: 7 for VGG-16, 6 for ZF).
  f.roi_sampling_ratio = 2  # RoIAlign samples per bin and axis (<= 0: adaptive, as torchvision).
  f.head_hidden = 4096  # Width of the detector's two FC layers (SPEC B4: 4096 for VGG-16).
  f.num_rois = 128  # Training RoIs per image (SPEC B4) ...
  f.fg_fraction = 0.25  # ... at most this fraction foreground ...
  f.fg_iou = 0.5  # ... (IoU >= this with a ground-truth box) ...
  f.bg_iou = (0.1, 0.5)  # ... background IoU range [low, high) ((0.0, 0.5) for COCO / end-to-end).
  f.detector_lambda = 1.0  # Weight of the detector's box loss.
  # Test time (may change when a run resumes).
  f.test = ml_collections.ConfigDict()
  # Every evaluation-side view of an image (evaluate.py, training's periodic evaluation, pictures,
  # predict, export's default canvas) is resized with input.min_size and input.max_size times this
  # factor (1.0: the paper's, test at the training scale). A detector trained at one size often does
  # better tested a little larger: its small objects gain pixels.
  f.test.size_factor = 1.0
  # More test sizes, as factors of the training sizes like size_factor: evaluate.py and predict also
  # run the detector on each image resized by the input pipeline to each of them, and merge the
  # detections of all sizes into one set per image (per-class NMS at test.nms_iou, the best
  # test.max_detections, then test.box_voting_iou). Small objects gain from a larger size. The recall
  # table's proposals and the pictures stay size_factor's; export exports size_factor's detector.
  # Each size runs once (size_factor itself, or a repeat, adds nothing). () = one size (the paper's).
  f.test.extra_size_factors = ()
  # With extra sizes: each merged box becomes the score-weighted mean of the same-class boxes of all
  # sizes that overlap it at IoU >= this (box voting, Gidaris & Komodakis 2015); 0.0 = off.
  f.test.box_voting_iou = 0.0
  f.test.pre_nms = 6000  # Test proposals before NMS (SPEC B3) ...
  f.test.post_nms = 300  # ... and after it: what the detector sees.
  f.test.proposal_nms_iou = 0.7  # NMS IoU of the test proposals (1.0 = no NMS: SPEC B6's ablation).
  # How the test proposals are chosen: "objectness" (the paper), or "random": uniformly among the
  # decoded boxes, seeded by config.seed and each image's id (SPEC B6's "no cls" ablation; with
  # test.proposal_nms_iou 1.0 as the paper's, which uses no NMS there).
  f.test.proposal_ranking = "objectness"
  # False: the RPN's box deltas are ignored, the test proposals are the anchors themselves (clipped
  # to the image), ranked by objectness (SPEC B6's "no reg" ablation).
  f.test.rpn_box_regression = True
  f.test.score_threshold = 0.05  # Detections: class probability above this (SPEC B4) ...
  f.test.nms_iou = 0.3  # ... per-class NMS IoU ...
  f.test.max_detections = 100  # ... at most this many per image.
  # evaluate.py's recall-vs-proposals table (SPEC B6): recall of the ground truth by the top N test
  # proposals at each IoU.
  f.test.recall_proposals = (50, 100, 300, 1000, 2000)
  f.test.recall_ious = (0.5, 0.7)
  f.test.picture_proposals = 20  # Proposals drawn per picture (evaluate.py --pictures) ...
  f.test.picture_score = 0.5  # ... and the detections scoring at least this.
  return c


def paper_imagenet_config() -> ml_collections.ConfigDict:
  """The paper's ImageNet-2012 training recipe (SPEC A3) shared by the fast and accurate configs.

  Batch 128, short side 256, flips, N(0, 0.01^2) init, dropout 0.5, SGD momentum 0.6 damped as
  Torch7's optim.sgd does by default (v <- 0.6 v + 0.4 g), weight decay 1e-5, lr 5e-2 halved after
  epochs 30, 50, 60, 70, 80. The caller sets the model variant, the crop
  (the model's training input) and the test scales.
  """
  c = base_config()
  c.dataset.name = "imagenet2012"
  c.dataset.train_split = "train"
  c.dataset.eval_split = "validation"
  c.dataset.num_classes = 1000
  c.dataset.prepare = False  # ImageNet is never generated; it must be built beforehand.
  c.model.width = 1.0
  c.model.stem_kernel = 0  # The paper's first layer (11x11/4 fast, 7x7/2 accurate).
  c.model.stem_stride = 0
  c.model.init = "paper"
  c.model.dropout_rate = 0.5
  c.input.resize_short = 256
  c.input.random_flip = True
  c.input.batch_size = 128
  c.input.num_workers = 8
  c.optimizer.learning_rate = 5e-2
  c.optimizer.momentum = 0.6
  # Torch7's optim.sgd (the paper's trainer) damps momentum by default: v <- m v + (1 - m) g.
  c.optimizer.dampening = 0.6
  c.optimizer.weight_decay = 1e-5
  c.optimizer.halve_at_epochs = (30, 50, 60, 70, 80)
  c.train.num_epochs = 90
  c.train.log_every = 100
  c.train.checkpoint_every = 2000
  c.train.keep_checkpoints = 3
  c.eval.resize_short = 256
  # ImageNet is mostly 4:3 and 3:2 (landscape and portrait): a bucket each keeps the padding small.
  c.eval.aspect_buckets = (1.2, 1.4, 2.0)
  c.eval.single_scale = 0
  c.eval.multi_scales = (0, 1, 2, 3, 4, 5)
  return c


def paper_faster_rcnn_config() -> ml_collections.ConfigDict:
  """Faster R-CNN's PASCAL VOC 2007 recipe (SPEC B1-B5) shared by the VGG-16 and ZF configs.

  VOC07 trainval -> test; approximate joint training; one image per mini-batch, short side 600
  (long side <= 1000), random flips (the paper's doubled training set); SGD momentum 0.9, weight
  decay 5e-4, lr 1e-3 for 60k mini-batches then 1e-4 for 20k (trainval's 5,011 images: 12 + 4
  epochs); 256 anchors of 128^2, 256^2, 512^2 x 1:2, 1:1, 2:1 and 128 RoIs (25% foreground,
  background IoU [0, 0.5) as end-to-end training) per image; proposals 12000 -> 2000 in training,
  6000 -> 300 at test; per-class NMS 0.3, score 0.05, 100 detections. The caller sets the
  backbone, its weights, the RPN width and the RoI size (the COCO config also the data, anchors and
  schedule).
  """
  config = base_config()
  config.task = "faster_rcnn"
  config.dataset.name = "voc/2007"
  config.dataset.num_classes = 20
  config.dataset.train_split = "train+validation"  # VOC07 trainval
  config.dataset.eval_split = "test"
  config.dataset.prepare = False  # built beforehand with `tfds build`
  config.input.min_size = 600
  config.input.max_size = 1000
  config.input.aspect_buckets = (1.25, 1.6, 2.0)  # VOC is mostly 4:3 and 3:2, landscape and portrait
  config.input.random_flip = True
  config.input.batch_size = 1  # one image per mini-batch
  config.input.eval_batch_size = 1
  config.input.max_boxes = 64  # VOC07 has at most 42 objects per image
  config.input.num_workers = 4
  config.model.width = 1.0
  config.model.init = "paper"  # N(0, 0.01^2) for the new layers (SPEC B2)
  config.model.dropout_rate = 0.5
  config.optimizer.learning_rate = 1e-3
  config.optimizer.momentum = 0.9
  config.optimizer.dampening = 0.0
  config.optimizer.weight_decay = 5e-4
  config.optimizer.warmup_epochs = 0.0
  config.optimizer.halve_at_epochs = (12,)  # 60k of 80k mini-batches
  config.optimizer.decay_factor = 0.1
  config.train.num_epochs = 16
  config.train.log_every = 100
  config.train.checkpoint_every = 5000
  f = config.faster_rcnn
  f.training = "approximate_joint"
  f.anchor_sizes = (128, 256, 512)
  f.anchor_ratios = (0.5, 1.0, 2.0)
  f.rpn_batch = 256
  f.rpn_lambda = 10.0
  f.rpn_reg_normalizer = "positions"
  f.train_pre_nms = 12000
  f.train_post_nms = 2000
  f.proposal_min_size = 16.0
  f.roi_op = "pool"
  f.num_rois = 128
  f.fg_fraction = 0.25
  f.bg_iou = (0.0, 0.5)  # end-to-end training (SPEC B4; py-faster-rcnn's end2end BG_THRESH_LO)
  f.test.pre_nms = 6000
  f.test.post_nms = 300
  f.test.score_threshold = 0.05
  f.test.nms_iou = 0.3
  f.test.max_detections = 100
  return config


# The preprocessing of the weights OverFeat's authors released (overfeat_jax/models/released_weights.py,
# PIXEL_MEAN / PIXEL_STD): (p - 118.380948) / 61.896913 for 0..255 pixels of every channel, which is
# our (x / 255 - mean) / std with these values.
RELEASED_MEAN = (118.380948 / 255,) * 3
RELEASED_STD = (61.896913 / 255,) * 3


def released_weights_config(variant: str) -> ml_collections.ConfigDict:
  """The paper's ImageNet config of `variant` ("fast" / "accurate") for the authors' released weights.

  The same as configs/overfeat_<variant>_imagenet.py (the paper's architecture, training input and six
  test scales), with the released networks' input normalisation. `python -m
  overfeat_jax.convert_weights` writes checkpoints for it; configs/overfeat_<variant>_released.py
  return it.
  """
  c = paper_imagenet_config()
  c.model.variant = variant
  c.input.mean = RELEASED_MEAN
  c.input.std = RELEASED_STD
  if variant == "fast":
    c.input.crop_size = 231
    c.input.eval_batch_size = 32
    # As overfeat_fast_imagenet.py: scale 1 is 247 px (at 245 the fast net's second pooling offset
    # leaves no full 6x6 classifier window).
    c.eval.scales = ((247, 247), (281, 317), (317, 389), (389, 461), (425, 497), (461, 569))
  else:
    c.input.crop_size = 221
    c.input.eval_batch_size = 16
    c.eval.scales = ((245, 245), (281, 317), (317, 389), (389, 461), (425, 497), (461, 569))  # SPEC A4
  return c

# ---------------------------------------------------------------------------------------------
# The ONE table of allowed values. `validate_config` is the only place that checks a config value;
# lower layers check only what needs runtime facts (the field of view, the device count, the size of
# a split). Each rule: (test of the value, what is allowed, said in the error).

def _positive(v) -> bool:
  return v > 0


def _non_negative(v) -> bool:
  return v >= 0


def _fraction(v) -> bool:
  return 0.0 <= v < 1.0


def _one_of(*allowed):
  return (lambda v: v in allowed), "expected one of " + ", ".join(allowed)


def _aspect_bounds_ok(bounds) -> bool:
  bounds = tuple(bounds)
  return (len(bounds) > 0 and bounds[0] >= 1.0
          and all(lo < hi for lo, hi in zip(bounds[:-1], bounds[1:])))


def _scales_ok(scales) -> bool:
  scales = tuple(tuple(s) for s in scales)
  return len(scales) > 0 and all(len(s) == 2 and min(s) > 0 for s in scales)


# config.distributed.initialize: when train.py / evaluate.py call jax.distributed.initialize().
DISTRIBUTED_INITIALIZE = ("never", "auto", "explicit")


def _host_port_ok(address) -> bool:
  host, _, port = str(address).rpartition(":")
  return bool(host) and port.isdigit() and 0 < int(port) < 65536


# overfeat_jax.tasks.TASKS holds one module per name.
TASKS = ("classification", "localization", "detection", "faster_rcnn")


def _sizes_ok(values) -> bool:
  return len(values) > 0 and all(v > 0 for v in values)


def _count_list_ok(values) -> bool:
  return len(values) > 0 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values)


_FASTER_RCNN_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "faster_rcnn.backbone": _one_of("vgg16", "zf", "overfeat_fast", "overfeat_accurate", "tiny"),
    "faster_rcnn.backbone_init": _one_of("none", "torchvision", "classifier"),
    "faster_rcnn.training": _one_of("approximate_joint", "joint", "alternating"),
    "faster_rcnn.anchor_sizes": (_sizes_ok, "expected a non-empty list of positive sizes"),
    "faster_rcnn.anchor_ratios": (_sizes_ok, "expected a non-empty list of positive ratios"),
    "faster_rcnn.frozen_stages": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= -1,
                                  "expected >= 0, or -1 for the backbone's own frozen layers"),
    "faster_rcnn.rpn_channels": (_non_negative, "expected >= 0 (0 = the backbone's channels)"),
    "faster_rcnn.rpn_batch": (_positive, "expected > 0"),
    "faster_rcnn.rpn_positive_fraction": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1]"),
    "faster_rcnn.rpn_pos_iou": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1]"),
    "faster_rcnn.rpn_neg_iou": (lambda v: 0.0 <= v <= 1.0, "expected in [0, 1]"),
    "faster_rcnn.rpn_lambda": (_non_negative, "expected >= 0"),
    "faster_rcnn.rpn_reg_normalizer": _one_of("positions", "samples"),
    "faster_rcnn.train_pre_nms": (_positive, "expected > 0"),
    "faster_rcnn.train_post_nms": (_positive, "expected > 0"),
    "faster_rcnn.shared_features": (lambda v: isinstance(v, bool), "expected True or False"),
    "faster_rcnn.proposal_nms_iou": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1] (1 = no NMS)"),
    "faster_rcnn.proposal_min_size": (_non_negative, "expected >= 0"),
    "faster_rcnn.roi_op": _one_of("pool", "align"),
    "faster_rcnn.roi_size": (_positive, "expected > 0"),
    "faster_rcnn.head_hidden": (_positive, "expected > 0"),
    "faster_rcnn.num_rois": (_positive, "expected > 0"),
    "faster_rcnn.fg_fraction": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1]"),
    "faster_rcnn.fg_iou": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1]"),
    "faster_rcnn.bg_iou": (lambda v: len(v) == 2 and 0.0 <= v[0] <= v[1] <= 1.0,
                           "expected (low, high) with 0 <= low <= high <= 1"),
    "faster_rcnn.detector_lambda": (_non_negative, "expected >= 0"),
    "faster_rcnn.joint_box_gradient_scale": (_non_negative, "expected >= 0"),
    "faster_rcnn.test.size_factor": (_positive, "expected > 0 (1.0 = test at the training sizes)"),
    "faster_rcnn.test.extra_size_factors": (lambda v: all(x > 0 for x in v),
                                            "expected factors > 0 (may be empty)"),
    "faster_rcnn.test.box_voting_iou": (lambda v: 0.0 <= v <= 1.0, "expected in [0, 1] (0 = off)"),
    "faster_rcnn.test.pre_nms": (_positive, "expected > 0"),
    "faster_rcnn.test.post_nms": (_positive, "expected > 0"),
    "faster_rcnn.test.proposal_nms_iou": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1] (1 = no NMS)"),
    "faster_rcnn.test.proposal_ranking": _one_of("objectness", "random"),
    "faster_rcnn.test.rpn_box_regression": (lambda v: isinstance(v, bool), "expected True or False"),
    "faster_rcnn.test.score_threshold": (lambda v: 0.0 <= v < 1.0, "expected in [0, 1)"),
    "faster_rcnn.test.nms_iou": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1]"),
    "faster_rcnn.test.max_detections": (_positive, "expected > 0"),
    "faster_rcnn.test.recall_proposals": (_count_list_ok, "expected a non-empty list of counts > 0"),
    "faster_rcnn.test.recall_ious": (lambda v: len(v) > 0 and all(0.0 < x <= 1.0 for x in v),
                                     "expected a non-empty list of IoUs in (0, 1]"),
    "faster_rcnn.test.picture_proposals": (_non_negative, "expected >= 0"),
    "faster_rcnn.test.picture_score": (lambda v: 0.0 <= v <= 1.0, "expected in [0, 1]"),
}

RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "task": _one_of(*TASKS),
    "seed": (lambda v: 0 <= v < 2**32, "expected in [0, 2**32) (grain's shuffle seed)"),
    "dataset.num_classes": (lambda v: v >= 2, "expected >= 2"),
    "input.resize_short": (_positive, "expected > 0"),
    "input.crop_size": (_positive, "expected > 0"),
    "input.crop_object_fraction": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1] (1 = the whole box)"),
    "input.off_object_crops": (lambda v: 0.0 <= v < 1.0, "expected in [0, 1) (0 = none)"),
    "input.off_object_max_fraction": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1]"),
    "input.resize_short_max": (_non_negative, "expected >= 0 (0 = no scale jitter)"),
    "input.mean": (lambda v: len(v) == 3, "expected 3 values (RGB)"),
    "input.std": (lambda v: len(v) == 3 and min(v) > 0, "expected 3 positive values (RGB)"),
    "input.batch_size": (_positive, "expected > 0"),
    "input.eval_batch_size": (_positive, "expected > 0"),
    "input.max_boxes": (_positive, "expected > 0"),
    "input.min_size": (_positive, "expected > 0"),
    "input.max_size": (_positive, "expected > 0"),
    "input.train_min_sizes": (lambda v: all(int(x) > 0 for x in v),
                              "expected sizes > 0 (() = input.min_size)"),
    "input.aspect_buckets": (_aspect_bounds_ok,
                             "expected strictly increasing long/short ratios, the first >= 1"),
    "input.num_workers": (_non_negative, "expected >= 0"),
    "input.prefetch": (_non_negative, "expected >= 0"),
    "model.variant": _one_of("fast", "accurate"),
    "model.width": (_positive, "expected > 0"),
    "model.stem_kernel": (_non_negative, "expected >= 0 (0 = the paper's)"),
    "model.stem_stride": (_non_negative, "expected >= 0 (0 = the paper's)"),
    "model.dropout_rate": (_fraction, "expected in [0, 1)"),
    "model.init": _one_of("paper", "he"),
    "model.compute_dtype": _one_of("float32", "bfloat16"),
    "model.weight_standardization": (lambda v: isinstance(v, bool), "expected True or False"),
    "optimizer.learning_rate": (_positive, "expected > 0"),
    "optimizer.momentum": (_fraction, "expected in [0, 1)"),
    "optimizer.dampening": (_fraction, "expected in [0, 1) (0 = heavy-ball, = momentum for Torch7's default)"),
    "optimizer.weight_decay": (_non_negative, "expected >= 0"),
    "optimizer.warmup_epochs": (_non_negative, "expected >= 0 (0 = no warm-up)"),
    "optimizer.halve_at_epochs": (
        lambda v: all(isinstance(e, (int, float)) and not isinstance(e, bool) and e > 0 for e in v)
        and list(v) == sorted(set(v)),
        "expected strictly increasing positive epochs (fractions allowed)"),
    "train.num_epochs": (_non_negative, "expected >= 0 (with train.max_steps > 0 when 0)"),
    "train.max_steps": (_non_negative, "expected >= 0 (0 = use num_epochs)"),
    "train.log_every": (_positive, "expected > 0"),
    "train.eval_every": (_non_negative, "expected >= 0 (0 = no evaluation during training)"),
    "train.eval_num_examples": (_non_negative, "expected >= 0 (0 = eval.num_examples)"),
    "train.checkpoint_every": (_positive, "expected > 0"),
    "train.keep_checkpoints": (_positive, "expected >= 1"),
    "eval.resize_short": (_positive, "expected > 0"),
    "eval.scales": (_scales_ok, "expected a non-empty list of (height, width) pairs"),
    "eval.aspect_buckets": (_aspect_bounds_ok,
                            "expected strictly increasing long/short ratios, the first >= 1"),
    "eval.spatial_reduce": _one_of("max", "mean"),
    "eval.num_examples": (_non_negative, "expected >= 0 (0 = all)"),
    "eval.pictures": (_non_negative, "expected >= 0 (0 = none)"),
    "eval.merge_top_k": (_positive, "expected >= 1"),
    "eval.merge_threshold": (_non_negative, "expected >= 0 (inf merges everything)"),
    "localization.regressor": _one_of("scr", "pcr"),
    "detection.regressor": _one_of("scr", "pcr"),
    "localization.train_scales": (
        lambda v: len(v) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in v),
        "expected a non-empty list of positive integer short sides"),
    "localization.min_coverage": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1] (paper: 0.5)"),
    "eval.merge_score": _one_of("paper", "overlap"),
    "eval.merge_average": _one_of("pair", "weighted"),
    "detection.train_scales": (
        lambda v: len(v) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in v),
        "expected a non-empty list of positive integer short sides"),
    "detection.test_scales": (
        lambda v: len(v) > 0 and all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in v),
        "expected a non-empty list of positive integer short sides"),
    "detection.min_coverage": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1] (paper: 0.5)"),
    "detection.min_box_fraction": (_non_negative, "expected >= 0"),
    "detection.max_background_coverage": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1]"),
    "detection.hard_negatives": (_non_negative, "expected >= 0"),
    "detection.random_negatives": (_non_negative, "expected >= 0"),
    "detection.box_loss_weight": (_non_negative, "expected >= 0"),
    "detection.min_window_score": (lambda v: 0.0 <= v <= 1.0, "expected in [0, 1]"),
    "detection.max_boxes_per_class": (_positive, "expected >= 1"),
    "detection.max_detections": (_positive, "expected >= 1"),
    "detection.top_class_only": (lambda v: isinstance(v, bool), "expected True or False"),
    "detection.merged_nms_iou": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1] (1.0 = no suppression)"),
    "optimizer.decay_factor": (lambda v: 0.0 < v <= 1.0, "expected in (0, 1] (0.5 halves)"),
    "distributed.initialize": _one_of(*DISTRIBUTED_INITIALIZE),
    "distributed.coordinator_address": (lambda v: v == "" or _host_port_ok(v),
                                        'expected "host:port" (port 1-65535), or "" (unset)'),
    "distributed.num_processes": (_non_negative, "expected >= 0 (0 = unset)"),
    "distributed.process_id": (lambda v: v >= -1, "expected >= 0, or -1 (unset)"),
    **_FASTER_RCNN_RULES,
}


# What a resumed run may change (checked against the run's config.json by training.run_config): how
# long it goes on, how it logs and saves, where the data lives, how it is evaluated. Every other key
# shaped what the checkpoints hold: the task, model, data and augmentation, input.batch_size (it maps
# steps to epochs, so the schedule and the data position), optimizer and schedule, and the seed.
RESUME_MAY_CHANGE = ("train.num_epochs", "train.max_steps", "train.log_every", "train.checkpoint_every",
                     "train.keep_checkpoints", "train.eval_every",
                     "train.eval_num_examples", "train.tensorboard", "input.num_workers", "input.prefetch",
                     "input.eval_batch_size", "dataset.data_dir", "dataset.prepare", "eval",
                     "faster_rcnn.test", "distributed",
                     # The OverFeat detector's test-time settings (evaluation only, as eval.*).
                     "detection.test_scales", "detection.min_window_score",
                     "detection.max_boxes_per_class", "detection.top_class_only",
                     "detection.merged_nms_iou", "detection.max_detections",
                     "train.distributed")  # the last: a key of config.json files older than distributed.*


def resume_may_change(key: str) -> bool:
  """Whether the dotted `key` (e.g. 'eval.scales') is one a resumed run may change."""
  return any(key == allowed or key.startswith(allowed + ".") for allowed in RESUME_MAY_CHANGE)


def _get(config: ml_collections.ConfigDict, dotted: str):
  value = config
  for part in dotted.split("."):
    value = value[part]
  return value


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every value against RULES and the few rules that relate two keys.

  Called by every library entry point (`training.loop.run`, `evaluation.evaluate`).
  Raises:
    ConfigError naming the first offending key, its value and what is allowed.
  """
  # Imported here so that configs/*.py can import this module without the rest of the package.
  from overfeat_jax.errors import ConfigError

  unknown = _unknown_keys(config, base_config())
  if unknown:
    raise ConfigError(f"unknown config key(s): {', '.join(unknown)} (see overfeat_jax/config.py)")

  def require(ok: bool, key: str, allowed: str) -> None:
    if not ok:
      raise ConfigError(f"config.{key}={_get(config, key)!r} is invalid: {allowed}")

  for key, (check, allowed) in RULES.items():
    try:
      ok = bool(check(_get(config, key)))
    except (TypeError, ValueError):  # e.g. a string where a number belongs (set in code)
      ok = False
    require(ok, key, allowed)

  # Rules between keys.
  require(config.input.resize_short >= config.input.crop_size, "input.resize_short",
          f"must be >= input.crop_size={config.input.crop_size} so that the random crop fits")
  # Both act on the object's box, which only crop_keeps_object's crops consult; each key's value here
  # is the one that leaves the crops as they were.
  for key, inactive in (("input.off_object_crops", 0.0), ("input.crop_object_fraction", 1.0)):
    require(config.input.crop_keeps_object or _get(config, key) == inactive, key,
            "needs input.crop_keeps_object=True")
  require(not config.input.resize_short_max
          or config.input.resize_short_max >= config.input.resize_short, "input.resize_short_max",
          f"must be 0 or >= input.resize_short={config.input.resize_short}")
  require(config.eval.resize_short >= config.input.crop_size, "eval.resize_short",
          f"must be >= input.crop_size={config.input.crop_size} so that the centre crop fits")
  require(config.input.max_size >= config.input.min_size, "input.max_size",
          f"must be >= input.min_size={config.input.min_size}")
  require(all(s <= config.input.max_size for s in config.input.train_min_sizes),
          "input.train_min_sizes", f"must each be <= input.max_size={config.input.max_size}")
  # The OverFeat tasks resize their batches on device from input.min_size (their own train_scales).
  require(not config.input.train_min_sizes or config.task == "faster_rcnn", "input.train_min_sizes",
          f"is for task 'faster_rcnn' (task {config.task!r} has its own training scales)")
  require(config.train.num_epochs > 0 or config.train.max_steps > 0, "train.num_epochs",
          "expected > 0 (or train.max_steps > 0)")
  num_scales = len(config.eval.scales)
  require(0 <= config.eval.single_scale < num_scales, "eval.single_scale",
          f"expected an index into eval.scales (0..{num_scales - 1})")
  multi = tuple(config.eval.multi_scales)
  require(len(multi) > 0 and all(0 <= i < num_scales for i in multi), "eval.multi_scales",
          f"expected indices into eval.scales (0..{num_scales - 1})")
  _validate_distributed(config, require)
  if config.task == "localization":
    require(bool(config.localization.classifier_workdir), "localization.classifier_workdir",
            "the localization task starts from a classification run: set it to that run's --workdir")
  if config.task == "detection":
    require(bool(config.detection.classifier_workdir), "detection.classifier_workdir",
            "the detection task starts from a classification run: set it to that run's --workdir")
    require(config.detection.max_background_coverage <= config.detection.min_coverage,
            "detection.max_background_coverage",
            f"must be <= detection.min_coverage={config.detection.min_coverage}")
  if config.task == "faster_rcnn":
    _validate_faster_rcnn(config, require)


def _validate_distributed(config: ml_collections.ConfigDict, require: Callable[..., None]) -> None:
  """The distributed keys are given exactly when distributed.initialize is "explicit"."""
  d = config.distributed
  given = {"coordinator_address": d.coordinator_address != "", "num_processes": d.num_processes != 0,
           "process_id": d.process_id != -1}
  if d.initialize == "explicit":
    for key, ok in given.items():
      require(ok, f"distributed.{key}", "distributed.initialize='explicit' needs distributed."
              "coordinator_address, distributed.num_processes and distributed.process_id")
    require(d.process_id < d.num_processes, "distributed.process_id",
            f"expected < distributed.num_processes={d.num_processes}")
    return
  for key, ok in given.items():
    why = ("'never' starts one process" if d.initialize == "never" else
           "'auto' takes it from the cluster (jax's detection)")
    require(not ok, f"distributed.{key}",
            f"distributed.initialize={d.initialize!r}, which does not use it ({why}); set "
            "distributed.initialize='explicit' to give the coordinator, process count and id")


def _validate_faster_rcnn(config: ml_collections.ConfigDict, require: Callable[..., None]) -> None:
  """The Faster R-CNN rules between keys."""
  f = config.faster_rcnn
  require(not config.model.weight_standardization, "model.weight_standardization",
          "Faster R-CNN's backbones are plain convolutions; a weight-standardised classifier's "
          "kernels are folded into plain ones when faster_rcnn.backbone_weights loads them")
  require(f.rpn_neg_iou <= f.rpn_pos_iou, "faster_rcnn.rpn_neg_iou",
          f"must be <= faster_rcnn.rpn_pos_iou={f.rpn_pos_iou}")
  require(f.shared_features or f.training != "alternating", "faster_rcnn.shared_features",
          "4-step alternating training shares the features by construction (its step 3); unshared "
          "features need faster_rcnn.training 'approximate_joint' or 'joint'")
  require(f.training != "joint" or f.roi_op == "align", "faster_rcnn.training",
          "exact joint training needs faster_rcnn.roi_op='align' (RoI max pooling has no gradient in "
          "the box coordinates)")
  require(f.backbone_init == "none" or bool(f.backbone_weights), "faster_rcnn.backbone_weights",
          f"faster_rcnn.backbone_init={f.backbone_init!r} needs the file or work directory to read")
  require(f.backbone_init != "torchvision" or f.backbone == "vgg16", "faster_rcnn.backbone_init",
          f"torchvision's weights are VGG-16's, not faster_rcnn.backbone={f.backbone!r}'s")
  require(f.backbone_init != "classifier" or f.backbone.startswith("overfeat_"), "faster_rcnn.backbone_init",
          f"a classifier's extractor fits the overfeat_* backbones, not faster_rcnn.backbone={f.backbone!r}")
  require(f.test.box_voting_iou == 0 or len(f.test.extra_size_factors) > 0,
          "faster_rcnn.test.box_voting_iou", "box voting merges the detections of several test "
          "sizes: set faster_rcnn.test.extra_size_factors too (one size's detections are already "
          "apart after NMS)")


def faster_rcnn_test_sizes(config: ml_collections.ConfigDict, factor: float | None = None
                           ) -> tuple[int, int]:
  """(short side, long-side cap) of every evaluation-side view of a Faster R-CNN config's images:
  input.min_size and input.max_size times faster_rcnn.test.size_factor (or `factor`, e.g. one of
  test.extra_size_factors), rounded."""
  factor = float(config.faster_rcnn.test.size_factor if factor is None else factor)
  return (max(1, int(round(config.input.min_size * factor))),
          max(1, int(round(config.input.max_size * factor))))


def _unknown_keys(config: ml_collections.ConfigDict, reference: ml_collections.ConfigDict,
                  prefix: str = "") -> list[str]:
  """Keys present in `config` but not in `reference` (configs built in code bypass the CLI's check)."""
  unknown = []
  for key, value in config.items():
    if key not in reference:
      unknown.append(prefix + key)
    elif isinstance(value, ml_collections.ConfigDict):
      unknown.extend(_unknown_keys(value, reference[key], prefix + key + "."))
  return unknown
