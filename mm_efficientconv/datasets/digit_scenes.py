# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Detection and segmentation scenes composed from real handwritten digits.

scikit-learn's ``load_digits`` (1,797 real 8x8 grey scans of handwritten
digits, shipped inside the package) are split per digit image into a train
and a held-out pool (stratified by class, seeded), so no held-out scene
contains a digit image seen in training. Each scene is a canvas with a
noisy, graded background and some clutter (thin lines and dots that are not
digits), on which a few digits are upsampled to varied sizes and composited
as ink (alpha = the digit's grey value) at non-overlapping positions.

One set of scenes is written in two real on-disk formats::

    root/
    ├── JPEGImages/{train,val}_000000.jpg     the scenes (RGB JPEG)
    ├── annotations/instances_{train,val}.json
    │       COCO detection: bbox [x, y, w, h] = the ink extent of each digit,
    │       categories '0'..'9' (ids 1..10); each annotation also records
    │       the scikit-learn index of its digit image (``digit_index``)
    ├── SegmentationClass/<id>.png            VOC-style palette PNG:
    │       0 = background, 1 + d = ink of digit d; with ``ignore_edges``,
    │       255 = ignore (the soft edge of the ink, where the pixel is
    │       neither clearly ink nor not)
    ├── ImageSets/Segmentation/{train,val}.txt
    └── digit_scenes.json                     the writer's arguments and pools

so that mmdet's ``CocoDataset`` / ``CocoMetric`` and mmseg's
``BaseSegDataset`` / ``IoUMetric`` read them unchanged. Ink pixels are those
with alpha >= 0.5 (the box is their extent); the soft edge (0.15 <= alpha <
0.5) is background, or 255 with ``ignore_edges=True``. The band is off by
default because the class-weighted cross-entropy the segmentation demo needs
(the background is 80-90% of the pixels) cannot take a 255 label in mmseg
1.2.2: its weighted average indexes the class weights with every label.

The same arguments give byte-identical files (a seeded
``numpy.random.Generator`` draws everything). The root is written to a
temporary sibling directory and renamed into place, so an interrupted run
never leaves a half-written dataset.
"""
import json
import os
import os.path as osp
import shutil
import tempfile
from typing import Dict, List, Sequence, Tuple

import numpy as np
from PIL import Image, ImageDraw

DIGIT_CLASSES: Tuple[str, ...] = tuple(str(d) for d in range(10))
SEG_CLASSES: Tuple[str, ...] = ('background', ) + DIGIT_CLASSES
INK_THRESHOLD = 0.5
IGNORE_THRESHOLD = 0.15
IGNORE_INDEX = 255
MANIFEST = 'digit_scenes.json'
FORMAT_VERSION = 1


def seg_palette() -> List[Tuple[int, int, int]]:
    """The VOC colour map for the 11 segmentation classes (background black)."""
    from mm_efficientconv.testing.voc import voc_palette
    return [tuple(c) for c in voc_palette(len(SEG_CLASSES))]


def split_digits(test_fraction: float, seed: int) -> Dict[str, np.ndarray]:
    """Splits the indices of scikit-learn's digit images into ``'train'`` and
    ``'val'`` pools, stratified by class: each class gives
    ``round(test_fraction * n)`` of its images to ``'val'``."""
    from sklearn.datasets import load_digits
    labels = load_digits().target
    rng = np.random.default_rng([seed, 1])
    val = []
    for cls in range(10):
        idx = np.flatnonzero(labels == cls)
        val.extend(rng.permutation(idx)[:int(round(len(idx) * test_fraction))].tolist())
    is_val = np.zeros(len(labels), dtype=bool)
    is_val[val] = True
    return dict(train=np.flatnonzero(~is_val), val=np.flatnonzero(is_val))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Light, colour-tinted, graded, noisy background with clutter (H, W, 3) float."""
    base = rng.uniform(150, 230) + rng.uniform(-20, 20, size=3)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    gy, gx = rng.uniform(-30, 30, size=2)
    img = base[None, None, :] + (gy * yy + gx * xx)[..., None]
    img = img + rng.normal(0, 6, size=img.shape)
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    for _ in range(int(rng.integers(1, 5))):  # thin lines, lighter than the ink
        pts = [tuple(int(v) for v in rng.integers(0, size, size=2)) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(60, 170, size=3)), width=1)
    for _ in range(int(rng.integers(0, 4))):  # small dots
        cx, cy = rng.integers(0, size, size=2)
        r = int(rng.integers(1, 4))
        draw.ellipse([int(cx) - r, int(cy) - r, int(cx) + r, int(cy) + r],
                     fill=tuple(int(v) for v in rng.integers(40, 200, size=3)))
    return np.asarray(pil, dtype=np.float32)


