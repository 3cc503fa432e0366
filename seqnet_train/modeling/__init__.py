"""The SeqNet network: ``build_model(cfg)`` and checkpoint loading."""

from seqnet_train.modeling.build import build_model
from seqnet_train.modeling.checkpoint import load_checkpoint

__all__ = ["build_model", "load_checkpoint"]
