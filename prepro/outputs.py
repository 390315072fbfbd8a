"""Output folders: one writer at a time, and proof of what faceblocks wrote.

* **Lock.** A run that writes into a folder holds an advisory lock on ``FOLDER/.faceblocks.lock``
  (``flock``) for as long as it runs. A second writer is refused with a message naming the
  first one's process id. The kernel drops the lock when the process dies, so a run killed with
  ``kill -9`` never leaves a stale lock behind: the next run simply takes it.
* **Ownership.** Every run folder has a random ``writer_id`` (in its manifest or record), which
  faceblocks also writes into each file it makes where it can (shard attributes, temporary file
  names), and the SHA-256 of each file it finished. A file is removed only when faceblocks can
  prove it wrote it: a finished file whose content still has the recorded checksum, or a
  temporary or unfinished file that carries this folder's ``writer_id``. Anything else (the
  user's notes, a file that was changed since) is left alone.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterator

from prepro.errors import OutputError

LOCK_NAME = ".faceblocks.lock"
_WRITER_ID = r"[0-9a-f]{16}"  # what `new_writer_id` makes
_TMP = re.compile(rf"^\.(?P<name>.+)\.(?P<writer>{_WRITER_ID})\.tmp$")


def new_writer_id() -> str:
    return secrets.token_hex(8)


def is_writer_id(value: object) -> bool:
    """True for a string `new_writer_id` could have made: it goes into file names, so anything else
    (a path like "../x", a slash, an empty string) is refused where a record is loaded."""
    return isinstance(value, str) and re.fullmatch(_WRITER_ID, value) is not None


def temp_name(final: Path, writer_id: str) -> Path:
    """The temporary name of ``final`` while it is written: hidden, and marked with the writer."""
    return final.with_name(f".{final.name}.{writer_id}.tmp")


def remove_own_temp_files(folder: Path, writer_id: str) -> list[str]:
    """Delete the temporary files a killed run of ``writer_id`` left in ``folder``; their names."""
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        if m and m.group("writer") == writer_id and p.is_file() and not p.is_symlink():
            p.unlink()
            removed.append(p.name)
    return removed


def is_empty_but_for_us(folder: Path) -> bool:
    """True when ``folder`` is missing or holds nothing but faceblocks' lock file."""
    return not folder.exists() or all(p.name == LOCK_NAME for p in folder.iterdir())


def _open_lock_file(path: Path) -> int:
    """Open (or create) the lock file without following a link planted in its place, and only if it
    is a plain file of its own: its content is truncated, so it must never be someone else's file."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise OutputError(f"{path} is a symbolic link, not faceblocks' lock file: remove it, "
                              "or choose another output folder") from None
        raise OutputError(f"cannot write to {path.parent} ({e.strerror or e})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
        os.close(fd)
        raise OutputError(f"{path} is not faceblocks' lock file (not a plain file, or a hard link to "
                          "another file): remove it, or choose another output folder")
    return fd


def _take_lock(folder: Path) -> int:
    """The locked descriptor of ``folder``'s lock file. The file is removed when a run ends, so a
    lock taken on a file that was just removed is retried on the new one."""
    import fcntl

    path = folder / LOCK_NAME
    for _ in range(10):
        fd = _open_lock_file(path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise OutputError(f"cannot lock {folder} ({e.strerror or e})") from None
            raise OutputError(f"{folder} is being written by another faceblocks process (pid {holder}): "
                              "wait for it to finish, or choose another output folder") from None
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd
        os.close(fd)  # the previous holder removed it between our open and our lock
    raise OutputError(f"cannot lock {folder}: its lock file keeps changing")


@contextmanager
def output_lock(folder: Path) -> Iterator[None]:
    """Hold the folder's write lock for the ``with`` block; refuse if another process holds it.
    The lock file is removed when the block ends, whether the run finished or failed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to {folder} ({e.strerror or e})") from None
    fd = _take_lock(folder)
    try:
        _write_pid(folder / LOCK_NAME, fd)
        yield
    finally:
        _remove_lock_file(folder / LOCK_NAME, fd)
        os.close(fd)  # closing drops the flock


