"""The frontend: load a checkpoint, trace it with torch.export, import it as `wsc.graph`.

    loaded = load_checkpoint(path)            # or load_config_only(config.json): no weights
    imported = import_model(loaded, seq_len)  # module + weights by name
"""

from wsc.frontend.checkpoint import LoadedModel, load_checkpoint, load_config_only
from wsc.frontend.importer import ImportedModel, MetaArray, import_model, import_trace
from wsc.frontend.trace import Trace, trace_model, trace_program

__all__ = [
    "ImportedModel", "LoadedModel", "MetaArray", "Trace", "import_model", "import_trace",
    "load_checkpoint", "load_config_only", "trace_model", "trace_program",
]
