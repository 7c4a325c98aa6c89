"""ternary/export.py: 2-bit packing, the packed file round trip, and its errors."""
import hashlib
import json
import struct

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError
from ternary import convert, export_packed, load_packed, model_size_bytes, pack_codes, unpack_codes
from ternary.layers import TernaryLayer


def make_net(device='cpu', width=16):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, width, 3, padding='same', bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(width, 16, 3, bias=True), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 10, bias=False)).to(device)


def train_ternary(per_channel=False, act_bits=0, steps=5):
    """A ternary model after a few training steps, so weights and BatchNorm statistics are not at init."""
    model = convert(make_net(), keep=('0',), per_channel=per_channel, act_bits=act_bits)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        loss = F.cross_entropy(model(torch.randn(32, 3, 12, 12)), torch.randint(0, 10, (32,)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def test_pack_worked_example_and_round_trip():
    assert pack_codes(torch.tensor([[-1, 0, 1, 1]], dtype=torch.int8)).tolist() == [[0b01010011]]
    for k in (1, 6, 27, 64):
        codes = torch.randint(-1, 2, (5, k), dtype=torch.int8)
        packed = pack_codes(codes)
        assert packed.dtype == torch.uint8 and packed.shape == (5, -(-k // 4))
        assert torch.equal(unpack_codes(packed, k), codes)


@pytest.mark.parametrize('per_channel,act_bits', [(False, 0), (True, 8)])
def test_round_trip_gives_bit_identical_logits(tmp_path, per_channel, act_bits):
    model = train_ternary(per_channel, act_bits)
    images = torch.randn(16, 3, 12, 12)
    expected = model(images)
    export_packed(model, tmp_path / 'model.tpk')
    fresh = load_packed(make_net(), tmp_path / 'model.tpk').eval()  # layers become ternary on load
    assert isinstance(fresh[3], TernaryLayer) and not isinstance(fresh[0], TernaryLayer)
    assert fresh[3].per_channel == per_channel and fresh[3].act_bits == act_bits
    assert torch.equal(fresh(images), expected)
    converted = convert(make_net(), keep=('0',))  # a model made the way the rung makes it also loads
    assert torch.equal(load_packed(converted, tmp_path / 'model.tpk').eval()(images), expected)


@pytest.mark.parametrize('per_channel,act_bits', [(False, 0), (True, 8)])
def test_exporting_a_loaded_model_writes_the_same_file(tmp_path, per_channel, act_bits):
    export_packed(train_ternary(per_channel, act_bits), tmp_path / 'first.tpk')
    loaded = load_packed(make_net(), tmp_path / 'first.tpk').eval()
    export_packed(loaded, tmp_path / 'second.tpk')  # not re-quantized: mean|s·codes| is not s
    assert (tmp_path / 'second.tpk').read_bytes() == (tmp_path / 'first.tpk').read_bytes()  # codes, scales, all
    reloaded = load_packed(make_net(), tmp_path / 'second.tpk').eval()
    images = torch.randn(16, 3, 12, 12)
    assert torch.equal(reloaded(images), loaded(images))


def test_loaded_weights_keep_the_models_memory_format(tmp_path):
    export_packed(train_ternary(), tmp_path / 'model.tpk')
    model = load_packed(make_net().to(memory_format=torch.channels_last), tmp_path / 'model.tpk')
    assert model[3].frozen_weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(model[3].frozen_weight, load_packed(make_net(), tmp_path / 'model.tpk')[3].frozen_weight)


def test_loaded_codes_are_cleared_by_reset_parameters(tmp_path):
    export_packed(train_ternary(), tmp_path / 'model.tpk')
    model = load_packed(make_net(), tmp_path / 'model.tpk')
    assert model[3].frozen_weight is not None and 'frozen_weight' not in model.state_dict()
    model[3].reset_parameters()
    assert model[3].frozen_weight is None


def test_packed_file_is_smaller_than_full_precision(tmp_path):
    model = convert(make_net(width=64))
    size = export_packed(model, tmp_path / 'model.tpk')
    payload = model_size_bytes(model, packed=True)
    assert payload < model_size_bytes(model) / 8  # 2 bits instead of 32 for almost every weight
    assert payload < size < payload + 8192  # the rest is the header


def corrupt_copies(tmp_path):
    export_packed(train_ternary(), tmp_path / 'good.tpk')
    data = (tmp_path / 'good.tpk').read_bytes()
    (tmp_path / 'truncated.tpk').write_bytes(data[:len(data) - 100])
    (tmp_path / 'header_cut.tpk').write_bytes(data[:40])
    (tmp_path / 'garbage.tpk').write_bytes(b'\x00' * 1000)
    (tmp_path / 'garbled.tpk').write_bytes(data[:-4] + b'\xff' * 4)  # the last scale, as NaN: NaN logits
    return ['truncated.tpk', 'header_cut.tpk', 'garbage.tpk', 'garbled.tpk', 'missing.tpk']


def test_bad_files_raise_user_errors_and_leave_the_model_unchanged(tmp_path):
    model = convert(make_net(), keep=('0',))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    for name in corrupt_copies(tmp_path):
        with pytest.raises(UserError) as error:
            load_packed(model, tmp_path / name)
        assert '\n' not in str(error.value)
    export_packed(convert(make_net(width=24)), tmp_path / 'wide.tpk')
    with pytest.raises(UserError, match=r"first mismatch at '3\.weight'"):
        load_packed(model, tmp_path / 'wide.tpk')
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert all(m.frozen_weight is None for m in model.modules() if isinstance(m, TernaryLayer))


def split_file(path):
    """(header, payload, checksum) of a packed file, to edit."""
    data = path.read_bytes()
    header_len = struct.unpack('<Q', data[8:16])[0]
    return json.loads(data[16:16 + header_len]), bytearray(data[16 + header_len:-32]), data[-32:]


def join_file(path, header, payload, checksum=None):
    """Writes the edited parts back: with `checksum`, the old one (a disk error), else one computed over the edited
    bytes, as a writer with a bug would leave it, so the checks after the checksum are reached."""
    edited = json.dumps(header).encode()
    data = b'TERNPACK' + struct.pack('<Q', len(edited)) + edited + bytes(payload)
    path.write_bytes(data + (checksum or hashlib.sha256(data).digest()))


def edit_entry(path, key, **changes):
    """Changes fields of one header entry, as a hand edit would."""
    header, payload, _ = split_file(path)
    header['tensors'][key].update(changes)
    join_file(path, header, payload)


@pytest.mark.parametrize('changes,message', [
    (dict(shape=[]), r"'3\.weight' is ternary with shape \[\]"),
    (dict(dtype='int8'), 'expected a floating-point dtype'),
    (dict(per_channel='x'), "has per_channel 'x', expected true or false"),
    (dict(per_channel=True), r'has 1 scale\(s\), expected 16'),  # a per-tensor file: one scale for 16 channels
    (dict(act_bits='x'), "has act_bits 'x'"),
    (dict(act_bits=True), 'has act_bits True'),
])
def test_edited_ternary_entries_raise_one_line_user_errors(tmp_path, changes, message):
    export_packed(train_ternary(), tmp_path / 'model.tpk')
    edit_entry(tmp_path / 'model.tpk', '3.weight', **changes)
    with pytest.raises(UserError, match=message) as error:
        load_packed(make_net(), tmp_path / 'model.tpk')
    assert '\n' not in str(error.value)


def test_a_garbled_payload_is_refused_by_its_checksum(tmp_path):
    path = tmp_path / 'model.tpk'
    export_packed(train_ternary(), path)
    header, payload, checksum = split_file(path)
    assert header['version'] == 3 and checksum == hashlib.sha256(path.read_bytes()[:-32]).digest()
    offset, nbytes = header['tensors']['4.running_var']['data']
    payload[offset:offset + nbytes] = b'\0' * nbytes  # zeroed bytes: BatchNorm divides by sqrt(0 + eps)
    join_file(path, header, payload, checksum)
    with pytest.raises(UserError, match=r'model\.tpk is corrupt: its bytes differ from the sha256 stored at its end'
                                        r' .*; copy the file again or export the model again$') as error:
        load_packed(make_net(), path)
    assert '\n' not in str(error.value)


def test_a_reserved_code_is_refused_even_with_a_matching_checksum(tmp_path):
    path = tmp_path / 'model.tpk'
    export_packed(train_ternary(), path)
    header, payload, _ = split_file(path)
    offset = header['tensors']['3.weight']['codes'][0]
    payload[offset] = 0b00_01_10_00  # second field 10: decodes to -2, no ternary weight
    join_file(path, header, payload)  # with a matching checksum, as a buggy writer would leave it
    with pytest.raises(UserError, match=r"is corrupt: '3\.weight' holds 1 reserved 2-bit code\(s\) 10, which mean "
                                        r'none of -1, 0, \+1; export it again$'):
        load_packed(make_net(), path)


def test_a_version_1_file_without_checksum_is_refused(tmp_path):
    path = tmp_path / 'model.tpk'
    export_packed(train_ternary(), path)
    header, payload, _ = split_file(path)
    join_file(path, {**header, 'version': 1}, payload)
    with pytest.raises(UserError, match=r'is ternary-packed version 1; this code reads ternary-packed version 3 '
                                        r'\(3: its checksum covers the header too\): export the model again'):
        load_packed(make_net(), path)


def test_full_precision_file_layer_refuses_ternary_model_layer(tmp_path):
    export_packed(convert(make_net(), keep=('0', '3')), tmp_path / 'model.tpk')
    with pytest.raises(UserError, match="'3.weight' is ternary in this model"):
        load_packed(convert(make_net(), keep=('0',)), tmp_path / 'model.tpk')


def test_failed_export_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'model.tpk'
    export_packed(train_ternary(), path)
    old = path.read_bytes()

    def fail(*args):
        raise OSError('disk full')
    monkeypatch.setattr('ternary.export.os.replace', fail)
    with pytest.raises(UserError, match=r'cannot write the packed model .*model\.tpk \(disk full\): it was not '
                                        r'written and the earlier file there is unchanged'):
        export_packed(convert(make_net()), path)
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ['model.tpk']
