"""shenjing (神经): see what a PyTorch network has learned.

The top level holds the workflow: data, models, runs, training, capture, embeddings, the
stages every CLI command calls, the report, and the errors worth catching. Figures are in
``shenjing.plot`` (``sj.plot.plot_embedding``), numeric cores in ``shenjing.analysis``
(``sj.analysis.cka_matrix``).

Importing shenjing is cheap and has no side effects: names are resolved on first use,
so torch, matplotlib, plotly and openTSNE load only when something that needs them is used.

>>> import shenjing as sj
>>> sj.__version__ != ""
True
>>> sj.plot.__name__, sj.analysis.__name__
('shenjing.plot', 'shenjing.analysis')

A notebook session::

    run = sj.train("mlp", data="digits", epochs=5, run="runs/mlp")       # a Run
    acts = sj.capture_dataset(run.model(epoch=5), run.data.test, ["relu1"])
    emb = sj.embed(acts["relu1"], method="tsne", random_state=0)          # Embedding
    sj.plot.plot_embedding(emb, labels=acts.labels)                       # a Figure
"""

from __future__ import annotations

import importlib
from typing import Any

from shenjing._lazy import resolve
from shenjing._version import __version__ as __version__

# public name -> the module that defines it ("module:attribute" where the names differ)
_EXPORTS: dict[str, str] = {
    # data and models
    "load_dataset": "shenjing.data",
    "Dataset": "shenjing.data",
    "build_model": "shenjing.models",
    "load_weights": "shenjing.models.weights",
    # runs and training
    "Run": "shenjing.runs",
    "open_run": "shenjing.runs",
    "find_runs": "shenjing.runs",
    "train": "shenjing.training",
    "TrainConfig": "shenjing.training",
    "Recorder": "shenjing.training",
    # capture and embeddings
    "list_layers": "shenjing.capture",
    "capture_dataset": "shenjing.capture",
    "Activations": "shenjing.capture",
    "embed": "shenjing.analysis.embed",
    "Embedding": "shenjing.analysis.embed",
    # stages: what each CLI command runs on a Run, saving numbers and figures into it
    "capture_stage": "shenjing.stages.capture",
    "embed_stage": "shenjing.stages.embed",
    "maps_stage": "shenjing.stages.maps",
    "filters_stage": "shenjing.stages.filters",
    "weights_stage": "shenjing.stages.weights",
    "dynamics_stage": "shenjing.stages.dynamics",
    "attention_stage": "shenjing.stages.attention",
    "recurrent_stage": "shenjing.stages.recurrent",
    "attribute_stage": "shenjing.stages.attribute",
    "units_stage": "shenjing.stages.units",
    "visualize_stage": "shenjing.stages.visualize",
    "gan": "shenjing.stages.gan",
    "dann": "shenjing.stages.dann",
    "landscape_line": "shenjing.stages.landscape",
    "landscape_plane": "shenjing.stages.landscape",
    "landscape_trajectory": "shenjing.stages.landscape",
    "hessian": "shenjing.stages.hessian",
    "warp": "shenjing.stages.warp",
    "fit_study": "shenjing.stages.fit:fit",
    "inspect_model": "shenjing.stages.inspect",
    "build_report": "shenjing.report",
    "run_demo": "shenjing.demo",
    "compare": "shenjing.stages.compare",
    # errors a caller may want to catch (the whole tree is in shenjing.errors)
    "ShenjingError": "shenjing.errors",
    "UsageError": "shenjing.errors",
    "LayerNotFoundError": "shenjing.errors",
    "NotApplicableError": "shenjing.errors",
    "RunError": "shenjing.errors",
    "UntrustedCodeError": "shenjing.errors",
    "MissingExtraError": "shenjing.errors",
}

# lazy namespaces of their own: figures and numeric cores
_NAMESPACES = ("analysis", "plot")

__all__ = sorted(["__version__", *_NAMESPACES, *_EXPORTS])


def __getattr__(name: str) -> Any:
    try:
        return resolve(__name__, _EXPORTS, _NAMESPACES, name)
    except AttributeError:
        # a name that moved to a namespace says where it is now
        for namespace in _NAMESPACES:
            if name in importlib.import_module(f"{__name__}.{namespace}").__all__:
                raise AttributeError(f"module 'shenjing' has no attribute {name!r}; it is "
                                     f"shenjing.{namespace}.{name}") from None
        raise


def __dir__() -> list[str]:
    return sorted(__all__)
