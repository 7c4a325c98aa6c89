"""Benchmark (not a test): images/second of augmented training epochs from CifarLoader.

python -m airbench.bench_loader [--data-dir DIR] [--epochs 10] [--translate 2] [--cutout 0] [--flip alternating]
Times whole epochs (flip, translate, cutout, shuffle, slicing every batch) with CUDA events after one untimed
warm-up epoch. Normalization is not timed: the loader does it once, when it is made, and keeps the result.
Without a GPU it runs on the CPU and says so.
"""
import torch

from airbench.errors import install_excepthook
from airbench.flags import Parser, check_ranges
from airbench.loader import CifarLoader, load_data
from airbench.table import Timer


def time_epochs(loader, epochs):
    for _ in loader:  # warm-up epoch: allocator, kernels
        pass
    timer = Timer(loader.device)
    with timer:
        for _ in range(epochs):
            for inputs, labels in loader:
                pass
    return timer.seconds


def main():
    install_excepthook()
    parser = Parser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument('--data-dir', default=None)
    parser.add_argument('--epochs', type=int, default=10)
    parser.add_argument('--batch-size', type=int, default=1024)
    parser.add_argument('--flip', default='alternating')
    parser.add_argument('--translate', type=int, default=2)
    parser.add_argument('--cutout', type=int, default=0)
    parser.add_argument('--out', default='results', help='results folder: the result is appended to bench/ there')
    args = parser.parse_args()
    args.subset = 0
    # the rungs' range checks (one-line errors), e.g. a translate past the image or a batch over 50,000
    check_ranges({'opt': {key: getattr(args, key) for key in ('epochs', 'batch_size')},
                  'aug': {key: getattr(args, key) for key in ('flip', 'translate', 'cutout')}}, args)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    images, labels = load_data(args)['train']
    loader = CifarLoader(images, labels, args.batch_size, device, train=True, flip=args.flip,
                         translate=args.translate, cutout=args.cutout)
    seconds = time_epochs(loader, args.epochs)
    name = torch.cuda.get_device_name() if device == 'cuda' else 'CPU (no GPU found)'
    images_seen = args.epochs * len(loader) * args.batch_size
    print(f'{name}: {images_seen / seconds:,.0f} images/s over {args.epochs} epochs '
          f'(flip {args.flip}, translate {args.translate}, cutout {args.cutout}, batch {args.batch_size})')
    from stats.bench import record_bench  # the results log lives in stats/, which the loader does not need
    settings = {key: getattr(args, key) for key in ('epochs', 'batch_size', 'flip', 'translate', 'cutout')}
    print('appended to ' + str(record_bench('loader', device, {'images_per_second': images_seen / seconds,
                                                               'seconds': seconds}, settings, args.out)))


if __name__ == '__main__':
    main()
