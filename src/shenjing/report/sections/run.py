"""Report sections built from the run's manifest, metrics and saved layer table: overview,
layers, training. None of them builds the model or loads the data."""

from __future__ import annotations

from collections import Counter
from typing import Any

from shenjing.report.blocks import Note, Section, Table, plotly_block, skipped_note
from shenjing.report.provenance import epoch0_label, epoch0_note, epoch_summary, input_scaling
from shenjing.report.run_files import run_file
from shenjing.report.stage_status import SECTION_TITLES, stage_states, stages_table
from shenjing.runs import Run


def _metrics(run: Run) -> tuple[list[dict[str, Any]], Note | None]:
    """The run's metrics records, read only when metrics.jsonl is a regular file inside the
    run (else none, and the note saying it was skipped)."""
    checked = run_file(run, "metrics.jsonl")
    if checked.refused:
        return [], skipped_note(checked)
    return (run.metrics() if checked.readable else []), None


def _final_record(run: Run) -> dict[str, Any]:
    records, _ = _metrics(run)
    return records[-1] if records else {}


def overview_section(run: Run) -> Section:
    """What was studied: model, data and its input scaling, training settings, what epoch 0
    is, every recorded step with its status, provenance."""
    m = run.manifest
    model = m["model"].get("name") or m["model"].get("factory") or "?"
    data = m["data"]
    cfg = m.get("config", {})
    rows: list[list[Any]] = [
        ["model", str(model)],
        ["data", f"{data.get('name')} ("
                 + ", ".join(f"{k}={v}" for k, v in data.items() if k != "name") + ")"],
    ]
    scaling = input_scaling(data)
    if scaling:
        rows.append(["input scaling", scaling])
    rows += [
        ["task", run.task],
        ["classes", ", ".join(run.classes) or "—"],
        ["epochs with checkpoints", epoch_summary(run.epochs)],
        ["epoch 0", epoch0_label(run)],
        ["seed", m.get("seed")],
    ]
    for key in ("optimizer", "lr", "batch_size", "loss", "weight_decay"):
        if key in cfg:
            rows.append([key, cfg[key]])
    final = _final_record(run)
    if final.get("test_accuracy") is not None:
        rows.append(["final test accuracy", final["test_accuracy"]])
    if final.get("test_loss") is not None:
        rows.append(["final test loss", final["test_loss"]])
    versions = m.get("versions", {})
    rows.append(["versions", ", ".join(f"{k} {v}" for k, v in versions.items()
                                       if k != "platform")])
    blocks: list[Any] = [Table(["", "value"], rows)]
    fresh = epoch0_note(run)
    if fresh:
        blocks.append(Note(fresh, level="warning"))
    for note in m.get("notes", []):
        blocks.append(Note(str(note)))
    table = stages_table(stage_states(run))
    if table is not None:
        blocks.append(table)
    return Section("overview", SECTION_TITLES["overview"], blocks)


def _batch_size(table: dict[str, Any]) -> int | None:
    """The batch size of the dry run that measured the shapes: recorded, or the leading
    dimension most outputs share."""
    if isinstance(table.get("batch_size"), int):
        return int(table["batch_size"])
    firsts = Counter(int(shape[0]) for row in table["rows"]
                     for shape in (row.get("output_shapes") or {}).values() if shape)
    return firsts.most_common(1)[0][0] if firsts else None


def _per_sample(shape: list[int], batch: int | None) -> str:
    """A batch-first shape without its batch dimension: ``[2, 20, 64]`` → ``20×64``. A tensor
    whose batch is not first (an LSTM's ``h_n``: layers × batch × hidden) loses that
    dimension instead."""
    dims = list(shape)
    at = 0 if batch is None or (dims and dims[0] == batch) or batch not in dims \
        else dims.index(batch)
    return "×".join(map(str, dims[:at] + dims[at + 1:])) or "scalar"


def _shape_text(row: dict[str, Any], batch: int | None) -> str:
    """A layer's output shape(s) per sample: ``128``; ``lstm.0: 20×64; lstm.1.0: 1×64``."""
    shapes = row.get("output_shapes") or {}
    parts = []
    for key, shape in shapes.items():
        per_sample = _per_sample(shape, batch)
        parts.append(per_sample if key == row["name"] and len(shapes) == 1
                     else f"{key}: {per_sample}")
    return "; ".join(parts)


