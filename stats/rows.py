"""Reading a log's lines: which lines are rows, which are damaged, and which rows no run could have written.

Damaged lines. A run killed mid-write can leave its line cut short; a crash can leave a tail of NUL bytes; a
hand edit or a disk can leave a junk line or a byte that is not UTF-8. Readers skip each line that is not a
results row (a JSON object with the keys of ROW_TYPES) with a one-line warning naming the file and line
number (stats/log.py `read_rows`). The line is left in place, as evidence, rather than repaired by guessing; the
next writer first appends a newline, so the damaged line stays a line of its own and the rows after it parse.
Two things are refused instead, with a one-line error. A file that holds no row at all but a line no killed
writer leaves (text, CSV, a JSON list: anything but a cut-short row or NUL bytes) is not a results log, e.g. a
CSV passed as --out; skipping its every line would read it as an empty log and append to it. A row whose values
are wrong (a seed that is not an integer, an accuracy outside [0, 1] such as 94.12 given in percent, a time that
is NaN or negative, no epochs: any field a report reads) was edited by hand or written by another program, and
skipping it would silently change the statistics.
"""
import json
import math

from common.errors import UserError

ROW_TYPES = {'script': str, 'variant': str, 'seed': int, 'hyp': dict, 'args': dict, 'device': str,
             'tta_val_acc': (int, float), 'time_seconds': (int, float)}  # what every reader relies on
REQUIRED_KEYS = tuple(ROW_TYPES)
TYPE_NAMES = {str: 'a string', int: 'an integer', dict: 'an object', (int, float): 'a number'}
ACCURACY_KEYS = ('val_acc', 'tta_val_acc')  # fractions in [0, 1]; val_acc is checked where a row has it
CUT_SHORT = 'is cut short (a run killed while writing?)'
NUL_BYTES = 'is only NUL bytes (a crash while writing?)'
CRASH_DAMAGE = (CUT_SHORT, NUL_BYTES)  # what a killed writer leaves, unlike the lines of a foreign file
ABSENT = object()  # a field a row lacks


def decode_line(line, required=REQUIRED_KEYS, kind='a results row'):
    """(row, None) for a line (bytes) that holds `kind`, a JSON object with the keys `required`, else (None, what
    is wrong with it)."""
    if line.strip(b'\0 \t\r') == b'':
        return None, NUL_BYTES
    try:
        text = line.decode('utf-8')
    except UnicodeDecodeError as exc:
        return None, f'is not UTF-8 text (byte {exc.start + 1} is {line[exc.start]:#04x})'
    try:
        row = json.loads(text)
    except json.JSONDecodeError:
        # Every row is written by json.dumps of a dict with string keys, so it starts '{"'; an unparsable line
        # that starts so is a row cut short by a killed writer.
        if text.lstrip('\0 \t\r').startswith('{"') or text.strip('\0 \t\r') == '{':
            return None, CUT_SHORT
        return None, 'is not JSON'
    if not isinstance(row, dict) or not all(key in row for key in required):
        return None, f'is not {kind} (expected keys {", ".join(required)})'
    return row, None


def check_values(path, number, row):
    """Refuses a row whose values no run writes (see top)."""
    for key, expected in ROW_TYPES.items():
        if not isinstance(row[key], expected) or isinstance(row[key], bool):
            raise UserError(f'{path} line {number}: {key} is {json.dumps(row[key])}, not {TYPE_NAMES[expected]}: '
                            'the row was edited by hand or written by another program; fix that line or move the file '
                            'away')
    for key in ACCURACY_KEYS:
        check_accuracy(path, number, key, row.get(key, 0.0))
    check_number(path, number, 'time_seconds', row['time_seconds'], 'a time in seconds >= 0', lambda x: x >= 0)
    if 'time_ratio' in row:
        check_number(path, number, 'time_ratio', row['time_ratio'], 'a ratio >= 0', lambda x: x >= 0)
    if 'reference' not in row:  # a run row; a side-by-side pair has no epochs, and the table skips its log
        check_number(path, number, 'epochs', row.get('epochs', ABSENT), 'a number of epochs > 0', lambda x: x > 0)
    else:  # a side-by-side pair: the reference's own result, which the reports read too
        check_reference(path, number, row['reference'])


def check_reference(path, number, reference):
    if not isinstance(reference, dict):
        raise UserError(f'{path} line {number}: reference is {json.dumps(reference)}, not an object: fix that '
                        'line or move the file away')
    check_accuracy(path, number, 'reference.tta_val_acc', reference.get('tta_val_acc', ABSENT))
    check_number(path, number, 'reference.time_seconds', reference.get('time_seconds', ABSENT),
                 'a time in seconds >= 0', lambda x: x >= 0)
    if not isinstance(reference.get('script'), str):  # the table's side-by-side rows name it
        raise UserError(f'{path} line {number}: reference.script is {json.dumps(reference.get("script"))}, not a '
                        'string: fix that line or move the file away')


def check_number(path, number, key, value, expected, test):
    """Refuses a field a report reads that is absent, NaN, infinite or fails `test`: each would otherwise end as a
    traceback in a report or print as a number ('time median nan s')."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and test(value):
        return
    shown = 'missing' if value is ABSENT else json.dumps(value)
    raise UserError(f'{path} line {number}: {key} is {shown}, not {expected}: the row was edited by hand or written '
                    'by another program; fix that line or move the file away')


def check_accuracy(path, number, key, value):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        shown = 'missing' if value is ABSENT else json.dumps(value)
        raise UserError(f'{path} line {number}: {key} is {shown}, not a fraction in [0, 1]'
                        f'{percent_hint(value)}: fix that line or move the file away')


def percent_hint(value):
    """' (in percent? ...)' for an accuracy such as 94.12, else ''."""
    in_percent = isinstance(value, (int, float)) and not isinstance(value, bool) and 1 < value <= 100
    return f' (in percent? as a fraction it is {value / 100:.6g})' if in_percent else ''


def parse_rows(path, data):
    """The rows in a log's bytes, and (line number, what is wrong) for each damaged line (see top)."""
    rows, damaged = [], []
    for number, line in enumerate(data.split(b'\n'), 1):
        if not line.strip():
            continue
        row, problem = decode_line(line)
        if row is None:
            damaged.append((number, problem))
            continue
        check_values(path, number, row)
        rows.append(row)
    foreign = [(number, problem) for number, problem in damaged if problem not in CRASH_DAMAGE]
    if foreign and not rows:
        number, problem = foreign[0]
        raise UserError(f'{path} line {number} {problem} and no line is a results row: this file is not a results '
                        'log (JSON Lines): move it away, or pass another log (a run: another --out)')
    return rows, damaged
