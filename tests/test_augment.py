"""Each augmentation's defining property, and the loader's batching and determinism."""
import pytest
import torch
import torch.nn.functional as F

from airbench.augment import (batch_crop, batch_cutout_, crop_windows, pad_and_mirror, random_flip_mask,
                              random_offsets, random_squares, window_columns)
from common.errors import UserError
from airbench.loader import CifarLoader


def generator(seed=0):
    return torch.Generator().manual_seed(seed)


def distinct_images(n, size=32):
    """Every pixel different, so a shifted or mirrored image can be recognized exactly."""
    return torch.randn(n, 3, size, size)


def padded_reference(images, pad):
    """The plain way: F.pad's reflect padding of [N,C,H,W] images."""
    return F.pad(images, (pad,) * 4, mode='reflect') if pad else images


def crop_reference(padded, index, dy, dx, flip, h, w):
    """The crop as a per-image slicing loop: image index[i] of the padded set, mirrored if flip[i], cut at its
    offset (dy[i], dx[i])."""
    out = []
    for n, y, x, f in zip(index.tolist(), dy.tolist(), dx.tolist(), flip.tolist()):
        image = padded[n].flip(-1) if f else padded[n]
        out.append(image[:, y:y + h, x:x + w])
    return torch.stack(out)


@pytest.mark.parametrize('pad, mirror', [(0, False), (0, True), (2, False), (2, True), (5, True)])
def test_pad_and_mirror_matches_f_pad(pad, mirror):
    images = distinct_images(6, size=8)
    kept = pad_and_mirror(images.permute(0, 2, 3, 1), pad, mirror).permute(0, 3, 1, 2)
    padded = padded_reference(images, pad)
    assert torch.equal(kept, torch.cat([padded, padded.flip(-1)], -1) if mirror else padded)


@pytest.mark.parametrize('pad, mirror', [(0, False), (0, True), (2, True), (4, False)])
def test_batch_crop_matches_a_per_image_slicing_loop(pad, mirror):
    images, g = distinct_images(64), generator(2)
    kept = pad_and_mirror(images.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1), pad, mirror)
    index = torch.randperm(64, generator=g)[:40]
    dy, dx = random_offsets(40, pad, g)
    flip = random_flip_mask(40, g) if mirror else torch.zeros(40, dtype=torch.bool)
    out = batch_crop(crop_windows(kept, 32, 32), index, dy, window_columns(dx, flip, 32 + 2 * pad))
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out, crop_reference(padded_reference(images, pad), index, dy, dx, flip, 32, 32))


@pytest.mark.parametrize('flip, cutout', [('alternating', 0), ('random', 6), ('none', 0)])
def test_loader_epochs_match_the_plain_reference(flip, cutout):
    """Whole epochs, shuffling and cutout included, against the slicing loop fed the loader's own choices."""
    images, ids = uint8_dataset(300)
    make = lambda: seeded(CifarLoader(images, ids, 64, 'cpu', train=True, flip=flip, translate=3, cutout=cutout), 4)
    loader, shadow = make(), make()  # the shadow makes the same draws, in the same order, without cropping
    padded = padded_reference(loader.normalize(loader.images), 3)
    for _ in range(3):
        order, dy, x0, squares = shadow.plan_epoch()
        shadow.epoch += 1
        flips = x0 >= 38  # a mirrored crop starts in the mirror image, 32 + 2 * 3 columns right
        expected = crop_reference(padded, order, dy, x0 - 38 * flips.long(), flips, 32, 32)
        if cutout:
            expected.masked_fill_(squares[0][:, None, :, None] & squares[1][:, None, None, :], 0)
        x, y = map(torch.cat, zip(*loader))
        assert len(x) == 256 and torch.equal(x, expected[:256]) and torch.equal(y, order[:256])


def crop_candidates(padded_image, h, w):
    """Every crop of a padded [C,H,W] image and of its mirror image: [2, rows, cols, C, h, w] (unfold views)."""
    both = torch.stack([padded_image, padded_image.flip(-1)])
    return both.unfold(2, h, 1).unfold(3, w, 1).permute(0, 2, 3, 1, 4, 5)


