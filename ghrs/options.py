"""Option dataclasses built from a config node: :class:`FromConfig` gives them ``from_any``."""

from __future__ import annotations

from dataclasses import fields
from typing import Any, ClassVar, Self


class FromConfig:
    """Mixin for option dataclasses (``model.neighbours``, ``centrality``, ``autoencoder``, ...).

    ``from_any(cfg)`` accepts an instance (returned as is), a mapping such as a Hydra node, or None (the
    defaults), and refuses unknown keys with a ValueError naming them and the option group."""

    OPTION_GROUP: ClassVar[str] = "option"

    @classmethod
    def from_any(cls, cfg: Any) -> Self:
        if isinstance(cfg, cls):
            return cfg
        cfg = dict(cfg or {})
        unknown = set(cfg) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown {cls.OPTION_GROUP} option(s) {sorted(unknown)}")
        return cls(**cfg)
