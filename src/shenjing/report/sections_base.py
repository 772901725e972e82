"""Report sections built from the run's manifest, metrics and model: overview, layers,
training."""

from __future__ import annotations

from typing import Any

from shenjing.report.blocks import Note, Section, Table, plotly_block
from shenjing.runs import Run


def _final_record(run: Run) -> dict[str, Any]:
    records = run.metrics()
    return records[-1] if records else {}


def overview_section(run: Run) -> Section:
    """What was studied: model, data, training settings, provenance."""
    m = run.manifest
    model = m["model"].get("name") or m["model"].get("factory") or "?"
    data = m["data"]
    cfg = m.get("config", {})
    rows: list[list[Any]] = [
        ["model", str(model)],
        ["data", f"{data.get('name')} ("
                 + ", ".join(f"{k}={v}" for k, v in data.items() if k != "name") + ")"],
        ["task", run.task],
        ["classes", ", ".join(run.classes) or "—"],
        ["epochs with checkpoints", ", ".join(map(str, run.epochs)) or "none"],
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
    for note in m.get("notes", []):
        blocks.append(Note(str(note)))
    return Section("overview", "Overview", blocks)


def model_section(run: Run) -> Section | None:
    """Layers with their types, output shapes and parameter counts (one dry-run batch)."""
    from shenjing.capture import list_layers

    try:
        model = run.model("final")
        example = run.data.test.x[:2]
    except Exception as exc:  # a run without a rebuildable model still gets a report
        return Section("model", "Model", [Note(f"model summary unavailable: {exc}",
                                               level="warning")])
    table = list_layers(model, example)
    rows = []
    for info in table:
        if not info.is_leaf:
            continue
        shape = info.output_shape
        rows.append([info.name, info.type,
                     "×".join(map(str, shape[1:])) if shape else "did not run",
                     info.n_params])
    total = sum(p.numel() for p in model.parameters())
    return Section("model", "Model", [Table(["layer", "type", "output shape (per sample)",
                                            "parameters"], rows,
                                           caption=f"{total:,} parameters in all. Post-"
                                           "activation features are the outputs of the "
                                           "activation layers (relu1 = fc1 after its ReLU).")])


def training_section(run: Run) -> Section | None:
    """Loss and accuracy per epoch (interactive)."""
    from shenjing.plot.interactive import training_curves

    records = run.metrics()
    if not records:
        return None
    first, last = records[0], records[-1]
    if last.get("test_accuracy") is not None:
        number = (f"Test accuracy went from {first.get('test_accuracy', 0):.3f} untrained "
                  f"to <b>{last['test_accuracy']:.3f}</b> after epoch {last['epoch']}.")
    else:
        number = (f"Test loss went from {first.get('test_loss', float('nan')):.4g} to "
                  f"{last.get('test_loss', float('nan')):.4g}.")
    caption = ("What this shows: how the loss fell and the accuracy rose, epoch by epoch "
               "(epoch 0 is the untrained net). " + number.replace("<b>", "").replace("</b>", ""))
    return Section("training", "Training", [
        plotly_block(training_curves(records), "training-curves", caption, height=360)])
