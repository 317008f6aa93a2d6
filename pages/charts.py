"""Every chart the pages draw, as plotly figures: built here, drawn by the pages with st.plotly_chart.

User-supplied text (class and file names) goes through `chart_text`, so plotly's pseudo-HTML in a name is shown as
typed, never as markup.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import pandas as pd
import plotly.express as px
import plotly.graph_objects as go


def chart_text(value: Any) -> str:
    """A user-supplied string for a plotly chart: its pseudo-HTML (<a href>, <b>) shown as the characters typed."""
    return html.escape(str(value), quote=False)


def curves_figure(rows: list[dict], metric: str, by: str | None = None):
    """A line chart of train and validation `metric` ("loss" or "accuracy") against step."""
    frame = pd.DataFrame(rows)
    columns = [f"train_{metric}", f"val_{metric}"]
    frame = frame.melt(
        id_vars=["step"] + ([by] if by else []), value_vars=columns, var_name="curve", value_name=metric
    ).dropna()
    frame["curve"] = frame["curve"].map({columns[0]: "training", columns[1]: "validation"})
    fig = px.line(
        frame,
        x="step",
        y=metric,
        color=by or "curve",
        line_dash="curve" if by else None,
        markers=True,
        title=metric.capitalize(),
        render_mode="svg",
        # Runs compared in unlike colours (the theme's first two are both blue), training and validation by dash.
        color_discrete_sequence=px.colors.qualitative.D3 if by else None,
    )
    # The legend under the plot: beside it, it takes a third of a phone's width (all of it with two long run names).
    fig.update_layout(
        height=420 if by else 360,
        margin={"l": 10, "r": 10, "t": 40, "b": 10},
        legend_title_text="",
        legend={"orientation": "h", "yanchor": "top", "y": -0.25, "x": 0},
    )
    if metric == "accuracy":
        fig.update_yaxes(range=[0, 1.02], tickformat=".0%")
    return fig


def map_figure(points: pd.DataFrame):
    """The dataset map: a dot per photo coloured by class, likely mistakes ringed; hover names the photo."""
    points = points.assign(label=points["label"].map(chart_text), file=points["file"].map(chart_text))
    fig = px.scatter(
        points,
        x="x",
        y="y",
        color="label",
        custom_data=["file"],
        render_mode="svg",
        category_orders={"label": sorted(points["label"].unique())},
        labels={"label": "class"},
        color_discrete_sequence=px.colors.qualitative.D3,
    )  # neighbouring classes in unlike colours
    # A clicked dot stands out, and the others stay visible around it (plotly's default fades them to 0.2).
    fig.update_traces(
        marker={"size": 7, "opacity": 0.8},
        selected={"marker": {"size": 14, "opacity": 1}},
        unselected={"marker": {"opacity": 0.5}},
        hovertemplate="%{customdata[0]}<br>class: %{fullData.name}<extra></extra>",
    )
    suspects = points[points["suspect"]] if "suspect" in points else points.iloc[:0]
    if len(suspects):
        fig.add_scatter(
            x=suspects["x"],
            y=suspects["y"],
            mode="markers",
            name="likely mistake",
            customdata=suspects[["file", "label"]].to_numpy(),
            marker={"symbol": "circle-open", "size": 13, "color": "#111827", "line": {"width": 2}},
            selected={"marker": {"size": 20, "opacity": 1}},
            unselected={"marker": {"opacity": 0.6}},
            hovertemplate="%{customdata[0]}<br>class: %{customdata[1]} · likely mistake<extra></extra>",
        )
    # The legend under the map: beside it, on a phone it lay over the dots and under plotly's toolbar.
    fig.update_layout(
        height=460,
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        legend_title_text="",
        legend={"orientation": "h", "yanchor": "top", "y": -0.02, "x": 0},
        clickmode="event+select",
        dragmode="pan",
    )
    fig.update_xaxes(showticklabels=False, title=None, showgrid=False, zeroline=False)
    fig.update_yaxes(showticklabels=False, title=None, showgrid=False, zeroline=False)
    return fig


def balance_figure(counts: pd.DataFrame):
    """Per-class training images now and after balancing, side by side."""
    counts = counts.assign(**{"class": counts["class"].map(chart_text)})
    fig = px.bar(
        counts,
        x="class",
        y="images",
        color="when",
        barmode="group",
        text="images",
        color_discrete_map={"now": "#94a3b8", "after balancing": "#2563eb"},
    )
    fig.update_layout(
        height=300, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend_title_text="", yaxis_title="training images"
    )
    fig.update_traces(textposition="outside", cliponaxis=False)
    return fig


def class_counts_figure(counts: dict[str, dict[str, int]]):
    """Images per class, stacked by split; None when there are none."""
    frame = pd.DataFrame(
        [
            {"class": label, "split": split, "images": n}
            for label, splits in counts.items()
            for split, n in splits.items()
        ]
    )
    if frame.empty:
        return None
    frame["class"] = frame["class"].map(chart_text)
    fig = px.bar(
        frame,
        x="class",
        y="images",
        color="split",
        barmode="stack",
        category_orders={"split": ["train", "validation", "test"]},
        color_discrete_map={"train": "#2563eb", "validation": "#f59e0b", "test": "#10b981"},
    )
    fig.update_layout(height=340, margin={"l": 10, "r": 10, "t": 10, "b": 10}, legend_title_text="")
    return fig


def confusion_figure(labels: list[str], matrix: np.ndarray):
    """The confusion matrix as a heatmap whose cells can be clicked (true class down, predicted across)."""
    cells = [(true, predicted) for true in labels for predicted in labels]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=labels,
            y=labels,
            colorscale="Blues",
            text=matrix,
            texttemplate="%{text}",
            hoverinfo="skip",
            showscale=False,
        )
    )
    # Heatmaps cannot be selected in Streamlit; markers on the cells can (invisible until chosen).
    fig.add_trace(
        go.Scatter(
            x=[p for _, p in cells],
            y=[t for t, _ in cells],
            mode="markers",
            showlegend=False,
            customdata=matrix.flatten(),
            hovertemplate="true %{y}, predicted %{x}: %{customdata}<extra></extra>",
            marker={"size": 44, "opacity": 0.01, "symbol": "square"},
            selected={"marker": {"opacity": 0.35, "color": "#f59e0b"}},
            unselected={"marker": {"opacity": 0.01}},
        )
    )
    shown = [chart_text(label) for label in labels]  # class names as typed, never as chart markup
    fig.update_xaxes(tickvals=labels, ticktext=shown)
    fig.update_yaxes(tickvals=labels, ticktext=shown)
    fig.update_layout(
        height=min(160 + 60 * len(labels), 720),
        xaxis_type="category",
        yaxis_type="category",
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        xaxis_title="predicted",
        yaxis_title="true",
        yaxis_autorange="reversed",
        clickmode="event+select",
    )
    return fig


def top_k_figure(guesses: list[dict[str, Any]]):
    """A model's top guesses for one photo as horizontal bars, the best on top."""
    frame = pd.DataFrame(guesses).iloc[::-1]
    frame["label"] = frame["label"].map(chart_text)
    fig = px.bar(frame, x="score", y="label", orientation="h", text=frame["score"].map("{:.1%}".format))
    # Room right of 100% for the score written after the longest bar.
    fig.update_layout(
        height=60 + 36 * len(frame),
        margin={"l": 10, "r": 10, "t": 10, "b": 10},
        yaxis_title=None,
        xaxis={"range": [0, 1.12], "tickvals": [0, 0.25, 0.5, 0.75, 1], "tickformat": ".0%", "title": None},
    )
    fig.update_traces(marker_color="#2563eb", textposition="outside", cliponaxis=False)
    return fig
