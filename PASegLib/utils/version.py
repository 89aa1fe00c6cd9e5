"""The PASegLib version (the package metadata, run folders, caches and reports record it)."""

__version__ = "0.1.0"
