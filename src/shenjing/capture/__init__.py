"""Record any layer of any model: by name, glob or type; in memory or streamed to disk.

- :func:`list_layers` (model, example batch) → a table of names, types, output shapes;
- :func:`resolve_layers` (model, patterns) → layer names, or :class:`LayerNotFoundError`;
- :func:`capture` (model, layers): a context manager for notebooks;
- :func:`capture_dataset` (model, data, layers, …, out_dir=None) → :class:`Activations`.

Post-activation features are the output of the activation module: in the zoo models
``relu1`` is "fc1 after its ReLU" (seed 000's hidden features).
"""

from shenjing.capture.activations import Activations, format_bytes
from shenjing.capture.core import Captured, capture, flatten_output
from shenjing.capture.dataset import available_memory, capture_dataset
from shenjing.capture.layers import LayerInfo, LayerTable, layer_names, list_layers, resolve_layers

__all__ = ["Activations", "Captured", "LayerInfo", "LayerTable", "available_memory", "capture",
           "capture_dataset", "flatten_output", "format_bytes", "layer_names", "list_layers",
           "resolve_layers"]
