"""Definitions of tags and audiences kept in YAML files (in git), planned and applied.

``source`` reads files keeping every node's line and column, ``document`` checks the items into
the desired state, ``plan`` compares it with the store, ``estimate`` adds size estimates,
``execute`` applies a plan in one transaction, ``service`` is what the API and the CLI call.
"""
