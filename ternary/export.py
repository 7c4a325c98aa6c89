"""Packed export of a trained ternary model: 2 bits per ternary weight in one file, loadable bit-exactly.

File layout:

    bytes 0..7     magic b'TERNPACK'
    bytes 8..15    header length H, unsigned 64-bit little-endian
    next H bytes   header, UTF-8 JSON: {'format': 'ternary-packed', 'version': 3, 'fingerprint': sha256 of the
                   sorted state_dict names and shapes, 'payload_bytes': int, 'tensors': {state_dict key: entry}}
    next bytes     payload: each tensor's bytes at the [offset, nbytes] its entry names
    last 32 bytes  sha256 of all the bytes before them: magic, header length, header and payload

Loading checks the sha256 before decoding anything: a garbled payload byte would otherwise load as a wrong
weight or a NaN logit, and an edited header as another model (act_bits 0 -> 8 quantizes the activations; one
digit of an offset reads another tensor's bytes). Older versions are refused: export them again (1 had no
checksum, 2 one of the payload alone).

Every state_dict entry (parameters and buffers) has an entry with its shape and dtype. A ternary layer's weight
is stored as 2-bit codes plus float32 scales ('encoding': 'ternary2'); everything else (layers kept in full
precision, BatchNorm, running statistics) as its raw bytes in its own dtype ('encoding': 'raw').

The codes are packed four to a byte as pack.py describes, with a worked example. Loading refuses the reserved
field 10 anywhere, padding included: it decodes to -2, which no ternary weight is.

Also here, for export and distill.py alike: `unwrap` (the model inside torch.compile's wrapper),
`check_architecture`; and `convert_from_flags`, the --ternary toggle,
which reports the packed size.
"""
import copy
import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import NamedTuple

import torch

from common.errors import UserError
from common.files import atomic_output
from ternary.layers import (TernaryLayer, check_convertible, convert, describe, export_codes, is_quantizable,
                            make_ternary, quantizable_names)
from ternary.pack import count_reserved_fields, pack_codes, packed_row_bytes, unpack_codes
from ternary.quant import dequantize

MAGIC = b'TERNPACK'
FORMAT, VERSION = 'ternary-packed', 3  # 2: the payload's sha256 in the header; 3: one sha256 of the whole file
CHECKSUM_BYTES = 32  # the sha256 at the end of the file


def unwrap(model):
    """The module inside torch.compile's wrapper, so compiled and eager models share state_dict keys."""
    return getattr(model, '_orig_mod', model)


def check_architecture(state, model, path, fix='build the model with the hyp the file was saved from'):
    """UserError naming the first key whose presence or shape differs between `state` and `model`, and `fix`."""
    expected = model.state_dict()
    for key in list(expected) + [k for k in state if k not in expected]:
        got = tuple(state[key].shape) if key in state else 'missing'
        want = tuple(expected[key].shape) if key in expected else 'absent'
        if got != want:
            raise UserError(f"{path} holds another architecture: first mismatch at '{key}' "
                            f"(file: {got}, this model: {want}): {fix}")


def ternary_weights(model):
    return {f'{name}.weight'.lstrip('.'): m for name, m in model.named_modules() if isinstance(m, TernaryLayer)}


def fingerprint(shapes):
    return hashlib.sha256(json.dumps(sorted(shapes.items())).encode()).hexdigest()[:16]


def append(payload, tensor):
    """Appends the tensor's bytes to the payload bytearray; returns their [offset, nbytes]."""
    data = tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    payload += data
    return [len(payload) - len(data), len(data)]


def layer_codes(layer, weight):
    """(codes, scale) of the W_q a ternary layer computes with."""
    if layer.frozen_weight is not None:
        # Loaded from a packed file: the codes and scale as loaded. Re-quantizing W_q = s·codes would give
        # another scale (mean|W_q| != s), so export -> load -> export would change the model.
        return layer.frozen_codes, layer.frozen_scale
    # the forward pass's own quantizer (the Triton kernel on CUDA), so the codes are the ones it used
    return export_codes(weight, layer.per_channel)


