"""The package version, in a module that imports nothing (the package root and the exported
policies' metadata both read it)."""

__version__ = "0.1.0"
