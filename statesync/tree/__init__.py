"""Reading the local tree under the root, beside the format in ``snapshot/``.

``scan`` reads the tree into manifest entries and chunks, rereading only what changed;
``dirfd`` walks a tree by directory descriptors (openat), at any depth and any path length,
for the scanner and for the restore that writes a tree alike; ``globs`` is the include and
exclude pattern language over root-relative paths, and the filter that decides which paths
belong in a snapshot; ``sealing`` decides which files a scan seals (``snapshot/crypto`` seals
them); ``roots`` says where the root and the named roots lead on disk, and whether a scan
found every named root. This is the only package that reads the filesystem to build a
snapshot; it imports the format (``snapshot/``) and the base, nothing above.
"""
