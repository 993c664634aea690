"""Import-only stand-in for torchvision on the CPU development machine (never on a GPU machine).

PyPI has no torchvision that loads beside the CPU build of torch 2.13 used here, yet transformers'
Gemma-4 processor imports ``torchvision.transforms.v2.functional`` unconditionally, so the
multimodal Gemma-4 checkpoint cannot even start a text-only server.  With this stand-in every
torchvision import succeeds and any use raises NotImplementedError: text requests work, image
requests fail loudly.  It carries no distribution metadata under the name ``torchvision``, so
libraries that check for a real torchvision still see none.
"""
import enum
import importlib.abc
import importlib.machinery
import sys
import types

IS_TORCHVISION_IMPORT_STUB = True
__version__ = "0.0.0+importstub"


class InterpolationMode(enum.Enum):
    """transformers builds its PIL <-> torchvision resampling table from these at import time."""

    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_ATTRS = {"torchvision.transforms": {"InterpolationMode": InterpolationMode},
          "torchvision.transforms.v2": {"InterpolationMode": InterpolationMode}}


def _stub(qualname):
    def call(*args, **kwargs):
        raise NotImplementedError(f"{qualname}: torchvision is an import-only stub on this CPU machine")

    call.__qualname__ = qualname
    return call


def _getattr(modname):
    def __getattr__(name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _stub(f"{modname}.{name}")

    return __getattr__


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.startswith(__name__ + "."):
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = types.ModuleType(spec.name)
        module.__path__ = []
        module.__getattr__ = _getattr(spec.name)
        module.__dict__.update(_ATTRS.get(spec.name, {}))
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
__getattr__ = _getattr(__name__)
