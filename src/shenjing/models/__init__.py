"""The seeds' models by name, and user models from an import path."""

from shenjing.models.spec import build_from_spec, model_spec, resolve_factory
from shenjing.models.zoo import MODEL_NAMES, MODELS, TrainDefaults, build_model, train_defaults

__all__ = ["MODELS", "MODEL_NAMES", "TrainDefaults", "build_from_spec", "build_model",
           "model_spec", "resolve_factory", "train_defaults"]
