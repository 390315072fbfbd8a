"""Walking a source's folders in sorted order; what cannot be used (unreadable folders, odd names,
links out of the source, special files, non-images) becomes a `Failure` with its reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from prepro.inputs import is_image_file, is_inside, utf8_text
from prepro.readers.records import Failure


def _is_utf8(name: str) -> bool:
    """True when ``name`` holds no undecodable bytes (surrogate escapes)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class Walker:
    """Scans folders below ``root`` in sorted order, recording what cannot be used as failures."""

    def __init__(self, root: Path) -> None:
        """A walker below the resolved folder ``root``, with no failures yet."""
        self.root = root
        self._root_text = str(root)
        self.failures: list[Failure] = []
        self._listed: dict[tuple[int, int], str] = {}  # (device, inode) -> the image's first name

    def rel(self, path: str) -> str:
        """``path`` relative to the root, POSIX, printable: the item's source id."""
        prefix = self._root_text.rstrip(os.sep) + os.sep
        # Paths are built by joining names onto the root, so slicing is exact (and 10x cheaper
        # than relpath over tens of thousands of files).
        rel = path[len(prefix):] if path.startswith(prefix) else os.path.relpath(path, self._root_text)
        return utf8_text(rel.replace(os.sep, "/"))

    def fail(self, path: str, reason: str, folder: bool = False) -> None:
        """Record ``path`` (a folder: with a trailing "/") as a failure with ``reason``."""
        self.failures.append(Failure(self.rel(path) + ("/" if folder else ""), reason))

    def entries(self, folder: str) -> tuple[list[str], list[str]] | None:
        """(sub-folders, files) of ``folder`` as sorted absolute paths; None if unreadable.

        Hidden names are skipped; links out of the root, odd names and special files are failures.
        """
        try:
            with os.scandir(folder) as it:
                found = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.fail(folder, f"unreadable folder ({e.strerror or e})", folder=True)
            return None
        dirs: list[str] = []
        files: list[str] = []
        for e in found:
            if e.name.startswith("."):
                continue  # .DS_Store, .ipynb_checkpoints, ._AppleDouble: never data
            if not _is_utf8(e.name):
                self.fail(e.path, "name is not valid UTF-8; rename it")
                continue
            try:
                if e.is_symlink():
                    kind = self._link_kind(e.path)
                    if kind is None:
                        continue
                elif e.is_dir(follow_symlinks=False):
                    kind = "dir"
                elif e.is_file(follow_symlinks=False):
                    kind = "file"
                else:
                    self.fail(e.path, "not a regular file (device, pipe or socket)")
                    continue
            except OSError as err:
                self.fail(e.path, f"cannot be examined ({err.strerror or err})")
                continue
            (dirs if kind == "dir" else files).append(e.path)
        return dirs, files

    def _link_kind(self, path: str) -> str | None:
        """"file" for a link to a file inside the root; None (after recording why) otherwise."""
        target = os.path.realpath(path)
        if not os.path.exists(target):
            self.fail(path, "broken symbolic link")
            return None
        if not is_inside(target, self._root_text):
            self.fail(path, "symbolic link to a place outside the source folder; not followed")
            return None
        if os.path.isdir(target):
            # Its target is inside the root and is listed there; following it would list files twice
            # (or loop forever).
            self.fail(path, "symbolic link to a folder inside the source; not followed "
                            "(that folder is listed under its own name)", folder=True)
            return None
        return "file"

    def images(self, folder: str) -> Iterator[str]:
        """Image files below ``folder`` (recursively, sorted); other files become failures."""
        got = self.entries(folder)
        if got is None:
            return
        dirs, files = got
        for f in files:
            if is_image_file(f):
                if self._first_name(f):
                    yield f
            else:
                ext = os.path.splitext(f)[1]
                self.fail(f, f"not an image file (extension {ext})" if ext else
                          "not an image file (no extension)")
        for d in dirs:
            yield from self.images(d)

    def _first_name(self, path: str) -> bool:
        """True for the first name of an image file in walk order; a second name of the same file (a
        symbolic or hard link, say in another class folder) is a failure naming the first, so that
        the same pixels never become a second sample, perhaps under another label."""
        try:
            st = os.stat(path)
        except OSError as e:
            self.fail(path, f"cannot be examined ({e.strerror or e})")
            return False
        first = self._listed.setdefault((st.st_dev, st.st_ino), self.rel(path))
        if first != self.rel(path):
            # The first name after the colon: the summary's category is the text before it.
            self.fail(path, f"a second name of a listed image (a link; left out so that its pixels are not a second "
                            f"sample): {first}")
            return False
        return True

    def fail_all(self, folder: str, reason: str) -> None:
        """Every file below ``folder`` is a failure with ``reason``."""
        got = self.entries(folder)
        if got is None:
            return
        dirs, files = got
        for f in files:
            self.fail(f, reason)
        for d in dirs:
            self.fail_all(d, reason)
