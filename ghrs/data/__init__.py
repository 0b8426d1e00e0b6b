"""Data layer: loaders (MovieLens, CSV, synthetic), the dataset type and evaluation splits."""

from ghrs.data.dataset import DataError, RatingsDataset
from ghrs.data.synthetic import make_synthetic

__all__ = ["DataError", "RatingsDataset", "make_synthetic"]
