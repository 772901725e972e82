"""The names of the files a run holds, in one place: stages write them, the report reads them.

>>> safe_name("block#1"), safe_name("features.0"), safe_name("")
('block_1', 'features.0', 'model')
"""

from __future__ import annotations

import re

__all__ = ["safe_name"]


def safe_name(key: str) -> str:
    """A layer name or recorded key usable in a file name: ``features.0`` stays, ``a/b`` →
    ``a_b``, ``block#1`` → ``block_1``; an empty key (the whole model) is ``model``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", key) or "model"
