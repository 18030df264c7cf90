"""Async triggers for deferred waits (bake + watch, release windows)."""
