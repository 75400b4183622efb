"""ipywidgets dashboards for the notebooks.

Each dashboard draws its figure for the default value as soon as it is
built, so a notebook run without a front end (nbmake, nbconvert) still
computes and shows a static picture; in JupyterLab the controls redraw it
live. Every dashboard returns a :class:`Dashboard` whose ``figure`` is the
matplotlib Figure for the current value and ``widget`` the ipywidgets box.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Dashboard",
    "LiveHistory",
    "closer_explorer",
    "gap_shift_explorer",
    "hybrid_target_explorer",
    "label_propagation_explorer",
    "model_picker",
]


@dataclass
class Dashboard:
    """A live figure with its controls.

    ``update(**values)`` redraws for new control values (what the controls
    call); ``state`` holds the figures computed for the current values.
    """

    widget: object
    figure: object
    update: Callable
    state: dict = field(default_factory=dict)

    def _repr_mimebundle_(self, include=None, exclude=None):
        """The live widget for front ends that render widgets, and the
        current figure as a PNG for everything else (nbconvert, GitHub,
        a notebook run headless)."""
        import io

        buf = io.BytesIO()
        self.figure.savefig(buf, format="png", dpi=90, bbox_inches="tight")
        bundle = {"image/png": buf.getvalue(), "text/plain": repr(self.widget)}
        widget_bundle = getattr(self.widget, "_repr_mimebundle_", None)
        if widget_bundle is not None:
            data = widget_bundle(include=include, exclude=exclude)
            if isinstance(data, tuple):
                data = data[0]
            bundle.update(data or {})
        return bundle


def _figure_output(draw: Callable, figsize=(11, 4.2)):
    """An Output widget and a function that redraws ``draw(fig, **values)`` into it."""
    import ipywidgets as w
    import matplotlib.pyplot as plt
    from IPython.display import display

    out = w.Output()
    fig = plt.figure(figsize=figsize)
    plt.close(fig)

    def redraw(**values):
        fig.clf()
        state = draw(fig, **values)
        out.clear_output(wait=True)
        with out:
            display(fig)
        return state

    return out, fig, redraw


def gap_shift_explorer(image_emb, class_emb, labels, text_emb=None, *, delta: float = 0.0,
                       delta_range=(-1.0, 1.0), step: float = 0.05, method: str = "pca",
                       max_points: int = 600, random_state: int = 0) -> Dashboard:
    """Mind the Gap's embedding-shift experiment with a slider.

    Moving the slider shifts images by ``-delta/2`` and texts by ``+delta/2``
    along the gap direction, as :func:`modgap.metrics.shift_along_gap` does
    (which gives the zero-shot accuracy and the curve), then redraws the 2-D
    map of both modalities with :func:`modgap.viz.draw_map` (the map's
    projection is fitted once on the unshifted embeddings, so the axes stay
    put).

    The map's title gives two gap distances, since they differ: to the
    texts drawn (the captions, or each image's class prompt), and to the
    class prompts, the one the curve plots.

    Parameters
    ----------
    image_emb : [N, D] image embeddings
    class_emb : [C, D] class embeddings (the zero-shot classifier)
    labels : [N] class indices
    text_emb : [M, D], optional
        Caption embeddings to draw and to measure the gap with; the class
        embeddings of each image's label are used when omitted.
    """
    import ipywidgets as w

    from . import metrics, viz
    from .validation import unit_rows

    img = unit_rows(metrics.check_embeddings(image_emb, "image_emb"), "image_emb")
    cls = metrics.check_embeddings(class_emb, "class_emb")
    labels = np.asarray(labels)
    txt = cls[labels] if text_emb is None else metrics.check_embeddings(text_emb, "text_emb")
    txt = unit_rows(txt, "text_emb")
    drawn = "class prompts of the labels" if text_emb is None else "captions"
    text_name = "class prompt" if text_emb is None else "caption"
    direction = metrics.gap_vector(img, txt)
    rng = np.random.default_rng(random_state)
    pick_i = np.sort(rng.choice(len(img), size=min(max_points, len(img)), replace=False))
    pick_t = np.sort(rng.choice(len(txt), size=min(max_points, len(txt)), replace=False))
    _, reducer = viz.fit_2d(np.concatenate([img[pick_i], txt[pick_t]]), method=method,
                            random_state=random_state, return_reducer=True)
    curve = metrics.shift_along_gap(img, cls, labels,
                                    deltas=np.round(np.arange(delta_range[0], delta_range[1] + 1e-9, step * 2), 4),
                                    direction=direction)
    limits = {}

    def draw(fig, delta):
        row = metrics.shift_along_gap(img, cls, labels, deltas=[delta], direction=direction).iloc[0]
        si, st = metrics.shift_pair(img, txt, delta, direction)
        dist = metrics.centroid_distance(si, st)
        ax_map, ax_curve = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.3, 1]})
        viz.draw_map(reducer.transform(si[pick_i]), reducer.transform(st[pick_t]), method=method,
                     gap=dist, ax=ax_map, text_name=text_name)
        ax_map.set_title(f"shift {delta:+.2f}: zero-shot {100 * row['accuracy']:.1f}%\n"
                         f"gap {dist:.3f} to the {drawn}, {row['centroid_distance']:.3f} to the class prompts",
                         fontsize="medium")
        if not limits:
            limits.update(x=ax_map.get_xlim(), y=ax_map.get_ylim())
        ax_map.set_xlim(*limits["x"])
        ax_map.set_ylim(*limits["y"])
        viz.plot_gap_shift(curve, ax=ax_curve)
        ax_curve.axvline(delta, color="k", ls="--", lw=1)
        fig.tight_layout()
        return {"accuracy": float(row["accuracy"]), "centroid_distance": dist,
                "class_centroid_distance": float(row["centroid_distance"])}

    out, fig, redraw = _figure_output(draw)
    slider = w.FloatSlider(value=delta, min=delta_range[0], max=delta_range[1], step=step,
                           description="shift", continuous_update=False, readout_format="+.2f")
    dash = Dashboard(w.VBox([slider, out]), fig, None)

    def update(delta):
        dash.state = redraw(delta=float(delta))
        return dash.state

    dash.update = update
    slider.observe(lambda change: update(change["new"]), names="value")
    dash.controls = {"delta": slider}
    dash.curve = curve
    update(delta)
    return dash


def closer_explorer(image_emb, text_emb, class_emb=None, labels=None, *, closer: str = "none",
                    delta: float | None = None, method: str = "pca", max_points: int = 600,
                    random_state: int = 0, text_name: str = "caption") -> Dashboard:
    """Pick a post-hoc closer (:mod:`modgap.adapt.posthoc`) and watch the
    map and the gap figures change.

    The closer is fitted on the embeddings shown and applied to them; the
    map keeps one 2-D frame, fitted on the original embeddings, so the
    points move. With ``class_emb`` and ``labels`` (one label per image) the
    panel also gives zero-shot accuracy, with the class embeddings moved as
    texts. ``delta`` is the shift of ``"gap-shift"`` (default: the centroid
    distance, which makes the centroids meet before renormalisation).
    ``text_name`` says what the texts are in the map's legend.
    """
    import ipywidgets as w

    from . import metrics, viz
    from .adapt.posthoc import CLOSERS
    from .validation import check_pair

    names = ("none", *CLOSERS)
    if closer not in names:
        raise ValueError(f"closer must be one of {names}, got {closer!r}")
    img, txt = check_pair(image_emb, text_emb)
    gap0 = metrics.centroid_distance(img, txt)
    delta = gap0 if delta is None else float(delta)
    rng = np.random.default_rng(random_state)
    pick_i = np.sort(rng.choice(len(img), size=min(max_points, len(img)), replace=False))
    pick_t = np.sort(rng.choice(len(txt), size=min(max_points, len(txt)), replace=False))
    _, reducer = viz.fit_2d(np.concatenate([img[pick_i], txt[pick_t]]), method=method,
                            random_state=random_state, return_reducer=True)

    def figures(name, shift):
        if name == "none":
            return img, txt, class_emb
        est = CLOSERS[name](delta=shift) if name == "gap-shift" else CLOSERS[name]()
        est.fit(img, txt)
        moved_img, moved_txt = est.transform(img, txt)
        moved_cls = None if class_emb is None else est.transform_texts(class_emb)
        return moved_img, moved_txt, moved_cls

    # one frame that holds every closer's points, so switching moves points, not axes
    placed = [reducer.transform(np.concatenate([m[0][pick_i], m[1][pick_t]]))
              for m in (figures(name, delta) for name in names)]
    lo, hi = np.min([p.min(0) for p in placed], 0), np.max([p.max(0) for p in placed], 0)
    pad = 0.05 * (hi - lo)
    limits = {"x": (lo[0] - pad[0], hi[0] + pad[0]), "y": (lo[1] - pad[1], hi[1] + pad[1])}

    def draw(fig, closer, delta):
        m_img, m_txt, m_cls = figures(closer, delta)
        state = {"centroid_distance": metrics.centroid_distance(m_img, m_txt),
                 "relative_modality_gap": metrics.relative_modality_gap(m_img, m_txt)}
        if m_cls is not None and labels is not None:
            state["zero_shot_accuracy"] = metrics.zero_shot_accuracy(m_img, m_cls, labels)
        ax_map, ax_bar = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.4, 1]})
        viz.draw_map(reducer.transform(m_img[pick_i]), reducer.transform(m_txt[pick_t]), method=method,
                     gap=state["centroid_distance"], ax=ax_map, text_name=text_name)
        ax_map.set_xlim(*limits["x"])
        ax_map.set_ylim(*limits["y"])
        ax_map.set_title(f"{closer}" + (f" (delta {delta:.2f})" if closer == "gap-shift" else ""),
                         fontsize="medium")
        names_, values = list(state), list(state.values())
        ax_bar.barh(names_, values, color="tab:blue")
        for y, v in enumerate(values):
            ax_bar.text(v, y, f" {v:.3f}", va="center")
        ax_bar.set_xlim(0, max(1.0, max(values) * 1.25))
        ax_bar.invert_yaxis()
        ax_bar.set_title("figures after the closer", fontsize="medium")
        fig.tight_layout()
        return state

    out, fig, redraw = _figure_output(draw)
    picker = w.ToggleButtons(options=list(names), value=closer, description="closer")
    slider = w.FloatSlider(value=delta, min=0.0, max=round(2 * max(gap0, 0.5), 2), step=0.05,
                           description="delta", continuous_update=False, readout_format=".2f")
    dash = Dashboard(w.VBox([picker, slider, out]), fig, None)

    def update(closer=None, delta=None):
        closer = picker.value if closer is None else closer
        delta = slider.value if delta is None else float(delta)
        dash.state = redraw(closer=closer, delta=delta)
        return dash.state

    dash.update = update
    picker.observe(lambda change: update(closer=change["new"]), names="value")
    slider.observe(lambda change: update(delta=change["new"]), names="value")
    dash.controls = {"closer": picker, "delta": slider}
    update(closer, delta)
    return dash


def label_propagation_explorer(image_emb, class_emb, labels, *, k: int = 20, alpha: float = 0.99,
                               project: bool = True, classnames: Sequence[str] | None = None) -> Dashboard:
    """Label propagation (ReCLIP's pseudo labels) with sliders for ``k`` and
    ``alpha``: pseudo-label accuracy against zero-shot, and the confusion
    matrix of the pseudo labels."""
    import ipywidgets as w

    from . import metrics
    from .adapt.graph import label_propagation

    img = metrics.check_embeddings(image_emb, "image_emb").astype(np.float32)
    cls = metrics.check_embeddings(class_emb, "class_emb").astype(np.float32)
    labels = np.asarray(labels)
    n_cls = len(cls)
    names = list(classnames) if classnames is not None else [str(i) for i in range(n_cls)]
    zs = metrics.zero_shot_predict(img, cls)
    zs_acc = float((zs == labels).mean())

    def draw(fig, k, alpha, project):
        import torch

        pl = label_propagation(torch.from_numpy(img), torch.from_numpy(cls), k=int(k), alpha=float(alpha),
                               project=bool(project)).cpu().numpy()
        acc = float((pl == labels).mean())
        conf = np.zeros((n_cls, n_cls), dtype=int)
        np.add.at(conf, (labels, pl), 1)
        ax_bar, ax_conf = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
        ax_bar.bar(["zero-shot", "label\npropagation"], [100 * zs_acc, 100 * acc], color=["0.6", "tab:green"])
        for x, v in enumerate([zs_acc, acc]):
            ax_bar.text(x, 100 * v + 1, f"{100 * v:.1f}%", ha="center")
        ax_bar.set(ylim=(0, 105), ylabel="top-1 accuracy (%)",
                   title=f"k={int(k)}, alpha={alpha:.3f}, projection {'on' if project else 'off'}")
        im = ax_conf.imshow(conf, cmap="Blues")
        ax_conf.set(xticks=range(n_cls), yticks=range(n_cls), xlabel="pseudo label", ylabel="true class",
                    title="confusion of the pseudo labels")
        ax_conf.set_xticklabels(names, rotation=45, ha="right")
        ax_conf.set_yticklabels(names)
        fig.colorbar(im, ax=ax_conf, fraction=0.046, label="images")
        fig.tight_layout()
        return {"accuracy": acc, "zero_shot_accuracy": zs_acc, "confusion": conf, "pseudo_labels": pl}

    out, fig, redraw = _figure_output(draw)
    k_slider = w.IntSlider(value=k, min=2, max=60, step=1, description="k", continuous_update=False)
    a_slider = w.FloatSlider(value=alpha, min=0.5, max=0.999, step=0.005, description="alpha",
                             continuous_update=False, readout_format=".3f")
    p_box = w.Checkbox(value=project, description="projection")
    dash = Dashboard(w.VBox([w.HBox([k_slider, a_slider, p_box]), out]), fig, None)

    def update(k=None, alpha=None, project=None):
        k = k_slider.value if k is None else k
        alpha = a_slider.value if alpha is None else alpha
        project = p_box.value if project is None else project
        dash.state = redraw(k=k, alpha=alpha, project=project)
        return dash.state

    dash.update = update
    for c in (k_slider, a_slider, p_box):
        c.observe(lambda change: update(), names="value")
    dash.controls = {"k": k_slider, "alpha": a_slider, "project": p_box}
    update(k, alpha, project)
    return dash


def hybrid_target_explorer(teacher_logits, *, alpha: float = 0.5, temperature: float = 1.0) -> Dashboard:
    """HyCD's hybrid target ``alpha * I + (1 - alpha) * softmax(teacher / T)``
    for a small batch of teacher logits, with sliders for ``alpha`` and ``T``."""
    import ipywidgets as w
    import torch

    from .adapt.losses import hybrid_target

    logits = torch.as_tensor(np.asarray(teacher_logits, dtype=np.float32))
    if logits.ndim != 2 or logits.shape[0] != logits.shape[1]:
        raise ValueError(f"teacher_logits must be a square [B, B] matrix, got {tuple(logits.shape)}")

    def draw(fig, alpha, temperature):
        target = hybrid_target(logits, alpha=float(alpha), temperature=float(temperature)).numpy()
        ax_t, ax_diag = fig.subplots(1, 2)
        im = ax_t.imshow(target, vmin=0, vmax=1, cmap="viridis")
        fig.colorbar(im, ax=ax_t, fraction=0.046, label="target probability")
        ax_t.set(title=f"hybrid target, alpha={alpha:.2f}, T={temperature:.2f}", xlabel="caption", ylabel="image")
        ax_diag.bar(np.arange(len(target)), np.diag(target), color="tab:purple", label="matched pair")
        ax_diag.bar(np.arange(len(target)), target.sum(1) - np.diag(target), bottom=np.diag(target),
                    color="0.75", label="other captions")
        ax_diag.set(ylim=(0, 1.05), xlabel="image in the batch", ylabel="target mass",
                    title="how much the target trusts the pairing")
        ax_diag.legend(loc="lower right")
        fig.tight_layout()
        return {"target": target}

    out, fig, redraw = _figure_output(draw, figsize=(10, 4))
    a_slider = w.FloatSlider(value=alpha, min=0.0, max=1.0, step=0.05, description="alpha", continuous_update=False)
    t_slider = w.FloatLogSlider(value=temperature, base=10, min=-1, max=1, step=0.1, description="T",
                                continuous_update=False)
    dash = Dashboard(w.VBox([w.HBox([a_slider, t_slider]), out]), fig, None)

    def update(alpha=None, temperature=None):
        dash.state = redraw(alpha=a_slider.value if alpha is None else alpha,
                            temperature=t_slider.value if temperature is None else temperature)
        return dash.state

    dash.update = update
    for c in (a_slider, t_slider):
        c.observe(lambda change: update(), names="value")
    dash.controls = {"alpha": a_slider, "temperature": t_slider}
    update(alpha, temperature)
    return dash


class LiveHistory:
    """A callback that redraws a line plot of training figures as they come.

    Pass it as ``callback=`` to :class:`modgap.adapt.ReCLIP` or
    :class:`modgap.adapt.CLIPRefine`, which call it with the estimator and
    each new row of their history (an epoch, or a logged step). It updates one display in place, so it works
    in JupyterLab and leaves the final figure in a notebook run headless.

    Parameters
    ----------
    columns : the keys of the row to plot
    x : the key used for the horizontal axis (``"epoch"`` or ``"step"``)
    every : redraw every this many calls (the last figure is kept in ``figure``)
    """

    def __init__(self, columns: Sequence[str], x: str = "epoch", title: str = "training",
                 ylabel: str = "value", every: int = 1, display: bool = True):
        import matplotlib.pyplot as plt

        self.columns, self.x, self.title, self.ylabel = list(columns), x, title, ylabel
        self.every = max(1, int(every))
        self.rows: list[dict] = []
        self.figure, self.ax = plt.subplots(figsize=(7, 3.6))
        plt.close(self.figure)
        self._handle = None
        self._display = display

    def __call__(self, estimator, row):
        self.rows.append(dict(row))
        if len(self.rows) % self.every == 0:
            self.redraw()

    def redraw(self):
        ax = self.ax
        ax.clear()
        xs = [r.get(self.x, i) for i, r in enumerate(self.rows)]
        for c in self.columns:
            ys = [r.get(c, np.nan) for r in self.rows]
            if np.all(np.isnan(np.asarray(ys, dtype=float))):
                continue
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, label=c)
        ax.set(title=self.title, xlabel=self.x, ylabel=self.ylabel)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="best")
        self.figure.tight_layout()
        if self._display:
            from IPython.display import display

            if self._handle is None:
                self._handle = display(self.figure, display_id=True)
            else:
                self._handle.update(self.figure)
        return ax


def model_picker(default: str = "modgap-tiny", options: Sequence[str] | None = None):
    """A drop-down of model specs: the models that load offline here, and
    a few real open_clip models for machines with the internet."""
    import ipywidgets as w

    from .models import offline_models

    opts = list(options) if options is not None else list(dict.fromkeys(
        [default] + offline_models() + ["ViT-B-32:laion2b_s34b_b79k", "ViT-B-16:openai", "ViT-L-14:openai"]))
    return w.Dropdown(options=opts, value=default, description="model")
