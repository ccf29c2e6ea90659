"""Shim so that `python setup.py develop` and old pips work; configuration is in pyproject.toml."""

from setuptools import setup

setup()
