"""GHRS graph layer: agreement graphs (users or items) and per-node graph features."""

from ghrs.graph.graph_features import (
    FEATURES,
    CentralityConfig,
    FeatureScaler,
    GraphFeatures,
    compute_graph_features,
)
from ghrs.graph.similarity_graph import (
    SimilarityGraph,
    agreement_neighbours,
    build_agreement_graph,
    extend_with_new_users,
    item_similarity_graph,
    rating_indicators,
    user_similarity_graph,
)

__all__ = [
    "FEATURES", "CentralityConfig", "FeatureScaler", "GraphFeatures", "SimilarityGraph", "agreement_neighbours",
    "build_agreement_graph", "compute_graph_features", "extend_with_new_users", "item_similarity_graph",
    "rating_indicators", "user_similarity_graph",
]
