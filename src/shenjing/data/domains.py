"""Two image domains of the same ten digit classes, for domain adaptation: MNIST and
scikit-learn's 8×8 digits upsampled to MNIST's 28×28.

The pair is a real domain shift of the MNIST → USPS kind: different writers, a different
scanner and preprocessing (MNIST: 20×20 size-normalised digits, anti-aliased, centred by
centre of mass in a 28×28 frame; digits: 32×32 bitmaps counted in 4×4 blocks into 8×8 images
with 17 grey levels, filling the whole frame) and a different resolution.

Resizing, said honestly: the 8×8 digits are **upsampled** to 28×28 by bilinear
interpolation (``torch.nn.functional.interpolate``, ``align_corners=False``). That adds no
detail: the upsampled images are smooth blobs with blocky edges, and they fill the frame
where MNIST digits leave a 4-pixel border. Both domains have pixels in [0, 1]
(``normalize='unit'``). Two domains whose images differ in size are always brought to the
larger size this way (never downsampled), with a note in :attr:`DomainPair.notes`;
domains whose channels differ are refused.

Splits: MNIST comes from :func:`shenjing.data.mnist.load_idx_dataset`. With the full four
IDX files its 60,000 training images (a fixed seeded subset of :data:`MAX_TRAIN` of them)
train and its 10,000 test images evaluate; with only the two ``t10k`` files (the 10,000
test images, as in ``/work/shared/data/mnist``) those are split deterministically (seeded,
stratified by class) into 8,000 train / 2,000 eval. The digits are split 1,347 train /
450 eval (stratified, seeded). The target domain's training images are used **without
labels**; its eval labels are used only to measure target accuracy.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch.nn import functional as F

from shenjing.data.types import Dataset, Split
from shenjing.errors import UsageError

DIRECTIONS = ("mnist-to-digits", "digits-to-mnist")
DOMAINS = ("mnist", "digits")
#: at most this many training images of a domain are used (a fixed seeded subset)
MAX_TRAIN = 10_000


@dataclass(frozen=True)
class DomainPair:
    """A labelled source domain and a target domain, both ``(n, channels, height,
    width)`` in [0, 1] and of one image size; ``notes`` say what was resized and how."""

    source: Dataset
    target: Dataset
    direction: str
    notes: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, ...]:
        return self.source.input_shape

    def spec(self) -> dict[str, object]:
        """What reloads the pair: the direction and both datasets' specs."""
        return {"name": "domain-pair", "direction": self.direction,
                "source": dict(self.source.spec), "target": dict(self.target.spec)}


def resize_images(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images ``(n, c, h, w)`` resized to ``size`` by bilinear interpolation, kept in the
    range they had (interpolation of values in [0, 1] stays in [0, 1]).

    >>> resize_images(torch.ones(2, 1, 8, 8), (28, 28)).shape
    torch.Size([2, 1, 28, 28])
    """
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def _resized(dataset: Dataset, size: tuple[int, int]) -> Dataset:
    def split(s: Split) -> Split:
        return Split(resize_images(s.x, size), s.y, s.indices)

    return replace(dataset, train=split(dataset.train), test=split(dataset.test))


def match_domains(source: Dataset, target: Dataset, direction: str = "custom") -> DomainPair:
    """The two datasets as a :class:`DomainPair` of one image size: the smaller images are
    upsampled to the larger (bilinear), and a note says so. Refused: non-image data,
    different channel counts, different class lists."""
    for role, d in (("source", source), ("target", target)):
        if len(d.input_shape) != 3:
            raise UsageError(f"the {role} domain {d.name!r} has inputs of shape "
                             f"{tuple(d.input_shape)}, not images (channels, height, width); "
                             "use two image datasets, e.g. mnist and digits")
    if source.input_shape[0] != target.input_shape[0]:
        raise UsageError(f"the source {source.name!r} has {source.input_shape[0]} channel(s) "
                         f"and the target {target.name!r} {target.input_shape[0]}: domain "
                         "adaptation here needs images with the same channels; convert one "
                         "of them (e.g. to grey)")
    if tuple(source.classes) != tuple(target.classes):
        raise UsageError(f"the source {source.name!r} and target {target.name!r} have "
                         f"different classes ({list(source.classes)} vs "
                         f"{list(target.classes)}); use two datasets of the same classes")
    notes: list[str] = []
    hs, ws = source.input_shape[1:]
    ht, wt = target.input_shape[1:]
    size = (max(hs, ht), max(ws, wt))
    for role, d in (("source", source), ("target", target)):
        h, w = d.input_shape[1:]
        if (h, w) != size:
            notes.append(f"the {role} domain {d.name} was upsampled from {h}×{w} to "
                         f"{size[0]}×{size[1]} by bilinear interpolation (no detail added; "
                         "the other domain is unchanged)")
    source, target = _resized(source, size), _resized(target, size)
    return DomainPair(source, target, direction, tuple(notes))


def _load(name: str, data_dir: str | os.PathLike[str] | None, seed: int) -> Dataset:
    from shenjing.data.digits import load_digits_dataset
    from shenjing.data.mnist import DEFAULT_DATA_DIR, load_idx_dataset

    if name == "digits":
        return load_digits_dataset(seed=seed, normalize="unit")
    if data_dir is not None:
        folder = Path(data_dir)
        if not folder.exists():
            raise UsageError(f"--data-dir {folder} does not exist; pass the folder that holds "
                             "MNIST's IDX files (the two t10k files are enough), e.g. "
                             "--data-dir /work/shared/data/mnist")
    dataset = load_idx_dataset("mnist", data_dir if data_dir is not None else
                               DEFAULT_DATA_DIR / "mnist", download_ok=data_dir is None,
                               seed=seed, normalize="unit", progress=False)
    if len(dataset.train) > MAX_TRAIN:
        dataset = replace(dataset, train=dataset.train.subset(MAX_TRAIN, seed=seed),
                          notes=(*dataset.notes, f"a fixed subset of {MAX_TRAIN} of the "
                                 f"{len(dataset.train)} training images is used (seed {seed})"))
    return dataset


def load_domain_pair(direction: str = "mnist-to-digits", *,
                     data_dir: str | os.PathLike[str] | None = None,
                     seed: int = 0) -> DomainPair:
    """MNIST and the upsampled digits as source and target, in ``direction``
    (``'mnist-to-digits'`` or ``'digits-to-mnist'``); ``data_dir`` holds MNIST's IDX files
    (None: shenjing's data folder, downloading what is missing)."""
    from shenjing._checks import choice

    choice("--direction", direction, DIRECTIONS)
    source_name, target_name = direction.split("-to-")
    mnist = _load("mnist", data_dir, seed)
    digits = _load("digits", None, seed)
    by_name = {"mnist": mnist, "digits": digits}
    pair = match_domains(by_name[source_name], by_name[target_name], direction)
    notes = [*pair.notes, *(f"{name}: {n}" for name, d in by_name.items() for n in d.notes)]
    return replace(pair, notes=tuple(notes))


__all__ = ["DIRECTIONS", "DomainPair", "load_domain_pair", "match_domains", "resize_images"]
