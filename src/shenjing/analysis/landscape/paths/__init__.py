"""The engine's evaluation paths, one class per path (see each module for how it works).

All compute the same numbers (up to float rounding) behind one interface:
``applies(model, batch)`` says why a path cannot evaluate a model (None when it can) and
``evaluate(coeffs)`` returns the mean loss and accuracy at each point.

=============== =============================================================== ==========
path            how                                                             module
=============== =============================================================== ==========
``loop``        one point at a time through the model (BN recompute, compile)   ``loop``
``linear``      first layer by linearity, the rest per point                    ``linear``
``chain``       first layer by linearity, a Linear chain batched over points    ``chain``
``vmap``        ``torch.vmap`` over parameter sets (the GPU path)               ``vmap``
``linear-vmap`` first layer by linearity, the rest vmapped                      ``linear_vmap``
=============== =============================================================== ==========
"""

from shenjing.analysis.landscape.paths.base import Batch, EvaluationPath
from shenjing.analysis.landscape.paths.chain import ChainPath, chain_steps
from shenjing.analysis.landscape.paths.first_layer import FirstLayer, find_first_layer
from shenjing.analysis.landscape.paths.linear import LinearPath
from shenjing.analysis.landscape.paths.linear_vmap import LinearVmapPath
from shenjing.analysis.landscape.paths.loop import LoopPath
from shenjing.analysis.landscape.paths.vmap import VmapPath

PATH_TYPES: dict[str, type[EvaluationPath]] = {
    cls.name: cls for cls in (LoopPath, LinearPath, LinearVmapPath, ChainPath, VmapPath)}

__all__ = ["PATH_TYPES", "Batch", "ChainPath", "EvaluationPath", "FirstLayer", "LinearPath",
           "LinearVmapPath", "LoopPath", "VmapPath", "chain_steps", "find_first_layer"]
