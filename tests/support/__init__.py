"""Helpers shared by the tests: labs, watchers, clients, certificates."""
