"""Model families, one module each, registered by name (see `registry.py`).

Importing this package registers every family; a new family is one more module here and
one more line below.
"""

from . import birefnet, isnet  # noqa: F401 - each import registers its family
from .registry import (
    Family,
    Processing,
    UnknownArchitecture,
    backbone_of,
    describe,
    families,
    family_of,
    find_family,
    get_family,
    network_for,
    register_family,
)

__all__ = [
    "Family",
    "Processing",
    "UnknownArchitecture",
    "backbone_of",
    "describe",
    "families",
    "family_of",
    "find_family",
    "get_family",
    "network_for",
    "register_family",
]
