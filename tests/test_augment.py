"""Each augmentation's defining property, and the loader's batching and determinism."""
import pytest
import torch
import torch.nn.functional as F

from airbench.augment import batch_cutout, batch_flip_lr, batch_translate, random_flip_mask
from airbench.errors import UserError
from airbench.loader import CifarLoader


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def distinct_images(n, size=32):
    """Every pixel different, so a shifted or mirrored image can be recognized exactly."""
    return torch.randn(n, 3, size, size)


def test_translate_keeps_size_and_shifts_content():
    images = distinct_images(200)
    out = batch_translate(images, 2, generator())
    assert out.shape == images.shape
    padded = F.pad(images, (2,) * 4, mode='reflect')
    shifts = []
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(5) for dx in range(5)
                   if torch.equal(out[i], padded[i, :, dy:dy + 32, dx:dx + 32])]
        assert len(matches) == 1
        shifts.append(matches[0])
    assert len(set(shifts)) == 25  # every offset occurs
    assert torch.equal(batch_translate(images, 0, generator()), images)
    channels_last = batch_translate(images.contiguous(memory_format=torch.channels_last), 2, generator())
    assert channels_last.is_contiguous(memory_format=torch.channels_last) and torch.equal(channels_last, out)


def test_random_flip_is_about_half():
    images = distinct_images(4000, size=4)
    mask = random_flip_mask(len(images), generator())
    out = batch_flip_lr(images, mask)
    flipped = torch.tensor([torch.equal(o, i.flip(-1)) for o, i in zip(out, images)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, images)])
    assert torch.equal(flipped, mask) and torch.equal(kept, ~mask)
    assert 0.45 < flipped.float().mean() < 0.55


@pytest.mark.parametrize('size', [1, 5, 12])
def test_cutout_zeroes_exactly_the_square(size):
    images = torch.rand(300, 3, 32, 32) + 1  # no zeros before cutout
    out = batch_cutout(images, size, generator())
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2])
    for square in zero[:, 0]:
        rows, cols = square.any(1).nonzero().flatten(), square.any(0).nonzero().flatten()
        assert square.sum() == size * size
        assert len(rows) == size and len(cols) == size and rows[-1] - rows[0] == size - 1
    assert torch.equal(out[~zero], images[~zero])
    channels_last = batch_cutout(images.contiguous(memory_format=torch.channels_last), size, generator())
    assert channels_last.is_contiguous(memory_format=torch.channels_last) and torch.equal(channels_last, out)


def uint8_dataset(n):
    images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=generator(1))
    return images, torch.arange(n)  # labels are image ids here


def test_alternating_flip_shows_each_image_both_ways_over_two_epochs():
    images, ids = uint8_dataset(500)
    loader = CifarLoader(images, ids, 100, 'cpu', train=True, flip='alternating')
    plain = loader.normalize(loader.images)
    epochs = []
    for _ in range(4):
        flipped = torch.zeros(len(ids), dtype=torch.bool)
        for x, y in loader:
            for img, i in zip(x, y):
                assert torch.equal(img, plain[i]) or torch.equal(img, plain[i].flip(-1))
                flipped[i] = torch.equal(img, plain[i].flip(-1))
        epochs.append(flipped)
    assert torch.equal(epochs[0], ~epochs[1]) and torch.equal(epochs[1], ~epochs[2])
    assert torch.equal(epochs[0], epochs[2]) and torch.equal(epochs[1], epochs[3])
    assert 0.4 < epochs[0].float().mean() < 0.6


def batches(loader, epochs=2):
    return [(x.clone(), y.clone()) for _ in range(epochs) for x, y in loader]


def test_same_seed_same_batches_and_reseed():
    images, labels = uint8_dataset(300)
    make = lambda seed: CifarLoader(images, labels, 64, 'cpu', train=True, flip='random', translate=2,
                                    cutout=4, seed=seed)
    a, b, c = batches(make(7)), batches(make(7)), batches(make(8))
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, c))
    loader = make(8)
    batches(loader)
    loader.reseed(7)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(a, batches(loader)))


def test_batching_shuffle_and_drop_last():
    images, labels = uint8_dataset(250)
    train = CifarLoader(images, labels, 100, 'cpu', train=True)
    assert len(train) == 2 and [len(y) for _, y in train] == [100, 100]
    test = CifarLoader(images, labels, 100, 'cpu')
    seen = torch.cat([y for _, y in test])
    assert len(test) == 3 and torch.equal(seen, labels)  # in order, nothing dropped
    x, _ = next(iter(test))
    assert x.dtype == torch.float32 and abs(test.normalize(test.images).mean()) < 0.5
    with pytest.raises(UserError, match="flip must be one of none, random, alternating, got 'sideways'"):
        CifarLoader(images, labels, 100, 'cpu', flip='sideways')


def test_augmented_epochs_leave_the_kept_normalized_images_untouched():
    images, labels = uint8_dataset(200)
    loader = CifarLoader(images, labels, 50, 'cpu', train=True, flip='alternating', translate=2, cutout=8)
    for _ in range(3):
        batches(loader)
    assert torch.equal(loader.normalized_images, loader.normalize(loader.images))
    plain = CifarLoader(images, labels, 50, 'cpu')
    first, second = batches(plain, epochs=1), batches(plain, epochs=1)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first, second))
    assert torch.equal(torch.cat([x for x, _ in first]), plain.normalize(plain.images))


def test_with_labels_shares_the_images_and_changes_only_the_labels():
    images, labels = uint8_dataset(200)
    loader = CifarLoader(images, labels, 50, 'cpu', train=True, flip='alternating', translate=2)
    random_labels = torch.randint_like(labels, 10)
    twin = loader.with_labels(random_labels)
    assert twin.images.data_ptr() == loader.images.data_ptr()
    assert twin.normalized_images.data_ptr() == loader.normalized_images.data_ptr()  # not normalized twice
    assert torch.equal(twin.labels, random_labels) and torch.equal(loader.labels, labels)
    loader.reseed(3), twin.reseed(3)
    for (x1, y1), (x2, y2) in zip(batches(loader, epochs=2), batches(twin, epochs=2)):
        assert torch.equal(x1, x2)  # same images, same augmentation for the same seed
    assert loader.epoch == 2 and twin.epoch == 2
    with pytest.raises(ValueError, match='199 labels for 200 images'):
        loader.with_labels(labels[:199])


def test_fp16_normalization_rounds_once():
    """On CUDA the loader keeps fp16 images: computed in float32 and rounded once, not divided in fp16 first."""
    values = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 16, 16)
    loader = CifarLoader(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), 1, 'cpu')
    loader.dtype = torch.float16
    exact = ((values.double() / 255 - loader.mean.double()) / loader.std.double()).half()
    assert torch.equal(loader.normalize(values), exact)
