"""What a file's stat says, for the scan: the signature that proves a file unchanged, whether two
stats bracket one undisturbed read, its owners' names; and waiting out a write in progress."""
from __future__ import annotations

import grp
import os
import pwd
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


def signature(st: os.stat_result) -> tuple:
    # Indexes used below: 4 inode, 7 device, 8 link count.
    return (st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_uid, st.st_gid,
            st.st_dev, st.st_nlink)


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
