"""li2's version: the installed distribution's (pyproject.toml is its one declaration)."""
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("li2")
except PackageNotFoundError:   # running from a source tree that was never installed
    __version__ = "0+unknown"
