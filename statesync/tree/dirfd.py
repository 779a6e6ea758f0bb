"""Walking a tree by directory descriptors (openat), never by whole paths.

Each step opens one name relative to its parent's descriptor and never follows a
symlink, so a tree of any depth, with paths far beyond PATH_MAX, is read and written
like any other; only what the OS refuses for a single name (over 255 bytes, say) fails.
"""
from __future__ import annotations

import errno
import os

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# The path vanished, or was replaced by a file or a symlink, since it was listed.
GONE = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP)
# Directory descriptors a chain keeps open at most; deeper ones reopen ancestors through "..".
MAX_OPEN_DIRS = 64


def open_below(fd: int, rel_dir: str) -> int:
    """Open the directory ``rel_dir`` below the directory open as ``fd``, one component at a
    time and never through a symlink; ``fd`` itself for "". Raises OSError."""
    if not rel_dir:
        return fd
    current = fd
    try:
        for part in rel_dir.split("/"):
            opened = os.open(part, DIR_FLAGS, dir_fd=current)
            if current != fd:
                os.close(current)
            current = opened
    except BaseException:
        if current != fd:
            os.close(current)
        raise
    return current


class DirChain:
    """The directories from a walk's start down to where it is (the top), each reachable
    through a descriptor, so that no path is ever longer than one name.

    Only the newest ``MAX_OPEN_DIRS`` descriptors stay open: a tree thousands of levels deep
    must not run out of them. One closed is reopened through ".." of its child when the walk
    climbs back, and checked by device and inode.
    """

    def __init__(self, fd: int, rel: str = ""):
        st = os.fstat(fd)
        # [relative path, descriptor (-1: closed), device, inode, opened here]
        self._frames: list[list] = [[rel, fd, st.st_dev, st.st_ino, False]]
        self._open = 0
        self._hint = 1  # every frame opened here below this index is closed

    @property
    def depth(self) -> int:
        return len(self._frames) - 1

    @property
    def rel(self) -> str:
        return self._frames[-1][0]

    @property
    def fd(self) -> int:
        return self._frames[-1][1]

    def enter(self, name: str, rel: str) -> int:
        """Open the subdirectory ``name`` (``rel``) of the top, never through a symlink, and
        make it the top. Raises OSError."""
        fd = os.open(name, DIR_FLAGS, dir_fd=self._frames[-1][1])
        try:
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            raise
        self._frames.append([rel, fd, st.st_dev, st.st_ino, True])
        self._open += 1
        if self._open > MAX_OPEN_DIRS:
            frames = self._frames
            for i in range(self._hint, len(frames) - 1):
                if frames[i][4] and frames[i][1] >= 0:
                    os.close(frames[i][1])
                    frames[i][1] = -1
                    self._open -= 1
                    self._hint = i + 1
                    break
        return fd

    def leave(self) -> None:
        """Close the top; its parent becomes the top again. Raises OSError."""
        _, fd, _, _, _ = self._frames.pop()
        try:
            parent = self._frames[-1]
            if parent[1] < 0:
                up = os.open("..", DIR_FLAGS, dir_fd=fd)
                st = os.fstat(up)
                if (st.st_dev, st.st_ino) != (parent[2], parent[3]):
                    os.close(up)
                    raise OSError(errno.ESTALE, "directory moved while the tree was walked", parent[0])
                parent[1] = up
                self._open += 1
                self._hint = min(self._hint, len(self._frames) - 1)
        finally:
            os.close(fd)
            self._open -= 1

    def close(self) -> None:
        """Close every descriptor opened here; the chain is back at its start."""
        for frame in self._frames[1:]:
            if frame[1] >= 0:
                os.close(frame[1])
        del self._frames[1:]
        self._open = 0
        self._hint = 1
