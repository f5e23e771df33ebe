"""fiber_det.compat: detectron2 v0.6 with the runtime shims and (when no compiled build is present)
the pure-Python detectron2._C stand-in."""
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import deform_conv2d, roi_align

import fiber_det  # noqa: F401  (applies fiber_det.compat.ensure_detectron2 before detectron2 loads)
from fiber_det.compat import detectron2_C as standin
from fiber_det.compat import ensure_detectron2, has_compiled_detectron2, uses_standin_C

standin_only = pytest.mark.skipif(
    has_compiled_detectron2(),
    reason="a compiled detectron2._C is in use; this checks fiber-det's pure-Python stand-in",
)


def random_rotated_boxes(generator: torch.Generator, n: int) -> torch.Tensor:
    centers = torch.rand(n, 2, generator=generator) * 40
    sizes = torch.rand(n, 2, generator=generator) * 20 + 0.5
    angles = torch.rand(n, 1, generator=generator) * 360 - 180
    return torch.cat([centers, sizes, angles], dim=1)


# ---- installation -----------------------------------------------------------------------------


def test_detectron2_imports_with_the_C_module_in_use():
    ensure_detectron2()  # idempotent
    import detectron2
    from detectron2 import _C, engine, evaluation, modeling  # noqa: F401

    assert detectron2.__version__.startswith("0.6")
    assert uses_standin_C() != has_compiled_detectron2()
    assert hasattr(torch.ops.detectron2, "nms_rotated")


@standin_only
def test_installed_standin_is_current():
    from detectron2 import _C

    installed = Path(_C.__file__).read_text()
    assert installed == Path(standin.__file__).read_text(), (
        f"{_C.__file__} differs from fiber_det/compat/detectron2_C.py: rerun `bash tools/setup_env.sh`"
    )


@standin_only
def test_missing_compiled_ops_say_what_to_do():
    from detectron2 import _C

    with pytest.raises(AttributeError, match="use_fast_impl=False"):
        _C.COCOevalAccumulate
    with pytest.raises(AttributeError, match="torchvision"):
        _C.deform_conv_forward


@standin_only
def test_collect_env_info_names_the_standin():
    from detectron2.utils.collect_env import collect_env_info

    info = collect_env_info()
    assert "pure-Python detectron2._C stand-in" in info
    assert "detectron2" in info and torch.__version__ in info


@standin_only
def test_model_zoo_finds_its_configs_without_pkg_resources():
    from detectron2 import model_zoo

    path = Path(model_zoo.get_config_file("COCO-Detection/retinanet_R_50_FPN_1x.yaml"))
    assert path.is_file() and path.parent.parent.name == "configs"


def test_numpy_aliases_used_by_detectron2_work():
    from detectron2.data.build import print_instances_class_histogram

    dicts = [{"annotations": [{"category_id": 0}, {"category_id": 1}, {"category_id": 1}]}]
    print_instances_class_histogram(dicts, ["cat", "dog"])
    assert np.int is int and np.float is float


# ---- deformable convolution ---------------------------------------------------------------------


@standin_only
def test_deform_conv_layer_matches_torchvision_and_trains_on_cpu():
    from detectron2.layers import DeformConv

    torch.manual_seed(0)
    layer = DeformConv(4, 6, kernel_size=3, padding=1, deformable_groups=2)
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    offset = torch.randn(2, 2 * 2 * 9, 9, 11, requires_grad=True)
    out = layer(x, offset)
    expected = deform_conv2d(x, offset, layer.weight, padding=(1, 1))
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in (x, offset, layer.weight))


@standin_only
def test_modulated_deform_conv_layer_matches_torchvision_and_trains_on_cpu():
    from detectron2.layers import ModulatedDeformConv

    torch.manual_seed(0)
    layer = ModulatedDeformConv(4, 6, kernel_size=3, stride=2, padding=1, bias=True)
    torch.nn.init.normal_(layer.bias)
    x = torch.randn(2, 4, 9, 11, requires_grad=True)
    offset = torch.randn(2, 2 * 9, 5, 6)
    mask = torch.rand(2, 9, 5, 6, requires_grad=True)
    out = layer(x, offset, mask)
    expected = deform_conv2d(
        x, offset, layer.weight, layer.bias, stride=(2, 2), padding=(1, 1), mask=mask
    )
    torch.testing.assert_close(out, expected)
    out.sum().backward()
    assert x.grad is not None and mask.grad is not None and layer.bias.grad is not None


# ---- rotated boxes ------------------------------------------------------------------------------


