"""Raw items -> model-ready batches: images (path, array or PIL) and text (strings)."""

from __future__ import annotations

import functools
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from transferkit.errors import DataError

_INTERP = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "nearest": Image.Resampling.NEAREST}


def to_pil(item: Any) -> Image.Image:
    """Open/convert one image item to an RGB PIL image (grayscale, RGBA, 16-bit and floats handled)."""
    if isinstance(item, (str, Path)):
        try:
            with Image.open(item) as im:
                im.load()
                img = im
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {item}: {e}; remove or replace the file") from e
    elif isinstance(item, (bytes, bytearray, memoryview)):  # an encoded image (a streamed source's item)
        try:
            with Image.open(io.BytesIO(item)) as im:
                im.load()
                img = im
        except (OSError, ValueError, SyntaxError) as e:
            raise DataError(f"cannot decode an encoded image: {e}; fix or drop it") from e
    elif isinstance(item, Image.Image):
        img = item
    elif isinstance(item, np.ndarray):
        arr = item
        if arr.dtype != np.uint8:
            arr = arr.astype(np.float64)
            if not np.isfinite(arr).all():
                raise DataError("an image array holds NaN or inf: clean the array before extraction")
            hi = arr.max() if arr.size else 1.0
            scale = 255.0 if hi <= 1.0 else (255.0 / 65535.0 if hi > 255 else 1.0)
            arr = np.clip(arr * scale, 0, 255).astype(np.uint8)
        if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3, 4):
            arr = np.moveaxis(arr, 0, -1)  # CHW -> HWC
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        if arr.ndim not in (2, 3):
            raise DataError(f"an image array has shape {item.shape}: give H×W or H×W×C arrays")
        img = Image.fromarray(arr)
    else:
        raise DataError(f"cannot use an item of type {type(item).__name__} as an image: give paths, arrays or PIL")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr / max(arr.max(), 1.0) * 255.0, 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("RGB")


@dataclass(frozen=True)
class ImageCollate:
    """Resize the shorter side to `resize`, centre-crop `size`, scale to [0, 1], normalise by mean/std.

    Picklable (DataLoader workers) and JSON-describable (feature-cache key).
    """

    size: int
    resize: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    def describe(self) -> dict:
        """JSON-able parameters."""
        return {"kind": "image", **asdict(self)}

    def crop(self, item: Any) -> np.ndarray:
        """One item -> resized, centre-cropped uint8 H×W×3 array.

        Where the crop can be resized directly with the same result, only the crop is resized (`_crop_box`): on a
        224 px image resized to 256 and cropped to 224, the resize does (224/256)² of the work."""
        img = to_pil(item)
        w, h = img.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        if (nw, nh) != (w, h):
            (x0, x1, ow, left), (y0, y1, oh, top) = (_crop_box(w, nw, left, self.size),
                                                     _crop_box(h, nh, top, self.size))
            img = img.resize((ow, oh), _INTERP[self.interpolation], box=(x0, y0, x1, y1))
            nw, nh = ow, oh
        if (left, top, nw, nh) != (0, 0, self.size, self.size):
            img = img.crop((left, top, left + self.size, top + self.size))
        return np.asarray(img)

    def one(self, item: Any) -> np.ndarray:
        """One item -> float32 CHW array, normalised."""
        out = np.empty((3, self.size, self.size), np.float32)
        self._normalise(self.crop(item), out)
        return out

    def _normalise(self, pixels: np.ndarray, out: np.ndarray) -> None:
        """uint8 H×W×3 -> float32 3×H×W in `out`, by one table lookup per channel.

        The table holds (v / 255 - mean) / std computed in float32 for every byte v, the same operations in the
        same order as normalising the float image directly, so the values are bit-identical to that; a lookup
        reads one byte and writes one float per pixel instead of three float passes and a transpose."""
        table = _lookup_table(self.mean, self.std)
        for c in range(3):
            np.take(table[c], pixels[:, :, c], out=out[c])

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        out = np.empty((len(items), 3, self.size, self.size), np.float32)
        for i, it in enumerate(items):
            self._normalise(self.crop(it), out[i])
        return {"pixel_values": torch.from_numpy(out)}


@functools.cache
def _crop_box(size: int, new_size: int, offset: int, crop: int) -> tuple[float, float, int, int]:
    """One axis of a resize of `size` pixels to `new_size` followed by a crop of `crop` from `offset`, as a resize of
    a source interval: (start, end, output pixels, offset of the crop left to do afterwards).

    The crop's interval of the source, resized to `crop` pixels, gives the same bytes as the whole resize cropped
    when Pillow computes the same filter centres for it: its `precompute_coeffs` takes the interval as C floats and
    computes the centre of output pixel i as start + (i + 0.5) · (end - start) / out in doubles. Both intervals are
    checked here with the same arithmetic, every output pixel's centre compared; where any differs (a scale that is
    not a short binary fraction, e.g. 500 px to 341), the axis is resized whole and cropped, as before. A test
    compares the bytes of both routes over many sizes."""
    full = (0.0, float(size), new_size, offset)
    if offset == 0 and crop == new_size:
        return full
    scale = size / new_size
    start, end = np.float32(offset * scale), np.float32((offset + crop) * scale)
    if float(start) != offset * scale or float(end) != (offset + crop) * scale:
        return full
    sub = float(end - start) / crop  # Pillow: (double)(in1 - in0) / outSize, the difference taken in floats
    if sub != scale:
        return full
    centres = [float(start) + (i + 0.5) * sub for i in range(crop)]
    if centres != [(i + offset + 0.5) * scale for i in range(crop)]:
        return full
    return float(start), float(end), crop, 0


@functools.cache
def _lookup_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """(3, 256) float32: channel c's normalised value of each byte (see `ImageCollate._normalise`)."""
    v = np.arange(256, dtype=np.float32)[None, :].repeat(3, axis=0) / 255.0
    return np.ascontiguousarray((v - np.asarray(mean, np.float32)[:, None]) / np.asarray(std, np.float32)[:, None])


def image_collate(size: int, mean: Sequence[float], std: Sequence[float], crop_pct: float = 1.0,
                  interpolation: str = "bilinear") -> ImageCollate:
    """An `ImageCollate` for a square input of `size`, resizing to size/crop_pct before the crop."""
    return ImageCollate(size=int(size), resize=int(round(size / crop_pct)), mean=tuple(float(m) for m in mean),
                        std=tuple(float(s) for s in std), interpolation=interpolation)


@dataclass
class TextCollate:
    """Tokenise strings with a Hugging Face tokenizer, padding to the longest in the batch."""

    tokenizer: Any
    max_length: int
    name: str

    def describe(self) -> dict:
        """JSON-able parameters."""
        return {"kind": "text", "tokenizer": self.name, "max_length": self.max_length}

    def __call__(self, items: Sequence[Any]) -> dict[str, torch.Tensor]:
        texts = []
        for it in items:
            if not isinstance(it, str):
                raise DataError(f"a text backbone got an item of type {type(it).__name__}: give strings")
            texts.append(it)
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length,
                             return_tensors="pt")
        return dict(enc)