def _write_pid(path: Path, fd: int) -> None:
    """Write this process's id into the held lock file (what a refused second writer names)."""
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
    except OSError as e:
        raise OutputError(f"cannot write the lock file {path} ({e.strerror or e}): free some space, or choose "
                          "another output folder") from None


def _remove_lock_file(path: Path, fd: int) -> None:
    """Unlink the lock file while still holding it, and only if it is still ours."""
    try:
        if os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino:
            path.unlink()
    except OSError:
        pass  # already gone, or the folder went away: nothing of the user's is at stake


# ---------------------------------------------------------------------------------------------
# Writing files: the one way faceblocks writes a file


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


def default_file_mode() -> int:
    """The mode a plain ``open`` would give a new file (mkstemp's 0600 would hide results from
    colleagues on a shared machine)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: Path, write: Callable[[IO], Any], mode: str = "wb", writer_id: str | None = None) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync, then rename it to ``path``,
    so a reader (or a resumed run) never sees a half-written file. A full disk or any other write
    error is an OutputError, and the temporary file is removed. With ``writer_id`` (a locked
    folder's) the temporary file is `temp_name`'s, so one a killed run leaves is provably its own
    and `remove_own_temp_files` removes it on the next run."""
    path = Path(path)
    try:
        if writer_id is None:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        else:
            tmp = str(temp_name(path, writer_id))
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e})") from None
    try:
        os.fchmod(fd, default_file_mode())
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OutputError(f"cannot write {path} ({e.strerror or e}); nothing was replaced") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def checked_output_file(out_path: str | os.PathLike, overwrite: bool, example: str) -> Path:
    """``out_path`` as a file a command may write: an OutputError for a folder (naming ``example``
    inside it), for something that is not a regular file (never replaced by one), or for an
    existing file unless ``overwrite`` (the user named the file and asked for it to be replaced)."""
    out = Path(out_path)
    if out.is_dir():
        raise OutputError(f"{out} is a folder: give the file to write, e.g. {out / example}")
    if out.exists() and not out.is_file():  # a device node, a pipe, or a link to one
        raise OutputError(f"{out} is not a regular file (a device, a pipe, or a link to one): give a file to write")
    if out.exists() and not overwrite:
        raise OutputError(f"{out} exists: pass --overwrite to replace it")
    return out


def atomic_write_text(path: Path, text: str, writer_id: str | None = None) -> None:
    atomic_write(path, lambda f: f.write(text), "w", writer_id)


def _open_own_file(path: Path, flags: int) -> int:
    """A descriptor of ``path`` opened without following a link and only if it is a plain file
    (a FIFO or a device would block, a link would lead into another folder); OSError otherwise."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(errno.EINVAL, "not a regular file")
    return fd


def read_own_prefix(path: Path, size: int) -> bytes:
    """The first ``size`` bytes of the plain file ``path``; OSError when it is shorter (or a link,
    FIFO or device)."""
    fd = _open_own_file(path, os.O_RDONLY)
    with os.fdopen(fd, "rb") as f:
        data = f.read(size)
    if len(data) != size:
        raise OSError(errno.EIO, f"{len(data)} bytes where {size} were written")
    return data


def append_lines(path: Path, size: int, lines: list[bytes]) -> int:
    """Append ``lines`` to the plain file ``path`` after cutting it to ``size`` bytes (what was
    recorded last: a killed run's unrecorded tail goes), fsync; returns the new size. The cost is
    that of the new lines only. A full disk is an OutputError saying so."""
    try:
        fd = _open_own_file(path, os.O_WRONLY)
        with os.fdopen(fd, "wb") as f:
            f.truncate(size)
            f.seek(size)
            for line in lines:
                f.write(line)
            f.flush()
            os.fsync(f.fileno())
            return f.tell()
    except OSError as e:
        raise OutputError(f"cannot write {path} ({e.strerror or e})") from None
