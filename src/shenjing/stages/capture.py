"""Stage ``capture``: a run's layer features over a split, streamed to ``activations/``.

Files written (``NNN`` = epoch, 3 digits):

``activations/<key>/<stem>.npy`` (stage ``capture``)
    (samples, *features) float32/float16, ``np.load(mmap_mode="r")``; beside it
    ``<stem>.indices.npy`` (samples,) int64 positions in the split,
    ``<stem>.labels.npy`` (samples,) class ids, and ``<stem>.json``
    ``{"key", "layer", "type", "shape", "dtype", "pool", "n_samples", "bytes", "epoch",
    "split", "subset", "subset_seed", "calls_per_forward", "model"}``. The stem names every
    setting that changes the numbers (:func:`capture_stem`): ``epoch-NNN`` for the whole
    test split, float32, no pooling, plus ``-train``, ``-n<N>`` (a subset; ``-seed<S>`` if
    its seed is not 0), ``-pool-<p>`` and ``-float16`` where they differ, e.g.
    ``epoch-005-train-n500-pool-mean.npy``; so two captures with other settings never
    replace each other (files of earlier versions, all named ``epoch-NNN``, still load
    with :meth:`Activations.load`).

``run.json`` gets ``stages.capture`` with the last call's settings and the list of files.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from shenjing._device import resolve_device
from shenjing.filenames import capture_stem
from shenjing.runs import Run
from shenjing.stages._inputs import layer_names, split_of

__all__ = ["CaptureResult", "capture_stage", "capture_stem"]


@dataclass(frozen=True)
class CaptureResult:
    """What :func:`capture_stage` wrote: one ``.npy`` per key, all named ``stem``."""

    epoch: int
    split: str
    n_samples: int
    paths: dict[str, Path]
    shapes: dict[str, tuple[int, ...]]
    nbytes: int
    stem: str = ""

    def summary(self) -> str:
        from shenjing.capture.activations import format_bytes

        lines = [f"captured {self.n_samples} {self.split} samples at epoch {self.epoch} "
                 f"({format_bytes(self.nbytes)}):"]
        for key, path in self.paths.items():
            lines.append(f"  {key:<20} {self.shapes[key]!s:<20} {path}")
        return "\n".join(lines)


def capture_stage(run: Run, layers: Sequence[str] | str, *, epoch: int | str = "final",
                  split: str = "test", n: int | None = None, pool: str | int = "none",
                  dtype: str = "float32", batch_size: int = 256,
                  device: str | torch.device = "auto",
                  max_memory: int | None = None, seed: int = 0,
                  verbose: bool = True) -> CaptureResult:
    """Stream ``layers`` of the model at ``epoch`` over a split to ``activations/``.

    ``n`` takes a fixed random subset (seeded); ``pool``/``dtype`` reduce conv maps on the
    fly. Files: ``activations/<key>/<stem>.npy`` (+ ``.indices.npy``, ``.labels.npy``,
    ``.json``), the stem naming the epoch and every other setting (:func:`capture_stem`).
    Not resumable: the capture is one streaming pass, written under a temporary name and
    renamed at the end, so a killed capture leaves no partial file; run it again.
    """
    from shenjing._checks import bounded_int, optional_int, positive_int, random_seed
    from shenjing.capture import capture_dataset

    optional_int("--n", n)
    positive_int("--batch-size", batch_size)
    random_seed("--seed", seed)
    if max_memory is not None:
        bounded_int("--max-memory", max_memory, low=1, example="2G")
    from shenjing.capture.core import check_pool

    check_pool(pool)
    e = run.resolve_epoch(epoch)
    whole = split_of(run, split)
    data = whole.subset(n, seed=seed)
    subset = len(data) if len(data) < len(whole) else None
    stem = capture_stem(e, split=split, subset=subset, seed=seed, pool=pool, dtype=dtype)
    dev = resolve_device(device, option="--device")
    model = run.model(e, device=dev)  # refusals (untrusted code) write nothing
    # two samples first: unknown layers, a --pool larger than the maps, or a capture that
    # would not fit are refused before the stage is marked running or anything is written
    from shenjing.capture.dataset import check_capture_memory
    from shenjing.stages._progress import print_capture_plan

    probe = capture_dataset(model, data.x[:2], layers, dtype=dtype, pool=pool,
                            input_shape=run.data.input_shape)
    check_capture_memory(probe, len(data), out_dir=run.path, max_memory=max_memory, pool=pool,
                         dtype=dtype, batch_size=batch_size, cuda=dev.type == "cuda")
    with run.running_stage("capture", epoch=e, layers=layer_names(layers)):
        acts = capture_dataset(model, data, layers, batch_size=batch_size, dtype=dtype, pool=pool,
                               out_dir=run.activations_dir, stem=stem,
                               max_memory=max_memory, input_shape=run.data.input_shape,
                               meta={"epoch": e, "split": split, "subset": subset,
                                     "subset_seed": seed if subset is not None else None},
                               on_plan=print_capture_plan if verbose else None)
        result = CaptureResult(epoch=e, split=split, n_samples=acts.n_samples,
                               paths=dict(acts.paths),
                               shapes={k: tuple(a.shape) for k, a in acts.items()},
                               nbytes=acts.nbytes, stem=stem)
        run.update_stage("capture", "done", epoch=e, split=split, n_samples=acts.n_samples,
                         stem=stem, keys=list(acts),
                         files=[str(p.relative_to(run.path)) for p in acts.paths.values()])
        return result
