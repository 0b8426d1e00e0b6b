"""Artefacts without pickle: a fitted model <-> one safetensors file (tensors + a JSON manifest).

A model (any object graph of plain values, NumPy arrays, tensors, DataFrames, sparse matrices and objects
of allowlisted classes) is written as a single ``.safetensors`` file:

- every tensor and every numeric NumPy array is a safetensors tensor (``t0``, ``t1``, ...);
- the structure is a JSON manifest in the file's metadata (key ``ghrs``): plain values verbatim, every
  other node a small dict ``{"__t": kind, ...}`` that names its tensor, its class, its state.

Loading parses JSON and safetensors only (neither runs code from the file). A class named by the
manifest is looked up in :data:`ALLOWED` (an explicit list of this package's classes and the few
torch / scikit-learn / PyG classes a fitted model holds); anything else is refused. An object is rebuilt
with ``cls.__new__`` and its own ``__setstate__`` (or an attribute update): no constructor, ``eval`` or
unpickling of the file's content. Shared references (one DataFrame used by several objects) are stored
once and restored as one object.
"""

from __future__ import annotations

import functools
import importlib
import json
import pathlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from ghrs.errors import UserError
from ghrs.io import write_bytes_atomic

FORMAT = "ghrs-artefact"
VERSION = 1
META_KEY = "ghrs"

# Classes a manifest may name (module, qualified name). Add a class here only if its instances hold data
# (no open files, no callables beyond those listed) and restoring its attributes is enough to use it.
ALLOWED_NAMES = (
    # this package
    "ghrs.data.dataset.RatingsDataset",
    "ghrs.models.bias.BiasRecommender",
    "ghrs.models.mf.MFRecommender",
    "ghrs.models.mf.BiasedMF",
    "ghrs.models.lightgcn.LightGCNRecommender",
    "ghrs.models.ghrs.GHRSRecommender",
    "ghrs.models.ghrs_features.GHRSFeatures",
    "ghrs.models.agreement_neighbourhood.NeighbourConfig",
    "ghrs.models.agreement_neighbourhood._Neighbourhood",
    "ghrs.models.ghrs._ResidualState",
    "ghrs.models.hybrid.HybridRecommender",
    "ghrs.models.autorec.AutoRecRecommender",
    "ghrs.models.knn_baseline.KNNBaselineRecommender",
    "ghrs.models.blender.LinearBlender",
    "ghrs.models.pop.PopRecommender",
    "ghrs.models.itemknn.ItemKNNRecommender",
    "ghrs.models.ease.EASERecommender",
    "ghrs.models.genrepop.GenrePopRecommender",
    "ghrs.models.hybrid_net.HybridNet",
    "ghrs.models.sequences.Sequences",
    # their modules before ghrs.py and hybrid.py were split (2026-12-03): runs saved earlier name them so
    "ghrs.models.ghrs.GHRSFeatures",
    "ghrs.models.ghrs.NeighbourConfig",
    "ghrs.models.ghrs._Neighbourhood",
    "ghrs.models.hybrid.HybridNet",
    "ghrs.models.hybrid.Sequences",
    "ghrs.training.TrainerConfig",
    "ghrs.training.TrainState",
    "ghrs.autoencoder.AutoEncoderConfig",
    "ghrs.autoencoder.AutoEncoder",
    "ghrs.autoencoder.TrainedAutoEncoder",
    "ghrs.clustering.ClusterResult",
    "ghrs.features.user_features.StageLog",
    "ghrs.features.user_features.SideEncoder",
    "ghrs.data.side_features.SideTableEncoder",
    "ghrs.data.side_features._split_bar",
    "ghrs.features.user_features.UserFeatureExtractor",
    "ghrs.features.item_features.ItemFeatureExtractor",
    "ghrs.graph.graph_features.CentralityConfig",
    "ghrs.graph.graph_features.FeatureScaler",
    "ghrs.graph.graph_features.GraphFeatures",
    "ghrs.graph.similarity_graph.SimilarityGraph",
    "ghrs.graph.neighbour_sampling.CSRGraph",
    "ssm.encoders.SequenceEncoder",
    "ssm.encoders.StreamState",
    "ssm.attention.CausalSelfAttention",
    "ssm.attention.FeedForward",
    "ssm.gru.GRUStack",
    "ssm.mamba.CausalConv1d",
    "ssm.mamba.Mamba",
    "ssm.mamba2.Mamba2",
    "ssm.norms.GatedRMSNorm",
    "ssm.norms.ResidualBlock",
    "ssm.norms.ResidualStack",
    "ssm.s4d.S4D",
    # torch / PyG / scikit-learn building blocks
    "torch.nn.modules.sparse.Embedding",
    "torch.nn.modules.linear.Linear",
    "torch.nn.modules.linear.Identity",
    "torch.nn.modules.container.Sequential",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.container.ModuleDict",
    "torch.nn.modules.activation.GELU",
    "torch.nn.modules.activation.ReLU",
    "torch.nn.modules.activation.SiLU",
    "torch.nn.modules.activation.Tanh",
    "torch.nn.modules.activation.Sigmoid",
    "torch.nn.modules.activation.MultiheadAttention",
    "torch.nn.modules.linear.NonDynamicallyQuantizableLinear",
    "torch.nn.modules.dropout.Dropout",
    "torch.nn.modules.normalization.LayerNorm",
    "torch.nn.modules.normalization.RMSNorm",
    "torch.nn.modules.conv.Conv1d",
    "torch.nn.modules.rnn.GRU",
    "torch.nn.modules.rnn.GRUCell",
    "torch_geometric.nn.conv.lg_conv.LGConv",
    "torch_geometric.nn.models.lightgcn.LightGCN",
    "sklearn.cluster._kmeans.KMeans",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.preprocessing._data.MinMaxScaler",
    "sklearn.preprocessing._encoders.OneHotEncoder",
    "sklearn.compose._column_transformer.ColumnTransformer",
    "sklearn.pipeline.Pipeline",
    "sklearn.impute._base.SimpleImputer",
    "sklearn.feature_extraction.text.CountVectorizer",
    "sklearn.utils._bunch.Bunch",
    "numpy.float64",
    "numpy.float32",
    "numpy.int64",
    "numpy.int32",
    "numpy.bool_",
    "numpy.object_",
    "numpy.str_",
    "builtins.float",
    "builtins.int",
    "builtins.str",
    "builtins.bool",
    "builtins.object",
)
ALLOWED = frozenset(ALLOWED_NAMES)
# Modules whose attributes include introspection objects (PyG's message-passing Inspector): rebuilt by
# their own constructor from these plain arguments, then given their saved parameters and buffers.
REBUILT = {"torch_geometric.nn.conv.lg_conv.LGConv": ("normalize",)}
# Attributes never written: derived caches that their owners rebuild on use.
SKIP_ATTRS = frozenset({"_adj_cache"})

