"""nlaprobe: an experiment DAG around Natural Language Autoencoder (NLA) AV/AR pairs."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("nlaprobe")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"
