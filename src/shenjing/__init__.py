"""shenjing (神经): see what a PyTorch network has learned.

Importing shenjing is cheap and has no side effects: names are resolved on first use,
so torch, matplotlib, plotly and openTSNE load only when something that needs them is used.

>>> import shenjing as sj
>>> sj.__version__ != ""
True

A notebook session::

    run = sj.train("mlp", data="digits", epochs=5, run="runs/mlp")       # a Run
    acts = sj.capture_dataset(run.model(epoch=5), run.data.test, ["relu1"])
    emb = sj.embed(acts["relu1"], method="tsne", random_state=0)          # Embedding
"""

from __future__ import annotations

import importlib
from typing import Any

from shenjing._version import __version__

# public name -> (module that defines it, attribute there)
_EXPORTS: dict[str, tuple[str, str]] = {
    # shenjing.data
    "load_dataset": ("shenjing.data", "load_dataset"),
    "Dataset": ("shenjing.data", "Dataset"),
    "Split": ("shenjing.data", "Split"),
    "DATASET_NAMES": ("shenjing.data", "DATASET_NAMES"),
    # shenjing.models
    "build_model": ("shenjing.models", "build_model"),
    "MODEL_NAMES": ("shenjing.models", "MODEL_NAMES"),
    # shenjing.models.weights
    "load_weights": ("shenjing.models.weights", "load_weights"),
    # shenjing.models.outputs
    "with_output": ("shenjing.models.outputs", "with_output"),
    "select_output": ("shenjing.models.outputs", "select_output"),
    # shenjing.runs
    "Run": ("shenjing.runs", "Run"),
    "open_run": ("shenjing.runs", "open_run"),
    "find_runs": ("shenjing.runs", "find_runs"),
    # shenjing.training
    "train": ("shenjing.training", "train"),
    "TrainConfig": ("shenjing.training", "TrainConfig"),
    "Recorder": ("shenjing.training", "Recorder"),
    "evaluate": ("shenjing.training", "evaluate"),
    # shenjing.capture
    "list_layers": ("shenjing.capture", "list_layers"),
    "resolve_layers": ("shenjing.capture", "resolve_layers"),
    "capture": ("shenjing.capture", "capture"),
    "capture_dataset": ("shenjing.capture", "capture_dataset"),
    "Activations": ("shenjing.capture", "Activations"),
    # shenjing.analysis.embed
    "embed": ("shenjing.analysis.embed", "embed"),
    "embed_sequence": ("shenjing.analysis.embed", "embed_sequence"),
    "Embedding": ("shenjing.analysis.embed", "Embedding"),
    # shenjing.analysis.separability
    "separability": ("shenjing.analysis.separability", "separability"),
    "linear_probe": ("shenjing.analysis.separability", "linear_probe"),
    "knn_accuracy": ("shenjing.analysis.separability", "knn_accuracy"),
    "trustworthiness": ("shenjing.analysis.separability", "trustworthiness"),
    "map_quality": ("shenjing.analysis.separability", "map_quality"),
    # shenjing.analysis.cka
    "cka_matrix": ("shenjing.analysis.cka", "cka_matrix"),
    "linear_cka": ("shenjing.analysis.cka", "linear_cka"),
    # shenjing.analysis.projector
    "export_projector": ("shenjing.analysis.projector", "export_projector"),
    # shenjing.analysis.maps
    "feature_maps": ("shenjing.analysis.maps", "feature_maps"),
    "compare_feature_maps": ("shenjing.analysis.maps", "compare_feature_maps"),
    "FeatureMaps": ("shenjing.analysis.maps", "FeatureMaps"),
    # shenjing.analysis.filters
    "layer_filters": ("shenjing.analysis.filters", "layer_filters"),
    "kernel_grid": ("shenjing.analysis.filters", "kernel_grid"),
    "unit_images": ("shenjing.analysis.filters", "unit_images"),
    "Filters": ("shenjing.analysis.filters", "Filters"),
    # shenjing.analysis.weights
    "weight_stats": ("shenjing.analysis.weights", "weight_stats"),
    "weight_history": ("shenjing.analysis.weights", "weight_history"),
    # shenjing.analysis.dynamics
    "read_dynamics": ("shenjing.analysis.dynamics", "read_dynamics"),
    "layer_status": ("shenjing.analysis.dynamics", "layer_status"),
    "Dynamics": ("shenjing.analysis.dynamics", "Dynamics"),
    # shenjing.analysis.fit
    "polynomial_fit": ("shenjing.analysis.fit", "polynomial_fit"),
    "fit_errors": ("shenjing.analysis.fit", "fit_errors"),
    "relu_decomposition": ("shenjing.analysis.fit", "relu_decomposition"),
    "linear_regions": ("shenjing.analysis.fit", "linear_regions"),
    # shenjing.analysis.expr
    "parse_function": ("shenjing.analysis.expr", "parse_function"),
    # shenjing.analysis.warp
    "warp_layers": ("shenjing.analysis.warp", "warp_layers"),
    "decision_map": ("shenjing.analysis.warp", "decision_map"),
    # shenjing.analysis.landscape
    "Landscape": ("shenjing.analysis.landscape", "Landscape"),
    "random_directions": ("shenjing.analysis.landscape", "random_directions"),
    "line_direction": ("shenjing.analysis.landscape", "line_direction"),
    "evaluate_landscape": ("shenjing.analysis.landscape", "evaluate_landscape"),
    "trajectory_pca": ("shenjing.analysis.landscape", "trajectory_pca"),
    "load_landscape": ("shenjing.analysis.landscape", "load_landscape"),
    # shenjing.analysis.hessian
    "HessianOperator": ("shenjing.analysis.hessian", "HessianOperator"),
    "lanczos_top": ("shenjing.analysis.hessian", "lanczos_top"),
    "sharpness": ("shenjing.analysis.hessian", "sharpness"),
    # shenjing.plot.embed
    "plot_embedding": ("shenjing.plot.embed", "plot_embedding"),
    "plot_embedding_grid": ("shenjing.plot.embed", "plot_embedding_grid"),
    "plot_separability": ("shenjing.plot.embed", "plot_separability"),
    "plot_cka": ("shenjing.plot.embed", "plot_cka"),
    # shenjing.plot.maps
    "plot_feature_maps": ("shenjing.plot.maps", "plot_feature_maps"),
    "plot_feature_vector": ("shenjing.plot.maps", "plot_feature_vector"),
    # shenjing.plot.filters
    "plot_filters": ("shenjing.plot.filters", "plot_filters"),
    "plot_kernel_grid": ("shenjing.plot.filters", "plot_kernel_grid"),
    "plot_unit_images": ("shenjing.plot.filters", "plot_unit_images"),
    # shenjing.plot.weights
    "plot_weight_histograms": ("shenjing.plot.weights", "plot_weight_histograms"),
    "plot_weight_stats": ("shenjing.plot.weights", "plot_weight_stats"),
    # shenjing.plot.dynamics
    "plot_training_curves": ("shenjing.plot.dynamics", "plot_training_curves"),
    "plot_layer_dynamics": ("shenjing.plot.dynamics", "plot_layer_dynamics"),
    "plot_layer_status": ("shenjing.plot.dynamics", "plot_layer_status"),
    # shenjing.plot.landscape
    "plot_line": ("shenjing.plot.landscape", "plot_line"),
    "plot_contour": ("shenjing.plot.landscape", "plot_contour"),
    "plot_surface": ("shenjing.plot.landscape", "plot_surface"),
    "plot_trajectory": ("shenjing.plot.landscape", "plot_trajectory"),
    "plot_hessian_density": ("shenjing.plot.hessian", "plot_hessian_density"),
    # shenjing.plot.fit
    "plot_fit": ("shenjing.plot.fit", "plot_fit"),
    "plot_decomposition": ("shenjing.plot.fit", "plot_decomposition"),
    "plot_linear_regions": ("shenjing.plot.fit", "plot_linear_regions"),
    # shenjing.plot.warp
    "plot_warp": ("shenjing.plot.warp", "plot_warp"),
    "plot_probe_accuracy": ("shenjing.plot.warp", "plot_probe_accuracy"),
    "plot_decision_boundary": ("shenjing.plot.warp", "plot_decision_boundary"),
    # shenjing.stages.embed
    "embed_stage": ("shenjing.stages.embed", "embed_stage"),
    "capture_stage": ("shenjing.stages.capture", "capture_stage"),
    # shenjing.stages.maps
    "maps_stage": ("shenjing.stages.maps", "maps_stage"),
    "filters_stage": ("shenjing.stages.filters", "filters_stage"),
    # shenjing.stages.dynamics
    "dynamics_stage": ("shenjing.stages.dynamics", "dynamics_stage"),
    "weights_stage": ("shenjing.stages.weights", "weights_stage"),
    # shenjing.stages.landscape
    "landscape_line": ("shenjing.stages.landscape", "landscape_line"),
    "landscape_plane": ("shenjing.stages.landscape", "landscape_plane"),
    "landscape_trajectory": ("shenjing.stages.landscape", "landscape_trajectory"),
    "hessian": ("shenjing.stages.hessian", "hessian"),
    # shenjing.stages.warp
    "warp": ("shenjing.stages.warp", "warp"),
    # shenjing.stages.inspect
    "inspect_model": ("shenjing.stages.inspect", "inspect_model"),
    # shenjing.report
    "build_report": ("shenjing.report", "build_report"),
    # shenjing.demo
    "run_demo": ("shenjing.demo", "run_demo"),
    # shenjing.errors
    "ShenjingError": ("shenjing.errors", "ShenjingError"),
    # aliases
    "fit_study": ("shenjing.stages.fit", "fit"),
}

__all__ = ["__version__", *sorted(_EXPORTS)]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module, attr = _EXPORTS[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'shenjing' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