_TORCH_DTYPES = {str(d).removeprefix("torch."): d for d in (
    torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int8, torch.uint8, torch.int16,
    torch.int32, torch.int64, torch.bool)}
_SPARSE = {"csr_matrix": sp.csr_matrix, "csc_matrix": sp.csc_matrix, "csr_array": sp.csr_array,
           "csc_array": sp.csc_array}


class ArtefactError(UserError):
    """A run-dir file that is missing, corrupt, truncated, from another version or not ours."""


def _name(obj_type: type) -> str:
    return f"{obj_type.__module__}.{obj_type.__qualname__}"


@functools.cache
def _resolve(name: str) -> Any:
    """An allowlisted class or function by its dotted name (never anything else)."""
    if name not in ALLOWED:
        raise ValueError(f"class {name!r} is not allowed in an artefact")
    module, _, qual = name.rpartition(".")
    while module:
        try:
            obj = importlib.import_module(module)
            break
        except ModuleNotFoundError:  # a nested qualified name: walk attributes from the parent
            module, _, outer = module.rpartition(".")
            qual = f"{outer}.{qual}"
    for part in qual.split("."):
        obj = getattr(obj, part)
    if _name(obj) != name and getattr(obj, "__name__", None) != qual.rsplit(".", 1)[-1]:
        raise ValueError(f"allowlisted name {name!r} resolves to {obj!r}")
    return obj


