# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Writers of tiny synthetic datasets in the real on-disk formats, and the
dry run that uses them.

Each ``write_<format>(root, num_images, image_size, num_classes, seed)`` writes
a deterministic mini dataset under ``root`` and returns what a config needs to
point at it: ``data_root`` and ``splits`` (per split, the dataset arguments
relative to ``data_root``). :mod:`.dry_run` (imported on demand:
``from mm_efficientconv.testing.dry_run import dry_run``) trains a config for
a few iterations on them; ``tools/misc/dry_run.py`` is its command line.
"""
from .cifar import cifar_integrity_check_disabled, write_cifar10, write_cifar100
from .cityscapes import write_cityscapes
from .coco import COCO_CLASSES, write_coco
from .fine_grained import write_stanford_dogs
from .imagenet import write_imagenet
from .voc import write_voc12aug

__all__ = [
    'write_coco', 'write_cityscapes', 'write_voc12aug', 'write_cifar10', 'write_cifar100',
    'write_imagenet', 'write_stanford_dogs', 'cifar_integrity_check_disabled', 'COCO_CLASSES'
]
