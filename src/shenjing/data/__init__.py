"""Datasets as float32 tensors with int64 labels, class names and a deterministic split."""

from shenjing.data.registry import DATASET_NAMES, load_dataset, load_from_spec
from shenjing.data.types import Dataset, Split

__all__ = ["DATASET_NAMES", "Dataset", "Split", "load_dataset", "load_from_spec"]