def _getstate(obj) -> dict:
    cls = type(obj)
    if getattr(cls, "__getstate__", object.__getstate__) is not object.__getstate__:
        state = obj.__getstate__()
    else:
        state = vars(obj)
    if not isinstance(state, dict):
        raise TypeError(f"{_name(cls)}: __getstate__ must give a dict to be saved, got {type(state)}")
    return {k: v for k, v in state.items() if k not in SKIP_ATTRS}


class _Encoder:
    def __init__(self, hook: Callable[[Any, dict[int, Any]], Any] | None = None):
        self.tensors: dict[str, torch.Tensor] = {}
        self.memo: dict[int, int] = {}
        self.keep: list[Any] = []  # keeps encoded objects alive so their ids stay unique
        self.substitute: dict[int, Any] = {}
        self.hook = hook
        if hasattr(hook, "prepare"):
            hook.prepare(self.substitute, self.keep)

    def tensor(self, t: torch.Tensor) -> str:
        key = f"t{len(self.tensors)}"
        self.tensors[key] = t.detach().to("cpu", copy=True).contiguous()
        return key

    def ref(self, obj) -> tuple[dict | None, int]:
        """(a reference node if ``obj`` was encoded before, else None; its number)."""
        n = self.memo.get(id(obj))
        if n is not None:
            return {"__t": "ref", "@": n}, n
        n = len(self.memo)
        self.memo[id(obj)] = n
        self.keep.append(obj)
        return None, n

    def enc(self, obj) -> Any:
        if id(obj) in self.substitute:
            obj = self.substitute[id(obj)]
        elif self.hook is not None:
            new = self.hook(obj, self.substitute)
            if new is not obj:  # written in the original's place, wherever the original is referenced
                self.substitute[id(obj)] = new
                self.keep.extend((obj, new))
                obj = new
        if obj is None or isinstance(obj, (bool, str)) or type(obj) in (int, float):
            return obj
        if isinstance(obj, np.generic):
            return {"__t": "np", "dtype": obj.dtype.str, "v": obj.item()}
        if isinstance(obj, np.dtype):
            return {"__t": "dtype", "v": obj.str if obj.kind != "O" else "O"}
        if isinstance(obj, torch.dtype):
            return {"__t": "tdtype", "v": str(obj).removeprefix("torch.")}
        if isinstance(obj, torch.device):
            return {"__t": "device", "v": str(obj)}
        if isinstance(obj, pathlib.PurePath):
            return {"__t": "path", "v": str(obj)}
        if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__") and not hasattr(obj, "__dict__") \
                or isinstance(obj, type(len)):
            name = _name(obj)
            if name not in ALLOWED:
                raise TypeError(f"cannot save {obj!r}: {name} is not in ghrs.artefacts.ALLOWED_NAMES")
            return {"__t": "global", "v": name}
        if isinstance(obj, functools.partial):
            return {"__t": "partial", "f": self.enc(obj.func), "a": [self.enc(a) for a in obj.args],
                    "k": {k: self.enc(v) for k, v in obj.keywords.items()}}
        if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
            return {"__t": "tuple", "v": [self.enc(x) for x in obj]}
        if isinstance(obj, range):
            return {"__t": "range", "v": [obj.start, obj.stop, obj.step]}
        if isinstance(obj, slice):  # ColumnTransformer.output_indices_
            return {"__t": "slice", "v": [self.enc(obj.start), self.enc(obj.stop), self.enc(obj.step)]}
        seen, n = self.ref(obj)
        if seen is not None:
            return seen
        node: dict[str, Any] = {"@": n}
        if type(obj) is list:
            node.update({"__t": "list", "v": [self.enc(x) for x in obj]})
        elif type(obj) in (set, frozenset):
            items = sorted(obj, key=repr)
            node.update({"__t": type(obj).__name__, "v": [self.enc(x) for x in items]})
        elif isinstance(obj, dict) and type(obj).__module__ in ("builtins", "collections"):
            node.update({"__t": "dict", "ordered": type(obj).__name__ == "OrderedDict",
                         "k": [self.enc(k) for k in obj], "v": [self.enc(v) for v in obj.values()]})
        elif isinstance(obj, torch.Tensor):
            if obj.layout != torch.strided:
                raise TypeError(f"cannot save a {obj.layout} tensor; store its dense or index form")
            node.update({"__t": "tensor", "key": self.tensor(obj), "grad": bool(obj.requires_grad),
                         "param": isinstance(obj, torch.nn.Parameter)})
        elif isinstance(obj, np.ndarray):
            node.update(self.array(obj))
        elif isinstance(obj, pd.DataFrame):
            node.update({"__t": "df", "columns": self.enc(list(obj.columns)), "index": self.enc(obj.index),
                         "data": [self.series_values(obj.iloc[:, j]) for j in range(obj.shape[1])]})
        elif isinstance(obj, pd.Series):
            node.update({"__t": "series", "index": self.enc(obj.index), "name": self.enc(obj.name),
                         "data": self.series_values(obj)})
        elif isinstance(obj, pd.RangeIndex):
            node.update({"__t": "rangeindex", "v": [obj.start, obj.stop, obj.step], "name": self.enc(obj.name)})
        elif isinstance(obj, pd.Index) and not isinstance(obj, pd.MultiIndex):
            node.update({"__t": "index", "data": self.series_values(obj.to_series()), "name": self.enc(obj.name)})
        elif sp.issparse(obj) and type(obj).__name__ in _SPARSE:
            node.update({"__t": "sparse", "cls": type(obj).__name__, "shape": list(obj.shape),
                         "data": self.enc(obj.data), "indices": self.enc(obj.indices), "indptr": self.enc(obj.indptr)})
        elif isinstance(obj, tuple):  # a named tuple
            node.update({"__t": "ntuple", "cls": self._class(obj), "v": [self.enc(x) for x in obj]})
        elif _name(type(obj)) in REBUILT:
            node.update({"__t": "new", "cls": _name(type(obj)), "training": bool(obj.training),
                         "kw": {k: self.enc(getattr(obj, k)) for k in REBUILT[_name(type(obj))]},
                         "sd": {k: self.enc(v) for k, v in obj.state_dict().items()}})
        else:
            node.update({"__t": "obj", "cls": self._class(obj)})
            node["s"] = {k: self.enc(v) for k, v in _getstate(obj).items()}
        return node

    def _class(self, obj) -> str:
        name = _name(type(obj))
        if name not in ALLOWED:
            raise TypeError(f"cannot save an object of class {name}: not in ghrs.artefacts.ALLOWED_NAMES "
                            "(add it if its instances hold data only)")
        return name

    def array(self, a: np.ndarray) -> dict:
        node: dict[str, Any] = {"shape": list(a.shape), "dtype": a.dtype.str, "ro": not a.flags.writeable}
        if a.dtype.kind in "biuf" and a.dtype.isnative and a.dtype.str.lstrip("<>|=") in _NUMERIC:
            node.update({"__t": "array", "key": self.tensor(torch.from_numpy(np.array(a, copy=True)))})
        elif a.dtype.kind in "mM":
            node.update({"__t": "array", "key": self.tensor(torch.from_numpy(a.astype(np.int64)))})
        elif a.dtype.kind in "US":
            node.update({"__t": "strarray", "v": [str(x) if a.dtype.kind == "U" else x.decode("latin-1")
                                                  for x in a.ravel().tolist()]})
        elif a.dtype.kind == "O":
            node.update({"__t": "objarray", "v": [self.enc(x) for x in a.ravel().tolist()]})
        else:
            raise TypeError(f"cannot save a NumPy array of dtype {a.dtype}")
        return node

    def series_values(self, s: pd.Series) -> dict:
        if isinstance(s.dtype, np.dtype):
            return self.enc(s.to_numpy())
        if isinstance(s.dtype, pd.CategoricalDtype):
            return {"__t": "cat", "codes": self.enc(s.cat.codes.to_numpy()), "ordered": bool(s.cat.ordered),
                    "categories": self.enc(s.cat.categories)}
        return {"__t": "ext", "dtype": str(s.dtype), "v": self.enc(s.astype(object).to_numpy())}


