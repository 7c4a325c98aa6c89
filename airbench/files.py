"""Writing a file so that a failure never leaves it half-written or clobbers the old one."""
import contextlib
import os
import tempfile
from pathlib import Path


def current_umask():
    umask = os.umask(0)  # the only way to read it is to set it
    os.umask(umask)
    return umask


@contextlib.contextmanager
def atomic_write(path):
    """Yields a temporary path beside `path`; on success it replaces `path` in one step, and on any error
    it is removed, leaving `path` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.partial-')
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp's 0600 would hide a shared cache from its other users
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
