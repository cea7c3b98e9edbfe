"""The core's version, in a module of its own: the registry reports it for the built-in strategies, and it must
not import the package ``__init__`` (which imports everything else) to do so."""

__version__ = "0.2.0"