_NUMERIC = {"b1", "i1", "u1", "i2", "i4", "i8", "f2", "f4", "f8", "u2", "u4", "u8"}


class _Decoder:
    def __init__(self, tensors: dict[str, torch.Tensor]):
        self.tensors = tensors
        self.memo: dict[int, Any] = {}

    def tensor(self, key: str) -> torch.Tensor:
        if key not in self.tensors:
            raise ValueError(f"manifest names tensor {key!r} that the file does not hold")
        return self.tensors[key]

    def dec(self, node) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if not isinstance(node, dict) or "__t" not in node:
            raise ValueError(f"unexpected manifest node {str(node)[:80]}")
        kind = node["__t"]
        if kind == "ref":
            return self.memo[node["@"]]
        method = getattr(self, f"dec_{kind}", None)
        if method is None:
            raise ValueError(f"unknown manifest node kind {kind!r}")
        return method(node)

    def keep(self, node, obj):
        if "@" in node:
            self.memo[node["@"]] = obj
        return obj

    def dec_np(self, node):
        return np.dtype(node["dtype"]).type(node["v"])

    def dec_dtype(self, node):
        return np.dtype(node["v"])

    def dec_tdtype(self, node):
        return _TORCH_DTYPES[node["v"]]

    def dec_device(self, node):
        return torch.device(node["v"])

    def dec_path(self, node):
        return Path(node["v"])

    def dec_global(self, node):
        return _resolve(node["v"])

    def dec_partial(self, node):
        return functools.partial(self.dec(node["f"]), *[self.dec(a) for a in node["a"]],
                                 **{k: self.dec(v) for k, v in node["k"].items()})

    def dec_tuple(self, node):
        return tuple(self.dec(x) for x in node["v"])

    def dec_range(self, node):
        return range(*node["v"])

    def dec_slice(self, node):
        return slice(*(self.dec(v) for v in node["v"]))

    def dec_list(self, node):
        out = self.keep(node, [])
        out.extend(self.dec(x) for x in node["v"])
        return out

    def dec_set(self, node):
        return self.keep(node, {self.dec(x) for x in node["v"]})

    def dec_frozenset(self, node):
        return self.keep(node, frozenset(self.dec(x) for x in node["v"]))

    def dec_dict(self, node):
        from collections import OrderedDict

        out = self.keep(node, OrderedDict() if node.get("ordered") else {})
        for k, v in zip(node["k"], node["v"], strict=True):
            out[self.dec(k)] = self.dec(v)
        return out

    def dec_tensor(self, node):
        t = self.tensor(node["key"])
        if node.get("param"):
            t = torch.nn.Parameter(t, requires_grad=bool(node.get("grad")))
        elif node.get("grad"):
            t.requires_grad_(True)
        return self.keep(node, t)

    def dec_array(self, node):
        a = self.tensor(node["key"]).numpy()
        dtype = np.dtype(node["dtype"])
        a = a.astype(dtype) if dtype.kind in "mM" else a
        if a.dtype != dtype or list(a.shape) != list(node["shape"]):
            raise ValueError(f"tensor {node['key']} has {a.dtype}{list(a.shape)}, manifest says {dtype}{node['shape']}")
        return self.keep(node, self._flags(a, node))

    def dec_strarray(self, node):
        a = np.array(node["v"], dtype=np.dtype(node["dtype"])).reshape(node["shape"])
        return self.keep(node, self._flags(a, node))

    def dec_objarray(self, node):
        a = np.empty(len(node["v"]), dtype=object)
        self.keep(node, a)
        a[:] = [self.dec(x) for x in node["v"]] if node["v"] else a[:0]
        return self._flags(a.reshape(node["shape"]), node)

    @staticmethod
    def _flags(a: np.ndarray, node) -> np.ndarray:
        if node.get("ro"):
            a.flags.writeable = False
        return a

    def dec_df(self, node):
        columns = self.dec(node["columns"])
        index = self.dec(node["index"])
        data = [self.dec(c) for c in node["data"]]
        frame = pd.DataFrame(dict(enumerate(data)), index=index) if data else pd.DataFrame(index=index)
        frame.columns = pd.Index(columns, dtype=object if not columns else None)
        return self.keep(node, frame)

    def dec_series(self, node):
        return self.keep(node, pd.Series(self.dec(node["data"]), index=self.dec(node["index"]),
                                         name=self.dec(node["name"])))

    def dec_rangeindex(self, node):
        return self.keep(node, pd.RangeIndex(*node["v"], name=self.dec(node["name"])))

    def dec_index(self, node):
        return self.keep(node, pd.Index(self.dec(node["data"]), name=self.dec(node["name"])))

    def dec_cat(self, node):
        return pd.Categorical.from_codes(self.dec(node["codes"]), categories=self.dec(node["categories"]),
                                         ordered=node["ordered"])

    def dec_ext(self, node):
        return pd.array(self.dec(node["v"]), dtype=pd.api.types.pandas_dtype(node["dtype"]))

    def dec_sparse(self, node):
        cls = _SPARSE[node["cls"]]
        parts = (self.dec(node["data"]), self.dec(node["indices"]), self.dec(node["indptr"]))
        return self.keep(node, cls(parts, shape=tuple(node["shape"])))

    def dec_ntuple(self, node):
        return self.keep(node, _resolve(node["cls"])._make(self.dec(x) for x in node["v"]))

    def dec_new(self, node):
        if node["cls"] not in REBUILT:
            raise ValueError(f"{node['cls']} is not rebuilt by its constructor")
        kw = {k: self.dec(node["kw"][k]) for k in REBUILT[node["cls"]]}
        module = _resolve(node["cls"])(**kw)
        module.load_state_dict({k: self.dec(v) for k, v in node["sd"].items()})
        return self.keep(node, module.train(bool(node["training"])))

    def dec_obj(self, node):
        cls = _resolve(node["cls"])
        if not isinstance(cls, type):
            raise TypeError(f"{node['cls']} is not a class")
        obj = self.keep(node, cls.__new__(cls))
        state = {k: self.dec(v) for k, v in node["s"].items()}
        if getattr(cls, "__setstate__", None) is not None:
            obj.__setstate__(state)
        else:
            obj.__dict__.update(state)
        return obj