def _calls_text(row: dict[str, Any], ran: set[str]) -> str:
    """How often the module ran in one forward; for one that never ran as a module, whether
    a module around it did (``nn.MultiheadAttention`` uses its ``out_proj`` weights itself)."""
    calls = int(row.get("calls", 0))
    if calls:
        return f"{calls}×"
    name = row["name"]
    parents = [name.rsplit(".", k)[0] for k in range(1, name.count(".") + 1)]
    parent = next((p for p in parents if p in ran), None)
    return (f"no call of its own ({parent} ran and uses it)" if parent
            else "did not run")


def model_section(run: Run) -> Section | None:
    """Layers with their types, output shapes, parameters and call counts, read from
    ``RUN/layers.json`` (saved when the run was created). The report never builds the model:
    a run folder is data, and building it could run the code it names."""
    from shenjing.runs import LAYER_TABLE

    title = SECTION_TITLES["model"]
    checked = run_file(run, LAYER_TABLE)
    if checked.refused:
        return Section("model", title, [skipped_note(checked)])
    table = run.saved_layer_table()
    if table is None and not (run.path / LAYER_TABLE).is_file():
        return Section("model", title, [Note(
            "The layer table was not saved with this run; `shenjing layers "
            f"{run.path} --dry-run` prints it.")])
    try:
        if table is None:
            raise ValueError("it cannot be read as JSON")
        layer_rows = list(table["rows"])
    except (KeyError, TypeError, ValueError) as exc:
        return Section("model", title, [Note(
            f"{LAYER_TABLE} is not a layer table ({type(exc).__name__}: {exc}); "
            f"`shenjing layers {run.path} --dry-run` prints it.", level="warning")])
    ran = {r["name"] for r in layer_rows if int(r.get("calls", 0))}
    batch = _batch_size(table)
    rows = []
    for row in layer_rows:
        # leaves, and containers that hold parameters of their own (nn.MultiheadAttention's
        # in_proj_weight, a CLS token): what actually computes something
        if not (row.get("is_leaf") or int(row.get("n_params", 0))):
            continue
        rows.append([row["name"], row["type"], _shape_text(row, batch) or "—",
                     int(row.get("n_params", 0)), _calls_text(row, ran)])
    total, trainable = table.get("n_params"), table.get("n_trainable")
    own = total - sum(int(r.get("n_params", 0)) for r in layer_rows) \
        if isinstance(total, int) else 0
    if own > 0:  # free parameters of the model itself (a CLS token, a position embedding)
        rows.append(["(the model itself)", str(table.get("model_name", "")), "—", own,
                     "—"])
    size = (f"{total:,} parameters in all" if isinstance(total, int) else "Parameters")
    if isinstance(trainable, int) and isinstance(total, int) and trainable != total:
        size += f" ({trainable:,} trainable)"
    shape = table.get("input_shape")
    caption = (f"{size}, for one input of shape {'×'.join(map(str, shape))}. " if shape
               else f"{size}. ") + (
        "Runs per forward = how many times the layer ran in one forward pass. "
        "Post-activation features are the outputs of the activation layers (relu1 = fc1 "
        "after its ReLU).")
    return Section("model", title, [Table(
        ["layer", "type", "output shape (per sample)", "parameters", "runs per forward"],
        rows, caption=caption)])


def training_section(run: Run) -> Section | None:
    """Loss (and, for classification, accuracy) per epoch (interactive)."""
    from shenjing.plot.interactive import training_curves

    records, skipped = _metrics(run)
    if skipped is not None:
        return Section("training", SECTION_TITLES["training"], [skipped])
    if not records:
        return None
    first, last = records[0], records[-1]
    start = epoch0_label(run)
    has_accuracy = run.task == "classification" and last.get("test_accuracy") is not None
    if has_accuracy:
        number = (f"Test accuracy went from {first.get('test_accuracy', 0):.3f} at epoch 0 "
                  f"to {last['test_accuracy']:.3f} after epoch {last['epoch']}.")
        what = "how the loss fell and the accuracy rose, epoch by epoch"
    else:
        number = (f"Test loss went from {first.get('test_loss', float('nan')):.4g} at epoch "
                  f"0 to {last.get('test_loss', float('nan')):.4g} after epoch "
                  f"{last['epoch']}.")
        what = "how the training and test loss fell, epoch by epoch"
    caption = f"What this shows: {what} (epoch 0 = {start}). {number}"
    return Section("training", SECTION_TITLES["training"], [
        plotly_block(training_curves(records, epoch0=start), "training-curves", caption,
                     height=360)])
