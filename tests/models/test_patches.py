"""The box grid covers the slice for any patch size; stitching averages overlaps."""

from __future__ import annotations

import pytest
import torch

from mriad.models.patches import box_masks, coverage, grid_boxes, grid_starts, random_boxes, stitch


@pytest.mark.parametrize(
    ("patch", "starts"), [(32, [0, 32, 64]), (48, [0, 48]), (60, [0, 36]), (96, [0]), (40, [0, 28, 56]), (200, [0])]
)
def test_grid_starts_are_evenly_spaced(patch: int, starts: list[int]) -> None:
    assert grid_starts(96, patch) == starts


@pytest.mark.parametrize("patch", [32, 48, 60, 96, 17, 1])
def test_grid_covers_every_pixel(patch: int) -> None:
    boxes = grid_boxes(96, 96, patch)
    n = -(-96 // patch)
    assert boxes.shape == (n * n, 4)
    assert torch.all(boxes[:, 2] - boxes[:, 0] == min(patch, 96))
    assert torch.all((boxes[:, :2] >= 0) & (boxes[:, 2:] <= 96))
    count = coverage(box_masks(boxes, 96, 96))
    assert count.min().item() >= 1
    if patch in (32, 48, 96):
        assert count.max().item() == 1  # these tile 96 exactly: no overlap
    if patch == 60:
        assert count.max().item() == 4  # the centre 24x24 is covered by all four boxes


def test_random_boxes_lie_inside() -> None:
    boxes = random_boxes(500, 96, 80, 48, torch.Generator().manual_seed(0), "cpu")
    assert torch.all(boxes[:, 0] >= 0) and torch.all(boxes[:, 2] <= 96)
    assert torch.all(boxes[:, 1] >= 0) and torch.all(boxes[:, 3] <= 80)
    assert boxes[:, 0].max().item() == 48 and boxes[:, 0].min().item() == 0


def test_masks_match_the_boxes() -> None:
    masks = box_masks(torch.tensor([[2, 3, 5, 7]]), 8, 10)
    expected = torch.zeros(1, 1, 8, 10, dtype=torch.bool)
    expected[..., 2:5, 3:7] = True
    assert torch.equal(masks, expected)


@pytest.mark.parametrize("patch", [32, 48, 60])
def test_stitching_identical_predictions_gives_the_image(patch: int) -> None:
    image = torch.rand(3, 1, 96, 96)
    masks = box_masks(grid_boxes(96, 96, patch), 96, 96)
    predictions = image[:, None].expand(3, masks.shape[0], 1, 96, 96)
    torch.testing.assert_close(stitch(predictions, masks), image)