class Shareable:
    """Artefact hook (:func:`dumps`) that writes what serving needs and no more of the data.

    Every dataset is written without its ratings table (train, valid *and* test ratings: a model keeps
    its training interactions as its history) and its predefined folds. With ``trained_users`` (a
    model's (n_users,) mask of users with training ratings), the side-table rows of those users are
    blanked: their fitted feature vectors are in the model already, and only users without training
    ratings (cold users, folded-in users) are ever encoded again from their side information.
    """

    def __init__(self, dataset: Any = None, trained_users: np.ndarray | None = None):
        self.dataset, self.trained_users = dataset, trained_users

    def slim(self, ds: Any, blank: np.ndarray | None = None) -> Any:
        users = ds.users
        if blank is not None and len(blank) == len(users) and len(users.columns) and blank.any():
            users = users.copy()
            for col in users.columns:  # numeric columns stay numeric (NaN), others become missing (None)
                numeric = pd.api.types.is_numeric_dtype(users[col])
                if numeric and users[col].dtype.kind in "iub":
                    users[col] = users[col].astype(np.float64)
                users.loc[blank, col] = np.nan if numeric else None
        return replace(ds, ratings=ds.ratings.iloc[:0].copy(), folds={}, users=users, source_line=None)

    def prepare(self, substitute: dict[int, Any], keep: list) -> None:
        """Substitutions known before encoding: the model's dataset and its tables, wherever referenced."""
        if self.dataset is None:
            return
        ds = self.dataset
        blank = None if self.trained_users is None else np.asarray(self.trained_users, bool)
        slim = self.slim(ds, blank)
        substitute.update({id(ds): slim, id(ds.ratings): slim.ratings, id(ds.users): slim.users})
        keep.extend((ds, slim))

    def __call__(self, obj: Any, substitute: dict[int, Any]) -> Any:
        from ghrs.data.dataset import RatingsDataset

        if isinstance(obj, RatingsDataset):  # any other dataset: no ratings, side table as it is
            slim = self.slim(obj)
            substitute[id(obj.ratings)] = slim.ratings
            return slim
        return obj


