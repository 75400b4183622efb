"""The interactive map: explore both modalities by hand in JupyterLab.

:func:`explore` puts image and text embeddings on one 2-D map drawn by
`jupyter-scatter <https://jupyter-scatter.dev>`_ (WebGL, smooth at 100,000
points, lasso selection, animated transitions): hover a point and its image
thumbnail or caption, with its nearest neighbours of the other modality,
appears beside the map; colour by modality, class or domain; a lasso or
box selection comes back to Python as ``explorer.selection``.
:func:`explore_shift` animates the same rows from one embedding to the
next (before and after a method, or every epoch a callback recorded with
:class:`EmbeddingTrail`) in one shared frame: the reducer is fitted once,
on all the states together, as :func:`modgap.viz.plot_embedding_shift`
does for the static figure.

Thumbnails are made on the kernel side when a point is hovered or
selected, one at a time, so a map of 100,000 images sends no image until
one is asked for. The static figures of :mod:`modgap.viz.figures` stay the
picture for papers and for notebooks run headless.
"""
from __future__ import annotations

import html
import io
from collections.abc import Sequence

import numpy as np
import pandas as pd
import traitlets

from ..validation import check_choice, check_embeddings, check_int, unit_rows
from .figures import REDUCERS, fit_2d

__all__ = ["EmbeddingTrail", "Explorer", "explore", "explore_shift"]

COLOR_BY = ("modality", "class", "domain")
MODALITY_COLORS = {"image": "#1f77b4", "text": "#ff7f0e"}
THUMBNAIL_PX = 96


def _jscatter():
    try:
        import jscatter
    except ImportError as e:  # pragma: no cover - a core dependency; only a broken install lacks it
        raise ImportError("modgap.viz.explore needs jupyter-scatter: pip install jupyter-scatter") from e
    return jscatter


def _unit(x, name: str):
    """``x`` as unit-length float32 rows (cosine is a dot product)."""
    return unit_rows(check_embeddings(x, name), name).astype(np.float32)


def _image_source(images, n: int):
    """The images behind the rows, as a sequence that gives one image (a
    path, a PIL image or a uint8 array) per index, or ``None``."""
    if images is None:
        return None
    source = getattr(images, "images", images)
    if len(source) != n:
        raise ValueError(f"images must hold one image per image embedding ({n}), got {len(source)}")
    return source


def thumbnail_png(image, size: int = THUMBNAIL_PX) -> bytes:
    """One image (a file path, a PIL image or a uint8 ``[H, W, 3]`` array)
    as PNG bytes no larger than ``size`` pixels a side."""
    from PIL import Image

    if isinstance(image, Image.Image):
        im = image.copy()
    elif isinstance(image, np.ndarray):
        im = Image.fromarray(np.asarray(image, dtype=np.uint8))
    else:
        with Image.open(image) as f:
            im = f.convert("RGB")
    # small images are enlarged with hard edges, large ones shrunk smoothly
    scale = size / max(im.size)
    resample = Image.NEAREST if scale > 1 else Image.LANCZOS
    im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), resample)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _blank_png() -> bytes:
    """The empty preview: a pale square, where an image would go."""
    return thumbnail_png(np.full((THUMBNAIL_PX, THUMBNAIL_PX, 3), 240, dtype=np.uint8))


def _column(values, n: int, name: str, class_names=None):
    if values is None:
        return np.full(n, "", dtype=object)
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1 or len(arr) != n:
        raise ValueError(f"{name} must have one entry per point ({n}), got shape {arr.shape}")
    if class_names is not None and np.issubdtype(arr.dtype, np.integer):
        if arr.min() < 0 or arr.max() >= len(class_names):
            raise ValueError(f"{name} must index class_names (0..{len(class_names) - 1}), "
                             f"got values from {arr.min()} to {arr.max()}")
        return np.asarray([str(class_names[i]) for i in arr], dtype=object)
    return arr.astype(str).astype(object)


