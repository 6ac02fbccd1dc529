"""Reading fairseq checkpoints without fairseq, omegaconf, or arbitrary code execution.

A fairseq ``.pt`` file is a torch zip (or legacy) archive whose pickle holds the state dict
plus configuration objects: an ``argparse.Namespace`` (older files), a plain dict (hydra era),
or an omegaconf ``DictConfig`` (files saved after being loaded by fairseq), and in
``extra_state`` numpy scalars. Plain ``pickle`` would import and call whatever the file
names — ``os.system`` included — so it is never used here.

:class:`RestrictedUnpickler` resolves only an allowlist of globals:

- torch's tensor and storage rebuild functions, dtypes, ``torch.Size``, ``torch.device``
  (the names ``torch.load(weights_only=True)`` allows);
- plain containers and scalars (``collections.OrderedDict``, ``builtins.set``, ...),
  ``argparse.Namespace``, ``typing.Any``, numpy scalar/array reconstruction;
- **stand-ins** for ``omegaconf.*`` classes and ``fairseq.*`` names (config node types,
  dataclass types recorded as metadata, enum types): inert placeholder classes that record
  their constructor arguments and pickled state and never run any code of the real class.
  :func:`to_plain` turns them into dicts, lists and scalars.

Any other global raises :class:`UnsafeCheckpointError` naming it, before anything is called.

Usage::

    torch.load(path, map_location="cpu", weights_only=False, pickle_module=restricted_pickle_module)
"""

from __future__ import annotations

import _compat_pickle
import argparse
import collections
import copyreg
import importlib
import io
import pickle
import re
import types
import typing
from typing import Any, Dict, Optional, Tuple

import torch

