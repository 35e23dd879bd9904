"""wsc: a wafer-scale compiler for decoder LLMs, with a functional simulator."""

__version__ = "0.1.0"
