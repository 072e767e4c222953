"""huaxiang (画像): an open-source user-portrait platform.

Collect events in the Segment wire format and bulk files, resolve identities into one profile per
person, and (in later stages) tag, segment, activate and analyse.
"""

from huaxiang.config import Settings, Workspace
from huaxiang.errors import HuaxiangError

__version__ = "0.1.0"

__all__ = ["HuaxiangError", "Settings", "Workspace", "__version__"]
