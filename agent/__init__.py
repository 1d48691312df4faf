"""The pulse agent: one router of the cluster."""

__version__ = "0.1.0"
