"""dcsim: plan AI data centers from measured GPU profiles.

The Python API (dcsim.api) is what this package exports: ``load``, ``run``,
``optimize``, ``sweep``, ``size``, their results ``Results``, ``Plan`` and ``Sizing``, ``Scenario``, and the
``outlook`` module (capacity run-out under growth). Imported when first used, so the
command line starts without pandas or plotly.
"""

import sys
import types
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("dcsim")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+src"

# public name -> the module that defines it (None: the name is that module)
_EXPORTS = {"load": "dcsim.api", "run": "dcsim.api", "optimize": "dcsim.api",
            "sweep": "dcsim.api", "size": "dcsim.api", "Results": "dcsim.api",
            "Plan": "dcsim.api", "Sizing": "dcsim.api",
            "Scenario": "dcsim.scenario", "outlook": None}

__all__ = ["__version__", *_EXPORTS]


class _Package(types.ModuleType):
    """`dcsim.optimize` and `dcsim.sweep` are API functions and also the names of
    subpackages; importing a subpackage would bind its name on the package and hide the
    function, so that binding is skipped (the subpackage stays in sys.modules, where
    imports find it)."""

    def __setattr__(self, name: str, value: object) -> None:
        if name in _EXPORTS and _EXPORTS[name] is not None and isinstance(
                value, types.ModuleType):
            return
        super().__setattr__(name, value)

    def __getattr__(self, name: str) -> object:
        if name not in _EXPORTS:
            raise AttributeError(f"module 'dcsim' has no attribute {name!r}")
        where = _EXPORTS[name]
        if where is None:
            return import_module(f"dcsim.{name}")
        return getattr(import_module(where), name)


sys.modules[__name__].__class__ = _Package
