"""Writing a file so that a failure never leaves it half-written or clobbers the old one.

atomic_write writes into a temporary file beside the target, `.NAME.partial-HOST-PID-RANDOM`, and renames it
over the target when done; on an error, or SIGTERM (common/errors.py), it removes it. Only a process killed
outright (SIGKILL, the out-of-memory killer, a power cut) leaves it behind, up to 185 MB for the data cache.
The next write of that target (and every load of the data cache) removes such leftovers: a temporary file of
this host whose process no longer runs, and any not written to for STALE_SECONDS, which covers a writer on
another host of a shared folder and the files of versions that did not name their pid. A concurrent writer's
file is kept: its process runs, and it writes far more often than that (one save takes seconds).
read_utf8 reads a text file a user may have saved in another encoding.
"""
import contextlib
import glob
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path

from common.errors import UserError

STALE_SECONDS = 3600  # a cache save takes seconds, even on a slow network file system
PARTIAL_NAME = re.compile(r'\..+\.partial-(?P<host>.+)-(?P<pid>\d+)-[a-z0-9_]+')  # mkstemp adds [a-z0-9_]+


def current_umask():
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


def host_name():
    return re.sub(r'[^A-Za-z0-9.-]', '_', socket.gethostname()) or 'host'


def is_running(pid):
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)  # signal 0 only checks that the process exists
    except ProcessLookupError:
        return False
    except OSError:  # it exists, as another user's process
        return True
    return True


def partial_prefix(path):
    """`.NAME.partial-HOST-PID-`: tempfile adds the random end; PARTIAL_NAME reads the writer back from it."""
    return f'.{path.name}.partial-{host_name()}-{os.getpid()}-'


def is_stale(path):
    """Whether a temporary file of atomic_write was left by a killed process (see top)."""
    match = PARTIAL_NAME.fullmatch(path.name)
    if match and match['host'] == host_name() and not is_running(int(match['pid'])):
        return True
    try:
        return time.time() - path.stat().st_mtime > STALE_SECONDS
    except OSError:  # removed meanwhile, by its writer or another cleaner
        return False


def remove_stale_partials(folder, name_pattern='*'):
    """Removes what killed writers left in `folder` (see top): files, and the folders of scratch_folder.
    name_pattern: a glob of the targets' names."""
    for path in Path(folder).glob(f'.{name_pattern}.partial-*'):
        if is_stale(path):
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    path.unlink()


@contextlib.contextmanager
def scratch_folder(path):
    """Yields an empty folder beside `path`, named as atomic_write names its files, and removes it afterwards,
    whatever happens; one left by a killed process is removed by the next remove_stale_partials there."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(dir=path.parent, prefix=partial_prefix(path))
    try:
        yield Path(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def read_utf8(path, fix):
    """A text file's contents. One that is not UTF-8 (saved as Latin-1, a binary file) is a one-line UserError
    naming the file, its line and `fix` (what to do), not a UnicodeDecodeError traceback."""
    data = Path(path).read_bytes()
    try:
        return data.decode('utf-8')
    except UnicodeDecodeError as exc:
        line = data.count(b'\n', 0, exc.start) + 1
        raise UserError(f'{path} line {line} is not UTF-8 text (byte {data[exc.start]:#04x}): {fix}') from None


@contextlib.contextmanager
def atomic_write(path):
    """Yields a temporary path beside `path`; on success it replaces `path` in one step, and on any error
    it is removed, leaving `path` as it was. A symlink stays one: the file it points to is replaced."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path.parent, glob.escape(path.name))
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=partial_prefix(path))
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide a shared cache from its other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_output(path, what, fix='free space there or pass another path'):
    """atomic_write, with a disk error (a full disk, a read-only folder) as one line naming `what` and the path,
    what is kept (the temporary file is removed; an earlier file at `path` is as it was) and `fix`."""
    existed = os.path.exists(path)
    try:
        with atomic_write(path) as tmp:
            yield tmp
    except OSError as exc:
        kept = 'the earlier file there is unchanged' if existed else 'no partial file is left'
        raise UserError(f'cannot write {what} {path} ({exc.strerror or exc}): it was not written and {kept}; '
                        f'{fix}') from None
