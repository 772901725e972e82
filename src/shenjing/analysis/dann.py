"""Has a DANN's feature extractor stopped encoding the domain? The numbers of one epoch of one
training: source and target accuracy, and per feature layer the domain gap
(:mod:`shenjing.analysis.domain`: MMD², CORAL, held-out domain classifier, proxy
A-distance); the history of a study; 2-D t-SNE maps of both domains' features.

Everything is measured on fixed held-out samples (the two domains' eval splits): the target
labels are read only here, to measure target accuracy and colour maps by class, never by
the training.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shenjing.analysis.domain import domain_gap


@dataclass(frozen=True)
class DomainSamples:
    """The fixed held-out images a study measures on: the source and target eval splits
    (for accuracy) and equally large subsets of both (for the domain gap and maps)."""

    source_x: torch.Tensor
    source_y: torch.Tensor
    target_x: torch.Tensor
    target_y: torch.Tensor
    gap_source: np.ndarray  # positions in source_x of the gap subset
    gap_target: np.ndarray

    @classmethod
    def build(cls, source_x: torch.Tensor, source_y: torch.Tensor, target_x: torch.Tensor,
              target_y: torch.Tensor, *, n_gap: int = 500, seed: int = 0) -> DomainSamples:
        """Pick ``min(n_gap, |source|, |target|)`` samples of each domain, seeded."""
        n = min(n_gap, len(source_x), len(target_x))
        rng = np.random.default_rng(seed)
        return cls(source_x, source_y, target_x, target_y,
                   np.sort(rng.choice(len(source_x), n, replace=False)),
                   np.sort(rng.choice(len(target_x), n, replace=False)))

    @property
    def n_gap(self) -> int:
        return len(self.gap_source)


def _batched(model: nn.Module, x: torch.Tensor, batch: int = 1024) -> dict[str, Any]:
    dev = next(model.parameters()).device
    model.eval()
    logits: list[torch.Tensor] = []
    feats: dict[str, list[torch.Tensor]] = {}
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch].to(dev)
            logits.append(model(xb)[0].cpu())
            for name, f in model.features(xb).items():  # type: ignore[operator]
                feats.setdefault(name, []).append(f.cpu())
    return {"logits": torch.cat(logits), **{k: torch.cat(v) for k, v in feats.items()}}


def layer_features(model: nn.Module, x: torch.Tensor) -> dict[str, np.ndarray]:
    """Each feature layer's output for images ``x``, float64 ``(n, width)``."""
    out = _batched(model, x)
    return {k: v.double().numpy() for k, v in out.items() if k != "logits"}


@dataclass(frozen=True)
class EpochMeasure:
    """One epoch of one training: accuracies and the domain gap per feature layer."""

    source_accuracy: float
    target_accuracy: float
    layers: dict[str, dict[str, Any]]

    def record(self) -> dict[str, Any]:
        return {"source_accuracy": self.source_accuracy,
                "target_accuracy": self.target_accuracy, "layers": self.layers}


def measure_epoch(model: nn.Module, samples: DomainSamples, *,
                  random_state: int = 0) -> EpochMeasure:
    """Accuracy on both eval splits, and MMD² / CORAL / domain classifier on the gap
    subsets, at every feature layer of ``model`` (a :class:`~shenjing.models.dann.DANN`)."""
    s = _batched(model, samples.source_x)
    t = _batched(model, samples.target_x)
    acc_s = float((s["logits"].argmax(1) == samples.source_y).float().mean())
    acc_t = float((t["logits"].argmax(1) == samples.target_y).float().mean())
    layers = {}
    for name in (k for k in s if k != "logits"):
        gap = domain_gap(s[name][samples.gap_source].double().numpy(),
                         t[name][samples.gap_target].double().numpy(),
                         random_state=random_state)
        layers[name] = gap.record()
    return EpochMeasure(acc_s, acc_t, layers)


