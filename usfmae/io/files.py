"""Which files may be opened: regular files inside the input folder, never pipes, devices or links out.

    check_input(path, root)                      # stat only; ReadError with the reason otherwise
    resolve_named_file(header, "vol.raw", root)  # a file named inside another file (MetaImage data)

Neither function opens anything: `open()` blocks forever on a FIFO, and a device such as /dev/zero never
ends, so files are classified with lstat/stat and S_ISREG first. Symbolic links are followed only when
their target resolves inside `root`; without a root (a single file read directly) links are followed.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from usfmae.io.frame import ReadError, printable


def _path_max() -> int:
    try:
        return os.pathconf("/", "PC_PATH_MAX")
    except (OSError, ValueError, AttributeError):
        return 4096


PATH_MAX = _path_max()  # bytes, including the terminating NUL

OS_REASONS = {
    errno.ENOENT: "file not found",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENAMETOOLONG: "path longer than the system allows (PATH_MAX)",
    errno.ELOOP: "symbolic link loop (the link leads back to itself)",
    errno.ENOTDIR: "a component of the path is not a folder",
    errno.EIO: "input/output error (failing disk or network mount?)",
    errno.ENXIO: "no such device",
}


def os_reason(err: OSError) -> str:
    """A short readable reason for an OSError (no errno numbers, no paths)."""
    return OS_REASONS.get(err.errno, (err.strerror or type(err).__name__).lower())


def describe_mode(mode: int) -> str:
    """What a non-regular file is, for a rejection reason."""
    for test, name in ((stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISDIR, "a folder")):
        if test(mode):
            return name
    return "not a regular file"


def inside(path: str | Path, root: str | Path) -> bool:
    """True when the (already resolved) `path` is `root` or below it."""
    path, root = os.fspath(path), os.fspath(root)
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives, or mixing absolute and relative
        return False


def unopenable(err: OSError) -> str:
    """The reason a file cannot be opened (or stat'ed)."""
    return os_reason(err) if err.errno == errno.ENOENT else f"cannot be opened: {os_reason(err)}"


def check_input(path: str | Path, root: str | Path | None = None) -> os.stat_result:
    """The stat of `path` if it is a regular file safe to open, else ReadError with the reason.

    With `root`, the file must resolve (after following every link) inside `root`.
    """
    try:
        st = os.lstat(path)
    except OSError as err:
        raise ReadError(path, unopenable(err)) from None
    is_link = stat.S_ISLNK(st.st_mode)
    if is_link or root is not None:
        try:
            real = os.path.realpath(path, strict=True)
        except OSError as err:
            if err.errno == errno.ENOENT:
                raise ReadError(path, "symbolic link to a file that does not exist") from None
            raise ReadError(path, unopenable(err)) from None
        if root is not None and not inside(real, os.path.realpath(root)):
            what = "symbolic link to a file" if is_link else "file"
            raise ReadError(path, f"{what} outside the input folder: not read")
        try:
            st = os.stat(real)
        except OSError as err:
            raise ReadError(path, unopenable(err)) from None
    if not stat.S_ISREG(st.st_mode):
        target = " the link points to" if is_link else ""
        raise ReadError(path, f"{describe_mode(st.st_mode)}{target}, not a regular file: not opened")
    return st


def resolve_named_file(header: Path, name: str, root: str | Path | None = None) -> Path:
    """The file that `header` names as `name` (relative to the header's folder, or absolute), checked
    like an input: it must resolve inside `root` (default: the header's own folder) and be a regular file."""
    folder = root if root is not None else header.parent
    candidate = header.parent / name
    shown = printable(name)
    if not inside(os.path.realpath(candidate), os.path.realpath(folder)):
        raise ReadError(header, f"its data file {shown!r} lies outside the input folder: not read")
    try:
        check_input(candidate, folder)
    except ReadError as err:
        if err.reason == os_reason(FileNotFoundError(errno.ENOENT, "")):
            raise ReadError(header, f"data file {shown!r} not found") from None
        raise ReadError(header, f"its data file {shown!r}: {err.reason}") from None
    return Path(os.path.realpath(candidate))

