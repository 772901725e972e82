"""What the network looks at: attribution maps and their sanity checks.

- :func:`attribute`: saliency, Integrated Gradients, SmoothGrad, occlusion and Grad-CAM
  (Captum's implementations), batched and checked, one ``(N, H, W)`` display map per input
  (:mod:`.methods`); Integrated Gradients carries its completeness check.
- :func:`randomization_test`: Adebayo et al.'s cascading model randomization
  (:mod:`.randomization`), with Spearman and SSIM (:mod:`.ssim`, written here).
- :func:`deletion_insertion`: Petsiuk et al.'s deletion/insertion curves against a random
  pixel order (:mod:`.faithfulness`).
- :func:`epoch_attribution` / :func:`attribution_study`: one epoch's maps and checks, and
  the study the stage saves (:mod:`.study`, :func:`load_attribution`).

Captum is imported only when a method runs, so importing this package does not load it.
"""

from shenjing.analysis.attribute._model import default_layer, layer_shapes, spatial_layers
from shenjing.analysis.attribute.faithfulness import DeletionInsertion, deletion_insertion
from shenjing.analysis.attribute.methods import (
    METHODS,
    AttributionMaps,
    Completeness,
    attribute,
)
from shenjing.analysis.attribute.randomization import (
    THRESHOLD,
    RandomizationResult,
    parameter_layers,
    randomization_test,
)
from shenjing.analysis.attribute.ssim import spearman, ssim
from shenjing.analysis.attribute.study import (
    AttributionStudy,
    EpochAttribution,
    attribution_study,
    epoch_attribution,
    load_attribution,
)

__all__ = [
    "METHODS", "THRESHOLD", "AttributionMaps", "AttributionStudy", "Completeness",
    "DeletionInsertion", "EpochAttribution", "RandomizationResult", "attribute",
    "attribution_study", "default_layer", "deletion_insertion", "epoch_attribution",
    "layer_shapes", "load_attribution", "parameter_layers", "randomization_test", "spatial_layers",
    "spearman", "ssim",
]
