"""Bad inputs to ternary/: each gets one line saying what was expected and how to fix it, before any training, and
loses nothing (--save-model over a results log, a full disk, an edited packed file, a teacher that diverged)."""
import errno
import hashlib
import json
import struct

import pytest
import torch
import torch.nn as nn

import airbench
import stats
import ternary
from common.errors import UserError
from common.flags import parse_flags
from ternary import convert, export_packed, load_packed, load_teacher, save_model
from ternary.distill import distill_from_flags

HYP = {'opt': {'lr': 10.0, 'epochs': 9.9, 'batch_size': 1024}}
FLAGS = (stats.FLAGS, ternary.FLAGS, airbench.FLAGS)  # as a rung's FLAGS
SCRIPT = __file__  # load_teacher's default: the file that defines make_net
ROW = b'{"script": "main0_network.py", "seed": 0, "val_acc": 0.94}\n'
FULL_DISK = OSError(errno.ENOSPC, 'No space left on device')


def make_net(device='cpu'):
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10, bias=False)).to(device)


def one_line_error(call, message):
    with pytest.raises(UserError, match=message) as info:
        call()
    assert '\n' not in str(info.value)
    return str(info.value)


def parse(*argv):
    return parse_flags(HYP, FLAGS, ['--device', 'cpu', *map(str, argv)])


# --save-model over a results log: refused when the flags are parsed, the log untouched.

def test_save_model_naming_a_results_log_is_refused_before_training(tmp_path):
    out = tmp_path / 'results'
    log = out / 'main0_network' / 'full__cpu.jsonl'
    log.parent.mkdir(parents=True)
    log.write_bytes(ROW)
    one_line_error(lambda: parse('--out', out, '--save-model', log),
                   f'^--save-model {log} names a results log \\(the logs under --out {out} are .jsonl files\\): '
                   f'saving the model there would replace its rows; pass a checkpoint path such as .*full__cpu.pt$')
    assert log.read_bytes() == ROW
    other = out / 'main1_whiten' / 'full__cpu.jsonl'  # the run's own log before its first row: no file yet
    one_line_error(lambda: parse('--out', out, '--save-model', other), 'names a results log')
    assert not other.parent.exists()


def test_save_model_over_any_file_but_a_saved_model_is_refused(tmp_path):
    log_by_another_name = tmp_path / 'rows.txt'
    log_by_another_name.write_bytes(ROW)
    one_line_error(lambda: parse('--save-model', log_by_another_name),
                   r'exists and is a results log \(JSON lines\): saving the model would replace it after training')
    export_packed(convert(make_net()), tmp_path / 'model.tpk')
    one_line_error(lambda: parse('--save-model', tmp_path / 'model.tpk'), 'exists and is not a model saved with')
    assert log_by_another_name.read_bytes() == ROW
    save_model(make_net(), tmp_path / 'teacher.pt', SCRIPT)
    (tmp_path / 'empty.pt').touch()
    for path in ('teacher.pt', 'empty.pt', 'new.pt'):  # a model saved before, nothing, or a new file: replaced
        assert parse('--save-model', tmp_path / path)[1].save_model == str(tmp_path / path)


def test_export_packed_over_anything_but_a_packed_model_is_refused_before_training(tmp_path):
    log = tmp_path / 'full__cpu.jsonl'
    log.write_bytes(ROW)
    one_line_error(lambda: parse('--ternary', '--export-packed', log), f'^--export-packed {log} names a results log: '
                   'the export would replace its rows; pass a path such as .*full__cpu.tpk$')
    save_model(make_net(), tmp_path / 'teacher.pt', SCRIPT)
    for path in ('teacher.pt', 'rows.txt'):
        (tmp_path / 'rows.txt').write_bytes(ROW)
        one_line_error(lambda: parse('--ternary', '--export-packed', tmp_path / path),
                       'exists and is not a packed model: the export would replace it after training')
    one_line_error(lambda: parse('--ternary', '--save-model', tmp_path / 'm', '--export-packed', tmp_path / 'm'),
                   'is also the --save-model path: pass two paths')
    one_line_error(lambda: parse('--export-packed', tmp_path / 'new.tpk'), 'only applies with --ternary')
    assert log.read_bytes() == ROW and (tmp_path / 'rows.txt').read_bytes() == ROW
    export_packed(convert(make_net()), tmp_path / 'model.tpk')
    (tmp_path / 'empty.tpk').touch()
    for path in ('model.tpk', 'empty.tpk', 'new.tpk'):  # a packed model exported before, nothing, a new file: replaced
        assert parse('--ternary', '--export-packed', tmp_path / path)[1].export_packed == str(tmp_path / path)


def test_an_export_whose_reload_differs_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    class Loader:  # as airbench.CifarLoader: images and normalize
        images = torch.randn(6, 3, 32, 32)
        normalize = staticmethod(lambda images: images)
    model, args = convert(make_net()), parse('--ternary', '--export-packed', tmp_path / 'm.tpk')[1]
    ternary.export_from_flags(model, args, Loader())
    assert 'its logits on 6 test images equal the trained model\'s' in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ['m.tpk']  # the checked file, moved into place
    assert model.training  # put back as it was
    def load_and_perturb(fresh, path):
        loaded = load_packed(fresh, path)
        with torch.no_grad():
            loaded[1].bias.add_(1.0)  # the BatchNorm's shift: a reload that went wrong
        return loaded
    monkeypatch.setattr('ternary.export.load_packed', load_and_perturb)
    (tmp_path / 'm.tpk').unlink()
    message = one_line_error(lambda: ternary.export_from_flags(model, args, Loader()),
                             "logits differ from the trained model's")
    [kept] = tmp_path.glob('.m.tpk.*.check')  # kept, for the report, and not as the path asked for
    assert str(kept) in message and not (tmp_path / 'm.tpk').exists()


