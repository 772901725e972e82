"""Stage ``embed``: 2-D maps of a run's layer features across epochs, and their numbers.

Files written (``<K>`` = recorded key with characters other than letters, digits, ``._-``
replaced by ``_``, e.g. ``relu1``, ``block_1`` for ``block#1``; ``NNN`` = epoch, 3 digits;
``<M>`` = ``tsne``, ``pca`` or ``umap``):

``embeddings/<K>-<M>-epoch-NNN.npz`` (stage ``embed``)
    ``coords`` (n, 2) float32, ``labels`` (n,) int64 (absent for regression), ``indices``
    (n,) int64 (positions in the split: the same samples in every file of one call),
    ``metrics`` JSON ``{"trustworthiness", "knn_recall", "n_neighbors", "knn_accuracy_2d",
    "silhouette_2d", "silhouette_note", "reduction", "probe_accuracy",
    "probe_train_accuracy", "knn_accuracy", "k", "n_train", "n_test", "n_features"}``,
    ``params`` JSON ``{"method", "layer", "key", "epoch", "split", "n", "seed",
    "pca_dims", "perplexity", "aligned", "aligned_to_epoch", "n_train", "k", "n_neighbors",
    "max_features", …}``: every setting behind the coordinates and the numbers. A rerun
    reuses a map only if all of them match (the file name holds only key, method, epoch).
``embeddings/input-<M>.npz`` (when ``layers`` includes ``"input"``)
    the same keys for the raw input pixels (params ``epoch`` null): the baseline map.
``embeddings/separability.json``
    ``{"split", "n_test", "n_train", "k", "seed", "max_features", "note", "input": {probe/kNN
    numbers of the raw input pixels}, "records": [{"layer", "epoch", "probe_accuracy",
    "probe_train_accuracy", "knn_accuracy", "k", "n_train", "n_test", "n_features",
    "reduction"}]}``; records of later calls with the same samples and probe settings are
    merged in (same layer and epoch replaced); other settings start the file over.
``embeddings/cka-layers-epoch-NNN.npz`` and ``embeddings/cka-epochs-<K>.npz``
    ``matrix`` (k, k) float64 linear CKA, ``names`` (k,) str (keys, or ``epoch N``),
    ``reductions`` JSON {name: how a wide layer was pooled/projected or null},
    ``n_samples`` int.
``embeddings/cka-runs-<other run>.npz`` (:func:`cka_runs_stage`)
    the same keys, names ``<run name>:<key>`` for both runs' layers on the same samples.
``embeddings/projector/`` (with ``projector=True``): TensorBoard Projector files for the
    last epoch (see :mod:`shenjing.analysis.projector`).
``figures/embedding-<K>-<M>-epoch-NNN.png|svg``, ``figures/embedding-grid-<M>.png|svg``,
``figures/embedding-input-<M>.png|svg``,
``figures/separability-probe.png|svg``, ``figures/separability-knn.png|svg``,
``figures/cka-layers-epoch-NNN.png|svg``, ``figures/cka-epochs-<K>.png|svg``.

``run.json`` gets ``stages.embed`` with the last call's settings and the
list of files, and ``backend`` (``local`` or ``ray``; for ``ray`` also ``cluster``,
``workers``, ``num_cpus``, ``num_gpus`` and ``tasks``: per map computed, ``job`` [key,
epoch], ``seconds``, ``pid``). A rerun reuses maps already on disk with the same settings
(resume), whichever backend made them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shenjing import _io
from shenjing._device import resolve_device
from shenjing.backend import Backend
from shenjing.errors import UsageError
from shenjing.filenames import cka_stem, embedding_stem
from shenjing.runs import Run
from shenjing.stages._backend import backend_session, stage_backend
from shenjing.stages._inputs import layer_names, split_of

SEPARABILITY_FILE = "separability.json"


def _epochs(run: Run, epochs: Sequence[int | str] | str) -> list[int]:
    if isinstance(epochs, str):
        epochs = run.epochs if epochs == "all" else [epochs]
    out = sorted({run.resolve_epoch(e) for e in epochs})
    if not out:
        raise UsageError("no epoch given; use e.g. epochs=[0, 5] or 'init,final'")
    return out


@dataclass
class EmbedResult:
    """What :func:`embed_stage` computed and wrote (maps, numbers, file paths)."""

    method: str
    epochs: list[int]
    keys: list[str]
    embeddings: dict[tuple[str, int], Any] = field(default_factory=dict)
    separability: dict[str, Any] = field(default_factory=dict)
    cka: dict[str, Any] = field(default_factory=dict)
    files: list[Path] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)
    input_embedding: Any = None
    notes: list[str] = field(default_factory=list)  # caps applied, said out loud

    def table(self) -> list[dict[str, Any]]:
        """One row per (layer, epoch): probe, kNN, trustworthiness, kNN recall."""
        inp = self.input_embedding.metrics if self.input_embedding is not None else {}
        rows = [{"layer": "input", "epoch": "-", **{
            k: self.separability.get("input", {}).get(k, inp.get(k))
            for k in ("probe_accuracy", "knn_accuracy", "trustworthiness", "knn_recall")}}]
        for (key, epoch), emb in self.embeddings.items():
            rows.append({"layer": key, "epoch": epoch, **{
                k: emb.metrics.get(k) for k in ("probe_accuracy", "knn_accuracy",
                                                "trustworthiness", "knn_recall")}})
        return rows

    def summary(self) -> str:
        def fmt(v: Any) -> str:
            return f"{v:.3f}" if isinstance(v, float) else ("-" if v is None else str(v))

        cols = ("layer", "epoch", "probe_accuracy", "knn_accuracy", "trustworthiness",
                "knn_recall")
        heads = ("layer", "epoch", "probe acc", "kNN acc", "trust", "kNN recall")
        rows = [heads] + [tuple(fmt(r.get(c)) for c in cols) for r in self.table()]
        widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
        lines = [f"{self.method} maps of {', '.join(self.keys)} at epochs "
                 f"{', '.join(map(str, self.epochs))}"]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                  for r in rows]
        lines += [f"note: {n}" for n in self.notes]
        if self.figures:
            lines.append(f"figures: {len(self.figures)} files, e.g. {self.figures[0]}")
        return "\n".join(lines)


def _load_map(path: Path, params: dict[str, Any]) -> Any | None:
    """A map saved earlier with the same settings (resume), else None."""
    from shenjing.analysis.embed import load_embedding

    if not path.is_file():
        return None
    try:
        emb = load_embedding(path)
    except (OSError, ValueError, KeyError):
        return None
    return None if any(emb.params.get(k) != v for k, v in params.items()) else emb


def _check_embed_options(*, n: int | None, n_train: int | None, seed: int,
                         pca_dims: int | None, perplexity: float, k: int, n_neighbors: int,
                         max_features: int | None, batch_size: int) -> None:
    """Refuse a value that cannot work before any capture or file (one line each)."""
    from shenjing._checks import finite_float, optional_int, positive_int, random_seed

    optional_int("--n", n, low=3, why="a 2-D map needs at least 3 samples")
    optional_int("--n-train", n_train, low=2, why="the probe is trained on them")
    random_seed("--seed", seed)
    optional_int("--pca-dims", pca_dims)
    finite_float("--perplexity", perplexity, low=0.0, low_open=True)
    positive_int("k", k)
    positive_int("n_neighbors", n_neighbors)
    optional_int("max_features", max_features)
    positive_int("--batch-size", batch_size)


def embed_stage(run: Run, layers: Sequence[str] | str, *,
                epochs: Sequence[int | str] | str = ("init", "final"), method: str = "tsne",
                n: int | None = 2000, n_train: int | None = 5000, split: str = "test",
                seed: int = 0, pca_dims: int | None = 50, perplexity: float = 30.0,
                align: bool = True, k: int = 5, n_neighbors: int = 10,
                max_features: int | None = 1024, cka: bool = True, figures: bool = True,
                projector: bool = False, batch_size: int = 256,
                device: str | torch.device = "auto", n_jobs: int = -1,
                backend: str | Backend = "local", ray_address: str | None = None
                ) -> EmbedResult:
    """Maps of ``layers`` at ``epochs`` with their numbers, written into the run.

    For each epoch the model's layers are captured on ``n`` samples of ``split`` (and
    ``n_train`` training samples for the probe), embedded with ``method`` (each epoch's map
    aligned to the previous one), and scored: separability in feature space (probe, kNN;
    raw input pixels as the baseline) and faithfulness of the map (trustworthiness, kNN
    recall). CKA between layers and between epochs, figures, and optionally the TensorBoard
    Projector export follow. See the module docstring for every file and key.

    ``backend='ray'`` (``ray_address``, or a :class:`~shenjing.backend.Backend` with its
    workers and CPUs; docs/scale.md) computes the maps and their numbers as Ray tasks, one
    per (layer, epoch), a layer's epochs in order when aligned; captures stay here. Each
    task runs t-SNE with ``n_jobs`` = its CPUs; the maps equal the local backend's at the
    same ``n_jobs`` (see :mod:`shenjing.stages._ray_tasks`). Each map is written as its
    task finishes, so a rerun after a kill reuses every map already written.
    """
    from shenjing._checks import choice
    from shenjing.analysis.embed import METHODS, _import_umap
    from shenjing.analysis.separability import reduce_features, separability
    from shenjing.capture import capture_dataset
    from shenjing.stages._ray_tasks import job_threads, map_job

    choice("--method", method, METHODS)
    _check_embed_options(n=n, n_train=n_train, seed=seed, pca_dims=pca_dims,
                         perplexity=perplexity, k=k, n_neighbors=n_neighbors,
                         max_features=max_features, batch_size=batch_size)
    be = stage_backend(backend, ray_address)
    if be.num_gpus > 0:
        raise UsageError(f"--ray-gpus {be.num_gpus:g}: embed's maps (openTSNE, scikit-learn) "
                         "compute on CPUs only; leave --ray-gpus out")
    if method == "umap":
        _import_umap()  # the pip line now, not after minutes of capture
    epoch_list = _epochs(run, epochs)
    run.require_trust()  # before anything is written: the model is built per epoch below
    data = run.data
    classify = run.task == "classification" and data.test.y.ndim == 1
    test = split_of(run, split).subset(n, seed=seed)
    other = "train" if split == "test" else "test"
    train: Any = split_of(run, other).subset(n_train, seed=seed) if classify else None
    caps = [f"--n {n} capped to the {len(test)} {split} samples"] if n and n > len(test) \
        else []
    if classify and n_train and n_train > len(train):
        caps.append(f"--n-train {n_train} capped to the {len(train)} {other} samples")
    y_test = test.y.numpy() if classify else None
    asked = layer_names(layers)
    layers = [name for name in asked if name != "input"]  # the model's own layers
    if not layers:
        raise UsageError("give at least one model layer besides 'input', e.g. relu1")
    dev = resolve_device(device, option="--device")
    _check_embed_memory(run.model(epoch_list[0], device=dev), test, layers,
                        n_train=len(train) if classify else 0, n_epochs=len(epoch_list),
                        max_features=max_features, input_shape=data.input_shape)
    emb_dir = run.embeddings_dir
    result = EmbedResult(method=method, epochs=epoch_list, keys=[], notes=caps)
    # connected before the stage is marked running: a cluster that cannot be reached or
    # lacks the CPUs asked for is refused with the run untouched
    with backend_session(be) as ran_on, \
            run.running_stage("embed", method=method, epochs=epoch_list, backend=be.name):
        jobs: Any = None
        if be.is_ray:
            from shenjing.stages._ray_tasks import RayJobs

            jobs = RayJobs(be)
        job_opts: dict[str, Any] = {"method": method, "align": align, "pca_dims": pca_dims,
                                    "seed": seed,
                                    "perplexity": perplexity,
                                    "n_neighbors": n_neighbors, "k": k,
                                    "max_features": max_features,
                                    "n_jobs": n_jobs if jobs is None else jobs.threads,
                                    # torch / BLAS threads as a Ray task of n_jobs CPUs
                                    "threads": (job_threads(n_jobs) if jobs is None
                                                else jobs.threads)}
        order: list[tuple[str, int]] = []  # (key, epoch) as the local loop visits them
        maps: dict[tuple[str, int], Any] = {}
        paths: dict[tuple[str, int], Path] = {}
        job_params: dict[tuple[str, int], dict[str, Any]] = {}
        shared: dict[str, Any] = {}  # object-store references of the samples' labels/indices

        def _write_finished(finished: Any) -> None:
            for (key, e), done in finished:
                maps[(key, e)] = _save_map(paths[(key, e)], done, job_params[(key, e)],
                                           method=method, labels=y_test,
                                           indices=test.indices.numpy())
                if done["separability"] is not None:
                    records[(key, e)] = {"layer": key, "epoch": e, **done["separability"]}
        sep_path = emb_dir / SEPARABILITY_FILE
        sep_doc: dict[str, Any] = _io.read_json(sep_path) if sep_path.is_file() else {}
        # records of other samples or probe settings are not comparable: start over
        n_probe = len(train) if classify else None
        sep_settings: dict[str, Any] = {"split": split, "n_test": len(test), "seed": seed,
                                        "k": k, "n_train": n_probe,
                                        "max_features": max_features}
        if any(sep_doc.get(key) != value for key, value in sep_settings.items()):
            sep_doc = {}
        records = {(r["layer"], r["epoch"]): r for r in sep_doc.get("records", [])}
        if classify and "input" not in sep_doc:
            sep_doc["input"] = separability(train.x.numpy(), train.y.numpy(), test.x.numpy(),
                                            y_test, k=k, max_features=max_features).to_dict()

        if "input" in asked:
            result.input_embedding = _embed_input(
                run, test, y_test, sep_doc.get("input"), method=method, seed=seed,
                pca_dims=pca_dims, perplexity=perplexity, n_neighbors=n_neighbors, k=k,
                max_features=max_features, n_jobs=n_jobs, split=split, n_train=n_probe)
            result.files.append(emb_dir / f"input-{method}.npz")
        # per key the map the next epoch aligns to: its coordinates, or (key, epoch) of the
        # Ray task that is making it
        prev: dict[str, Any] = {}
        notes: dict[str, str | None] = {}
        feats_by_epoch: dict[int, dict[str, np.ndarray]] = {}
        for e in epoch_list:
            model = run.model(e, device=dev)
            acts = capture_dataset(model, test, layers, batch_size=batch_size,
                                   input_shape=data.input_shape)
            train_acts: Any = (capture_dataset(model, train, layers, batch_size=batch_size)
                               if classify else None)
            if not result.keys:
                result.keys = list(acts)
            # kept for CKA and the projector, already reduced so epochs × wide layers stay small
            feats_by_epoch[e] = {}
            for key in acts:
                feats_by_epoch[e][key], notes[key] = reduce_features(
                    acts[key], max_features, random_state=seed)
            for key in acts:
                path = emb_dir / f"{embedding_stem(key, method, e)}.npz"
                params = {"method": method, "key": key, "layer": acts.info[key]["layer"],
                          "epoch": e, "split": split, "n": len(test), "seed": seed,
                          "pca_dims": pca_dims if method != "pca" else None,
                          "perplexity": perplexity if method == "tsne" else None,
                          "aligned_to_epoch": (epoch_list[epoch_list.index(e) - 1]
                                               if align and key in prev else None),
                          **_score_params(n_train=n_probe, k=k, n_neighbors=n_neighbors,
                                          max_features=max_features)}
                emb = _load_map(path, params)
                order.append((key, e))
                paths[(key, e)] = path
                if emb is None and jobs is not None:
                    # the map as a Ray task; aligned, it starts from the previous epoch's
                    # task's result (Ray runs it once that one is done)
                    if not shared:
                        shared = {"labels": jobs.put(y_test),
                                  "indices": jobs.put(test.indices.numpy()),
                                  "train_y": jobs.put(train.y.numpy()) if classify else None}
                    before = prev.get(key)
                    job_params[(key, e)] = params
                    jobs.submit((key, e), map_job, jobs.put(acts[key]),
                                None if isinstance(before, tuple) else before,
                                after=before if isinstance(before, tuple) else None,
                                labels=shared["labels"], indices=shared["indices"],
                                train_x=jobs.put(train_acts[key]) if classify else None,
                                train_y=shared["train_y"], **job_opts)
                    prev[key] = (key, e)
                    continue
                if emb is None:
                    done = map_job(acts[key], prev.get(key), labels=y_test,
                                   indices=test.indices.numpy(),
                                   train_x=train_acts[key] if classify else None,
                                   train_y=train.y.numpy() if classify else None, **job_opts)
                    emb = _save_map(path, done, params, method=method, labels=y_test,
                                    indices=test.indices.numpy())
                    if done["separability"] is not None:
                        records[(key, e)] = {"layer": key, "epoch": e,
                                             **done["separability"]}
                elif classify:
                    records[(key, e)] = {"layer": key, "epoch": e, **{
                        f: emb.metrics.get(f) for f in ("probe_accuracy", "probe_train_accuracy",
                                                        "knn_accuracy", "k", "n_train", "n_test",
                                                        "n_features", "reduction")}}
                prev[key] = emb.coords
                maps[(key, e)] = emb
            del acts, train_acts
            if jobs is not None:  # the maps finished while this epoch was captured
                _write_finished(jobs.results(wait=False))

        if jobs is not None:  # each map written as its task finishes
            _write_finished(jobs.results())
        for ke in order:
            result.embeddings[ke] = maps[ke]
            result.files.append(paths[ke])

        if classify:
            sep_doc.update(**sep_settings,
                           note="probe = logistic regression trained on the other split's "
                                f"{len(train)} samples, scored on {len(test)} {split} samples; "
                                "kNN = k-nearest-neighbour vote in the layer's own space; wide "
                                "layers reduced as each record's 'reduction' says",
                           records=sorted(records.values(),
                                          key=lambda r: (str(r["layer"]), r["epoch"])))
            _io.write_json(sep_path, sep_doc)
            result.separability = sep_doc
            result.files.append(sep_path)

        if cka:
            _cka_files(run, result, feats_by_epoch, notes, epoch_list, seed)
        if figures:
            _figures(run, result, classify)
        if projector:
            from shenjing.analysis.projector import export_projector

            last = epoch_list[-1]
            folder = export_projector(
                emb_dir / "projector",
                {f"{key}@epoch{last}": feats_by_epoch[last][key].reshape(len(test), -1)
                 for key in result.keys},
                labels=y_test, indices=test.indices.numpy(), classes=run.classes or None,
                images=test.x.numpy() if test.x.ndim == 4 else None)
            result.files.append(folder)

        ran_on = {**ran_on, **(jobs.record() if jobs is not None else {})}
        run.update_stage("embed", "done", method=method, epochs=epoch_list, keys=result.keys,
                         n=len(test), split=split, **ran_on,
                         files=[str(Path(p).relative_to(run.path)) for p in result.files],
                         figures=[str(Path(p).relative_to(run.path)) for p in result.figures])
        return result


def _save_map(path: Path, done: Mapping[str, Any], params: dict[str, Any], *, method: str,
              labels: np.ndarray | None, indices: np.ndarray) -> Any:
    """The map of a finished job (:func:`~shenjing.stages._ray_tasks.map_job`, here or on
    Ray) with every setting behind it, written atomically to ``path``."""
    from shenjing.analysis.embed import Embedding

    emb = Embedding(coords=done["coords"], method=method, params={**done["params"], **params},
                    labels=labels, indices=indices, metrics=done["metrics"])
    emb.save(path)
    return emb


def embed_bytes(per_sample: Mapping[str, int], *, n: int, n_train: int, n_epochs: int,
                max_features: int | None) -> int:
    """Peak bytes :func:`embed_stage` holds: one epoch's captures of the ``n`` mapped and
    ``n_train`` probe samples (``per_sample[key]`` float32 values each), their reduced
    float32 copies (≤ ``max_features`` per key) made for the probe, and the reduced test
    features of every epoch, kept for CKA and the projector."""
    full = sum(per_sample.values())
    kept = sum(v if max_features is None else min(v, max_features)
               for v in per_sample.values())
    return 4 * ((n + n_train) * (full + kept) + n_epochs * n * kept)


def _check_embed_memory(model: Any, test: Any, wanted: Sequence[str], *, n_train: int,
                        n_epochs: int, max_features: int | None,
                        input_shape: tuple[int, ...]) -> None:
    """Refuse maps of the model's layers ``wanted`` whose features would not fit in memory,
    before anything is written.

    Two samples through the model give every key's size (and refuse unknown layers now,
    not after the input map is written)."""
    from shenjing.capture import capture_dataset
    from shenjing.capture.activations import format_bytes
    from shenjing.capture.dataset import memory_budget
    from shenjing.errors import ResourceError

    probe = capture_dataset(model, test.x[:2], wanted, input_shape=input_shape)
    per_sample = {key: int(np.prod(probe[key].shape[1:])) for key in probe}
    need = embed_bytes(per_sample, n=len(test), n_train=n_train, n_epochs=n_epochs,
                       max_features=max_features)
    budget = memory_budget()
    if need > budget:
        raise ResourceError(
            f"maps of {len(per_sample)} key(s) ({', '.join(per_sample)}: "
            f"{', '.join(map(str, per_sample.values()))} values per sample) at {n_epochs} "
            f"epoch(s) on {len(test)} samples, with {n_train} for the probe, need about "
            f"{format_bytes(need)} of memory but only {format_bytes(budget)} is allowed (half "
            "the memory available now); reduce --n, --n-train, the --epochs or the --layers")


def _score_params(*, n_train: int | None, k: int, n_neighbors: int,
                  max_features: int | None) -> dict[str, Any]:
    """The settings behind a map's numbers (probe, kNN, trustworthiness): saved with the map
    and compared before it is reused, since they are not in its file name."""
    return {"n_train": n_train, "k": k, "n_neighbors": n_neighbors,
            "max_features": max_features}


def _embed_input(run: Run, test: Any, y_test: Any, input_sep: dict[str, Any] | None, *,
                 method: str, seed: int, pca_dims: int | None, perplexity: float,
                 n_neighbors: int, k: int, max_features: int | None, n_jobs: int,
                 split: str, n_train: int | None) -> Any:
    """The map of the raw inputs (the baseline every layer is compared with)."""
    from shenjing.analysis.embed import Embedding, embed
    from shenjing.analysis.separability import map_quality

    path = run.embeddings_dir / f"input-{method}.npz"
    params = {"method": method, "key": "input", "layer": "input", "epoch": None,
              "split": split, "n": len(test), "seed": seed,
              "pca_dims": pca_dims if method != "pca" else None,
              "perplexity": perplexity if method == "tsne" else None,
              **_score_params(n_train=n_train, k=k, n_neighbors=n_neighbors,
                              max_features=max_features)}
    emb = _load_map(path, params)
    if emb is not None:
        return emb
    x = test.x.numpy().reshape(len(test), -1)
    emb = embed(x, method, pca_dims=pca_dims, random_state=seed, perplexity=perplexity,
                n_jobs=n_jobs)
    metrics = map_quality(x, emb.coords, y_test, n_neighbors=n_neighbors, k=k,
                          max_features=max_features, random_state=seed)
    metrics.update(input_sep or {})
    emb = Embedding(coords=emb.coords, method=method, params={**emb.params, **params},
                    labels=y_test, indices=test.indices.numpy(), metrics=metrics)
    emb.save(path)
    return emb


def _cka_files(run: Run, result: EmbedResult, feats: dict[int, dict[str, np.ndarray]],
               notes: dict[str, str | None], epochs: list[int], seed: int) -> None:
    from dataclasses import replace

    from shenjing.analysis.cka import cka_matrix

    def matrix(named: dict[str, np.ndarray], note_of: dict[str, str | None]) -> Any:
        # features arrive already reduced (stated in the reductions), so nothing more here
        r = cka_matrix(named, max_features=None, random_state=seed)
        return replace(r, reductions=note_of)

    emb_dir = run.embeddings_dir
    if len(result.keys) > 1:
        for e in epochs:
            r = matrix(feats[e], notes)
            path = emb_dir / f"{cka_stem('layers', e)}.npz"
            _io.save_npz(path, matrix=r.matrix, names=np.array(r.names),
                         reductions=r.reductions, n_samples=r.n_samples)
            result.cka[f"layers@{e}"] = r
            result.files.append(path)
    if len(epochs) > 1:
        for key in result.keys:
            r = matrix({f"epoch {e}": feats[e][key] for e in epochs},
                       {f"epoch {e}": notes[key] for e in epochs})
            path = emb_dir / f"{cka_stem('epochs', key)}.npz"
            _io.save_npz(path, matrix=r.matrix, names=np.array(r.names),
                         reductions=r.reductions, n_samples=r.n_samples)
            result.cka[f"epochs:{key}"] = r
            result.files.append(path)


def _figures(run: Run, result: EmbedResult, classify: bool) -> None:
    import matplotlib.pyplot as plt

    from shenjing.plot.embed import (
        method_name,
        plot_cka,
        plot_embedding,
        plot_embedding_grid,
        plot_separability,
    )
    from shenjing.plot.save import save_figure

    fig_dir = run.figures_dir

    def save(fig: Any, stem: str) -> None:
        result.figures.extend(save_figure(fig, fig_dir, stem))
        plt.close(fig)

    classes = run.classes or None
    mname = method_name(result.method)
    for (key, e), emb in result.embeddings.items():
        fig = plot_embedding(emb, classes=classes,
                             title=f"{mname} of {key} · epoch {e} ({emb.n_samples} samples)")
        save(fig, f"embedding-{embedding_stem(key, result.method, e)}")
    if result.input_embedding is not None:
        emb = result.input_embedding
        fig = plot_embedding(emb, classes=classes,
                             title=f"{mname} of the input ({emb.n_samples} samples)")
        save(fig, f"embedding-input-{result.method}")
    if len(result.embeddings) > 1:
        fig = plot_embedding_grid(result.embeddings, classes=classes)
        save(fig, f"embedding-grid-{result.method}")
    if classify and result.separability.get("records"):
        recs = [r for r in result.separability["records"] if r["layer"] in result.keys]
        for metric, stem in (("probe_accuracy", "probe"), ("knn_accuracy", "knn")):
            fig = plot_separability(recs, baseline=result.separability.get("input"),
                                    metric=metric)
            save(fig, f"separability-{stem}")
    for name, r in result.cka.items():
        if name.startswith("layers@"):
            e = int(name.split("@")[1])
            fig = plot_cka(r, title=f"linear CKA between layers · epoch {e}")
            stem = cka_stem("layers", e)
        else:
            key = name.split(":", 1)[1]
            fig = plot_cka(r, title=f"linear CKA of {key} across epochs")
            stem = cka_stem("epochs", key)
        save(fig, stem)


def cka_runs_stage(run: Run, other: Run, layers: Sequence[str] | str, *,
                   epoch: int | str = "final", other_epoch: int | str = "final",
                   n: int | None = 2000, split: str = "test", seed: int = 0,
                   max_features: int | None = 1024, batch_size: int = 256,
                   device: str | torch.device = "auto", figures: bool = True) -> Any:
    """Linear CKA between the layers of two runs on the same samples (this run's data).

    Names in the matrix are ``<run name>:<key>``. Writes
    ``embeddings/cka-runs-<other run name>.npz`` (keys as the other CKA files) and
    ``figures/cka-runs-<other run name>.png|svg`` into ``run``; run.json records stage
    ``cka`` (``other``: the other run's name, ``file``).
    """
    with run.running_stage("cka", other=other.name):
        result = _cka_between_runs(run, other, layers, epoch=epoch, other_epoch=other_epoch,
                                   n=n, split=split, seed=seed, max_features=max_features,
                                   batch_size=batch_size, device=device, figures=figures)
        run.update_stage("cka", "done", other=other.name,
                         file=f"embeddings/{cka_stem('runs', other.name)}.npz")
        return result


def _cka_between_runs(run: Run, other: Run, layers: Sequence[str] | str, *,
                      epoch: int | str, other_epoch: int | str, n: int | None, split: str,
                      seed: int, max_features: int | None, batch_size: int,
                      device: str | torch.device, figures: bool) -> Any:
    """The work of :func:`cka_runs_stage`: capture both runs' layers, CKA, file, figure."""
    from dataclasses import replace

    from shenjing.analysis.cka import cka_matrix
    from shenjing.analysis.separability import reduce_features
    from shenjing.capture import capture_dataset

    test = split_of(run, split).subset(n, seed=seed)
    dev = resolve_device(device, option="--device")
    named: dict[str, np.ndarray] = {}
    notes: dict[str, str | None] = {}
    for r, e in ((run, epoch), (other, other_epoch)):
        model = r.model(r.resolve_epoch(e), device=dev)
        acts = capture_dataset(model, test, layers, batch_size=batch_size,
                               input_shape=run.data.input_shape)
        for key in acts:
            name = f"{r.name}:{key}"
            named[name], notes[name] = reduce_features(acts[key], max_features,
                                                       random_state=seed)
    result = replace(cka_matrix(named, max_features=None), reductions=notes)
    stem = cka_stem("runs", other.name)
    _io.save_npz(run.embeddings_dir / f"{stem}.npz", matrix=result.matrix,
                 names=np.array(result.names), reductions=result.reductions,
                 n_samples=result.n_samples)
    if figures:
        import matplotlib.pyplot as plt

        from shenjing.plot.embed import plot_cka
        from shenjing.plot.save import save_figure

        fig = plot_cka(result, title=f"linear CKA: {run.name} vs {other.name}")
        save_figure(fig, run.figures_dir, stem)
        plt.close(fig)
    return result
