"""Light label-free augmentation of image batches: zoom and shift, flips, contrast and brightness, mixup.

The teacher labels whatever comes out, so the augmented images need not keep their class; with task labels,
flips are left out and mixup mixes the two labels with the images' weights. Works in whatever normalization
the model's input uses (contrast and brightness are changed around each image's own mean and spread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F


CLEAN = 0.5  # the share of images left unchanged by zoom, shift, flip and contrast


@dataclass(frozen=True)
class ImageLayout:
    """Where a 4-D input keeps its channels: 'NCHW' or 'NHWC'."""

    layout: str


def image_layout(dims, elem_is_float: bool) -> Optional[ImageLayout]:
    """NCHW or NHWC when a model input of these dims looks like images (1, 3 or 4 channels, sides >= 8)."""
    if not elem_is_float or dims is None or len(dims) != 4:
        return None

    def side(d) -> bool:
        return not isinstance(d, int) or d >= 8

    if dims[1] in (1, 3, 4) and side(dims[2]) and side(dims[3]):
        return ImageLayout("NCHW")
    if dims[3] in (1, 3, 4) and side(dims[1]) and side(dims[2]):
        return ImageLayout("NHWC")
    return None


@dataclass
class Mix:
    """How a batch was mixed: sample i is weight[i] * x[i] + (1 - weight[i]) * x[partner[i]]."""

    partner: torch.Tensor
    weight: torch.Tensor


def augment(x: torch.Tensor, layout: ImageLayout, gen: torch.Generator, flips: bool) -> tuple[torch.Tensor, Mix]:
    """One augmented copy of the batch `x` (float32) and how it was mixed."""
    if layout.layout == "NHWC":
        x = x.permute(0, 3, 1, 2)
    n = x.shape[0]
    dev = x.device

    def uniform(lo: float, hi: float, *shape) -> torch.Tensor:
        return (torch.rand(*shape, generator=gen) * (hi - lo) + lo).to(dev)

    scale = uniform(0.85, 1.15, n)
    shift = uniform(-0.08, 0.08, n, 2)
    sign = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0).to(dev) if flips else torch.ones(n, device=dev)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = sign / scale
    theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    moved = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    mean = moved.mean(dim=(1, 2, 3), keepdim=True)
    spread = moved.std(dim=(1, 2, 3), keepdim=True)
    moved = mean + (moved - mean) * uniform(0.7, 1.3, n, 1, 1, 1) + spread * uniform(-0.15, 0.15, n, 1, 1, 1)
    keep = (torch.rand(n, generator=gen) < CLEAN).to(dev).reshape(n, 1, 1, 1)
    x = torch.where(keep, x, moved)  # a share of the batch stays as it was
    partner = torch.randperm(n, generator=gen).to(dev)
    weight = torch.where(torch.rand(n, generator=gen) < 0.5, uniform(0.55, 1.0, n).cpu(), torch.ones(n)).to(dev)
    w = weight.reshape(n, 1, 1, 1)
    x = w * x + (1 - w) * x[partner]
    if layout.layout == "NHWC":
        x = x.permute(0, 2, 3, 1)
    return x.contiguous(), Mix(partner, weight)