__all__ = ["UnsafeCheckpointError", "RestrictedUnpickler", "restricted_pickle_module",
           "load_checkpoint", "to_plain", "StandIn"]


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint's pickle names a global outside the allowlist; nothing of it was called.

    Attributes:
        path: the file (``None`` when unknown).
        global_name: ``module.qualname`` that was refused.
    """

    def __init__(self, global_name: str, path: Optional[str] = None):
        self.global_name = global_name
        self.path = path
        where = f" in {path}" if path else ""
        super().__init__(
            f"refusing to unpickle {global_name!r}{where}: the checkpoint names a global outside the "
            "allowlist of tensors, plain containers, argparse.Namespace, numpy scalars and "
            "omegaconf/fairseq config stand-ins; it may execute code. Load it only if you trust it "
            "(convert it with fairseq to a plain state dict), never through this loader")


class StandIn:
    """Inert replacement for an omegaconf/fairseq class named in a pickle.

    Subclasses are created per ``module.qualname`` by :func:`_stand_in_class`. Calling the
    class (pickle REDUCE / NEWOBJ) records the arguments; ``__setstate__`` (pickle BUILD)
    records the state. Nothing else happens.
    """

    _module: str = ""
    _name: str = ""

    def __new__(cls, *args: Any, **kwargs: Any) -> "StandIn":
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        obj.__dict__["_kwargs"] = kwargs
        obj.__dict__["_state"] = None
        return obj

    def __init__(self, *args: Any, **kwargs: Any):  # arguments were recorded by __new__
        pass

    def __setstate__(self, state: Any) -> None:
        self.__dict__["_state"] = state

    # pickle appends / sets items on list- and dict-like objects
    def append(self, item: Any) -> None:
        self.__dict__.setdefault("_items", []).append(item)

    def extend(self, items: Any) -> None:
        self.__dict__.setdefault("_items", []).extend(items)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("_dict", {})[key] = value

    def __repr__(self) -> str:
        return f"<stand-in {self._module}.{self._name} args={self._args!r} state={self._state!r}>"


_STAND_IN_CLASSES: Dict[Tuple[str, str], type] = {}


def _stand_in_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STAND_IN_CLASSES:
        cls = type(name.rsplit(".", 1)[-1], (StandIn,), {"_module": module, "_name": name})
        _STAND_IN_CLASSES[key] = cls
    return _STAND_IN_CLASSES[key]


_STAND_IN_MODULES = re.compile(r"^(omegaconf|fairseq|hydra)(\.|$)")
"""Modules whose names become inert stand-ins (config classes, enums, dataclass types)."""

_PLAIN_GLOBALS: Dict[str, Any] = {
    "collections.OrderedDict": collections.OrderedDict,
    "collections.defaultdict": collections.defaultdict,  # omegaconf resolver caches
    "collections.Counter": collections.Counter,
    "builtins.set": set, "builtins.frozenset": frozenset, "builtins.bytearray": bytearray,
    "builtins.complex": complex, "builtins.slice": slice, "builtins.range": range,
    "builtins.dict": dict, "builtins.list": list, "builtins.tuple": tuple, "builtins.str": str,
    "builtins.int": int, "builtins.float": float, "builtins.bool": bool, "builtins.bytes": bytes,
    "builtins.object": object, "builtins.NoneType": type(None),
    "_codecs.encode": __import__("_codecs").encode,  # how protocol 2 stores bytes
    "copyreg._reconstructor": copyreg._reconstructor,  # protocol 0/1 objects; args are allowlisted
    "argparse.Namespace": argparse.Namespace,
    "typing.Any": typing.Any,
    "typing.Dict": typing.Dict, "typing.List": typing.List, "typing.Optional": typing.Optional,
    "pathlib.PosixPath": __import__("pathlib").PurePosixPath,  # never touches the file system
}

_NUMPY_NAMES = ("multiarray.scalar", "multiarray._reconstruct")


def _numpy_global(module: str, name: str) -> Optional[Any]:
    """numpy scalar / dtype / ndarray reconstruction (fairseq stores losses as numpy floats)."""
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return None
    if module == "numpy" and name in ("dtype", "ndarray"):
        return getattr(np, name)
    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("scalar", "_reconstruct"):
        for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
            try:
                return getattr(importlib.import_module(mod), name)
            except (ImportError, AttributeError):
                continue
    if module == "numpy.dtypes" and name.endswith("DType"):
        return getattr(importlib.import_module("numpy.dtypes"), name, None)
    return None


def _torch_globals() -> Dict[str, Any]:
    """What ``torch.load(weights_only=True)`` allows (rebuild functions, storages, dtypes)."""
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = dict(_get_allowed_globals())
    except Exception:  # pragma: no cover - private API moved; fall back to the essentials
        allowed = {}
    import torch._utils as tu

    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_parameter",
                 "_rebuild_parameter_with_state"):
        if hasattr(tu, name):
            allowed.setdefault(f"torch._utils.{name}", getattr(tu, name))
    allowed.setdefault("torch._tensor._rebuild_from_type_v2", torch._tensor._rebuild_from_type_v2)
    allowed.setdefault("torch.nn.parameter.Parameter", torch.nn.Parameter)
    allowed.setdefault("torch.Size", torch.Size)
    allowed.setdefault("torch.device", torch.device)
    allowed.setdefault("torch.storage.UntypedStorage", torch.UntypedStorage)
    allowed.setdefault("torch.serialization._get_layout", torch.serialization._get_layout)
    return allowed


_TORCH_GLOBALS: Optional[Dict[str, Any]] = None


def resolve_global(module: str, name: str) -> Any:
    """The object an allowlisted ``module.name`` stands for; raises :class:`UnsafeCheckpointError`."""
    global _TORCH_GLOBALS
    full = f"{module}.{name}"
    if full in _PLAIN_GLOBALS:
        return _PLAIN_GLOBALS[full]
    if _STAND_IN_MODULES.match(module):
        return _stand_in_class(module, name)
    if module == "torch" or module.startswith("torch."):
        if _TORCH_GLOBALS is None:
            _TORCH_GLOBALS = _torch_globals()
        if full in _TORCH_GLOBALS:
            return _TORCH_GLOBALS[full]
        if module == "torch" and "." not in name and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module == "torch" and name.endswith("Storage") and "." not in name:
            obj = getattr(torch, name, None)  # legacy typed storage classes
            if isinstance(obj, type):
                return obj
    if module.startswith("numpy"):
        obj = _numpy_global(module, name)
        if obj is not None:
            return obj
    raise UnsafeCheckpointError(full)


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` whose ``find_class`` only returns allowlisted globals (see module doc)."""

    def find_class(self, module: str, name: str) -> Any:
        # protocol 0-2 pickles use Python 2 names (``__builtin__.dict``, ``copy_reg``)
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        elif module in _compat_pickle.IMPORT_MAPPING:
            module = _compat_pickle.IMPORT_MAPPING[module]
        return resolve_global(module, name)


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return RestrictedUnpickler(file, **kwargs).load()


def _restricted_loads(data: bytes, **kwargs: Any) -> Any:
    return RestrictedUnpickler(io.BytesIO(data), **kwargs).load()


restricted_pickle_module = types.ModuleType("xtrans_restricted_pickle")
"""A ``pickle_module`` for ``torch.load``: ``Unpickler``, ``load`` and ``loads``, restricted."""
restricted_pickle_module.Unpickler = RestrictedUnpickler
restricted_pickle_module.load = _restricted_load
restricted_pickle_module.loads = _restricted_loads
restricted_pickle_module.UnpicklingError = pickle.UnpicklingError
restricted_pickle_module.__name__ = "xtrans_restricted_pickle"


