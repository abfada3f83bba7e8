"""The `li2` command line: a thin layer that parses, calls the Python API and prints."""
from .root import app, main

__all__ = ["app", "main"]