@dataclass(frozen=True)
class DannHistory:
    """The study's records, one per (method, epoch): ``{"method", "epoch",
    "source_accuracy", "target_accuracy", "layers": {layer: {mmd2, coral, …}}, losses…}``."""

    records: tuple[dict[str, Any], ...]

    @classmethod
    def from_records(cls, records: list[dict[str, Any]]) -> DannHistory:
        return cls(tuple(records))

    @property
    def methods(self) -> list[str]:
        seen: list[str] = []
        for r in self.records:
            if r["method"] not in seen:
                seen.append(r["method"])
        return seen

    @property
    def layers(self) -> list[str]:
        from shenjing.models.dann import FEATURE_LAYERS

        order = list(FEATURE_LAYERS)  # input side first (JSON files keep keys sorted)
        found = list(self.records[0]["layers"]) if self.records else []
        return sorted(found, key=lambda k: order.index(k) if k in order else len(order))

    def of(self, method: str) -> list[dict[str, Any]]:
        return sorted((r for r in self.records if r["method"] == method),
                      key=lambda r: r["epoch"])

    def epochs(self, method: str) -> np.ndarray:
        return np.array([r["epoch"] for r in self.of(method)], dtype=np.int64)

    def series(self, method: str, key: str, layer: str | None = None) -> np.ndarray:
        """One number by epoch: a record's ``key``, or a layer's (``layer`` given)."""
        rows = self.of(method)
        values = [(r["layers"][layer][key] if layer is not None else r.get(key)) for r in rows]
        return np.array([np.nan if v is None else v for v in values], dtype=np.float64)

    def final(self, method: str) -> dict[str, Any]:
        return self.of(method)[-1]

    def untrained(self) -> dict[str, Any]:
        """Epoch 0 (the same initial weights for every method)."""
        return next(r for r in self.records if r["epoch"] == 0)


@dataclass(frozen=True)
class DomainMap:
    """A 2-D t-SNE map of both domains' features at one layer: ``coords`` (n, 2),
    ``domain`` (n,) 0 = source, 1 = target, ``labels`` (n,) classes; ``params`` what made it."""

    coords: np.ndarray
    domain: np.ndarray
    labels: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | os.PathLike[str]) -> Path:
        from shenjing import _io

        return _io.save_npz(path, coords=self.coords, domain=self.domain, labels=self.labels,
                            params=np.array(_io.strict_json(self.params)))

    @property
    def knn_domain_mixing(self) -> float:
        """Share of each point's 10 nearest map neighbours from the other domain (0.5: the
        domains are mixed as well as they could be for equal counts; 0: separated)."""
        from sklearn.neighbors import NearestNeighbors

        k = min(10, len(self.coords) - 1)
        idx = NearestNeighbors(n_neighbors=k + 1).fit(self.coords).kneighbors(
            self.coords, return_distance=False)[:, 1:]
        return float((self.domain[idx] != self.domain[:, None]).mean())


def load_domain_map(path: str | os.PathLike[str]) -> DomainMap:
    """Read a map :meth:`DomainMap.save` wrote (plain arrays; no pickle)."""
    from shenjing import _io

    with np.load(path, allow_pickle=False) as z:
        return DomainMap(z["coords"], z["domain"], z["labels"],
                         _io.loads_json(str(z["params"])))


def domain_map(source: np.ndarray, target: np.ndarray, source_labels: Any,
               target_labels: Any, *, random_state: int = 0, perplexity: float = 30.0,
               n_jobs: int = -1, **params: Any) -> DomainMap:
    """t-SNE (:func:`shenjing.analysis.embed.embed`, openTSNE, PCA to 50 dims first) of the
    source and target features together."""
    from shenjing.analysis.embed import embed

    x = np.concatenate([np.asarray(source), np.asarray(target)]).astype(np.float32)
    emb = embed(x, "tsne", random_state=random_state, perplexity=perplexity, n_jobs=n_jobs)
    domain = np.r_[np.zeros(len(source), np.int64), np.ones(len(target), np.int64)]
    labels = np.r_[np.asarray(source_labels), np.asarray(target_labels)].astype(np.int64)
    return DomainMap(emb.coords, domain, labels, {**emb.params, **params})


__all__ = ["DannHistory", "DomainMap", "DomainSamples", "EpochMeasure", "domain_map",
           "layer_features", "load_domain_map", "measure_epoch"]
