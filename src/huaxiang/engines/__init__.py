"""Engines run compiled rule trees (sqlglot) and answer with Arrow tables."""

from huaxiang.engines.base import Capabilities, Engine, EngineError

__all__ = ["Capabilities", "Engine", "EngineError"]