def points_frame(image_xy, text_xy=None, *, labels=None, text_labels=None, class_names=None,
                 domains=None, texts=None) -> pd.DataFrame:
    """The table the map draws: one row a point, images first, with
    ``x``, ``y``, ``modality``, ``row`` (the row in its own modality's
    input), ``class``, ``domain`` and ``caption``."""
    n_i = len(image_xy)
    n_t = 0 if text_xy is None else len(text_xy)
    if texts is not None and len(texts) != n_t:
        raise ValueError(f"texts must hold one string per text embedding ({n_t}), got {len(texts)}")
    if text_labels is None and labels is not None and n_t == n_i:
        text_labels = labels
    xy = np.vstack([image_xy] + ([text_xy] if n_t else []))
    frame = pd.DataFrame({
        "x": xy[:, 0].astype(np.float32),
        "y": xy[:, 1].astype(np.float32),
        "modality": pd.Categorical(["image"] * n_i + ["text"] * n_t, categories=["image", "text"]),
        "row": np.concatenate([np.arange(n_i), np.arange(n_t)]).astype(np.int64),
        "class": np.concatenate([_column(labels, n_i, "labels", class_names),
                                 _column(text_labels, n_t, "text_labels", class_names)]),
        "domain": np.concatenate([_column(domains, n_i, "domains"), np.full(n_t, "", dtype=object)]),
        "caption": np.concatenate([np.full(n_i, "", dtype=object),
                                   np.asarray(list(texts) if texts is not None else [""] * n_t, dtype=object)]),
    })
    for col in ("class", "domain"):
        frame[col] = frame[col].astype("category")
    return frame