def encode_state(model):
    """(header entries, payload) for every state_dict entry of the model."""
    layers, entries, payload = ternary_weights(model), {}, bytearray()
    for key, tensor in model.state_dict().items():
        entry = {'shape': list(tensor.shape), 'dtype': str(tensor.dtype).removeprefix('torch.')}
        if key in layers:
            codes, scale = layer_codes(layers[key], tensor)
            # float32 in the file even if .half() has converted a loaded layer's scale
            entry.update(encoding='ternary2', per_channel=layers[key].per_channel, act_bits=layers[key].act_bits,
                         codes=append(payload, pack_codes(codes)), scale=append(payload, scale.float().reshape(-1)))
        else:
            entry.update(encoding='raw', data=append(payload, tensor))
        entries[key] = entry
    return entries, payload


def export_packed(model, path):
    """Writes the model to `path` (atomically: a failed export leaves any old file intact); returns its size."""
    entries, payload = encode_state(unwrap(model))
    shapes = {key: entry['shape'] for key, entry in entries.items()}
    header = json.dumps({'format': FORMAT, 'version': VERSION, 'fingerprint': fingerprint(shapes),
                         'payload_bytes': len(payload), 'tensors': entries}).encode()
    data = MAGIC + struct.pack('<Q', len(header)) + header + payload
    with atomic_output(path, 'the packed model') as tmp, open(tmp, 'wb') as f:
        f.write(data)
        f.write(hashlib.sha256(data).digest())
    return os.path.getsize(path)


def parse_header(data, header_len, path):
    """The header dict of a packed file's bytes; UserError if it does not parse or lacks its payload size."""
    try:
        header = json.loads(data[16:16 + header_len])
    except ValueError:
        header = None
    if not isinstance(header, dict) or type(header.get('payload_bytes')) is not int:
        raise UserError(f'{path} is truncated or corrupt: export the model again')
    return header