def _digit_alpha(digit: np.ndarray, width: int, height: int) -> np.ndarray:
    """An 8x8 digit (values 0..16) upsampled bilinearly to ``height x width`` alpha in [0, 1]."""
    pil = Image.fromarray(digit.astype(np.float32) / 16.0)  # mode 'F'
    return np.clip(np.asarray(pil.resize((width, height), Image.Resampling.BILINEAR)), 0.0, 1.0)


def _overlaps(box: Sequence[int], boxes: Sequence[Sequence[int]], margin: int) -> bool:
    x1, y1, x2, y2 = box
    return any(x1 < b[2] + margin and b[0] < x2 + margin and y1 < b[3] + margin
               and b[1] < y2 + margin for b in boxes)


def compose_scene(rng: np.random.Generator, images: np.ndarray, labels: np.ndarray,
                  pool: np.ndarray, canvas_size: int, digits_per_image: Tuple[int, int],
                  digit_size: Tuple[int, int],
                  ignore_edges: bool = False) -> Tuple[np.ndarray, np.ndarray, List[dict]]:
    """One scene: ``(rgb uint8 (S, S, 3), label map uint8 (S, S), objects)``;
    each object is ``dict(label, digit_index, box=(x1, y1, x2, y2))`` (ink
    extent, exclusive ends). Digits are placed so that their boxes do not
    overlap (a digit that finds no free place after 50 tries is dropped; the
    first one always fits)."""
    img = _background(rng, canvas_size)
    seg = np.zeros((canvas_size, canvas_size), dtype=np.uint8)
    objects: List[dict] = []
    wanted = int(rng.integers(digits_per_image[0], digits_per_image[1] + 1))
    for _ in range(wanted):
        index = int(rng.choice(pool))
        side = int(rng.integers(digit_size[0], digit_size[1] + 1))
        aspect = rng.uniform(0.8, 1.2)
        w = int(np.clip(round(side * min(1.0, aspect)), 8, canvas_size))
        h = int(np.clip(round(side * min(1.0, 1 / aspect)), 8, canvas_size))
        alpha = _digit_alpha(images[index], w, h) * rng.uniform(0.85, 1.0)
        ys, xs = np.nonzero(alpha >= INK_THRESHOLD)
        if len(ys) == 0:
            continue
        ink = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        for _ in range(50):
            x0 = int(rng.integers(-ink[0], canvas_size - ink[2] + 1))
            y0 = int(rng.integers(-ink[1], canvas_size - ink[3] + 1))
            box = (x0 + ink[0], y0 + ink[1], x0 + ink[2], y0 + ink[3])
            if not _overlaps(box, [o['box'] for o in objects], margin=2):
                break
        else:
            continue
        # paste the part of the (w x h) patch that lies on the canvas
        cx1, cy1 = max(x0, 0), max(y0, 0)
        cx2, cy2 = min(x0 + w, canvas_size), min(y0 + h, canvas_size)
        a = alpha[cy1 - y0:cy2 - y0, cx1 - x0:cx2 - x0]
        colour = rng.uniform(0, 90, size=3).astype(np.float32)
        region = img[cy1:cy2, cx1:cx2]
        img[cy1:cy2, cx1:cx2] = region * (1 - a[..., None]) + colour * a[..., None]
        seg_region = seg[cy1:cy2, cx1:cx2]
        if ignore_edges:
            seg_region[(a >= IGNORE_THRESHOLD) & (seg_region == 0)] = IGNORE_INDEX
        seg_region[a >= INK_THRESHOLD] = 1 + int(labels[index])
        objects.append(dict(label=int(labels[index]), digit_index=index, box=box))
    return np.clip(np.round(img), 0, 255).astype(np.uint8), seg, objects


