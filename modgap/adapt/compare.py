"""Every way modgap closes the gap, on one model and one set of data, in one
table: the post-hoc closers (:mod:`~modgap.adapt.posthoc`), ReCLIP and
CLIP-Refine, beside the untouched model."""
from __future__ import annotations

import time

import pandas as pd

from ..validation import check_choice
from .clip_refine import CLIPRefine
from .posthoc import CLOSERS
from .reclip import ReCLIP

__all__ = ["METHOD_NAMES", "compare_closers"]

# in the order the table lists them: what each needs, beside the model
METHOD_NAMES = ("none", *CLOSERS, "reclip", "clip-refine")
_NEEDS = {
    "none": (False, False),
    "mean-centering": (False, False),
    "standardization": (False, False),
    "gap-shift": (False, False),
    "reclip": (True, True),
    "clip-refine": (True, False),
}


def _gap_figures(img, txt, separability_seed: int) -> dict:
    from .. import metrics

    recall = metrics.retrieval_recall(img, txt, k=(1,))
    return {
        "centroid_distance": metrics.centroid_distance(img, txt),
        "relative_modality_gap": metrics.relative_modality_gap(img, txt),
        "linear_separability": metrics.linear_separability(img, txt, random_state=separability_seed),
        "i2t_R@1": recall["i2t_R@1"],
        "t2i_R@1": recall["t2i_R@1"],
    }


def _embed(clip, pairs, sets, templates_of):
    img = clip.encode_images(pairs, progress=False)
    txt = clip.encode_texts(pairs.first_captions(), progress=False)
    zs = {name: (clip.encode_images(s, progress=False), clip.class_embeddings(s.classnames, templates_of(s)))
          for name, s in sets.items()}
    return img, txt, zs


def _accuracy(image_emb, class_emb, labels) -> float:
    from .. import metrics

    return metrics.zero_shot_accuracy(image_emb, class_emb, labels)


def compare_closers(clip, calibration, evaluation, zero_shot: dict, target=None, *, methods=METHOD_NAMES,
                    gap_shift_delta=None, reclip_params=None, refine_params=None, seed: int = 0) -> pd.DataFrame:
    """Close the gap of ``clip`` every way modgap knows and measure each.

    Parameters
    ----------
    clip : modgap.Clip
        The model; it is not modified.
    calibration : PairSet
        Image-caption pairs the post-hoc closers are fitted on and
        CLIP-Refine trains on.
    evaluation : PairSet
        Held-out pairs for the gap figures and retrieval (first caption each).
    zero_shot : dict name -> ImageSet
        Labelled sets for zero-shot accuracy (e.g. ``{"photo": ..., "night": ...}``);
        the post-hoc closers move the images as images and the class prompts
        as texts.
    target : ImageSet, optional
        The unlabelled target images ReCLIP adapts to (its labels are not
        used to fit); default the last set of ``zero_shot``.
    methods : names from :data:`METHOD_NAMES`
    gap_shift_delta : float, optional
        The shift of :class:`~modgap.adapt.posthoc.GapShift`; default the
        centroid distance of the calibration pairs, which makes the two
        centroids meet before renormalisation.
    reclip_params, refine_params : dict, optional
        Passed to :class:`~modgap.adapt.ReCLIP` and
        :class:`~modgap.adapt.CLIPRefine` (``seed`` defaults to ``seed``).

    Returns
    -------
    pandas.DataFrame, one row per method (index ``method``): the gap figures
    on ``evaluation`` (``centroid_distance``, ``relative_modality_gap``,
    ``linear_separability``), retrieval (``i2t_R@1``, ``t2i_R@1``),
    ``zero_shot_<name>`` per set, ``seconds`` (fitting and applying it,
    embeddings of the original model not counted), ``needs_training`` and
    ``needs_target_images``. ``viz.plot_report_comparison`` draws it.

    ReCLIP's figures come from its adapted image encoder (ReCLIP-V, whose
    text encoder is the original's) and its zero-shot accuracy from its own
    prediction, which averages both branches; it is fitted on ``target``
    only, so on the other sets it is tested on images it never saw.
    """
    methods = [check_choice(m, "methods", METHOD_NAMES) for m in methods]
    sets = dict(zero_shot)
    if not sets:
        raise ValueError("zero_shot is empty; pass at least one labelled ImageSet, e.g. {'photo': ...}")
    target = list(sets.values())[-1] if target is None else target
    img, txt, zs = _embed(clip, evaluation, sets, lambda s: s.templates)
    cal_img = cal_txt = None
    if any(m in CLOSERS for m in methods):
        cal_img = clip.encode_images(calibration, progress=False)
        cal_txt = clip.encode_texts(calibration.first_captions(), progress=False)
    rows = {}
    for method in methods:
        t0 = time.perf_counter()
        if method == "none":
            m_img, m_txt = img, txt
            acc = {k: _accuracy(e, c, sets[k].labels) for k, (e, c) in zs.items()}
        elif method in CLOSERS:
            closer = CLOSERS[method]()
            if method == "gap-shift":
                from .. import metrics

                delta = metrics.centroid_distance(cal_img, cal_txt) if gap_shift_delta is None else gap_shift_delta
                closer.set_params(delta=float(delta))
            closer.fit(cal_img, cal_txt)
            m_img, m_txt = closer.transform(img, txt)
            acc = {k: _accuracy(*closer.transform(e, c), sets[k].labels) for k, (e, c) in zs.items()}
        elif method == "reclip":
            params = {"seed": seed, "progress": False, **(reclip_params or {})}
            est = ReCLIP(clip, target.classnames, target.templates, **params).fit(target)
            adapted = est.to_clip("visual")
            m_img = adapted.encode_images(evaluation, progress=False)
            m_txt = txt
            acc = {k: est.score(s, s.labels) for k, s in sets.items()}
        else:
            params = {"seed": seed, "progress": False, **(refine_params or {})}
            refined = CLIPRefine(clip, **params).fit(calibration).to_clip()
            m_img, m_txt, m_zs = _embed(refined, evaluation, sets, lambda s: s.templates)
            acc = {k: _accuracy(e, c, sets[k].labels) for k, (e, c) in m_zs.items()}
        seconds = time.perf_counter() - t0
        row = _gap_figures(m_img, m_txt, seed)
        row.update({f"zero_shot_{k}": v for k, v in acc.items()})
        needs_training, needs_target = _NEEDS[method]
        row.update(seconds=seconds, needs_training=needs_training, needs_target_images=needs_target)
        rows[method] = row
    return pd.DataFrame.from_dict(rows, orient="index").rename_axis("method")