def read_packed(path):
    """(header, payload) of a complete packed file of this version whose sha256 matches, else UserError."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UserError(f'cannot read packed model {path}: {exc.strerror}') from None
    if data[:len(MAGIC)] != MAGIC or len(data) < 16:
        raise UserError(f'{path} is not a packed ternary model (written by ternary.export_packed)')
    header_len = struct.unpack('<Q', data[8:16])[0]
    header = parse_header(data, header_len, path)
    # The version before the length: an older file has no checksum at its end, so it would read as truncated.
    if header.get('format') != FORMAT or header.get('version') != VERSION:
        raise UserError(f"{path} is {header.get('format')} version {header.get('version')}; this code reads "
                        f'{FORMAT} version {VERSION} (3: its checksum covers the header too): export the model again')
    end = 16 + header_len + header['payload_bytes']
    if len(data) != end + CHECKSUM_BYTES:
        raise UserError(f'{path} is truncated or corrupt: export the model again')
    if hashlib.sha256(memoryview(data)[:end]).digest() != data[end:]:
        raise UserError(f'{path} is corrupt: its bytes differ from the sha256 stored at its end (a disk or copy '
                        'error, or an edit); copy the file again or export the model again')
    return header, data[16 + header_len:end]


def decode_tensor(payload, span, dtype, shape):
    offset, nbytes = span
    # a bytearray copy: frombuffer shares memory and warns about read-only bytes; it rejects an empty buffer
    raw = torch.frombuffer(bytearray(payload[offset:offset + nbytes]), dtype=torch.uint8) if nbytes else \
        torch.empty(0, dtype=torch.uint8)
    return raw.view(dtype).reshape(shape)


class TernaryEntry(NamedTuple):
    """What a packed file holds for a ternary weight besides W_q."""
    per_channel: bool
    act_bits: int
    codes: torch.Tensor  # int8, shaped like the weight
    scale: torch.Tensor  # float32 [C_out or 1, 1, ...]


class CorruptEntry(ValueError):
    """A header entry that parses but cannot be right; the message says what it holds and what was expected."""


def check_ternary_entry(entry, dtype):
    shape, per_channel, act_bits = entry['shape'], entry['per_channel'], entry['act_bits']
    if not (isinstance(shape, list) and len(shape) >= 2 and all(isinstance(d, int) and d >= 0 for d in shape)):
        raise CorruptEntry(f"is ternary with shape {shape}, expected a conv or linear weight's (2 or more sizes)")
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise CorruptEntry(f"is ternary with dtype {entry['dtype']}, expected a floating-point dtype")
    if not isinstance(per_channel, bool):
        raise CorruptEntry(f'has per_channel {per_channel!r}, expected true or false')
    if type(act_bits) is not int or not (act_bits == 0 or 2 <= act_bits <= 8):
        raise CorruptEntry(f'has act_bits {act_bits!r}, expected 0 (off) or 2..8')


def decode_entry(entry, payload):
    """(tensor, TernaryEntry or None) for one header entry."""
    dtype, shape = getattr(torch, entry['dtype']), entry['shape']
    if entry['encoding'] == 'raw':
        return decode_tensor(payload, entry['data'], dtype, shape), None
    check_ternary_entry(entry, dtype)
    k = math.prod(shape[1:])
    packed = decode_tensor(payload, entry['codes'], torch.uint8, [shape[0], -1])
    if packed.shape[1] != packed_row_bytes(k):
        raise CorruptEntry(f'has {packed.shape[1]} code bytes per row, expected ceil({k} / 4)')
    reserved = count_reserved_fields(packed)
    if reserved:
        raise CorruptEntry(f'holds {reserved} reserved 2-bit code(s) 10, which mean none of -1, 0, +1')
    codes = unpack_codes(packed, k).view(shape)
    scale = decode_tensor(payload, entry['scale'], torch.float32, [-1] + [1] * (len(shape) - 1))
    scales = shape[0] if entry['per_channel'] else 1
    if scale.shape[0] != scales:
        raise CorruptEntry(f"has {scale.shape[0]} scale(s), expected {scales} (per_channel {entry['per_channel']})")
    return dequantize(codes, scale, dtype), TernaryEntry(entry['per_channel'], entry['act_bits'], codes, scale)


def decode_state(header, payload, path):
    decoded = {}
    try:
        for key, entry in header['tensors'].items():
            decoded[key] = decode_entry(entry, payload)
    except CorruptEntry as exc:
        raise UserError(f"{path} is corrupt: '{key}' {exc}; export it again") from None
    except (ValueError, KeyError, TypeError, RuntimeError, AttributeError):
        raise UserError(f'{path} is corrupt (a tensor entry does not match its bytes): export it again') from None
    return decoded


def check_ternary_layers(model, decoded, path):
    """Ternary in the file must mean a conv or linear weight that can be ternary, and a ternary layer in the
    model must be ternary in the file."""
    for key, (_, ternary) in decoded.items():
        name, _, leaf = key.rpartition('.')
        module = model.get_submodule(name)
        if ternary is not None and (leaf != 'weight' or not is_quantizable(module)):
            raise UserError(f"{path} stores '{key}' as ternary, but it is not a conv or linear weight")
        if ternary is not None and not isinstance(module, TernaryLayer):
            check_convertible(module, name, ternary.act_bits)
    for key in ternary_weights(model):
        if decoded[key][1] is None:
            raise UserError(f"'{key}' is ternary in this model but full precision in {path}: make the model with "
                            f'the same --ternary-keep-* flags, or with make_net alone')


def load_packed(model, path):
    """Loads a packed file into a freshly made model of the same architecture, in place, and returns it.

    Layers stored ternary become ternary layers (with the stored per_channel and act_bits) that compute with
    the stored W_q, so in eval mode the logits are bit-identical to the exported model's. The model is
    checked against the file before anything in it changes."""
    model = unwrap(model)
    header, payload = read_packed(path)
    decoded = decode_state(header, payload, path)
    check_architecture({key: tensor for key, (tensor, _) in decoded.items()}, model, path)
    check_ternary_layers(model, decoded, path)
    # The latent weights become W_q too, so the state_dict of a loaded model is the model it computes.
    model.load_state_dict({key: tensor for key, (tensor, _) in decoded.items()})
    for key, (_, ternary) in decoded.items():
        if ternary is not None:
            name = key.rpartition('.')[0]
            module = model.get_submodule(name)
            if not isinstance(module, TernaryLayer):
                make_ternary(module, name, ternary.per_channel, ternary.act_bits)
            module.per_channel, module.act_bits = ternary.per_channel, ternary.act_bits
            module.freeze(ternary.codes, ternary.scale)
    return model


def model_size_bytes(model, packed=False):
    """Bytes of the state_dict tensors as held in memory, or (packed=True) as stored in a packed payload."""
    layers, total = ternary_weights(unwrap(model)), 0
    for key, tensor in unwrap(model).state_dict().items():
        if packed and key in layers:
            rows = tensor.shape[0]
            total += rows * packed_row_bytes(tensor[0].numel()) + 4 * (rows if layers[key].per_channel else 1)
        else:
            total += tensor.numel() * tensor.element_size()
    return total


def convert_from_flags(model, args):
    """`convert` driven by the --ternary* flags: a no-op without --ternary. --ternary-keep-first and
    --ternary-keep-last keep the first conv and the classifier (first and last quantizable modules). Prints
    which layers are ternary and the model's size as trained and as export_packed would store it."""
    if not args.ternary:
        return model
    names = quantizable_names(model)
    keep = (names[:1] if args.ternary_keep_first else []) + (names[-1:] if args.ternary_keep_last else [])
    convert(model, keep, args.ternary_per_channel, args.ternary_acts)
    print(describe(model))
    print(f'model size: {model_size_bytes(model):,} bytes as trained, '
          f'{model_size_bytes(model, packed=True):,} bytes packed (ternary.export_packed)')
    return model


