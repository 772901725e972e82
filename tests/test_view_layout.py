"""One view, one shape: every view has a module of its own name in every layer.

A view is named by its CLI command. Its numbers come from ``analysis/<view>`` (a module, or a
package where the view is big), its figures from ``plot/<view>``, its workflow over a run from
``stages/<view>``, its command from ``cli/<view>`` and its part of the page from
``report/sections/<view>`` (docs/architecture.md, "One view, one shape").
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

import pytest

VIEWS = ("embed", "maps", "filters", "weights", "dynamics", "landscape", "hessian", "fit",
         "warp", "attention", "recurrent", "attribute", "units", "visualize",
         "gan", "dann")
LAYERS = ("analysis", "plot", "stages", "cli", "report.sections")


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("view", VIEWS)
def test_every_view_has_a_module_of_its_name_in_every_layer(view, layer):
    assert importlib.util.find_spec(f"shenjing.{layer}.{view}") is not None, (
        f"view {view!r} has no module shenjing/{layer.replace('.', '/')}/{view}.py")


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_is_a_command_of_its_name_registered_by_its_cli_module(view):
    import typer

    app = typer.Typer()
    importlib.import_module(f"shenjing.cli.{view}").register(app)
    names = {c.name or c.callback.__name__ for c in app.registered_commands}
    names |= {g.name for g in app.registered_groups}
    assert view in names


@pytest.mark.parametrize("view", VIEWS)
def test_every_view_draws_with_plot_functions(view):
    module = importlib.import_module(f"shenjing.plot.{view}")
    drawn = [name for name, fn in inspect.getmembers(module, inspect.isfunction)
             if name.startswith("plot_") and fn.__module__ == module.__name__]
    assert drawn, f"shenjing.plot.{view} defines no plot_* function"


def test_the_command_modules_are_the_views_and_the_run_level_commands():
    from shenjing.cli.app import COMMAND_MODULES

    assert set(VIEWS) <= set(COMMAND_MODULES)
    assert set(COMMAND_MODULES) - set(VIEWS) == {"inspect", "train", "report", "capture",
                                                 "compare", "export"}


def test_the_report_places_every_view():
    """Each view's section module is used by the page: as a section, or inside the section
    of the view it belongs to (filters in maps, weights in dynamics)."""
    from pathlib import Path

    import shenjing.report.sections as sections
    from shenjing.report.builder import default_sections

    used = {fn.__module__.rsplit(".", 1)[-1] for fn in default_sections()}
    folder = Path(sections.__file__).parent
    placed_inside = {view for view in VIEWS if view not in used and any(
        f"shenjing.report.sections.{view} import" in (folder / f"{host}.py").read_text()
        for host in used)}
    assert set(VIEWS) == (used & set(VIEWS)) | placed_inside


#: figures of several axes (grids of panels, a heat map beside its bars): they make their
#: own figure; every other plot_* draws into the ``ax`` it is given
MULTI_PANEL = {
    "plot_embedding_grid", "plot_feature_maps", "plot_feature_vector", "plot_feature_map_strip",
    "plot_feature_heatmap", "plot_filters", "plot_kernel_grid", "plot_unit_images",
    "plot_kernel_signals", "plot_filters_over_epochs", "plot_weight_histograms",
    "plot_weight_stats", "plot_training_curves", "plot_layer_dynamics", "plot_layer_status",
    "plot_decomposition", "plot_linear_regions", "plot_fit_epochs", "plot_warp",
    "plot_state_trajectories", "plot_attention_maps", "plot_attention_rollout",
    "plot_attention_matrix", "plot_attribution_maps", "plot_randomization", "plot_top_units",
    "plot_visualization",
    "plot_samples_over_epochs", "plot_gan_curves", "plot_gan_quality",
    "plot_domain_gap", "plot_domain_maps"}


@pytest.mark.parametrize("view", VIEWS)
def test_plot_functions_return_a_figure_and_take_ax_where_one_axes_is_drawn(view):
    module = importlib.import_module(f"shenjing.plot.{view}")
    for name, fn in inspect.getmembers(module, inspect.isfunction):
        if not name.startswith("plot_") or fn.__module__ != module.__name__:
            continue
        sig = inspect.signature(fn)
        if sig.return_annotation is None or sig.return_annotation == "None":
            continue  # draws onto an axes it is given (a helper of another figure)
        assert sig.return_annotation == "Figure", f"{name} -> {sig.return_annotation}"
        if name in MULTI_PANEL:
            assert "ax" not in sig.parameters, f"{name} takes ax: drop it from MULTI_PANEL"
        else:
            ax = sig.parameters.get("ax")
            assert ax is not None and ax.kind is inspect.Parameter.KEYWORD_ONLY \
                and ax.default is None, f"{name} draws one axes but takes no ax=None"