def dumps(obj: Any, meta: dict | None = None, hook: Callable[[Any, dict[int, Any]], Any] | None = None) -> bytes:
    """Encode ``obj`` (and plain JSON ``meta``) as safetensors bytes.

    ``hook(node, substitute)``: called on every node before it is written; what it returns is written in
    the node's place everywhere the node is referenced (e.g. a dataset without its test ratings). It may
    add ``id(other) -> replacement`` entries to ``substitute`` for objects met later."""
    from safetensors.torch import save

    enc = _Encoder(hook)
    manifest = {"format": FORMAT, "version": VERSION, "meta": meta or {}, "root": enc.enc(obj)}
    return save(enc.tensors, metadata={META_KEY: json.dumps(manifest, allow_nan=True)})


def save(path: Path | str, obj: Any, meta: dict | None = None,
         hook: Callable[[Any, dict[int, Any]], Any] | None = None) -> Path:
    """Write ``obj`` atomically to ``path`` (a ``.safetensors`` file); see :func:`dumps`."""
    return write_bytes_atomic(Path(path), dumps(obj, meta, hook))


def _fail(path: Path, what: str) -> ArtefactError:
    return ArtefactError(f"{path}: {what}; retrain the run (python -m ghrs.train) or restore the file from a backup")


def read_manifest(path: Path | str) -> tuple[dict, dict[str, torch.Tensor]]:
    """The manifest and tensors of an artefact file, checked for format; ArtefactError when unreadable."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ArtefactError(f"{path}: no such file; pass a training run directory (outputs/...)") from None
    except OSError as exc:
        raise ArtefactError(f"{path}: cannot be read ({exc.strerror})") from None
    try:
        header_len = int.from_bytes(data[:8], "little")
        if len(data) < 8 or header_len > len(data) - 8:
            raise ValueError("truncated")
        header = json.loads(data[8 : 8 + header_len])
        manifest = json.loads(header.get("__metadata__", {})[META_KEY])
        tensors = load(data)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, SafetensorError) as exc:
        if data[:1] == b"\x80" or data[:4] == b"PK\x03\x04":  # a pickle, or torch.save's zip of pickles
            raise _fail(path, "is a pickle/torch.save file, which this version never loads (loading it could "
                              "run code)") from None
        raise _fail(path, f"is not a readable artefact (corrupt or truncated: {type(exc).__name__})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _fail(path, "is not a ghrs artefact")
    if manifest.get("version") != VERSION:
        raise _fail(path, f"has artefact version {manifest.get('version')}, this code reads version {VERSION}")
    return manifest, tensors


def load(path: Path | str) -> tuple[Any, dict]:
    """Read an artefact written by :func:`save`: ``(object, meta)``. Never runs code from the file."""
    path = Path(path)
    manifest, tensors = read_manifest(path)
    try:
        obj = _Decoder(tensors).dec(manifest["root"])
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a forged or damaged manifest may fail anywhere in decoding
        raise _fail(path, f"has an invalid manifest ({' '.join(str(exc).split())[:160]})") from None
    return obj, manifest.get("meta", {})


def load_cache(path: Path | str, key: str) -> Any | None:
    """A cached object written by :func:`save_cache` under the same ``key``; None when the cache is
    absent, was written for another key (other data or settings) or cannot be read (then recomputed)."""
    import logging

    path = Path(path)
    if not path.exists():
        return None
    try:
        obj, meta = load(path)
    except ArtefactError as exc:
        logging.getLogger(__name__).warning("ignoring an unreadable cache (recomputing it): %s", exc)
        return None
    return obj if meta.get("key") == key else None


def save_cache(path: Path | str, key: str, obj: Any, hook: Callable[[Any, dict[int, Any]], Any] | None = None) -> Path:
    """Write ``obj`` as a cache entry valid for ``key`` (e.g. a hash of the inputs and settings)."""
    return save(path, obj, {"key": key}, hook)


def fingerprint(*parts: Any) -> str:
    """A SHA-256 over NumPy arrays / DataFrames (by content) and JSON-able settings."""
    import hashlib

    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, pd.DataFrame):
            for col in part.columns:
                h.update(str(col).encode())
                h.update(np.ascontiguousarray(part[col].to_numpy()).tobytes())
        elif isinstance(part, np.ndarray):
            h.update(np.ascontiguousarray(part).tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=repr).encode())
    return h.hexdigest()
