"""Seeded augmentation of image training items: "light" = random resized crop (60-100 % of the area, aspect 3/4
to 4/3, back to the image's own size) + horizontal flip; "strong" = light + TrivialAugment (Müller & Hutter
2021, torchvision's TrivialAugmentWide).

Each item's transform is drawn from its own generator seeded by (run seed, epoch, item index), so an epoch sees
the same augmented items whatever the batching, the number of processes or data-loader workers, and a resumed
run computes exactly what an uninterrupted one does. The backbone's own preprocessing (resize, crop, normalise)
runs after it, as at prediction time, where nothing is augmented.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

AUGMENTS = ("none", "light", "strong", "auto")


def resolve_augment(augment: str, modality: str) -> str:
    """"auto" -> "light" for images, "none" for text (texts are not augmented here)."""
    if augment == "auto":
        return "light" if modality == "image" else "none"
    return augment


class Augment:
    """item, epoch, index -> an augmented PIL image (see the module docstring)."""

    def __init__(self, level: str, seed: int) -> None:
        if level not in ("light", "strong"):
            raise ValueError(f"augmentation level {level!r} is not light or strong")
        self.level, self.seed = level, int(seed)

    def __call__(self, item: Any, epoch: int, index: int) -> Any:
        from torchvision.transforms import RandomResizedCrop, v2
        from torchvision.transforms.v2 import functional as F  # noqa: N812

        from transferkit.backbones.preprocess import to_pil

        img = to_pil(item)
        seed = int(np.random.SeedSequence([self.seed, int(epoch), int(index)]).generate_state(1)[0])
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            top, left, h, w = RandomResizedCrop.get_params(img, scale=[0.6, 1.0], ratio=[3 / 4, 4 / 3])
            img = F.resized_crop(img, top, left, h, w, [img.height, img.width], antialias=True)
            if torch.rand(()) < 0.5:
                img = F.horizontal_flip(img)
            if self.level == "strong":
                img = v2.TrivialAugmentWide()(img)
        return img
