"""Plotly figures for the HTML report, where interaction helps (hover, zoom, rotate).

Like every plot function these take results and draw; they compute nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def training_curves(records: Sequence[dict[str, Any]], *, epoch0: str = "untrained") -> Any:
    """Loss (train, test; log scale) and test accuracy per epoch from metrics records.

    ``epoch0`` says what epoch 0 is on the x axis (``"untrained"``, or ``"a fresh seeded
    initialisation"`` for a run whose epoch 0 is not the real start).
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    epochs = [r["epoch"] for r in records]
    has_acc = any(r.get("test_accuracy") is not None for r in records)
    fig = make_subplots(rows=1, cols=2 if has_acc else 1,
                        subplot_titles=("loss", "accuracy") if has_acc else ("loss",))
    for key, name, dash in (("train_loss", "train loss", "solid"),
                            ("test_loss", "test loss", "dash")):
        ys = [r.get(key) for r in records]
        if any(y is not None for y in ys):
            fig.add_trace(go.Scatter(x=epochs, y=ys, name=name, mode="lines+markers",
                                     line={"dash": dash}), row=1, col=1)
    fig.update_yaxes(type="log", title_text="loss", row=1, col=1)
    xlabel = f"epoch (0 = {epoch0.removeprefix('the ')})"
    fig.update_xaxes(title_text=xlabel, row=1, col=1)
    if has_acc:
        for key, name in (("train_accuracy", "train accuracy"),
                          ("test_accuracy", "test accuracy")):
            ys = [r.get(key) for r in records]
            if any(y is not None for y in ys):
                fig.add_trace(go.Scatter(x=epochs, y=ys, name=name, mode="lines+markers"),
                              row=1, col=2)
        fig.update_yaxes(title_text="accuracy", range=[0, 1.02], row=1, col=2)
        fig.update_xaxes(title_text=xlabel, row=1, col=2)
    fig.update_layout(margin={"l": 50, "r": 20, "t": 40, "b": 40},
                      legend={"orientation": "h", "y": -0.28, "x": 0})
    return fig


def embedding_scatter(coords: np.ndarray, labels: np.ndarray, classes: Sequence[str],
                      indices: np.ndarray, *, title: str = "",
                      sprite_positions: np.ndarray | None = None) -> Any:
    """2-D embedding, one trace per class; hover shows class and sample index.

    ``customdata`` per point is ``[sprite position, sample index, class name]`` so the page
    can show the input image of the hovered point. Each class has the colour
    :func:`~shenjing.plot.embed.class_colors` gives it, as in the matplotlib maps.
    """
    import plotly.graph_objects as go

    from shenjing.plot.embed import class_colors

    fig = go.Figure()
    positions = sprite_positions if sprite_positions is not None else np.arange(len(labels))
    labels = np.asarray(labels).astype(int)
    colors = class_colors(max(len(classes), int(labels.max(initial=-1)) + 1))
    for c in np.unique(labels):
        mask = labels == c
        name = classes[int(c)] if int(c) < len(classes) else str(c)
        custom = np.stack([positions[mask].astype(object), indices[mask].astype(object),
                           np.full(int(mask.sum()), name, dtype=object)], axis=1)
        fig.add_trace(go.Scattergl(
            x=coords[mask, 0], y=coords[mask, 1], mode="markers", name=name,
            marker={"size": 5, "opacity": 0.8, "color": colors[int(c) % len(colors)]},
            customdata=custom,
            hovertemplate="class %{customdata[2]}<br>sample %{customdata[1]}<extra></extra>"))
    fig.update_layout(title=title, xaxis={"title": "dim 1", "showticklabels": False},
                      yaxis={"title": "dim 2", "showticklabels": False, "scaleanchor": "x"},
                      margin={"l": 40, "r": 20, "t": 40, "b": 40},
                      legend={"itemsizing": "constant"})
    return fig


def make_sprite(images: np.ndarray, *, tile: int = 28) -> tuple[bytes, int]:
    """Pack (n, h, w) or (n, 1, h, w) images in [0, 1] into one PNG sprite; return (png, cols).

    Thumbnails are resized to ``tile``×``tile`` (nearest neighbour, to keep pixels crisp).
    """
    import io

    from PIL import Image

    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim == 4:
        arr = arr[:, 0] if arr.shape[1] == 1 else arr.transpose(0, 2, 3, 1)
    n = arr.shape[0]
    cols = max(1, int(np.ceil(np.sqrt(n))))
    rows = int(np.ceil(n / cols))
    mode = "RGB" if arr.ndim == 4 else "L"
    sheet = Image.new(mode, (cols * tile, rows * tile), 255 if mode == "L" else (255,) * 3)
    lo, hi = float(arr.min()), float(arr.max())
    scaled = ((arr - lo) / (hi - lo or 1.0) * 255).astype(np.uint8)
    for k in range(n):
        thumb = Image.fromarray(scaled[k], mode).resize((tile, tile), Image.Resampling.NEAREST)
        sheet.paste(thumb, ((k % cols) * tile, (k // cols) * tile))
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    return buf.getvalue(), cols
