# Copyright (c) mm_efficientconv contributors. All rights reserved.
"""Write the digit scenes of the dense demo (COCO detection + VOC-style
segmentation, composed from scikit-learn's real handwritten digits).

The configs in configs/demo read them from ``work_dirs/demo/digit_scenes/``
(the default ROOT). See :func:`mm_efficientconv.datasets.write_digit_scenes`.

Example:
    python tools/demo/write_digit_scenes.py work_dirs/demo/digit_scenes --seed 0
"""
import argparse
import sys

from mm_efficientconv.datasets.digit_scenes import write_digit_scenes


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('root', nargs='?', default='work_dirs/demo/digit_scenes')
    parser.add_argument('--num-train', type=int, help='training scenes (default: 1000)')
    parser.add_argument('--num-val', type=int, help='held-out scenes (default: 200)')
    parser.add_argument('--canvas-size', type=int, help='scene side in pixels (default: 128)')
    parser.add_argument('--seed', type=int, help='seed (default: 0, as the demo)')
    parser.add_argument('--ignore-edges', action='store_true',
                        help='label the soft edge of the ink 255 (ignore) instead of background')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace ROOT if it holds scenes written with other arguments')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    given = {k: v for k, v in vars(args).items()
             if k in ('num_train', 'num_val', 'canvas_size', 'seed') and v is not None}
    info = write_digit_scenes(args.root, ignore_edges=args.ignore_edges,
                              overwrite=args.overwrite, **given)
    print(('wrote ' if info['written'] else 'already there: ') + info['data_root'])
    return 0


if __name__ == '__main__':
    sys.exit(main())
