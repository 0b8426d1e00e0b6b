"""GHRS feature extractors: the joined user vector (graph + side) and its item-side counterpart."""

from ghrs.features.item_features import ItemFeatureExtractor, encode_item_side
from ghrs.features.user_features import AGE_LABELS, SideEncoder, UserFeatureExtractor, age_bin

__all__ = ["AGE_LABELS", "ItemFeatureExtractor", "SideEncoder", "UserFeatureExtractor", "age_bin", "encode_item_side"]