# A full disk: one line naming the path, no partial file, an earlier file kept.

def full_disk_save(obj, f, *args, **kwargs):
    """torch.save on a disk that fills up midway: part of the zip is written, then the OSError a full disk gives
    (torch.save into a Python file raises it as such)."""
    f.write(b'PK\x03\x04 half a zip')
    raise FULL_DISK


def test_a_full_disk_during_save_model_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    save_model(make_net(), tmp_path / 'teacher.pt', SCRIPT)
    old = (tmp_path / 'teacher.pt').read_bytes()
    monkeypatch.setattr(torch, 'save', full_disk_save)
    one_line_error(lambda: save_model(make_net(), tmp_path / 'teacher.pt', SCRIPT),
                   f'^cannot write the trained model \\(--save-model\\) {tmp_path / "teacher.pt"} \\(No space left on '
                   'device\\): it was not written and the earlier file there is unchanged; free space there')
    assert (tmp_path / 'teacher.pt').read_bytes() == old
    one_line_error(lambda: save_model(make_net(), tmp_path / 'new.pt', SCRIPT), 'and no partial file is left')
    assert [p.name for p in tmp_path.iterdir()] == ['teacher.pt']


class FullDiskFile:
    """What open(path, 'wb') gives on a disk with room for a few bytes: write writes them, then raises ENOSPC."""

    def __init__(self, path, mode):
        self.file = open(path, mode)

    def write(self, data):
        self.file.write(data[:10])
        raise FULL_DISK

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_full_disk_during_export_packed_is_one_line_and_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / 'model.tpk'
    export_packed(convert(make_net()), path)
    old = path.read_bytes()
    monkeypatch.setattr('ternary.export.open', FullDiskFile, raising=False)  # the module's own open()
    one_line_error(lambda: export_packed(convert(make_net()), path),
                   f'^cannot write the packed model {path} \\(No space left on device\\): it was not written and the '
                   'earlier file there is unchanged')
    one_line_error(lambda: export_packed(convert(make_net()), tmp_path / 'new.tpk'), 'no partial file is left')
    assert path.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == ['model.tpk']


# An edited or old packed file: the checksum covers the header too.

def exported(tmp_path):
    model = convert(make_net(), keep=('0',))
    path = tmp_path / 'model.tpk'
    export_packed(model, path)
    return path


def replace_once(path, old, new):
    """A hand edit of the header that keeps its length, so every offset still points where it did."""
    data = path.read_bytes()
    assert data.count(old) >= 1 and len(old) == len(new)
    path.write_bytes(data.replace(old, new, 1))


@pytest.mark.parametrize('old, new', [
    (b'"act_bits": 0', b'"act_bits": 8'),  # would quantize activations to 8 bits, silently
    (b'"data": [0,', b'"data": [4,'),  # one digit of an offset: another tensor's bytes, NaN logits
])
def test_an_edited_header_is_refused_by_the_checksum(tmp_path, old, new):
    path = exported(tmp_path)
    replace_once(path, old, new)
    edited = path.read_bytes()
    model = convert(make_net(), keep=('0',))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    one_line_error(lambda: load_packed(model, path),
                   f'^{path} is corrupt: its bytes differ from the sha256 stored at its end .*; copy the file again '
                   'or export the model again$')
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())
    assert path.read_bytes() == edited  # refused, not repaired


def test_a_version_2_file_whose_checksum_covered_only_the_payload_is_refused(tmp_path):
    path = exported(tmp_path)
    data = path.read_bytes()
    header_len = struct.unpack('<Q', data[8:16])[0]
    header, payload = json.loads(data[16:16 + header_len]), data[16 + header_len:-32]
    header.update(version=2, payload_sha256=hashlib.sha256(payload).hexdigest())  # as version 2 wrote it
    edited = json.dumps(header).encode()
    path.write_bytes(b'TERNPACK' + struct.pack('<Q', len(edited)) + edited + payload)
    one_line_error(lambda: load_packed(make_net(), path),
                   r'is ternary-packed version 2; this code reads ternary-packed version 3 \(3: its checksum covers '
                   r'the header too\): export the model again$')


# A teacher that diverged: refused on loading, naming the file and the first non-finite tensor.

@pytest.mark.parametrize('key, value', [('0.weight', float('nan')), ('1.running_var', float('inf'))])
def test_a_teacher_with_non_finite_weights_is_refused(tmp_path, key, value):
    teacher = make_net()
    teacher.state_dict()[key].view(-1)[3] = value
    teacher.state_dict()['5.weight'].view(-1)[0] = float('nan')  # a later one: the first is named
    save_model(teacher, tmp_path / 't.pt', SCRIPT)
    saved = (tmp_path / 't.pt').read_bytes()
    message = (f"^--teacher {tmp_path / 't.pt'}: '{key}' holds 1 NaN or infinite value: the teacher diverged or the "
               'file is damaged; train and save a teacher again$')
    one_line_error(lambda: load_teacher(tmp_path / 't.pt', make_net, 'cpu'), message)
    args = dict(device='cpu', teacher=str(tmp_path / 't.pt'), kd_alpha=0.5, kd_temperature=4.0)
    one_line_error(lambda: distill_from_flags(None, make_net, type('Args', (), args)), message)
    assert (tmp_path / 't.pt').read_bytes() == saved
