"""Record any layer of any model: by name, glob or type; in memory or streamed to disk.

- :func:`list_layers` (model, example batch) → a table of names, types, output shapes;
- :func:`resolve_layers` (model, patterns) → layer names, or :class:`LayerNotFoundError`;
- :func:`resolve_keys` (model, example, specs) → capture keys (``lstm.1.0``, ``block#1``);
- :func:`default_layers` (model, example) → the block outputs, penultimate and logits;
- :func:`capture` (model, layers): a context manager for notebooks;
- :func:`capture_dataset` (model, data, layers, …, out_dir=None) → :class:`Activations`.

All of them record through one hook → keys → sink path, :mod:`shenjing.capture.recorder`.

Post-activation features are the output of the activation module: in the zoo models
``relu1`` is "fc1 after its ReLU" (seed 000's hidden features).
"""

from shenjing.capture.activations import Activations, format_bytes
from shenjing.capture.core import Captured, capture
from shenjing.capture.dataset import available_memory, capture_dataset, memory_budget
from shenjing.capture.layers import (
    DefaultLayers,
    LayerInfo,
    LayerKey,
    LayerTable,
    default_layers,
    layer_names,
    list_layers,
    resolve_keys,
    resolve_layers,
    split_key,
)
from shenjing.capture.recorder import flatten_output

__all__ = ["Activations", "Captured", "DefaultLayers", "LayerInfo", "LayerKey", "LayerTable",
           "available_memory", "capture", "capture_dataset", "default_layers",
           "flatten_output", "format_bytes", "layer_names", "list_layers", "memory_budget",
           "resolve_keys", "resolve_layers", "split_key"]
