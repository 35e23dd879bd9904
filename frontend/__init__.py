"""The frontend: load a checkpoint, trace it with torch.export, import it as `wsc.graph`."""

from wsc.frontend.checkpoint import LoadedModel, load_checkpoint, load_config_only

__all__ = ["LoadedModel", "load_checkpoint", "load_config_only"]
