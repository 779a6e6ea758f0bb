"""What a file's stat says, for the scan: the signature that proves a file unchanged, whether two
stats bracket one undisturbed read, its owners' names; and waiting out a write in progress."""
from __future__ import annotations

import grp
import os
import pwd
import stat
import struct
from functools import lru_cache


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=1024)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


# One bytes object, not a tuple of nine integers: the scanner keeps a signature per file for
# as long as it runs (93 bytes here, about 290 as a tuple).
_SIGNATURE = struct.Struct("<IQqqQIIQQ")  # mode, size, mtime, ctime, inode, uid, gid, device, links
_FILE_ID = struct.Struct("<Q")
SIGNATURE_SIZE = _SIGNATURE.size


def signature(st: os.stat_result) -> bytes:
    """What must stay equal for a file to be unchanged (compare two with ==)."""
    return _SIGNATURE.pack(st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_uid,
                           st.st_gid, st.st_dev, st.st_nlink)


def stat_fields(sig: bytes) -> tuple[int, int, int, int, int]:
    """(st_mode, st_size, st_mtime_ns, st_uid, st_gid) of a signature."""
    mode, size, mtime_ns, _, _, uid, gid, _, _ = _SIGNATURE.unpack_from(sig)
    return mode, size, mtime_ns, uid, gid


def file_size(sig: bytes) -> int:
    return _FILE_ID.unpack_from(sig, 4)[0]


def inode(sig: bytes) -> int:
    return _FILE_ID.unpack_from(sig, 28)[0]


def linked_file(sig: bytes) -> bool:
    """A regular file with more than one name."""
    return _FILE_ID.unpack_from(sig, 52)[0] > 1 and stat.S_ISREG(int.from_bytes(sig[:4], "little"))


def file_id(sig: bytes) -> tuple[int, int]:
    """(device, inode): the same file under every name."""
    return _FILE_ID.unpack_from(sig, 44)[0], inode(sig)


def same_read(before: os.stat_result, after: os.stat_result) -> bool:
    return (before.st_ino, before.st_size, before.st_mtime_ns, before.st_ctime_ns) == (
        after.st_ino, after.st_size, after.st_mtime_ns, after.st_ctime_ns)


def await_writes(fd: int) -> None:
    """Wait until no write() to the file open as ``fd`` is in progress. A write stamps the file
    when it begins, so stat cannot see one that began before it and is still copying; but it
    holds the inode lock throughout, and ext4, btrfs and tmpfs answer SEEK_HOLE under that lock.
    (XFS reads under it anyway.) Elsewhere this returns at once, and the second read remains."""
    try:
        os.lseek(fd, 0, os.SEEK_HOLE)
    except OSError:
        pass