def match_augmentations(loader, epochs):
    """(dy, dx, mirrored) of every image in each epoch, found by comparing it with all its candidates."""
    padded = padded_reference(loader.normalize(loader.images), loader.translate)
    candidates = [crop_candidates(image, 32, 32) for image in padded]
    found = []
    for _ in range(epochs):
        seen = {}
        for x, ids in loader:
            for image, i in zip(x, ids.tolist()):
                [(f, dy, dx)] = (candidates[i] == image).flatten(3).all(-1).nonzero().tolist()
                seen[i] = (dy, dx, bool(f))
        found.append(seen)
    return found


def test_alternating_flip_inverts_each_image_every_epoch_and_every_offset_occurs():
    images, ids = uint8_dataset(400)
    loader = CifarLoader(images, ids, 100, 'cpu', train=True, flip='alternating', translate=2)
    epochs = match_augmentations(loader, 3)
    for before, after in zip(epochs, epochs[1:]):
        assert all(before[i][2] != after[i][2] for i in before)
    for seen in epochs:
        assert len({(dy, dx) for dy, dx, _ in seen.values()}) == 25
    assert 0.4 < sum(f for _, _, f in epochs[0].values()) / 400 < 0.6


def test_random_flip_is_about_half_and_independent_between_epochs():
    images, ids = uint8_dataset(600)
    loader = CifarLoader(images, ids, 100, 'cpu', train=True, flip='random', translate=1)
    first, second = match_augmentations(loader, 2)
    assert len({(dy, dx, f) for dy, dx, f in first.values()}) == 18  # every offset, both ways
    assert 0.4 < sum(f for _, _, f in first.values()) / 600 < 0.6
    assert 0.4 < sum(first[i][2] != second[i][2] for i in first) / 600 < 0.6


@pytest.mark.parametrize('size', [1, 5, 12])
def test_cutout_zeroes_exactly_the_square(size):
    images = torch.rand(300, 3, 32, 32) + 1  # no zeros before cutout
    in_rows, in_cols = random_squares(300, 32, 32, size, generator())
    out = batch_cutout_(images.clone(), in_rows, in_cols)
    zero = out == 0
    assert torch.equal(zero[:, 0], zero[:, 1]) and torch.equal(zero[:, 0], zero[:, 2])
    for square in zero[:, 0]:
        rows, cols = square.any(1).nonzero().flatten(), square.any(0).nonzero().flatten()
        assert square.sum() == size * size
        assert len(rows) == size and len(cols) == size and rows[-1] - rows[0] == size - 1
    assert torch.equal(out[~zero], images[~zero])
    channels_last = batch_cutout_(images.contiguous(memory_format=torch.channels_last), in_rows, in_cols)
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


def seeded(loader, seed):
    loader.reseed(seed)
    return loader


def batches(loader, epochs=2):
    return [(x.clone(), y.clone()) for _ in range(epochs) for x, y in loader]


def test_same_seed_same_batches_and_reseed():
    images, labels = uint8_dataset(300)
    make = lambda seed: seeded(CifarLoader(images, labels, 64, 'cpu', train=True, flip='random', translate=2, cutout=4),
                               seed)
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


def test_kept_set_is_made_in_the_first_epoch_after_reseed_and_never_written():
    images, labels = uint8_dataset(200)
    loader = CifarLoader(images, labels, 50, 'cpu', train=True, flip='alternating', translate=2, cutout=8)
    assert loader.kept == {}  # nothing normalized at creation: a run pays for it inside its timer
    x, _ = next(iter(loader))
    windows = loader.kept['windows']
    expected = pad_and_mirror(loader.normalize(loader.images).permute(0, 2, 3, 1), 2, True)
    x.fill_(0)  # a batch is the caller's own tensor
    batches(loader, epochs=3)
    assert loader.kept['windows'] is windows
    assert torch.equal(windows.as_strided(expected.shape, expected.stride()), expected)
    loader.reseed(1)
    assert loader.kept == {}
    plain = CifarLoader(images, labels, 50, 'cpu')
    first, second = batches(plain, epochs=1), batches(plain, epochs=1)
    assert all(torch.equal(x1, x2) for (x1, _), (x2, _) in zip(first, second))
    assert torch.equal(torch.cat([x for x, _ in first]), plain.normalize(plain.images))


