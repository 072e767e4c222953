"""Identity resolution: normalize identifiers, link them into persons, explain and unmerge.

``identifiers`` (Identifier, Observation), ``normalize`` (values and the blocklist), ``extract``
(identifiers of an event), ``graph`` (the order-independent graph), ``resolver`` (the stage:
tables, loader sink, bulk and query API).
"""

from huaxiang.identity.identifiers import Identifier, InvalidIdentifier, Observation

__all__ = ["Identifier", "InvalidIdentifier", "Observation"]
