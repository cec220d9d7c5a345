"""The examples in the docstrings run, with their printed output."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import monai_ext
import rankseg_plugins

MODULES = sorted(
    name
    for package in (rankseg_plugins, monai_ext)
    for name in [package.__name__] + [f"{package.__name__}.{m.name}" for m in pkgutil.iter_modules(package.__path__)]
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
