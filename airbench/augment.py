"""Data augmentation as batched tensor ops on the device: flip, alternating flip, translate, cutout.

The loader keeps, per run, every image reflect-padded and (when flipping) beside its mirror image, NHWC:
kept[n, row, col, c] with row < H + 2*pad and col < W + 2*pad (the image) or col >= W + 2*pad (its mirror).
An augmented image is then one window of that tensor, so a batch of crops, flips and shuffling together is
one gather: `crop_windows` views every window without copying (overlapping strides), and `batch_crop`
indexes it with three [B] tensors (image, row offset, column offset). The index tensors stay tiny, equal
shapes keep the CUDA kernel from materializing broadcast indices, and there are no boolean masks (their
count of True entries makes the host wait for the GPU) and no per-image Python loops.

Each random draw takes a torch.Generator on the images' device, so a seed fixes every choice.
"""
import torch

FLIPS = ('none', 'random', 'alternating')


def random_flip_mask(n, generator):
    return torch.rand(n, device=generator.device, generator=generator) < 0.5


def alternating_flip_mask(base_mask, epoch):
    """The alternating ("mirror") flip: a random flip per image in epoch 0, then every image's flip state
    is inverted every other epoch, so each image is seen both ways within any two consecutive epochs
    (Jordan 2024, airbench). base_mask holds the epoch-0 choice per dataset index."""
    return base_mask ^ bool(epoch % 2)


def reflect_indices(size, pad, device):
    """Source index of each position of a reflect-padded axis (the edge is not repeated, as F.pad's 'reflect')."""
    positions = torch.arange(-pad, size + pad, device=device)
    return (size - 1) - ((size - 1) - positions.abs()).abs()


def pad_and_mirror(images, pad, mirror):
    """[N,H,W,C] -> [N, H+2*pad, (W+2*pad) * (2 if mirror else 1), C]: each image reflect-padded, then its
    mirror image to the right of it. One gather over the whole set; made once per run."""
    if pad == 0 and not mirror:
        return images.contiguous()
    _, h, w, _ = images.shape
    rows, cols = reflect_indices(h, pad, images.device), reflect_indices(w, pad, images.device)
    if mirror:
        cols = torch.cat([cols, cols.flip(0)])
    return images[:, rows[:, None], cols[None, :]].contiguous()


def crop_windows(kept, h, w):
    """Every h x w window of every kept image as a view [N, rows, cols, h, w, C] (overlapping, no copy):
    window [n, dy, x0] starts at row dy and column x0 of kept image n."""
    n, kept_h, kept_w, c = kept.shape
    image, row, col, channel = kept.stride()
    return kept.as_strided((n, kept_h - h + 1, kept_w - w + 1, h, w, c), (image, row, col, row, col, channel))


def window_columns(dx, flip, padded_w):
    """Column where each crop starts: dx in the padded image, or dx in its mirror, which lies padded_w
    columns further right. A flipped crop costs no extra pass this way."""
    return dx + flip.long() * padded_w


def batch_crop(windows, index, dy, x0):
    """Images windows[index[i], dy[i], x0[i]] as a [B,C,H,W] batch in channels_last memory order (NHWC in
    memory, as the convs want it). One gather; the three index tensors have shape [B]."""
    return windows[index, dy, x0].permute(0, 3, 1, 2)


def random_offsets(n, pad, generator):
    """Row and column offset of each crop in its padded image, uniform in 0..2*pad."""
    return torch.randint(0, 2 * pad + 1, (2, n), device=generator.device, generator=generator)


def random_squares(n, h, w, size, generator):
    """A size x size square per image, placed at random wholly inside it, as its rows [n,h] and columns [n,w]
    (boolean): cutout (DeVries & Taylor 2017, whose square may overhang the border) as airbench places it."""
    top = torch.randint(0, h - size + 1, (n, 1), device=generator.device, generator=generator)
    left = torch.randint(0, w - size + 1, (n, 1), device=generator.device, generator=generator)
    ys, xs = torch.arange(h, device=generator.device), torch.arange(w, device=generator.device)
    return (ys >= top) & (ys < top + size), (xs >= left) & (xs < left + size)


def batch_cutout_(images, in_rows, in_cols):
    """Sets each image's square to zero, in place (one pass; the memory layout stays). Inputs are already
    normalized, so zero is the dataset's mean colour."""
    square = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill_(square[:, None], 0)