def test_with_labels_shares_the_images_and_changes_only_the_labels():
    images, labels = uint8_dataset(200)
    make = lambda: CifarLoader(images, labels, 50, 'cpu', train=True, flip='alternating', translate=2, cutout=4)
    loader, untouched = make(), make()
    first = batches(loader, epochs=1)
    windows = loader.kept['windows']
    random_labels = torch.randint_like(labels, 10)
    twin = loader.with_labels(random_labels)
    assert twin.images.data_ptr() == loader.images.data_ptr() and twin.kept is loader.kept
    assert loader.kept['windows'] is windows and loader.epoch == 1 and twin.epoch == 0  # nothing recomputed
    assert torch.equal(twin.labels, random_labels) and torch.equal(loader.labels, labels)
    twin.reseed(9)
    batches(twin, epochs=2)  # the twin's own run leaves the original's batches as they were going to be
    for (x1, y1), (x2, y2) in zip(first + batches(loader, epochs=2), batches(untouched, epochs=3)):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    loader.reseed(3), twin.reseed(3)
    for (x1, y1), (x2, y2) in zip(batches(loader, epochs=2), batches(twin, epochs=2)):
        assert torch.equal(x1, x2)  # same images, same augmentation for the same seed
    assert loader.epoch == 2 and twin.epoch == 2
    with pytest.raises(ValueError, match='199 labels for 200 images'):
        loader.with_labels(labels[:199])


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs CUDA')
def test_cuda_epochs_never_wait_for_the_gpu_and_match_the_cpu():
    """No host syncs in an epoch (a boolean mask or .item() would raise here), fp16 channels_last batches, and
    the same crops as on the CPU for the same choices (fp16 is the CPU's fp32 rounded once)."""
    images, labels = uint8_dataset(3000)
    loader = CifarLoader(images, labels, 500, 'cuda', train=True, flip='alternating', translate=2, cutout=6)
    next(iter(loader))  # first use: allocator, kernels
    loader.reseed(0)
    torch.cuda.set_sync_debug_mode('error')
    try:
        got = batches(loader, epochs=2)
    finally:
        torch.cuda.set_sync_debug_mode('default')
    assert all(x.dtype == torch.float16 and x.is_contiguous(memory_format=torch.channels_last) for x, _ in got)
    shadow = CifarLoader(images, labels, 500, 'cuda', train=True, flip='alternating', translate=2, cutout=6)
    order, dy, x0, squares = shadow.plan_epoch()
    cpu = CifarLoader(images, labels, 500, 'cpu', translate=2, flip='alternating')
    flips = (x0 >= 36).cpu()
    expected = crop_reference(padded_reference(cpu.normalize(cpu.images), 2), order.cpu(), dy.cpu(),
                              x0.cpu() - 36 * flips.long(), flips, 32, 32)
    expected.masked_fill_((squares[0][:, None, :, None] & squares[1][:, None, None, :]).cpu(), 0)
    assert torch.equal(torch.cat([x for x, _ in got[:6]]).cpu(), expected.half())


def test_fp16_normalization_rounds_once():
    """On CUDA the loader keeps fp16 images: computed in float32 and rounded once, not divided in fp16 first."""
    values = torch.arange(256, dtype=torch.uint8).repeat(3, 1).view(1, 3, 16, 16)
    loader = CifarLoader(torch.zeros(2, 32, 32, 3, dtype=torch.uint8), torch.zeros(2, dtype=torch.long), 1, 'cpu')
    loader.dtype = torch.float16
    exact = ((values.double() / 255 - loader.mean.double()) / loader.std.double()).half()
    assert torch.equal(loader.normalize(values), exact)