class Explorer:
    """The map and its side panel; display it as the last expression of a
    cell. Built by :func:`explore` and :func:`explore_shift`.

    Attributes
    ----------
    points : pandas.DataFrame
        One row a point (see :func:`points_frame`); row ``i`` is point ``i``.
    scatter : jscatter.Scatter
        The jupyter-scatter object, for any of its own settings.
    frames : list of ndarray [N, 2]
        The coordinates of every state, in one frame (one for :func:`explore`).
    selection : list of int
        The selected points (indices into ``points``); set by a lasso or box
        in the browser, or from Python. Watch it with
        ``explorer.observe(fn, "selection")``.
    """

    def __init__(self, points, frames, *, image_emb=None, text_emb=None, images=None, color_by="modality",
                 frame_names=None, gap=True, width=560, height=460, n_neighbours=3):
        import ipywidgets as w

        jscatter = _jscatter()
        self.points = points
        self.frames = [np.asarray(f, dtype=np.float32) for f in frames]
        self.frame_names = list(frame_names or [f"state {i}" for i in range(len(self.frames))])
        self._image_emb = image_emb
        self._text_emb = text_emb
        self._images = images
        self._n_neighbours = n_neighbours
        self._show_gap = gap
        self._state = _Selection()
        self.scatter = jscatter.Scatter(x="x", y="y", data=points, width=width, height=height, legend=True,
                                        tooltip=True, lasso_initiator=True)
        self.scatter.tooltip(True, properties=["color"], preview="caption", preview_type="text")
        self.color(color_by)
        lo, hi = np.vstack(self.frames).min(0), np.vstack(self.frames).max(0)
        pad = 0.05 * np.maximum(hi - lo, 1e-6)
        self.scatter.x(scale=[float(lo[0] - pad[0]), float(hi[0] + pad[0])])
        self.scatter.y(scale=[float(lo[1] - pad[1]), float(hi[1] + pad[1])])
        self._draw_gap(0)

        self.color_picker = w.ToggleButtons(options=[c for c in COLOR_BY if self._colourable(c)],
                                            value=color_by, description="colour by")
        self.color_picker.observe(lambda ch: self.color(ch["new"]), "value")
        self.preview = w.Image(value=_blank_png(), format="png", layout=w.Layout(width=f"{THUMBNAIL_PX}px",
                                                              height=f"{THUMBNAIL_PX}px"))
        self.preview.add_class("modgap-preview")
        self.caption = w.HTML("<i>hover a point</i>")
        self.caption.add_class("modgap-caption")
        self.neighbours = w.HTML("")
        self.selection_label = w.Label("selected: none")
        self.selection_label.add_class("modgap-selection")
        self.scatter.widget.observe(self._on_hover, "hovering")
        self.scatter.widget.observe(self._on_select, "selection")
        self._state.observe(self._on_selection_set, "selection")
        side = w.VBox([self.preview, self.caption, self.neighbours, self.selection_label],
                      layout=w.Layout(width="300px", padding="0 0 0 10px"))
        rows = [self.color_picker, w.HBox([self.scatter.show(), side])]
        self.play = self.frame_slider = None
        if len(self.frames) > 1:
            self.frame_slider = w.IntSlider(value=0, min=0, max=len(self.frames) - 1, description="state",
                                            continuous_update=False, readout=False)
            self.frame_label = w.Label(self.frame_names[0])
            self.frame_label.add_class("modgap-frame")
            self.play = w.Play(value=0, min=0, max=len(self.frames) - 1, interval=1500, description="play")
            w.jslink((self.play, "value"), (self.frame_slider, "value"))
            self.frame_slider.observe(lambda ch: self.show_frame(ch["new"]), "value")
            rows.insert(1, w.HBox([self.play, self.frame_slider, self.frame_label]))
        self.widget = w.VBox(rows)
        self.widget.add_class("modgap-explorer")

    # -- the public face -------------------------------------------------------------
    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)

    @property
    def selection(self) -> list[int]:
        return list(self._state.selection)

    @selection.setter
    def selection(self, rows) -> None:
        rows = sorted({int(r) for r in rows})
        if rows and (rows[0] < 0 or rows[-1] >= len(self.points)):
            raise ValueError(f"selection: point indices must lie in 0..{len(self.points) - 1}")
        self.scatter.selection(np.asarray(rows, dtype=np.uint32))
        self._state.selection = rows

    def observe(self, handler, names="selection"):
        """Call ``handler(change)`` when ``selection`` changes (traitlets' observe)."""
        self._state.observe(handler, names)

    def selected_rows(self, modality: str = "image") -> np.ndarray:
        """The rows of the ``modality`` input (``"image"`` or ``"text"``) among the selected points."""
        check_choice(modality, "modality", ("image", "text"))
        sel = self.points.iloc[self.selection]
        return sel.loc[sel["modality"] == modality, "row"].to_numpy()

    def color(self, by: str) -> None:
        """Colour the points by ``"modality"``, ``"class"`` or ``"domain"``."""
        check_choice(by, "color_by", COLOR_BY)
        if not self._colourable(by):
            raise ValueError(f"color_by={by!r}: no {by} was given to explore()")
        if by == "modality":
            self.scatter.color(by="modality", map=MODALITY_COLORS)
        else:
            self.scatter.color(by=by, map="auto")

    def show_frame(self, i: int) -> None:
        """Move the points to state ``i`` (animated in the browser)."""
        check_int(i, "i", min_value=0)
        if i >= len(self.frames):
            raise ValueError(f"i must be below the number of states ({len(self.frames)}), got {i}")
        xy = self.frames[i]
        self.points["x"], self.points["y"] = xy[:, 0], xy[:, 1]
        self.scatter.xy(x=xy[:, 0], y=xy[:, 1], animate=True)
        self._draw_gap(i)
        if self.frame_slider is not None:
            self.frame_slider.value = i
            self.frame_label.value = self.frame_names[i]

    # -- behind it ---------------------------------------------------------------------
    def _colourable(self, by: str) -> bool:
        return by == "modality" or (self.points[by].astype(str) != "").any()

    def _draw_gap(self, i: int) -> None:
        if not self._show_gap or not (self.points["modality"] == "text").any():
            return
        from jscatter import Line

        xy = self.frames[i]
        is_image = (self.points["modality"] == "image").to_numpy()
        a, b = xy[is_image].mean(0), xy[~is_image].mean(0)
        self.scatter.annotations([Line([(float(a[0]), float(a[1])), (float(b[0]), float(b[1]))],
                                       line_color="#222222", line_width=3)])

    def _on_select(self, change) -> None:
        new = change["new"]
        rows = [] if new is None else sorted(int(r) for r in np.asarray(new).ravel())
        if rows != self._state.selection:
            self._state.selection = rows

    def _on_selection_set(self, change) -> None:
        rows = change["new"]
        if not rows:
            self.selection_label.value = "selected: none"
            return
        kinds = self.points["modality"].iloc[rows].value_counts()
        n_i, n_t = int(kinds.get("image", 0)), int(kinds.get("text", 0))
        self.selection_label.value = (f"selected: {len(rows)} points ({n_i} image{'s' * (n_i != 1)}, "
                                      f"{n_t} text{'s' * (n_t != 1)})")
        self._describe(rows[0])

    def _on_hover(self, change) -> None:
        if change["new"] is not None:
            self._describe(int(change["new"]))

    def _describe(self, i: int) -> None:
        """Show point ``i`` beside the map: its thumbnail or caption and its
        nearest points of the other modality."""
        p = self.points.iloc[i]
        row = int(p["row"])
        label = f" ({html.escape(str(p['class']))})" if str(p["class"]) else ""
        if p["modality"] == "image":
            if self._images is not None:
                self.preview.value = thumbnail_png(self._images[row])
            self.caption.value = f"<b>image {row}</b>{label}"
            near = self._nearest(self._image_emb, self._text_emb, row)
            if near is not None:
                texts = self.points.loc[self.points["modality"] == "text", "caption"].to_numpy()
                self.neighbours.value = "nearest texts:<br>" + "<br>".join(
                    f"{s:.2f} {html.escape(str(texts[j]) or f'text {j}')}" for j, s in near)
        else:
            self.preview.value = _blank_png()
            self.caption.value = f"<b>text {row}</b>{label}: {html.escape(str(p['caption']))}"
            near = self._nearest(self._text_emb, self._image_emb, row)
            if near is not None:
                self.neighbours.value = "nearest images: " + ", ".join(f"{j} ({s:.2f})" for j, s in near)
                if self._images is not None and near:
                    self.preview.value = thumbnail_png(self._images[near[0][0]])

    def _nearest(self, query, pool, row):
        if query is None or pool is None:
            return None
        sims = pool @ query[row]
        top = np.argsort(-sims)[: self._n_neighbours]
        return [(int(j), float(sims[j])) for j in top]


