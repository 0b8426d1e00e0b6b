"""``FromConfig.from_any`` of the option dataclasses (autoencoder, centrality, neighbours)."""

from __future__ import annotations

from dataclasses import fields

import pytest
from omegaconf import OmegaConf

from ghrs.autoencoder import AutoEncoderConfig
from ghrs.graph.graph_features import CentralityConfig
from ghrs.models.agreement_neighbourhood import NeighbourConfig


@pytest.mark.parametrize("cls", [AutoEncoderConfig, CentralityConfig, NeighbourConfig])
def test_from_any_takes_instances_mappings_and_none(cls):
    default = cls()
    assert cls.from_any(None) == default
    assert cls.from_any(default) is default
    first = fields(default)[0].name
    node = OmegaConf.create({first: getattr(default, first)})  # a Hydra node, as the configs pass it
    assert cls.from_any(node) == default


@pytest.mark.parametrize(("cls", "group"), [(AutoEncoderConfig, "autoencoder"), (CentralityConfig, "centrality"),
                                            (NeighbourConfig, "neighbours")])
def test_unknown_keys_are_refused_with_the_group_and_the_key(cls, group):
    with pytest.raises(ValueError, match=rf"unknown {group} option\(s\) \['no_such_key'\]"):
        cls.from_any({"no_such_key": 1})
