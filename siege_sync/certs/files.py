"""Files of the mesh PKI on disk: private files, atomic replacement, permissions, locking.

Owns how bytes reach the disk: a private file (a key) is created with mode 0600 from its
first byte — never written world readable and tightened afterwards —; every file is replaced
atomically (write a temporary file next to it, fsync, rename), so a reader sees the old or the
new content, never half of it; ``check_private`` refuses a key that group or others can reach;
``locked`` serialises the commands that change a CA directory.

Must never print, log or copy what a private file contains, nor loosen a file's mode.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import CertError

PRIVATE_MODE = 0o600
PUBLIC_MODE = 0o644
PRIVATE_DIR_MODE = 0o700
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _write_fd(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    os.fsync(fd)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, mode: int = PUBLIC_MODE) -> None:
    """Replace ``path`` by ``data`` atomically; the file has ``mode`` from its creation."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, mode)
    try:
        try:
            os.fchmod(fd, mode)  # the umask may have removed bits; it can never add any
            _write_fd(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` by ``data`` atomically, mode 0600 from the first byte."""
    write_atomic(path, data, PRIVATE_MODE)


def create_private(path: Path, data: bytes) -> None:
    """Create ``path`` (mode 0600 from the first byte); refuse if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, PRIVATE_MODE)
    except FileExistsError:
        raise CertError(f"{path} already exists: refusing to overwrite a private key") from None
    try:
        try:
            os.fchmod(fd, PRIVATE_MODE)
            _write_fd(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and its parents) with the last level private (0700) if it is new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=PRIVATE_DIR_MODE)
    except FileExistsError:
        if not path.is_dir():
            raise CertError(f"{path} exists and is not a directory: choose another path") from None


def check_private(path: Path) -> None:
    """Refuse a private file that does not exist or that group or others may access."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise CertError(f"{path} is missing") from None
    if not stat.S_ISREG(st.st_mode):
        raise CertError(f"{path} is not a regular file")
    if st.st_mode & 0o077:
        raise CertError(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}), "
            f"a private key must not be: chmod 600 {path}"
        )


def read_private(path: Path) -> bytes:
    """Read a private file after ``check_private``."""
    check_private(path)
    return path.read_bytes()


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` (its ``.lock`` file) for the block."""
    lock_path = directory / ".lock"
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW, PRIVATE_MODE)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise CertError(
                f"cannot lock {directory} ({exc.strerror}): run siege-certs as the CA owner"
            ) from None
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
