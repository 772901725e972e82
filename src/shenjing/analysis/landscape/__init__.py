"""Loss landscapes: directions, the evaluation engine, grids with resumable storage.

``line``, ``plane`` and ``trajectory_plane`` are what a notebook calls (and the landscape
stages too); each takes an :class:`EngineConfig` or engine keywords.

>>> import torch
>>> from torch import nn
>>> from shenjing.analysis.landscape import plane
>>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
>>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
>>> ls = plane(net, x, y, loss="cross_entropy", steps=5, range_=(-1, 1), device="cpu")
>>> ls.shape, ls.complete
((5, 5), True)
"""

from shenjing.analysis.landscape.config import PATHS, EngineConfig
from shenjing.analysis.landscape.core import (
    evaluate_landscape,
    line,
    model_sha256,
    plane,
    trajectory_plane,
)
from shenjing.analysis.landscape.directions import (
    NORMS,
    Directions,
    ParamLayout,
    TrajectoryPCA,
    flat_params,
    line_direction,
    normalize_direction,
    random_directions,
    trajectory_pca,
)
from shenjing.analysis.landscape.engine import Evaluator, choose_engine
from shenjing.analysis.landscape.grid import (
    Landscape,
    export_vtk,
    grid_coords,
    load_landscape,
    make_axis,
    merge_previous,
)
from shenjing.analysis.landscape.paths import find_first_layer
from shenjing.analysis.landscape.storage import (
    directions_path,
    load_directions,
    read_directions_meta,
    save_directions,
    tensor_sha256,
)

__all__ = [
    "NORMS", "PATHS", "Directions", "EngineConfig", "Evaluator", "Landscape", "ParamLayout",
    "TrajectoryPCA", "choose_engine", "directions_path", "evaluate_landscape", "export_vtk",
    "find_first_layer", "flat_params", "grid_coords", "line", "line_direction",
    "load_directions", "load_landscape", "make_axis", "merge_previous", "model_sha256",
    "normalize_direction", "plane", "random_directions", "read_directions_meta",
    "save_directions", "tensor_sha256", "trajectory_pca", "trajectory_plane",
]
