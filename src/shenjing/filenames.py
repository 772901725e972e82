"""The names of the files a run holds, in one place: stages write them, the report reads them.

Each name has one function that makes it and, where a reader must recover what it names,
one that parses it back, so the two can never drift apart.

>>> safe_name("block#1"), safe_name("features.0"), safe_name("")
('block_1', 'features.0', 'model')
>>> embedding_stem("block#1", "tsne", 5)
'block_1-tsne-epoch-005'
>>> parse_embedding_stem("block_1-tsne-epoch-005")
EmbeddingName(key='block_1', method='tsne', epoch=5)
>>> cka_stem("epochs", "encoder.layers.0"), parse_cka_stem("cka-epochs-encoder.layers.0")
('cka-epochs-encoder.layers.0', ('epochs', 'encoder.layers.0'))
"""

from __future__ import annotations

import re
from typing import Literal, NamedTuple

__all__ = ["EMBEDDING_METHODS", "EmbeddingName", "capture_stem", "cka_stem", "embedding_stem",
           "parse_cka_stem", "parse_embedding_stem", "safe_name"]

EMBEDDING_METHODS = ("tsne", "pca", "umap")
CkaKind = Literal["layers", "epochs", "runs"]
_EMBEDDING = re.compile(rf"^(?P<key>.+)-(?P<method>{'|'.join(EMBEDDING_METHODS)})"
                        r"-epoch-(?P<epoch>\d{3,})$")
_CKA = re.compile(r"^cka-(?P<kind>layers|epochs|runs)-(?P<rest>.+)$")


def safe_name(key: str) -> str:
    """A layer name or recorded key usable in a file name: ``features.0`` stays, ``a/b`` →
    ``a_b``, ``block#1`` → ``block_1``; an empty key (the whole model) is ``model``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", key) or "model"


class EmbeddingName(NamedTuple):
    """What an embedding file's stem names: the (file-safe) key, the method, the epoch."""

    key: str
    method: str
    epoch: int


def embedding_stem(key: str, method: str, epoch: int) -> str:
    """``embeddings/<stem>.npz`` and ``figures/embedding-<stem>.png`` of one layer's map."""
    return f"{safe_name(key)}-{method}-epoch-{epoch:03d}"


def parse_embedding_stem(stem: str) -> EmbeddingName | None:
    """The parts of an :func:`embedding_stem` (None for any other file in ``embeddings/``)."""
    m = _EMBEDDING.match(stem)
    return None if m is None else EmbeddingName(m["key"], m["method"], int(m["epoch"]))


def cka_stem(kind: CkaKind, what: str | int) -> str:
    """``cka-layers-epoch-NNN`` (``what`` = the epoch), ``cka-epochs-<key>`` or
    ``cka-runs-<other run>``: the stem of a CKA matrix file and its figure."""
    if kind == "layers":
        return f"cka-layers-epoch-{int(what):03d}"
    return f"cka-{kind}-{safe_name(str(what))}"


def parse_cka_stem(stem: str) -> tuple[str, str] | None:
    """``(kind, rest)`` of a :func:`cka_stem` — the kind read from the name's own field,
    never from a substring of a layer name — or None."""
    m = _CKA.match(stem)
    return None if m is None else (m["kind"], m["rest"])


def capture_stem(epoch: int, *, split: str = "test", subset: int | None = None,
                 seed: int = 0, pool: str | int = "none", dtype: str = "float32") -> str:
    """The file stem of a capture: ``epoch-NNN`` plus every setting that changes its numbers.

    Defaults (the test split, all of it, no pooling, float32) add nothing, so the plain
    capture keeps its documented name; ``subset`` is the number of samples when fewer than
    the whole split were taken (their seed is named when not 0).

    >>> capture_stem(5)
    'epoch-005'
    >>> capture_stem(5, split="train", subset=500, seed=2, pool="mean", dtype="float16")
    'epoch-005-train-n500-seed2-pool-mean-float16'
    """
    parts = [f"epoch-{epoch:03d}"]
    if split != "test":
        parts.append(split)
    if subset is not None:
        parts.append(f"n{subset}" + (f"-seed{seed}" if seed != 0 else ""))
    if str(pool) != "none":
        parts.append(f"pool-{pool}")
    if str(dtype) != "float32":
        parts.append(str(dtype))
    return "-".join(parts)
