"""Figures: one ``plot_*`` function per figure, each drawing results and returning a Figure.

Each view has a module here (``shenjing.plot.embed``, ``.maps``, ``.landscape`` …); this
package re-exports every ``plot_*`` function, resolved on first use so that importing
``shenjing.plot`` loads no matplotlib.

>>> import shenjing as sj
>>> sj.plot.plot_embedding.__module__
'shenjing.plot.embed'
"""

from __future__ import annotations

from typing import Any

from shenjing._lazy import resolve

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    "plot_training_curves": "shenjing.plot.dynamics",
    "plot_layer_dynamics": "shenjing.plot.dynamics",
    "plot_layer_status": "shenjing.plot.dynamics",
    "plot_embedding": "shenjing.plot.embed",
    "plot_embedding_grid": "shenjing.plot.embed",
    "plot_separability": "shenjing.plot.embed",
    "plot_cka": "shenjing.plot.embed",
    "plot_filters": "shenjing.plot.filters",
    "plot_kernel_grid": "shenjing.plot.filters",
    "plot_unit_images": "shenjing.plot.filters",
    "plot_kernel_signals": "shenjing.plot.filters",
    "plot_filters_over_epochs": "shenjing.plot.filters",
    "plot_fit": "shenjing.plot.fit",
    "plot_fit_errors": "shenjing.plot.fit",
    "plot_decomposition": "shenjing.plot.fit",
    "plot_linear_regions": "shenjing.plot.fit",
    "plot_fit_frame": "shenjing.plot.fit",
    "plot_fit_epochs": "shenjing.plot.fit",
    "plot_hessian_density": "shenjing.plot.hessian",
    "plot_sharpness_epochs": "shenjing.plot.hessian",
    "plot_compared_curves": "shenjing.plot.compare",
    "plot_compared_dynamics": "shenjing.plot.compare",
    "plot_compared_lines": "shenjing.plot.compare",
    "plot_compared_planes": "shenjing.plot.compare",
    "plot_compared_sharpness": "shenjing.plot.compare",
    "plot_cka_layers": "shenjing.plot.compare",
    "plot_compared_probes": "shenjing.plot.compare",
    "plot_line": "shenjing.plot.landscape",
    "plot_contour": "shenjing.plot.landscape",
    "plot_trajectory_points": "shenjing.plot.landscape",
    "plot_trajectory": "shenjing.plot.landscape",
    "plot_surface": "shenjing.plot.landscape",
    "plot_feature_maps": "shenjing.plot.maps",
    "plot_feature_vector": "shenjing.plot.maps",
    "plot_feature_map_strip": "shenjing.plot.maps",
    "plot_feature_heatmap": "shenjing.plot.maps",
    "plot_warp_layer": "shenjing.plot.warp",
    "plot_warp": "shenjing.plot.warp",
    "plot_probe_accuracy": "shenjing.plot.warp",
    "plot_decision_boundary": "shenjing.plot.warp",
    "plot_attention_maps": "shenjing.plot.attention",
    "plot_attention_rollout": "shenjing.plot.attention",
    "plot_attention_matrix": "shenjing.plot.attention",
    "plot_attention_distance": "shenjing.plot.attention",
    "plot_attention_entropy": "shenjing.plot.attention",
    "plot_attention_probe": "shenjing.plot.attention",
    "plot_probe_by_step": "shenjing.plot.recurrent",
    "plot_gate_saturation": "shenjing.plot.recurrent",
    "plot_state_trajectories": "shenjing.plot.recurrent",
    "plot_attribution_maps": "shenjing.plot.attribute",
    "plot_randomization": "shenjing.plot.attribute",
    "plot_deletion_insertion": "shenjing.plot.attribute",
    "plot_top_units": "shenjing.plot.units",
    "plot_visualization": "shenjing.plot.visualize",
    "plot_sample_grid": "shenjing.plot.gan",
    "plot_samples_over_epochs": "shenjing.plot.gan",
    "plot_class_histogram": "shenjing.plot.gan",
    "plot_gan_curves": "shenjing.plot.gan",
    "plot_gan_quality": "shenjing.plot.gan",
    "plot_interpolation": "shenjing.plot.gan",
    "plot_nearest_training": "shenjing.plot.gan",
    "plot_target_accuracy": "shenjing.plot.dann",
    "plot_domain_gap": "shenjing.plot.dann",
    "plot_gap_bars": "shenjing.plot.dann",
    "plot_domain_maps": "shenjing.plot.dann",
    "plot_weight_histograms": "shenjing.plot.weights",
    "plot_weight_stats": "shenjing.plot.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    return resolve(__name__, _EXPORTS, (), name)


def __dir__() -> list[str]:
    return list(__all__)
