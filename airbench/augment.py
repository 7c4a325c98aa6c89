"""Data augmentation as batched tensor ops on the device: flip, alternating flip, translate, cutout.

Each function takes a whole batch [N,C,H,W] (often the whole epoch at once) and a torch.Generator on the
same device, so a seed fixes every random choice and no CPU work happens per image.
"""
import torch
import torch.nn.functional as F

FLIPS = ('none', 'random', 'alternating')


def random_flip_mask(n, generator):
    return torch.rand(n, device=generator.device, generator=generator) < 0.5


def batch_flip_lr(images, flip_mask):
    """Mirrors the images whose entry in flip_mask is True."""
    return torch.where(flip_mask.view(-1, 1, 1, 1), images.flip(-1), images)


def alternating_flip_mask(base_mask, epoch):
    """The alternating ("mirror") flip: a random flip per image in epoch 0, then every image's flip state
    is inverted every other epoch, so each image is seen both ways within any two consecutive epochs
    (Jordan 2024, airbench). base_mask holds the epoch-0 choice per dataset index."""
    return base_mask ^ bool(epoch % 2)


def batch_translate(images, pad, generator):
    """Shifts each image by up to `pad` pixels in each direction: reflect-pad, then a random crop of the
    original size. The crop is done one axis at a time, choosing among the 2*pad+1 shifted views with
    torch.where: a few passes over the batch, no gather with an index per pixel, and no boolean-mask
    indexing, which would make the host wait for the GPU (it needs the count of True entries)."""
    if pad == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pad,) * 4, mode='reflect')
    offsets = torch.randint(0, 2 * pad + 1, (2, n, 1, 1, 1), device=generator.device, generator=generator)
    rows = padded[:, :, :h, :]
    for dy in range(1, 2 * pad + 1):
        rows = torch.where(offsets[0] == dy, padded[:, :, dy:dy + h, :], rows)
    out = rows[:, :, :, :w]
    for dx in range(1, 2 * pad + 1):
        out = torch.where(offsets[1] == dx, rows[:, :, :, dx:dx + w], out)
    return in_layout_of(images, out)


def in_layout_of(images, out):
    """`out` in the memory layout of `images` (channels_last on CUDA, as the convs want it)."""
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    return out.contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def batch_cutout(images, size, generator):
    """Sets a size x size square, placed at random wholly inside each image, to zero: cutout (DeVries & Taylor
    2017, whose square may overhang the border) as airbench places it. Inputs are already normalized, so zero
    is the dataset's mean colour."""
    if size == 0:
        return images
    n, _, h, w = images.shape
    top = torch.randint(0, h - size + 1, (n, 1), device=generator.device, generator=generator)
    left = torch.randint(0, w - size + 1, (n, 1), device=generator.device, generator=generator)
    ys, xs = torch.arange(h, device=images.device), torch.arange(w, device=images.device)
    in_rows = (ys >= top) & (ys < top + size)
    in_cols = (xs >= left) & (xs < left + size)
    square = in_rows[:, :, None] & in_cols[:, None, :]
    return in_layout_of(images, images.masked_fill(square[:, None], 0))
