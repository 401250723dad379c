"""Which files under an input folder are inputs, and what was left out with the reason.

    scan = scan_inputs("data/hospital")
    scan.inputs    # every file entry to read or reject, sorted by relative POSIX path
    scan.skipped   # [Skipped("a/.DS_Store", "hidden file ..."), ...]: nothing is left out silently

Inputs are all non-hidden entries that are not folders: regular files, but also links, FIFOs, sockets
and devices, so that the readers' single gate (usfmae/io/files.check_input) rejects them with a reason
and they are counted. Left out, each with a reason: hidden files and folders (names starting with '.'),
folders that cannot be listed (permissions, paths beyond PATH_MAX), links to folders (never followed: no
cycles, nothing outside), and MetaImage data files (read through their header). The walk never opens a
file except regular .mhd headers inside the folder, and never follows a link to a folder.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from usfmae.io.files import PATH_MAX, check_input, inside, os_reason
from usfmae.io.frame import ReadError, printable
from usfmae.io.metaimage import data_file, parse_header


@dataclass(frozen=True)
class Skipped:
    """A path under the input folder that is not an input, and why."""

    path: str  # relative POSIX path, printable
    reason: str


@dataclass
class InputScan:
    inputs: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


def relative(path: Path, root: Path) -> str:
    """`path` relative to `root`, POSIX, as stored in InputRef.relpath (undecodable bytes kept)."""
    return path.relative_to(root).as_posix()


def scan_folder(root: Path, scan: InputScan) -> None:
    """Depth-first walk of `root` filling `scan` (folders in sorted order; links to folders not followed)."""
    real_root = os.path.realpath(root)
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as err:
            if folder == root:
                raise NotADirectoryError(f"{printable(str(root), None)}: input folder cannot be listed "
                                         f"({os_reason(err)})") from None
            scan.skipped.append(Skipped(printable(relative(folder, root), None),
                                        f"folder cannot be listed: {os_reason(err)}"))
            continue
        subfolders = []
        for entry in entries:
            path = Path(entry.path)
            rel = printable(relative(path, root), None)
            try:
                is_link = entry.is_symlink()
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError as err:
                scan.skipped.append(Skipped(rel, f"cannot be examined: {os_reason(err)}"))
                continue
            if entry.name.startswith("."):
                what = "folder: not searched" if is_dir else "file: not read"
                scan.skipped.append(Skipped(rel, f"hidden {what} (name starts with '.')"))
            elif is_dir:
                if len(os.fsencode(entry.path)) >= PATH_MAX:
                    scan.skipped.append(Skipped(rel, "folder path longer than the system allows (PATH_MAX): "
                                                     "not searched"))
                else:
                    subfolders.append(path)
            elif is_link and linked_folder(path):
                where = "inside" if inside(os.path.realpath(path), real_root) else "outside"
                scan.skipped.append(Skipped(rel, f"link to a folder {where} the input folder: not followed"))
            else:
                scan.inputs.append(path)
        stack.extend(reversed(subfolders))


def linked_folder(path: Path) -> bool:
    """True when the link at `path` leads to a folder (stat follows links and never opens anything)."""
    try:
        return stat.S_ISDIR(os.stat(path).st_mode)
    except OSError:
        return False  # broken or looping link: an input, rejected with the reason when read


def metaimage_companions(inputs: list[Path], root: Path) -> dict[Path, Path]:
    """data file -> its .mhd header, for headers that read (they are regular, inside `root`) and whose
    data file is raw data inside `root`. A data file that is an input of its own (a PNG...) or the
    header itself stays an input: the header is rejected with the reason when read."""
    companions = {}
    for path in inputs:
        if path.suffix.lower() != ".mhd":
            continue
        try:
            check_input(path, root)
            target = data_file(path, parse_header(path), root)
        except (ReadError, OSError):
            continue  # the .mhd itself will be rejected with the reason when it is read
        if target != Path(os.path.realpath(path)):
            companions.setdefault(target, path)  # inputs come sorted: the first header names it
    return companions


def scan_inputs(root: str | Path) -> InputScan:
    """Inputs and skipped paths under `root` (module docstring); NotADirectoryError if `root` is not a
    listable folder."""
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{printable(str(root), None)}: input root is not a directory")
    scan = InputScan()
    scan_folder(root, scan)
    companions = metaimage_companions(scan.inputs, root)
    if companions:
        kept = []
        for path in scan.inputs:
            header = companions.get(Path(os.path.realpath(path))) if is_plain_file(path) else None
            if header is None:
                kept.append(path)
            else:
                scan.skipped.append(Skipped(printable(relative(path, root), None),
                                            f"data file of {printable(relative(header, root), None)}: read through it"))
        scan.inputs = kept
    scan.inputs.sort(key=lambda p: relative(p, root))
    scan.skipped.sort(key=lambda s: s.path)
    return scan


def is_plain_file(path: Path) -> bool:
    """A regular file that is not a link (a link to a data file stays an input of its own)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def list_inputs(root: str | Path) -> list[Path]:
    """The inputs of scan_inputs(root), sorted by relative POSIX path."""
    return scan_inputs(root).inputs
