"""Behaviour analytics: trends, funnels, sessions, paths and dwell, retention (and more), each
one SQL query built as sqlglot trees and run by an engine (DuckDB or Spark)."""
