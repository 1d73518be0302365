"""Image preprocessing: resizing only the crop gives the bytes of resizing the whole image and cropping it."""

import numpy as np
import pytest
from PIL import Image

from transferkit.backbones.preprocess import ImageCollate, _crop_box

_PIL = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


def _resize_then_crop(img: Image.Image, resize: int, size: int, interpolation: str) -> np.ndarray:
    """The plain route: the shorter side to `resize` (the whole image), then the centre crop."""
    w, h = img.size
    scale = resize / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), _PIL[interpolation])
    left, top = (nw - size) // 2, (nh - size) // 2
    return np.asarray(img.crop((left, top, left + size, top + size)))


@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("resize,size", [(256, 224), (224, 224), (232, 224), (292, 256), (36, 32)])
def test_resizing_only_the_crop_gives_the_bytes_of_the_plain_route(interpolation, resize, size):
    rng = np.random.default_rng(resize + size)
    collate = ImageCollate(size=size, resize=resize, mean=(0.5,) * 3, std=(0.5,) * 3, interpolation=interpolation)
    for w, h in [(224, 224), (500, 375), (375, 500), (300, 300), (640, 480), (100, 100), (256, 256), (28, 28),
                 (1000, 999), (231, 257), (512, 384), (96, 128), (224, 300), (8, 8)]:
        img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
        np.testing.assert_array_equal(collate.crop(img), _resize_then_crop(img, resize, size, interpolation),
                                      err_msg=f"{w}x{h} -> {resize} -> {size}")


def test_the_crop_alone_is_resized_where_pillow_computes_the_same_centres():
    assert _crop_box(224, 256, 16, 224) == (14.0, 210.0, 224, 0)  # timm's 224 -> 256 -> 224: a short binary scale
    assert _crop_box(375, 256, 0, 256) == (0.0, 375.0, 256, 0)  # nothing cropped on this axis
    # 500 px to 341: the centres computed from the crop's interval differ in the last bits; Pillow's bytes then
    # differ too (27 of 172,032 values of a random image), so this axis is resized whole and cropped afterwards
    assert _crop_box(500, 341, 58, 224) == (0.0, 500.0, 341, 58)