class _Selection(traitlets.HasTraits):
    """The observable selection, kept apart from the widget tree."""

    selection = traitlets.List(traitlets.Int(), default_value=[])


def _state_rows(state, name: str):
    """``(image_emb, text_emb)`` of one state: a tuple of two, or one array of images."""
    if isinstance(state, tuple | list) and len(state) == 2 and not np.isscalar(state[0]):
        img, txt = state
        return _unit(img, f"{name} images"), None if txt is None else _unit(txt, f"{name} texts")
    return _unit(state, name), None


def explore(image_emb, text_emb=None, *, images=None, texts=None, labels=None, text_labels=None,
            class_names=None, domains=None, method: str = "umap", color_by: str = "modality",
            random_state: int = 0, xy=None, reducer_kwargs=None, width: int = 560, height: int = 460) -> Explorer:
    """An interactive map of image (and text) embeddings.

    Parameters
    ----------
    image_emb : array [N, D]
    text_emb : array [M, D], optional
        On the same map; the line joins the two modalities' centroids (the gap).
    images : ImageSet, PairSet, uint8 array [N, H, W, 3] or list of paths, optional
        The images behind ``image_emb``: a hovered or selected image shows
        its thumbnail (made when asked for, one at a time).
    texts : list of str, optional
        The texts behind ``text_emb`` (captions or class prompts), shown on hover.
    labels, text_labels : int or str arrays, optional
        Classes of the images and of the texts (``text_labels`` defaults to
        ``labels`` where the counts match); ``class_names`` names integer labels.
    domains : str array [N], optional
        Each image's domain, a third way to colour.
    method : {"umap", "pca", "tsne"}
        The reducer (:func:`modgap.viz.fit_2d`), seeded by ``random_state``.
    color_by : {"modality", "class", "domain"}
    xy : array [N + M, 2], optional
        Coordinates already computed (images first); no reducer is fitted.
    width, height : int
        The map's size in pixels (the side panel adds 300 px).

    Returns
    -------
    Explorer
        Display it; ``explorer.selection`` holds the selected points and
        ``explorer.selected_rows("image")`` their rows in ``image_emb``.
    """
    img = _unit(image_emb, "image_emb")
    txt = None if text_emb is None else _unit(text_emb, "text_emb")
    if txt is not None and txt.shape[1] != img.shape[1]:
        raise ValueError(f"text_emb has dimension {txt.shape[1]}, image_emb {img.shape[1]}")
    check_choice(color_by, "color_by", COLOR_BY)
    n_i, n_t = len(img), 0 if txt is None else len(txt)
    if xy is None:
        check_choice(method, "method", REDUCERS)
        xy = fit_2d(np.vstack([img] + ([txt] if n_t else [])), method, random_state, **(reducer_kwargs or {}))
    xy = np.asarray(xy, dtype=np.float32)
    if xy.shape != (n_i + n_t, 2):
        raise ValueError(f"xy must have shape ({n_i + n_t}, 2) (images first, then texts), got {xy.shape}")
    points = points_frame(xy[:n_i], xy[n_i:] if n_t else None, labels=labels, text_labels=text_labels,
                          class_names=class_names, domains=domains, texts=texts)
    return Explorer(points, [xy], image_emb=img, text_emb=txt, images=_image_source(images, n_i),
                    color_by=color_by, width=width, height=height)


