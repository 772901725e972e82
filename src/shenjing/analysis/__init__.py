"""Numeric cores: pure computations on tensors and arrays, returning small result objects.

Each view has a module here (``shenjing.analysis.embed``, ``.cka``, ``.landscape`` …);
this package re-exports their main functions and results, resolved on first use so that
importing ``shenjing.analysis`` loads no torch or scikit-learn. No name here is a
submodule's name (``embed``, ``fit``, ``separability`` … are modules): a submodule, once
imported, would take that name's place. ``shenjing.embed`` is the embedding function.

>>> import shenjing as sj
>>> sj.analysis.cka_matrix.__module__
'shenjing.analysis.cka'
"""

from __future__ import annotations

from typing import Any

from shenjing._lazy import resolve

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "embed_sequence": "shenjing.analysis.embed",
    "embed_after": "shenjing.analysis.embed",
    "load_embedding": "shenjing.analysis.embed",
    "linear_probe": "shenjing.analysis.separability",
    "knn_accuracy": "shenjing.analysis.separability",
    "trustworthiness": "shenjing.analysis.separability",
    "map_quality": "shenjing.analysis.separability",
    "cka_matrix": "shenjing.analysis.cka",
    "linear_cka": "shenjing.analysis.cka",
    "export_projector": "shenjing.analysis.projector",
    "feature_maps": "shenjing.analysis.maps",
    "compare_feature_maps": "shenjing.analysis.maps",
    "FeatureMaps": "shenjing.analysis.maps",
    "layer_filters": "shenjing.analysis.filters",
    "kernel_grid": "shenjing.analysis.filters",
    "unit_images": "shenjing.analysis.filters",
    "Filters": "shenjing.analysis.filters",
    "weight_stats": "shenjing.analysis.weights",
    "weight_history": "shenjing.analysis.weights",
    "read_dynamics": "shenjing.analysis.dynamics",
    "layer_status": "shenjing.analysis.dynamics",
    "Dynamics": "shenjing.analysis.dynamics",
    "polynomial_fit": "shenjing.analysis.fit",
    "fit_errors": "shenjing.analysis.fit",
    "relu_decomposition": "shenjing.analysis.fit",
    "linear_regions": "shenjing.analysis.fit",
    "parse_function": "shenjing.analysis.expr",
    "warp_layers": "shenjing.analysis.warp",
    "decision_map": "shenjing.analysis.warp",
    "token_layout": "shenjing.analysis.attention",
    "attention_rollout": "shenjing.analysis.attention",
    "mean_attention_distance": "shenjing.analysis.attention",
    "attention_entropy": "shenjing.analysis.attention",
    "head_stats": "shenjing.analysis.attention",
    "head_change": "shenjing.analysis.attention",
    "attention_study": "shenjing.analysis.attention",
    "load_attention": "shenjing.analysis.attention",
    "AttentionStudy": "shenjing.analysis.attention",
    "over_time": "shenjing.analysis.recurrent",
    "recurrent_states": "shenjing.analysis.recurrent",
    "load_over_time": "shenjing.analysis.recurrent",
    "OverTime": "shenjing.analysis.recurrent",
    "randomization_test": "shenjing.analysis.attribute",
    "deletion_insertion": "shenjing.analysis.attribute",
    "attribution_study": "shenjing.analysis.attribute",
    "load_attribution": "shenjing.analysis.attribute",
    "top_activations": "shenjing.analysis.units",
    "receptive_field": "shenjing.analysis.units",
    "load_top_units": "shenjing.analysis.units",
    "visualize_units": "shenjing.analysis.visualize",
    "frechet_distance": "shenjing.analysis.gan",
    "class_coverage": "shenjing.analysis.gan",
    "nearest_neighbours": "shenjing.analysis.gan",
    "evaluate_samples": "shenjing.analysis.gan",
    "latent_interpolation": "shenjing.analysis.gan",
    "mmd2_unbiased": "shenjing.analysis.domain",
    "mmd_permutation_test": "shenjing.analysis.domain",
    "coral_distance": "shenjing.analysis.domain",
    "proxy_a_distance": "shenjing.analysis.domain",
    "domain_gap": "shenjing.analysis.domain",
    "domain_map": "shenjing.analysis.dann",
    "load_feature_visualization": "shenjing.analysis.visualize",
    "Landscape": "shenjing.analysis.landscape",
    "random_directions": "shenjing.analysis.landscape",
    "line_direction": "shenjing.analysis.landscape",
    "evaluate_landscape": "shenjing.analysis.landscape",
    "trajectory_pca": "shenjing.analysis.landscape",
    "load_landscape": "shenjing.analysis.landscape",
    "HessianOperator": "shenjing.analysis.hessian",
    "lanczos_top": "shenjing.analysis.hessian",
    "sharpness": "shenjing.analysis.hessian",
    "load_sharpness": "shenjing.analysis.hessian",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return resolve(__name__, _EXPORTS, (), name)


def __dir__() -> list[str]:
    return list(__all__)