def test_box_iou_rotated_matches_shapely():
    from shapely.geometry import Polygon

    g = torch.Generator().manual_seed(0)
    boxes1, boxes2 = random_rotated_boxes(g, 40), random_rotated_boxes(g, 50)
    boxes2[:10] = boxes1[:10]  # identical pairs
    boxes2[10:20] = boxes1[10:20, [0, 1, 3, 2, 4]] + torch.tensor([0, 0, 0, 0, 90.0])  # same, turned
    boxes2[20:30, :2] = boxes1[20:30, :2] + 0.3  # nearly concentric
    iou = standin.box_iou_rotated(boxes1, boxes2)

    def polygon(box):
        return Polygon(standin.rotated_box_corners(box.double()).tolist())

    expected = torch.tensor(
        [[polygon(a).intersection(polygon(b)).area / polygon(a).union(polygon(b)).area
          for b in boxes2] for a in boxes1],
        dtype=torch.float32,
    )  # fmt: skip
    assert iou.dtype == torch.float32 and iou.shape == (40, 50)
    torch.testing.assert_close(iou, expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(iou.diagonal()[:20], torch.ones(20), atol=1e-5, rtol=0)
    assert (expected > 0).sum() > 100  # the random boxes overlap often enough to test something


def test_box_iou_rotated_known_values_and_angle_convention():
    unit = torch.tensor([[0.0, 0.0, 2.0, 2.0, 0.0]])
    shifted = torch.tensor([[1.0, 0.0, 2.0, 2.0, 0.0], [5.0, 5.0, 2.0, 2.0, 0.0]])
    torch.testing.assert_close(standin.box_iou_rotated(unit, shifted), torch.tensor([[1 / 3, 0.0]]))
    # Square turned by 45 degrees inside a square of the same center: intersection is an octagon.
    turned = torch.tensor([[0.0, 0.0, 2.0, 2.0, 45.0]])
    octagon = 8 * (math.sqrt(2) - 1)
    torch.testing.assert_close(
        standin.box_iou_rotated(unit, turned), torch.tensor([[octagon / (8 - octagon)]])
    )
    # Counter-clockwise as seen in an image (y down): at +45 degrees a long bar's right end goes up.
    bar = torch.tensor([[0.0, 0.0, 20.0, 1.0, 45.0]])
    up_right, down_right = [[6.0, -6.0, 1.0, 1.0, 0.0]], [[6.0, 6.0, 1.0, 1.0, 0.0]]
    iou = standin.box_iou_rotated(bar, torch.tensor(up_right + down_right))
    assert iou[0, 0] > 0.01 and iou[0, 1] == 0
    assert standin.box_iou_rotated(bar[:0], bar).shape == (0, 1)


def test_pairwise_iou_rotated_through_detectron2():
    from detectron2.structures import RotatedBoxes, pairwise_iou_rotated

    g = torch.Generator().manual_seed(1)
    boxes1, boxes2 = random_rotated_boxes(g, 7), random_rotated_boxes(g, 5)
    iou = pairwise_iou_rotated(RotatedBoxes(boxes1), RotatedBoxes(boxes2))
    torch.testing.assert_close(iou, standin.box_iou_rotated(boxes1, boxes2), atol=1e-4, rtol=0)


def test_nms_rotated():
    from detectron2.layers import batched_nms_rotated, nms_rotated

    boxes = torch.tensor(
        [[10, 10, 8, 4, 30], [10.5, 10, 8, 4, 32], [30, 30, 8, 4, 0], [10, 10, 8, 4, 120]]
    )
    scores = torch.tensor([0.5, 0.9, 0.3, 0.8])
    keep = nms_rotated(boxes, scores, 0.5)
    # box 0 overlaps the better box 1 heavily; box 3 is crossed at ~90 degrees and survives
    assert keep.dtype == torch.int64 and keep.tolist() == [1, 3, 2]
    assert nms_rotated(boxes, scores, 1.0).tolist() == [1, 3, 0, 2]
    assert nms_rotated(boxes[:0], scores[:0], 0.5).numel() == 0
    keep = batched_nms_rotated(boxes, scores, torch.tensor([0, 1, 0, 0]), 0.5)
    assert sorted(keep.tolist()) == [0, 1, 2, 3]


# ---- ROIAlignRotated ------------------------------------------------------------------------------


def _rois(generator: torch.Generator, n: int, angle: float):
    corner = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 40 - 4
    size = torch.rand(n, 2, generator=generator, dtype=torch.float64) * 30
    batch = (torch.arange(n) % 2).double()[:, None]
    boxes = torch.cat([batch, corner, corner + size], dim=1)
    rotated = torch.cat(
        [batch, corner + size / 2, size, torch.full((n, 1), angle, dtype=torch.float64)], dim=1
    )
    return boxes, rotated


@pytest.mark.parametrize("sampling_ratio", [0, 2])
def test_roi_align_rotated_at_angle_zero_equals_aligned_roi_align(sampling_ratio):
    from detectron2.layers import ROIAlignRotated

    g = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 20, 24, dtype=torch.float64, generator=g, requires_grad=True)
    boxes, rotated = _rois(g, 10, angle=0.0)
    pooler = ROIAlignRotated((5, 4), spatial_scale=0.5, sampling_ratio=sampling_ratio)
    out = pooler(features, rotated)
    expected = roi_align(features, boxes, (5, 4), 0.5, sampling_ratio, aligned=True)
    torch.testing.assert_close(out, expected)
    grad = torch.randn(out.shape, dtype=out.dtype, generator=g)
    (got,) = torch.autograd.grad(out, features, grad)
    (want,) = torch.autograd.grad(expected, features, grad)
    torch.testing.assert_close(got, want)