def explore_shift(before=None, after=None, *, states: Sequence | None = None, names=None, images=None, texts=None,
                  labels=None, text_labels=None, class_names=None, domains=None, method: str = "umap",
                  color_by: str = "modality", random_state: int = 0, reducer_kwargs=None,
                  width: int = 560, height: int = 460) -> Explorer:
    """The same rows in several states, animated in one shared map.

    ``explore_shift(before, after)`` for two states, or
    ``explore_shift(states=trail.states, names=trail.names)`` for a
    sequence (an :class:`EmbeddingTrail` a fit's callback filled). Each
    state is one array of image embeddings or an ``(image_emb, text_emb)``
    tuple, with the same rows in every state. The reducer is fitted once,
    on all states stacked, so a point's move between states is its move
    in the embedding space, not the reducer's; the play control and the
    slider step through the states. Other arguments as in :func:`explore`.
    """
    if states is None:
        if after is None:
            raise ValueError("give before and after, or states=[...]")
        states = [before, after]
        names = names or ["before", "after"]
    elif before is not None or after is not None:
        raise ValueError("give before and after, or states=[...], not both")
    states = [_state_rows(s, f"states[{i}]") for i, s in enumerate(states)]
    if len(states) < 2:
        raise ValueError(f"states must hold at least two states, got {len(states)}")
    img0, txt0 = states[0]
    for i, (img, txt) in enumerate(states):
        if img.shape != img0.shape or (txt is None) != (txt0 is None) or (txt is not None and txt.shape != txt0.shape):
            raise ValueError(f"states[{i}] differs in shape from states[0]; row i of every state must be "
                             "the same item")
    names = list(names) if names is not None else [f"state {i}" for i in range(len(states))]
    if len(names) != len(states):
        raise ValueError(f"names must hold one name per state ({len(states)}), got {len(names)}")
    check_choice(method, "method", REDUCERS)
    check_choice(color_by, "color_by", COLOR_BY)
    blocks = [b for img, txt in states for b in ([img] + ([txt] if txt is not None else []))]
    y = fit_2d(np.vstack(blocks), method, random_state, **(reducer_kwargs or {}))
    per = len(img0) + (0 if txt0 is None else len(txt0))
    frames = [y[i * per:(i + 1) * per] for i in range(len(states))]
    n_i = len(img0)
    points = points_frame(frames[0][:n_i], frames[0][n_i:] if txt0 is not None else None, labels=labels,
                          text_labels=text_labels, class_names=class_names, domains=domains, texts=texts)
    return Explorer(points, frames, image_emb=states[-1][0], text_emb=states[-1][1],
                    images=_image_source(images, n_i), color_by=color_by, frame_names=names, width=width,
                    height=height)


class EmbeddingTrail:
    """A callback that records embeddings as an estimator trains, for
    :func:`explore_shift`.

    ``trail = EmbeddingTrail(images, texts, every=1)`` then
    ``ReCLIP(..., callback=trail)`` or ``CLIPRefine(..., callback=trail)``:
    at every ``every``-th history row it embeds ``images`` (and ``texts``,
    if given) with the model as it is at that row
    (``estimator.to_clip()`` inside a callback), and keeps them in
    ``states``, named in ``names`` (``"epoch 3"``, ``"step 40"``).
    Pass ``start=clip`` to record the frozen model first.
    """

    def __init__(self, images, texts=None, *, every: int = 1, start=None):
        check_int(every, "every", min_value=1)
        self.images = images
        self.texts = None if texts is None else list(texts)
        self.every = every
        self.states: list = []
        self.names: list[str] = []
        self._calls = 0
        if start is not None:
            self._record(start, "start")

    def _record(self, clip, name: str) -> None:
        img = clip.encode_images(self.images, progress=False).cpu().numpy()
        txt = None if self.texts is None else clip.encode_texts(self.texts, progress=False).cpu().numpy()
        self.states.append(img if txt is None else (img, txt))
        self.names.append(name)

    def __call__(self, estimator, row: dict):
        self._calls += 1
        if (self._calls - 1) % self.every:
            return True
        unit = "epoch" if "epoch" in row and "step" not in row else "step"
        self._record(estimator.to_clip(), f"{unit} {row.get(unit, self._calls)}")
        return True