def load_checkpoint(path: str) -> Any:
    """Loads a torch checkpoint on CPU without running code from it.

    Tries ``torch.load(weights_only=True)`` first (plain dict checkpoints); when that refuses
    a global, re-reads the file through :class:`RestrictedUnpickler`.

    Raises:
        UnsafeCheckpointError: the file names a global outside the allowlist.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    try:
        return torch.load(path, map_location="cpu", weights_only=False,
                          pickle_module=restricted_pickle_module)
    except UnsafeCheckpointError as err:
        raise UnsafeCheckpointError(err.global_name, str(path)) from None


# --------------------------------------------------------------------------------------------
# stand-ins -> plain Python

_INTERPOLATION = re.compile(r"^\$\{([A-Za-z0-9_.]+)\}$")


def _stand_in_state(obj: StandIn) -> Dict[str, Any]:
    state = obj._state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
    return state if isinstance(state, dict) else {}


def _to_plain(obj: Any, memo: Dict[int, Any]) -> Any:
    if id(obj) in memo:
        return memo[id(obj)]
    if isinstance(obj, StandIn):
        state = _stand_in_state(obj)
        if "_content" in state:  # omegaconf DictConfig / ListConfig
            content = state["_content"]
            if isinstance(content, dict):
                out: Any = {}
                memo[id(obj)] = out
                for k, v in content.items():
                    out[_to_plain(k, memo)] = _to_plain(v, memo)
                return out
            if isinstance(content, (list, tuple)):
                out = []
                memo[id(obj)] = out
                out.extend(_to_plain(v, memo) for v in content)
                return out
            return _to_plain(content, memo)  # None, "???" or an interpolation string
        if "_val" in state:  # omegaconf value node
            return _to_plain(state["_val"], memo)
        if "_value_" in state:  # an enum member pickled by state
            return _to_plain(state["_value_"], memo)
        if len(obj._args) == 1 and not state:  # enum member: EnumClass(value)
            return _to_plain(obj._args[0], memo)
        if "_items" in obj.__dict__:
            return [_to_plain(v, memo) for v in obj.__dict__["_items"]]
        if "_dict" in obj.__dict__:
            return {k: _to_plain(v, memo) for k, v in obj.__dict__["_dict"].items()}
        return {k: _to_plain(v, memo) for k, v in state.items()} if state else repr(obj)
    if isinstance(obj, type) and issubclass(obj, StandIn):
        return f"{obj._module}.{obj._name}"
    if isinstance(obj, argparse.Namespace):
        out = {}
        memo[id(obj)] = out
        out.update({k: _to_plain(v, memo) for k, v in vars(obj).items()})
        return out
    if isinstance(obj, dict):
        out = type(obj)() if isinstance(obj, collections.OrderedDict) else {}
        memo[id(obj)] = out
        for k, v in obj.items():
            out[k] = _to_plain(v, memo)
        return out
    if isinstance(obj, list):
        return [_to_plain(v, memo) for v in obj]
    if isinstance(obj, tuple):
        return tuple(_to_plain(v, memo) for v in obj)
    if hasattr(obj, "item") and hasattr(obj, "dtype") and not isinstance(obj, torch.Tensor) \
            and getattr(obj, "ndim", 1) == 0:
        return obj.item()  # numpy scalar
    return obj


def _resolve_interpolations(node: Any, root: Any, depth: int = 0) -> Any:
    if isinstance(node, dict):
        return {k: _resolve_interpolations(v, root, depth) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_interpolations(v, root, depth) for v in node]
    if isinstance(node, str) and depth < 10:
        match = _INTERPOLATION.match(node)
        if match:
            target: Any = root
            for part in match.group(1).split("."):
                if not isinstance(target, dict) or part not in target:
                    return node  # unresolvable: keep the literal
                target = target[part]
            return _resolve_interpolations(target, root, depth + 1)
    return node


def to_plain(obj: Any) -> Any:
    """Config objects of a checkpoint -> plain dicts, lists and scalars.

    ``argparse.Namespace`` -> dict; omegaconf DictConfig/ListConfig stand-ins -> dict/list of
    their node values; enum members -> their value; numpy scalars -> Python scalars. Simple
    omegaconf interpolations ``${a.b}`` are resolved against the converted root. Tensors are
    returned as they are.
    """
    plain = _to_plain(obj, {})
    return _resolve_interpolations(plain, plain)
