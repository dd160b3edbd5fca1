"""FedEM reproducibility package: data protocol, batched federation engine, methods, reports."""

__version__ = "0.1.0"
