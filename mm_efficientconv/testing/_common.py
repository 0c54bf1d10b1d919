# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Shared helpers of the mini-dataset writers: deterministic colours, image
synthesis and file output.

Every writer draws its pixels from a :class:`numpy.random.Generator` seeded by
the writer's ``seed`` argument, so the same call writes byte-identical files.
Images are "random but structured": a low-contrast noisy background with
flat-coloured rectangles whose colour encodes the class, so boxes, masks and
labels agree with the pixels and a trained model could learn them.
"""
import os
import os.path as osp
from typing import Sequence, Tuple, Union

import numpy as np
from PIL import Image

SizeLike = Union[int, Tuple[int, int]]


def as_wh(image_size: SizeLike, name: str = 'image_size') -> Tuple[int, int]:
    """Returns ``(width, height)`` from an int (square) or a ``(w, h)`` pair.

    Args:
        image_size (int | tuple[int, int]): Square side or ``(width, height)``.
        name (str): Argument name used in the error message.
            Defaults to ``'image_size'``.
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        w = h = image_size
    elif (isinstance(image_size, (tuple, list)) and len(image_size) == 2
          and all(isinstance(v, int) and not isinstance(v, bool) for v in image_size)):
        w, h = image_size
    else:
        raise ValueError(f'{name} must be an int or a (width, height) pair of ints, '
                         f'got {image_size!r}')
    if w < 8 or h < 8:
        raise ValueError(f'{name} must be at least 8x8 pixels, got {image_size!r}')
    return int(w), int(h)


def check_count(value: int, name: str, minimum: int = 1) -> int:
    """Validates a positive count argument and returns it."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')
    return value


def class_colour(label: int) -> Tuple[int, int, int]:
    """A deterministic, well-separated RGB colour for a class index."""
    # Multiplicative hashing on three co-prime strides spreads neighbouring
    # labels far apart in colour space.
    return ((label * 97 + 53) % 224 + 16, (label * 157 + 101) % 224 + 16,
            (label * 211 + 29) % 224 + 16)


def background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A noisy, slightly graded grey background (H, W, 3) uint8 RGB image."""
    base = rng.integers(90, 160)
    ramp = np.linspace(-12, 12, width, dtype=np.float32)[None, :, None]
    noise = rng.normal(0, 6, size=(height, width, 3)).astype(np.float32)
    img = np.clip(base + ramp + noise, 0, 255)
    return img.astype(np.uint8)


def fill_rect(img: np.ndarray, rng: np.random.Generator, box: Sequence[int],
              colour: Sequence[int]) -> None:
    """Fills ``box = (x1, y1, x2, y2)`` (exclusive end) with a lightly noisy
    flat colour, in place."""
    x1, y1, x2, y2 = box
    patch = np.asarray(colour, dtype=np.float32)[None, None, :] + rng.normal(
        0, 4, size=(y2 - y1, x2 - x1, 3)).astype(np.float32)
    img[y1:y2, x1:x2] = np.clip(patch, 0, 255).astype(np.uint8)


def random_box(rng: np.random.Generator, width: int, height: int,
               min_frac: float = 0.2, max_frac: float = 0.6) -> Tuple[int, int, int, int]:
    """A random box ``(x1, y1, x2, y2)`` inside the image (exclusive end), its
    sides between ``min_frac`` and ``max_frac`` of the image sides."""
    bw = int(rng.integers(max(2, int(width * min_frac)), max(3, int(width * max_frac)) + 1))
    bh = int(rng.integers(max(2, int(height * min_frac)), max(3, int(height * max_frac)) + 1))
    bw, bh = min(bw, width), min(bh, height)
    x1 = int(rng.integers(0, width - bw + 1))
    y1 = int(rng.integers(0, height - bh + 1))
    return x1, y1, x1 + bw, y1 + bh


def classification_image(rng: np.random.Generator, label: int, width: int,
                         height: int) -> np.ndarray:
    """An RGB image whose dominant rectangle has the colour of ``label``."""
    img = background(rng, width, height)
    fill_rect(img, rng, random_box(rng, width, height, 0.45, 0.9), class_colour(label))
    return img


def makedirs(path: str) -> str:
    os.makedirs(path, exist_ok=True)
    return path


def save_rgb(img: np.ndarray, path: str, quality: int = 95) -> None:
    """Writes an RGB uint8 array as JPEG or PNG (by the file extension)."""
    makedirs(osp.dirname(path) or '.')
    ext = osp.splitext(path)[1].lower()
    pil = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    if ext in ('.jpg', '.jpeg'):
        pil.save(path, format='JPEG', quality=quality)
    else:
        pil.save(path, format='PNG')


def save_label_png(label: np.ndarray, path: str, palette: Sequence[Sequence[int]] = None) -> None:
    """Writes a (H, W) uint8 label map as an 8-bit PNG: greyscale (mode ``L``)
    without ``palette``, indexed colour (mode ``P``) with it; either way the
    stored pixel values are the class indices."""
    makedirs(osp.dirname(path) or '.')
    pil = Image.fromarray(np.ascontiguousarray(label, dtype=np.uint8))
    if palette is not None:
        flat = [int(c) for rgb in palette for c in rgb]
        flat += [0] * (768 - len(flat))
        pil.putpalette(flat)  # turns the 'L' image into 'P', keeping the indices
    pil.save(path, format='PNG')
