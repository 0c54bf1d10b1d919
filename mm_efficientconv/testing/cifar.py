# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Mini CIFAR-10 / CIFAR-100 in the official "python version" format::

    root/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}
    root/cifar-100-python/{train, test, meta}

Each batch is a pickled dict with ``data`` (N x 3072 uint8, channel-major
32x32 RGB), ``labels`` (CIFAR-10) or ``fine_labels``/``coarse_labels``
(CIFAR-100), ``batch_label`` and ``filenames``.

mmpretrain's ``CIFAR10``/``CIFAR100`` verify every file against the md5 sums
of the official archives and no dataset argument turns that off
(``download=False`` only changes the failure into an error). Synthetic files
cannot match those sums, so reading them with the real dataset classes needs
:func:`cifar_integrity_check_disabled`, which keeps the existence check and
skips only the md5 comparison.
"""
import contextlib
import os.path as osp
import pickle
from typing import Dict, Iterator, List

import numpy as np

from ._common import check_count, classification_image, makedirs

CIFAR10_CLASSES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse',
                   'ship', 'truck')
CIFAR100_CLASSES = (
    'apple', 'aquarium_fish', 'baby', 'bear', 'beaver', 'bed', 'bee', 'beetle', 'bicycle',
    'bottle', 'bowl', 'boy', 'bridge', 'bus', 'butterfly', 'camel', 'can', 'castle',
    'caterpillar', 'cattle', 'chair', 'chimpanzee', 'clock', 'cloud', 'cockroach', 'couch',
    'crab', 'crocodile', 'cup', 'dinosaur', 'dolphin', 'elephant', 'flatfish', 'forest', 'fox',
    'girl', 'hamster', 'house', 'kangaroo', 'keyboard', 'lamp', 'lawn_mower', 'leopard', 'lion',
    'lizard', 'lobster', 'man', 'maple_tree', 'motorcycle', 'mountain', 'mouse', 'mushroom',
    'oak_tree', 'orange', 'orchid', 'otter', 'palm_tree', 'pear', 'pickup_truck', 'pine_tree',
    'plain', 'plate', 'poppy', 'porcupine', 'possum', 'rabbit', 'raccoon', 'ray', 'road',
    'rocket', 'rose', 'sea', 'seal', 'shark', 'shrew', 'skunk', 'skyscraper', 'snail', 'snake',
    'spider', 'squirrel', 'streetcar', 'sunflower', 'sweet_pepper', 'table', 'tank',
    'telephone', 'television', 'tiger', 'tractor', 'train', 'trout', 'tulip', 'turtle',
    'wardrobe', 'whale', 'willow_tree', 'wolf', 'woman', 'worm')
CIFAR100_COARSE_CLASSES = (
    'aquatic_mammals', 'fish', 'flowers', 'food_containers', 'fruit_and_vegetables',
    'household_electrical_devices', 'household_furniture', 'insects', 'large_carnivores',
    'large_man-made_outdoor_things', 'large_natural_outdoor_scenes',
    'large_omnivores_and_herbivores', 'medium_mammals', 'non-insect_invertebrates', 'people',
    'reptiles', 'small_mammals', 'trees', 'vehicles_1', 'vehicles_2')


def _batch(rng: np.random.Generator, count: int, num_classes: int, prefix: str):
    labels = [int(v) for v in rng.integers(0, num_classes, size=count)]
    data = np.stack([
        classification_image(rng, label, 32, 32).transpose(2, 0, 1).reshape(-1)
        for label in labels
    ]) if count else np.zeros((0, 3072), dtype=np.uint8)
    filenames = [f'{prefix}_{i:05d}.png' for i in range(count)]
    return labels, data.astype(np.uint8), filenames


def _dump(obj, path: str) -> None:
    makedirs(osp.dirname(path))
    with open(path, 'wb') as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar10(root: str,
                  num_images: int = 10,
                  image_size: int = 32,
                  num_classes: int = 10,
                  seed: int = 0,
                  *,
                  num_val_images: int = 4) -> Dict:
    """Writes mini CIFAR-10 python batches under ``root/cifar-10-batches-py``.

    Args:
        root (str): ``data_root`` of a CIFAR-10 config.
        num_images (int): Training images, spread over the five
            ``data_batch_*`` files (at least 5). Defaults to 10.
        image_size (int): Must be 32 (the format stores 32x32 images).
            Defaults to 32.
        num_classes (int): Labels are drawn from ``0 .. num_classes - 1``
            (at most 10). Defaults to 10.
        seed (int): Seed. Defaults to 0.
        num_val_images (int): Images in ``test_batch``. Defaults to 4.

    Returns:
        dict: ``data_root``, ``splits`` (``'train'``: ``split='train'``,
        ``'val'``: ``split='test'``), ``classes``.
    """
    return _write_cifar(root, num_images, image_size, num_classes, seed, num_val_images,
                        cifar100=False)


def write_cifar100(root: str,
                   num_images: int = 10,
                   image_size: int = 32,
                   num_classes: int = 100,
                   seed: int = 0,
                   *,
                   num_val_images: int = 4) -> Dict:
    """Writes mini CIFAR-100 python files under ``root/cifar-100-python``.

    Args:
        root (str): ``data_root`` of a CIFAR-100 config.
        num_images (int): Images in ``train``. Defaults to 10.
        image_size (int): Must be 32. Defaults to 32.
        num_classes (int): Fine labels from ``0 .. num_classes - 1`` (at most
            100); the coarse label of fine label ``i`` is ``i % 20`` (synthetic).
            Defaults to 100.
        seed (int): Seed. Defaults to 0.
        num_val_images (int): Images in ``test``. Defaults to 4.

    Returns:
        dict: ``data_root``, ``splits`` (``'train'``/``'val'`` as for
        :func:`write_cifar10`), ``classes``.
    """
    return _write_cifar(root, num_images, image_size, num_classes, seed, num_val_images,
                        cifar100=True)


def _write_cifar(root, num_images, image_size, num_classes, seed, num_val_images, cifar100):
    if image_size != 32 and image_size != (32, 32):
        raise ValueError(f'image_size must be 32 for CIFAR (the format is 32x32), '
                         f'got {image_size!r}')
    classes = CIFAR100_CLASSES if cifar100 else CIFAR10_CLASSES
    check_count(num_images, 'num_images', minimum=1 if cifar100 else 5)
    check_count(num_val_images, 'num_val_images')
    check_count(num_classes, 'num_classes')
    if num_classes > len(classes):
        raise ValueError(f'num_classes must be <= {len(classes)}, got {num_classes}')
    rng = np.random.default_rng(seed)
    if cifar100:
        folder = osp.join(root, 'cifar-100-python')
        for name, count in (('train', num_images), ('test', num_val_images)):
            labels, data, filenames = _batch(rng, count, num_classes, name)
            _dump(dict(filenames=filenames, batch_label=f'{name} batch 1 of 1',
                       fine_labels=labels, coarse_labels=[v % 20 for v in labels], data=data),
                  osp.join(folder, name))
        _dump(dict(fine_label_names=list(CIFAR100_CLASSES),
                   coarse_label_names=list(CIFAR100_COARSE_CLASSES)), osp.join(folder, 'meta'))
    else:
        folder = osp.join(root, 'cifar-10-batches-py')
        sizes: List[int] = [num_images // 5 + (1 if i < num_images % 5 else 0) for i in range(5)]
        for i, count in enumerate(sizes, 1):
            labels, data, filenames = _batch(rng, count, num_classes, f'train{i}')
            _dump(dict(batch_label=f'training batch {i} of 5', labels=labels, data=data,
                       filenames=filenames), osp.join(folder, f'data_batch_{i}'))
        labels, data, filenames = _batch(rng, num_val_images, num_classes, 'test')
        _dump(dict(batch_label='testing batch 1 of 1', labels=labels, data=data,
                   filenames=filenames), osp.join(folder, 'test_batch'))
        _dump(dict(num_cases_per_batch=max(sizes), label_names=list(CIFAR10_CLASSES),
                   num_vis=3072), osp.join(folder, 'batches.meta'))
    splits = dict(train=dict(split='train'), val=dict(split='test'))
    return dict(data_root=root, splits=splits, classes=classes)


@contextlib.contextmanager
def cifar_integrity_check_disabled() -> Iterator[None]:
    """Within the block, mmpretrain's ``CIFAR10``/``CIFAR100`` accept files
    that exist but do not match the official md5 sums (synthetic data); the
    original check is restored on exit."""
    from mmpretrain.datasets import cifar as cifar_module

    original = cifar_module.CIFAR10._check_integrity

    def _exists_only(self) -> bool:
        root = self.data_prefix['root']
        return all(
            osp.exists(osp.join(root, self.base_folder, name))
            for name, _ in self.train_list + self.test_list)

    cifar_module.CIFAR10._check_integrity = _exists_only
    try:
        yield
    finally:
        cifar_module.CIFAR10._check_integrity = original