def _check_args(num_train, num_val, canvas_size, digits_per_image, digit_size,
                test_fraction, jpeg_quality):
    for name, value, low in (('num_train', num_train, 1), ('num_val', num_val, 1),
                             ('canvas_size', canvas_size, 32)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f'{name} must be an int >= {low}, got {value!r}')
    for name, pair, low in (('digits_per_image', digits_per_image, 1),
                            ('digit_size', digit_size, 8)):
        if (not isinstance(pair, (tuple, list)) or len(pair) != 2
                or not all(isinstance(v, int) for v in pair) or not low <= pair[0] <= pair[1]):
            raise ValueError(f'{name} must be a (min, max) pair of ints with '
                             f'{low} <= min <= max, got {pair!r}')
    if digit_size[1] > canvas_size:
        raise ValueError(f'digit_size max ({digit_size[1]}) must not exceed canvas_size '
                         f'({canvas_size})')
    if not 0 < test_fraction < 1:
        raise ValueError(f'test_fraction must be in (0, 1), got {test_fraction!r}')
    if not isinstance(jpeg_quality, int) or not 1 <= jpeg_quality <= 100:
        raise ValueError(f'jpeg_quality must be an int in [1, 100], got {jpeg_quality!r}')


def dataset_info(root: str) -> Dict:
    """What a config needs to point at the scenes under ``root``: ``data_root``,
    the class names and, per task and split, the dataset arguments relative to
    ``data_root``."""
    return dict(
        data_root=root,
        classes=DIGIT_CLASSES,
        seg_classes=SEG_CLASSES,
        det={
            split: dict(ann_file=f'annotations/instances_{split}.json',
                        data_prefix=dict(img='JPEGImages/'))
            for split in ('train', 'val')
        },
        seg={
            split: dict(ann_file=f'ImageSets/Segmentation/{split}.txt',
                        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
            for split in ('train', 'val')
        })


def _write_split(root: str, split: str, num_images: int, images: np.ndarray,
                 labels: np.ndarray, pool: np.ndarray, rng: np.random.Generator,
                 args: dict, palette_flat: List[int]) -> None:
    coco_images, annotations, ids = [], [], []
    for i in range(num_images):
        img, seg, objects = compose_scene(rng, images, labels, pool, args['canvas_size'],
                                          tuple(args['digits_per_image']),
                                          tuple(args['digit_size']), args['ignore_edges'])
        name = f'{split}_{i:06d}'
        ids.append(name)
        Image.fromarray(img).save(
            osp.join(root, 'JPEGImages', name + '.jpg'), format='JPEG',
            quality=args['jpeg_quality'])
        label_png = Image.fromarray(seg)  # mode 'L'
        label_png.putpalette(palette_flat)  # 'P' mode: the stored values stay the class ids
        label_png.save(osp.join(root, 'SegmentationClass', name + '.png'), format='PNG')
        image_id = i + 1
        coco_images.append(dict(id=image_id, file_name=name + '.jpg',
                                width=img.shape[1], height=img.shape[0]))
        for obj in objects:
            x1, y1, x2, y2 = obj['box']
            annotations.append(
                dict(id=len(annotations) + 1, image_id=image_id, category_id=obj['label'] + 1,
                     bbox=[float(x1), float(y1), float(x2 - x1), float(y2 - y1)],
                     area=float(int(np.count_nonzero(seg[y1:y2, x1:x2] == obj['label'] + 1))),
                     iscrowd=0, digit_index=obj['digit_index']))
    coco = dict(
        info=dict(description=f'mm_efficientconv digit scenes ({split}), composed from '
                  "scikit-learn's load_digits", version=str(FORMAT_VERSION)),
        licenses=[], images=coco_images, annotations=annotations,
        categories=[dict(id=d + 1, name=str(d), supercategory='digit') for d in range(10)])
    with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w',
              encoding='utf-8') as f:
        json.dump(coco, f)
    with open(osp.join(root, 'ImageSets', 'Segmentation', f'{split}.txt'), 'w',
              encoding='utf-8') as f:
        f.write(''.join(f'{name}\n' for name in ids))