def export_from_flags(model, args, loader):
    """--export-packed PATH: the last trained model as a packed file, then checked: reloaded into a copy of the model,
    its eval-mode logits on the first 2,000 images of `loader` (one with .images and .normalize, as
    airbench.CifarLoader) must equal the trained model's bit for bit, both run eagerly (nn.Module.compile compiles
    in place, and unwrap cannot undo it). The check reads a file of this process's own, moved to PATH once it
    passes: --gpus children writing one PATH cannot check each other's files. A no-op without the flag."""
    path = getattr(args, 'export_packed', None)
    if path is None:
        return
    trained, own = unwrap(model), Path(path).with_name(f'.{Path(path).name}.{os.getpid()}.check')
    size = export_packed(trained, own)
    reloaded = load_packed(copy.deepcopy(trained), own)
    inputs = loader.normalize(loader.images[:2000])
    was_training = trained.training
    trained.eval()
    reloaded.eval()
    with torch.no_grad():  # forward, not __call__: eager on both sides (a compiled model's fused kernels round
        expected, got = trained.forward(inputs), reloaded.forward(inputs)  # differently, by an ulp or so)
    trained.train(was_training)
    if not torch.equal(expected, got):
        raise UserError(f'{path}: the packed model\'s logits differ from the trained model\'s (max |difference| '
                        f'{(expected.float() - got.float()).abs().max().item():.3g}): a bug in ternary/export.py; the '
                        f'runs are logged and the file is kept as {own}: please report it')
    os.replace(own, path)
    print(f'packed model: {path}, {size:,} bytes ({model_size_bytes(trained):,} as trained); reloaded, its logits on '
          f'{len(inputs):,} test images equal the trained model\'s')