def test_roi_align_rotated_half_turn_flips_the_output():
    from detectron2.layers import ROIAlignRotated

    g = torch.Generator().manual_seed(2)
    features = torch.randn(2, 3, 20, 24, dtype=torch.float64, generator=g)
    _, upright = _rois(g, 6, angle=0.0)
    turned = upright.clone()
    turned[:, 5] = 180.0
    pooler = ROIAlignRotated((4, 3), spatial_scale=1.0, sampling_ratio=2)
    torch.testing.assert_close(pooler(features, turned), pooler(features, upright).flip(-1, -2))


# ---- data, visualization, evaluation ----------------------------------------------------------------


def test_resize_shortest_edge_and_pil_linear_default():
    from detectron2.data import transforms as T

    image = np.random.default_rng(0).integers(0, 255, (30, 40, 3), dtype=np.uint8)
    aug_input = T.AugInput(image, boxes=np.array([[4.0, 6.0, 20.0, 24.0]]))
    transforms = T.AugmentationList([T.ResizeShortestEdge(60, max_size=100)])(aug_input)
    assert aug_input.image.shape == (60, 80, 3)
    np.testing.assert_allclose(aug_input.boxes, [[8.0, 12.0, 40.0, 48.0]])
    assert len(transforms) == 1
    extent = T.ExtentTransform(src_rect=(0, 0, 40, 30), output_size=(15, 20))  # interp=Image.LINEAR
    assert extent.apply_image(image).shape == (15, 20, 3)


def test_visualizer_draws_boxes():
    from detectron2.utils.visualizer import Visualizer

    image = np.zeros((64, 80, 3), dtype=np.uint8)
    drawn = Visualizer(image).overlay_instances(
        boxes=np.array([[10.0, 12.0, 50.0, 40.0]]), labels=["thing"]
    ).get_image()
    assert drawn.shape == image.shape
    assert drawn[12, 10:50].any() and not drawn[60, 70].any()
    rotated = Visualizer(image).draw_rotated_box_with_label([40, 32, 30, 10, 30]).get_image()
    assert rotated.any()


def test_coco_evaluator_scores_perfect_predictions(tmp_path):
    from detectron2.data import DatasetCatalog, MetadataCatalog
    from detectron2.data.datasets import register_coco_instances
    from detectron2.evaluation import COCOEvaluator
    from detectron2.structures import Boxes, Instances

    boxes = [[5.0, 5.0, 20.0, 10.0], [30.0, 8.0, 12.0, 25.0]]  # XYWH
    coco = {
        "images": [{"id": 1, "file_name": "a.jpg", "height": 48, "width": 64}],
        "annotations": [
            {"id": i + 1, "image_id": 1, "category_id": i + 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
            for i, b in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
    }
    json_file = tmp_path / "tiny_coco.json"
    json_file.write_text(json.dumps(coco))
    name = f"fiber_det_test_compat_{tmp_path.name}"
    register_coco_instances(name, {}, str(json_file), str(tmp_path))
    try:
        DatasetCatalog.get(name)  # loading sets the metadata's category id mapping, as training does
        evaluator = COCOEvaluator(
            name, output_dir=str(tmp_path), use_fast_impl=has_compiled_detectron2()
        )
        evaluator.reset()
        predictions = Instances((48, 64))
        predictions.pred_boxes = Boxes(torch.tensor([[5.0, 5.0, 25.0, 15.0], [30.0, 8.0, 42.0, 33.0]]))
        predictions.scores = torch.tensor([0.9, 0.8])
        predictions.pred_classes = torch.tensor([0, 1])
        evaluator.process([{"image_id": 1}], [{"instances": predictions}])
        results = evaluator.evaluate()
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    assert results["bbox"]["AP"] == pytest.approx(100.0)