def write_digit_scenes(root: str,
                       num_train: int = 1000,
                       num_val: int = 200,
                       canvas_size: int = 128,
                       digits_per_image: Tuple[int, int] = (3, 5),
                       digit_size: Tuple[int, int] = (22, 44),
                       test_fraction: float = 0.25,
                       seed: int = 0,
                       *,
                       jpeg_quality: int = 90,
                       ignore_edges: bool = False,
                       overwrite: bool = False) -> Dict:
    """Writes the digit scenes (COCO detection + VOC-style segmentation) under
    ``root``.

    If ``root`` already holds scenes written with the same arguments, nothing
    is written. A ``root`` holding anything else is never modified unless
    ``overwrite=True``.

    Args:
        root (str): Dataset root (the ``data_root`` of the demo configs).
        num_train (int): Training scenes. Defaults to 1000.
        num_val (int): Held-out scenes. Defaults to 200.
        canvas_size (int): Side of the square scenes in pixels. Defaults to 128.
        digits_per_image (tuple[int, int]): Inclusive range of digits drawn
            per scene (one that finds no free place is dropped). Defaults to
            ``(3, 5)``.
        digit_size (tuple[int, int]): Inclusive range of the side (pixels)
            of an upsampled 8x8 digit, before a 0.8-1.2 aspect jitter.
            Defaults to ``(22, 44)``.
        test_fraction (float): Share of each class's digit images reserved for
            the held-out scenes. Defaults to 0.25.
        seed (int): Seed of the split and of every drawn pixel. Defaults to 0.
        jpeg_quality (int): JPEG quality of the scenes. Defaults to 90.
        ignore_edges (bool): Label the soft edge of the ink 255 (ignore)
            instead of background (see the module docstring). Defaults to
            False.
        overwrite (bool): Replace a ``root`` written with other arguments.
            Defaults to False.

    Returns:
        dict: :func:`dataset_info` of ``root``, plus ``written`` (False when
        the scenes were already there).
    """
    _check_args(num_train, num_val, canvas_size, digits_per_image, digit_size, test_fraction,
                jpeg_quality)
    if not isinstance(ignore_edges, bool):
        raise ValueError(f'ignore_edges must be a bool, got {ignore_edges!r}')
    args = dict(format_version=FORMAT_VERSION, num_train=num_train, num_val=num_val,
                canvas_size=canvas_size, digits_per_image=list(digits_per_image),
                digit_size=list(digit_size), test_fraction=float(test_fraction), seed=int(seed),
                jpeg_quality=jpeg_quality, ignore_edges=ignore_edges)
    root = osp.abspath(root)
    manifest_path = osp.join(root, MANIFEST)
    if osp.exists(root):
        existing = None
        if osp.isfile(manifest_path):
            with open(manifest_path, encoding='utf-8') as f:
                existing = json.load(f).get('arguments')
        if existing == args:
            return dict(dataset_info(root), written=False)
        if not overwrite:
            what = 'digit scenes written with other arguments' if existing else 'other files'
            raise FileExistsError(f'{root} holds {what}; pass overwrite=True to replace it')

    from sklearn.datasets import load_digits
    digits = load_digits()
    images, labels = digits.images, digits.target
    pools = split_digits(test_fraction, seed)
    palette_flat = [c for rgb in seg_palette() for c in rgb]
    palette_flat += [0] * (768 - len(palette_flat))

    parent = osp.dirname(root)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=osp.basename(root) + '.tmp-', dir=parent)
    try:
        for sub in ('JPEGImages', 'SegmentationClass', 'annotations',
                    osp.join('ImageSets', 'Segmentation')):
            os.makedirs(osp.join(tmp, sub))
        for split, num, stream in (('train', num_train, 2), ('val', num_val, 3)):
            rng = np.random.default_rng([seed, stream])
            _write_split(tmp, split, num, images, labels, pools[split], rng, args, palette_flat)
        with open(osp.join(tmp, MANIFEST), 'w', encoding='utf-8') as f:
            json.dump(dict(arguments=args, classes=list(DIGIT_CLASSES),
                           pools={k: v.tolist() for k, v in pools.items()},
                           source="sklearn.datasets.load_digits"), f)
        old = None
        if osp.exists(root):
            old = tempfile.mkdtemp(prefix=osp.basename(root) + '.old-', dir=parent)
            os.rename(root, osp.join(old, 'data'))
        os.rename(tmp, root)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dict(dataset_info(root), written=True)
