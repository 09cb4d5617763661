"""Filesystem primitives that follow no symlink (the shared root as root sees it)."""
