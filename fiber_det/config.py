"""Configuration keys of fiber-det.

``add_fiber_config(cfg)`` declares every key fiber-det adds to Detectron2's defaults, each with its
default and a one-line comment. Defaults reproduce the reference (microsoft/FIBER ``fine_grained/``);
every reference quirk has a switch here whose default is the quirk.
"""
import torch
from detectron2.config import CfgNode as CN


def add_fiber_config(cfg: CN) -> CN:
    _C = cfg
    _C.MODEL.META_ARCHITECTURE = "FIBER"
    # Detectron2 defaults to "cuda"; fall back to the CPU where there is no GPU.
    _C.MODEL.DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
    _C.MODEL.BACKBONE.NAME = "build_fiber_backbone"
    # Images are BGR 0-255; these are the reference's (Caffe-style) statistics.
    _C.MODEL.PIXEL_MEAN = [103.53, 116.28, 123.675]
    _C.MODEL.PIXEL_STD = [57.375, 57.12, 58.395]

    _C.MODEL.FIBER = CN()
    # Pad the batch to a multiple of this (the reference pads to 32).
    _C.MODEL.FIBER.SIZE_DIVISIBILITY = 32

    # ---- Swin image backbone (ARCHITECTURE.md section 2) ----
    _C.MODEL.FIBER.SWIN = CN()
    _C.MODEL.FIBER.SWIN.PATCH_SIZE = 4
    _C.MODEL.FIBER.SWIN.EMBED_DIM = 128
    _C.MODEL.FIBER.SWIN.DEPTHS = [2, 2, 18, 2]
    _C.MODEL.FIBER.SWIN.NUM_HEADS = [4, 8, 16, 32]
    _C.MODEL.FIBER.SWIN.WINDOW_SIZE = 12
    _C.MODEL.FIBER.SWIN.MLP_RATIO = 4.0
    # Stochastic depth: linspace(0, rate) over all blocks.
    _C.MODEL.FIBER.SWIN.DROP_PATH_RATE = 0.4
    # -1: train all; 0: freeze patch embedding; k >= 1: also freeze stages 1..k (reference: 1).
    _C.MODEL.FIBER.SWIN.FROZEN_STAGES = 1
    # Gradient checkpointing of every Swin block (saves memory, costs a second forward).
    _C.MODEL.FIBER.SWIN.USE_CHECKPOINT = False
    # "v2": the paper's detection models; "v3": adds a LayerNorm on the cross-attention query (RefCOCO).
    _C.MODEL.FIBER.SWIN.FUSION_VARIANT = "v2"

    # ---- Text backbone (section 3) ----
    _C.MODEL.FIBER.TEXT = CN()
    # HF model: a local folder or a hub name (hub names need the files in the local HF cache).
    _C.MODEL.FIBER.TEXT.MODEL_NAME = "roberta-base"
    # Tokenizer folder / name; empty means MODEL_NAME.
    _C.MODEL.FIBER.TEXT.TOKENIZER = ""
    # False: build the encoder from its config alone (random weights, no weight file needed).
    _C.MODEL.FIBER.TEXT.PRETRAINED = True
    # Overrides of the HF config's fields (e.g. {"num_hidden_layers": 4}); used with PRETRAINED False.
    _C.MODEL.FIBER.TEXT.CONFIG_OVERRIDES = CN(new_allowed=True)
    # Token budget of a caption; positive maps are this wide (token MAX_LENGTH-1 is the "no object" slot).
    _C.MODEL.FIBER.TEXT.MAX_LENGTH = 256
    # Pad every caption to MAX_LENGTH as the reference does (False: pad to the longest in the batch).
    _C.MODEL.FIBER.TEXT.PAD_TO_MAX = True
    # Gradient checkpointing of the text layers (the reference has none on the text side).
    _C.MODEL.FIBER.TEXT.USE_CHECKPOINT = False

    # ---- Fusion (sections 2-4) ----
    _C.MODEL.FIBER.FUSION = CN()
    # Number of paired image/text fusion steps: the last N Swin blocks with the last N text layers.
    _C.MODEL.FIBER.FUSION.NUM_LAYERS = 6
    # Reference quirk: text->image attention also attends to zero-padded image regions of a batch.
    # True = clean behaviour (padded image tokens masked out).
    _C.MODEL.FIBER.FUSION.MASK_PADDED_IMAGE_TOKENS = False

    # ---- FPN (section 5) ----
    _C.MODEL.FIBER.FPN = CN()
    _C.MODEL.FIBER.FPN.OUT_CHANNELS = 256
    # Reference quirk: DropBlock on the merged P4 and P3 during training. False = clean FPN.
    _C.MODEL.FIBER.FPN.DROP_BLOCK = True
    _C.MODEL.FIBER.FPN.DROP_BLOCK_PROB = 0.3
    _C.MODEL.FIBER.FPN.DROP_BLOCK_SIZE = 3

    # ---- Head (section 6) ----
    _C.MODEL.FIBER.HEAD = CN()
    # Number of DyConv blocks in the tower.
    _C.MODEL.FIBER.HEAD.NUM_CONVS = 6
    _C.MODEL.FIBER.HEAD.GN_GROUPS = 16
    # Modulated deformable convs in the tower (False: plain 3x3 convs, no offset branch).
    _C.MODEL.FIBER.HEAD.USE_DEFORMABLE = True
    # Reference quirk: the level l+1 conv reads level l's offsets/masks re-cut to its own (smaller) shape.
    # False = clean behaviour (offsets resized to the level's size).
    _C.MODEL.FIBER.HEAD.DEFORM_OFFSET_QUIRK = True
    # Deformable conv kernel: "torchvision", "sampled" (grid_sample + matmul, same maths, much faster
    # on CPU), or "auto" (torchvision on GPU, sampled on CPU).
    _C.MODEL.FIBER.HEAD.DEFORM_IMPL = "auto"
    # Prior probability of the token-alignment bias (bias0 = -log((1-p)/p)).
    _C.MODEL.FIBER.HEAD.PRIOR_PROB = 0.01
    # Output channels of the frozen legacy cls_logits conv (kept so reference checkpoints load strictly).
    _C.MODEL.FIBER.HEAD.LEGACY_NUM_CLASSES = 80
    # Token-alignment logits are clamped to +-this.
    _C.MODEL.FIBER.HEAD.LOGIT_CLAMP = 50000.0

    # ---- Box coding (section 6) ----
    _C.MODEL.FIBER.BOX_CODER_WEIGHTS = [10.0, 10.0, 5.0, 5.0]
    # Anchors: one per location; sizes per level come from MODEL.ANCHOR_GENERATOR.SIZES.
    _C.MODEL.FIBER.ANCHOR_STRIDES = [8, 16, 32, 64, 128]
    _C.MODEL.ANCHOR_GENERATOR.SIZES = [[64], [128], [256], [512], [1024]]
    _C.MODEL.ANCHOR_GENERATOR.ASPECT_RATIOS = [[1.0]]

    # ---- Assignment and losses (section 7) ----
    # "atss" (the reference's) or "hungarian" (one-to-one; pair it with NMS False at inference).
    _C.MODEL.FIBER.MATCHER = "atss"
    # Hungarian matching cost = COST_CLASS * token focal cost + COST_BBOX * L1 (boxes normalised by
    # the image size) + COST_GIOU * (-GIoU).
    _C.MODEL.FIBER.HUNGARIAN = CN()
    _C.MODEL.FIBER.HUNGARIAN.COST_CLASS = 2.0
    _C.MODEL.FIBER.HUNGARIAN.COST_BBOX = 5.0
    _C.MODEL.FIBER.HUNGARIAN.COST_GIOU = 2.0
    # ATSS: candidate anchors per level per box.
    _C.MODEL.FIBER.ATSS_TOPK = 9
    _C.MODEL.FIBER.FOCAL_ALPHA = 0.25
    _C.MODEL.FIBER.FOCAL_GAMMA = 2.0
    _C.MODEL.FIBER.TOKEN_LOSS_WEIGHT = 1.0
    _C.MODEL.FIBER.GIOU_LOSS_WEIGHT = 2.0
    _C.MODEL.FIBER.CENTERNESS_LOSS_WEIGHT = 1.0

    # ---- Inference (section 8) ----
    _C.MODEL.FIBER.INFERENCE_TH = 0.05
    _C.MODEL.FIBER.PRE_NMS_TOP_N = 1000
    _C.MODEL.FIBER.NMS_TH = 0.6
    # Class-wise NMS after scoring (the reference). False: keep the top-scoring candidates as they
    # are (NMS-free inference, meant for one-to-one Hungarian-trained models).
    _C.MODEL.FIBER.NMS = True
    _C.MODEL.FIBER.DETECTIONS_PER_IMAGE = 100
    # Reference NMS uses the legacy "+1" box width in IoU.
    _C.MODEL.FIBER.NMS_LEGACY_PLUS_ONE = True

    # ---- Data ----
    # Horizontal flip in training ("horizontal" or "none"; captions are not changed by a flip).
    _C.INPUT.RANDOM_FLIP = "horizontal"
    _C.INPUT.FORMAT = "BGR"
    _C.INPUT.MIN_SIZE_TRAIN = (480, 512, 544, 576, 608, 640, 672, 704, 736, 768, 800)
    _C.INPUT.MAX_SIZE_TRAIN = 1333
    _C.INPUT.MIN_SIZE_TEST = 800
    _C.INPUT.MAX_SIZE_TEST = 1333
    # Detection-as-grounding captions: shuffle the category order per training sample.
    _C.INPUT.SHUFFLE_CATEGORIES = True
    # Category separator in detection prompts (no trailing separator).
    _C.INPUT.CATEGORY_SEPARATOR = ". "
    # "reference": the reference's resize rounding (shorter side rounded, longer side truncated);
    # "detectron2": ResizeShortestEdge (both rounded, honours INPUT.MIN_SIZE_TRAIN_SAMPLING).
    _C.INPUT.RESIZE_STYLE = "reference"

    # ---- Datasets (ARCHITECTURE.md sections 9-10; datasets/README.md) ----
    # Negative classes in "sampled" training prompts (Objects365, LVIS): (p_one, p_zero, p_full, p_drop):
    # 1 negative with p_one, none with p_zero, RANDOM_SAMPLE_NEG with p_full, else uniform in [1, that];
    # p_drop must be 0. GLIP's value; FIBER's released pre-training yaml has (0.05, 0.05, 0.5, 0.2),
    # which the reference's own sampler rejects (it asserts p_drop == 0).
    _C.DATASETS.CONTROL_PROB = (0.0, 0.0, 0.5, 0.0)
    # Most negatives a "sampled" prompt draws (capped by the number of classes).
    _C.DATASETS.RANDOM_SAMPLE_NEG = 85
    # Sampling share of each DATASETS.TRAIN entry (e.g. (1, 1): half the images from each); empty: concatenate.
    _C.DATASETS.TRAIN_RATIOS = ()
    # Datasets to register from the config: NAME: {JSON_FILE, IMAGE_ROOT, TYPE, PROMPT_STYLE} (datasets/README.md).
    _C.DATASETS.REGISTER = CN(new_allowed=True)

    # ---- Solver ----
    # Language backbone (incl. its cross-attention) learning rate.
    _C.SOLVER.LANG_LR = 1e-5
    _C.SOLVER.OPTIMIZER = "ADAMW"
    _C.SOLVER.BIAS_LR_FACTOR = 2.0
    _C.SOLVER.WEIGHT_DECAY_BIAS = 0.0
    # Skip a training batch when more than this fraction of its images (or all of them) have no box.
    _C.SOLVER.MAX_NEG_PER_BATCH = 0.1
    # LR decay points as fractions of SOLVER.MAX_ITER (reference: (0.67, 0.89)); when set, replaces SOLVER.STEPS.
    _C.SOLVER.STEP_FRACTIONS = ()
    # Reference's weight-decay steps (GLIP/FIBER SOLVER.WEIGHT_DECAY_SCHEDULE): weight decay x SOLVER.GAMMA
    # once the iteration reaches each LR step x WEIGHT_DECAY_SCHEDULE_RATIO (i.e. before the LR drops).
    _C.SOLVER.WEIGHT_DECAY_SCHEDULE = False
    _C.SOLVER.WEIGHT_DECAY_SCHEDULE_RATIO = 0.667
    # Micro-batches per optimizer step; IMS_PER_BATCH is the images per step over all processes and micro-batches.
    _C.SOLVER.ACCUMULATE_STEPS = 1
    # Autocast dtype when SOLVER.AMP.ENABLED: "float16" (with a GradScaler) or "bfloat16" (no scaling).
    _C.SOLVER.AMP.DTYPE = "float16"
    # On a non-finite loss: False raises an error naming the iteration and the losses; True skips the step.
    _C.SOLVER.SKIP_NONFINITE = False
    # Reseed Python/NumPy/torch from (SEED, iteration, rank) before every step, so a resumed run draws the
    # same dropout/DropBlock masks as an uninterrupted one.
    _C.SOLVER.RESEED_EACH_ITER = True
    # Iterations between metrics.json / TensorBoard / console writes, and the median window they smooth over.
    _C.SOLVER.LOG_PERIOD = 20
    _C.SOLVER.LOG_SMOOTHING_WINDOW = 20
    # DistributedDataParallel's find_unused_parameters (needed only if some parameters get no gradient).
    _C.SOLVER.DDP_FIND_UNUSED_PARAMETERS = False

    # Exponential moving average of the weights (reference: 0.999), kept in checkpoints.
    _C.MODEL_EMA = CN()
    _C.MODEL_EMA.ENABLED = False
    _C.MODEL_EMA.DECAY = 0.999
    # Evaluate with the EMA weights (during training and when a checkpoint holds them).
    _C.MODEL_EMA.USE_FOR_EVAL = True

    # Where evaluation results (one JSON) go; relative paths are under OUTPUT_DIR.
    _C.TEST.RESULTS_FILE = "results.json"
    # Images per forward pass in evaluation (per process).
    _C.TEST.IMS_PER_BATCH = 1
    # COCO AP's COCOeval: "faster_coco_eval" (C++, same numbers), "pycocotools", or "auto" (the first that imports).
    _C.TEST.COCO_EVAL_BACKEND = "auto"
    # Evaluation of a vocabulary too large for one caption (prompt_style "sampled", e.g. LVIS): categories
    # per prompt; the model runs once per prompt, each keeping MODEL.FIBER.DETECTIONS_PER_IMAGE (LVIS: 300).
    _C.TEST.PROMPT_CHUNK_SIZE = 40
    # LVIS AP protocols: "standard" (LVISEval, LVIS_MAX_DETS_PER_IMAGE per image) and/or "fixed"
    # (MDETR's fixed AP: top LVIS_FIXED_AP_DETS_PER_CLASS detections per class over the dataset).
    _C.TEST.LVIS_PROTOCOLS = ("standard", "fixed")
    _C.TEST.LVIS_MAX_DETS_PER_IMAGE = 300
    _C.TEST.LVIS_FIXED_AP_DETS_PER_CLASS = 10000
    return cfg
