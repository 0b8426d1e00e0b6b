"""The user-item bipartite graph as torch-geometric data (training edges only)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import torch
from torch_geometric.data import HeteroData
from torch_geometric.nn.conv.gcn_conv import gcn_norm
from torch_geometric.utils import to_torch_csr_tensor, to_undirected

from ghrs.data.dataset import RatingsDataset


def bipartite_hetero(
    dataset: RatingsDataset,
    train: pd.DataFrame,
    user_x: np.ndarray | None = None,
    item_x: np.ndarray | None = None,
) -> HeteroData:
    """``HeteroData`` with node types ``user`` (n_users) and ``item`` (n_items), edge type
    ``(user, rates, item)`` and its reverse; ``edge_attr`` = rating (num_edges, 1). Node features
    ``x`` are the given side-feature matrices (n_nodes, n_features) when provided."""
    data = HeteroData()
    data["user"].num_nodes = dataset.n_users
    data["item"].num_nodes = dataset.n_items
    if user_x is not None:
        data["user"].x = torch.as_tensor(user_x, dtype=torch.float32)
    if item_x is not None:
        data["item"].x = torch.as_tensor(item_x, dtype=torch.float32)
    edge = torch.as_tensor(np.stack([train["user"].to_numpy(), train["item"].to_numpy()]), dtype=torch.long)
    rating = torch.as_tensor(train["rating"].to_numpy(np.float32)).unsqueeze(-1)
    data["user", "rates", "item"].edge_index = edge
    data["user", "rates", "item"].edge_attr = rating
    data["item", "rated_by", "user"].edge_index = edge.flip(0)
    data["item", "rated_by", "user"].edge_attr = rating
    return data


def homogeneous_edge_index(dataset: RatingsDataset, train: pd.DataFrame) -> torch.Tensor:
    """Undirected edge index over ``n_users + n_items`` nodes (items offset by ``n_users``): (2, 2 * n_edges)."""
    u = torch.tensor(train["user"].to_numpy(), dtype=torch.long)
    i = torch.tensor(train["item"].to_numpy(), dtype=torch.long) + dataset.n_users
    return to_undirected(torch.stack([u, i]), num_nodes=dataset.n_users + dataset.n_items)


def csr_adjacency(edge_index: torch.Tensor, n: int, weight: torch.Tensor | None = None) -> torch.Tensor:
    """(n, n) sparse CSR adjacency of ``edge_index`` (2, E), entries ``weight`` (E,) or 1.

    PyG sorts our in-range edge index into CSR, so torch's invariants hold by construction: the checks are
    skipped *explicitly* (an implicit skip prints a SEGFAULT warning a user cannot act on), and torch's
    notice that sparse CSR support is "beta" is hidden for the same reason."""
    with torch.sparse.check_sparse_tensor_invariants(enable=False), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")
        return to_torch_csr_tensor(edge_index, weight, size=(n, n))


def normalised_adjacency(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    """D^-1/2 A D^-1/2 of ``edge_index`` as (n, n) sparse CSR, no self-loops: what ``LGConv(normalize=True)``
    recomputes on every call, built once for ``LGConv(normalize=False)``."""
    ei, w = gcn_norm(edge_index, None, n, add_self_loops=False)
    return csr_adjacency(ei, n, w)
