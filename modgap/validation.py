"""Input checks shared by every module of modgap, in the manner of
``sklearn.utils.validation``: one set of rules and one wording.

Every check names the argument, says what was given and what to pass
instead, and raises ``TypeError`` for a value of the wrong kind and
``ValueError`` for a value of the right kind out of range. Booleans are
never taken as numbers (``lr=True`` is an error, not ``1.0``).
"""
from __future__ import annotations

import math
import string
from collections.abc import Sequence
from numbers import Integral, Real

import numpy as np
import torch

__all__ = [
    "check_callable",
    "check_choice",
    "check_embeddings",
    "check_features",
    "check_fraction_or_count",
    "check_int",
    "check_int_array",
    "check_labels",
    "check_number",
    "check_pair",
    "check_random_state",
    "check_same_dim",
    "check_same_shape",
    "check_strings",
    "check_templates",
    "check_tensor",
    "check_vector",
    "unit_rows",
]


def _given(value) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- scalars -----------------------------------------------------------------------
def check_int(value, name: str, *, min_value: int | None = 1, allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` of at least ``min_value`` (``None`` passes
    through where ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral):
        kind = "an integer" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {kind}, got {_given(value)} ({type(value).__name__})")
    if min_value is not None and value < min_value:
        raise ValueError(f"{name} must be at least {min_value}, got {value}")
    return int(value)


def check_number(value, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, allow_none: bool = False) -> float | None:
    """``value`` as a finite ``float`` in the interval ``[low, high]``
    (an end is excluded where ``low_open`` / ``high_open``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Real):
        kind = "a number" + (" or None" if allow_none else "")
        raise TypeError(f"{name} must be {kind}, got {_given(value)} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value}")
    below = low is not None and (v <= low if low_open else v < low)
    above = high is not None and (v >= high if high_open else v > high)
    if below or above:
        lo = "(-inf" if low is None else ("(" if low_open else "[") + f"{low:g}"
        hi = "inf)" if high is None else f"{high:g}" + (")" if high_open else "]")
        raise ValueError(f"{name} must lie in {lo}, {hi}, got {value}")
    return v


def check_choice(value, name: str, options: Sequence):
    """``value`` if it is one of ``options``."""
    if (isinstance(value, str) or not isinstance(value, (list, dict, set))) and value in options:
        return value
    raise ValueError(f"{name} must be one of {tuple(options)}, got {_given(value)}")


def check_callable(value, name: str, *, allow_none: bool = True):
    if value is None and allow_none:
        return None
    if not callable(value):
        raise TypeError(f"{name} must be callable{' or None' if allow_none else ''}, got {type(value).__name__}")
    return value


def check_strings(value, name: str, *, min_len: int = 1, unique: bool = False) -> list[str]:
    """A list of strings; a single string is refused rather than split
    into letters."""
    if isinstance(value, str):
        raise TypeError(f"{name} must be a list of strings, got the single string {_given(value)}; "
                        f"wrap it in a list: [{_given(value)}]")
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{name} must be a list of strings, got {type(value).__name__}") from None
    bad = [x for x in items if not isinstance(x, str)]
    if bad:
        raise TypeError(f"{name} must hold strings only, got {_given(bad[0])} ({type(bad[0]).__name__})")
    if len(items) < min_len:
        raise ValueError(f"{name} must hold at least {min_len} string(s), got {len(items)}")
    if unique and len(set(items)) != len(items):
        dup = sorted({x for x in items if items.count(x) > 1})
        raise ValueError(f"{name} has duplicates: {dup}; give each entry once")
    return items


_TEMPLATE_RULE = ("a template holds exactly one '{}' where the class name goes "
                  "(OpenAI's 'a photo of a {}.', or CLIP_benchmark's 'a photo of a {c}.'); "
                  "write a literal brace as '{{' or '}}'")
# the class-name fields of the two conventions in use: OpenAI's CLIP and CLIP_benchmark
_CLASS_FIELDS = ("{}", "{c}")


def check_templates(templates, name: str = "templates", *, allow_empty: bool = False) -> list[str]:
    """Prompt templates as a list of strings, each with exactly one slot for
    the class name: ``{}`` (OpenAI's convention) or ``{c}`` (CLIP_benchmark's
    JSON files). They are returned in the first convention, so that
    ``template.format(classname)`` fills them ("a photo of a {c}." becomes
    "a photo of a {}."; literal braces stay escaped). A single string is
    taken as one template; an empty list passes only where ``allow_empty``.
    A template with no slot, two slots, another named or numbered field
    (``{name}``, ``{0}``) or an unbalanced brace is refused, naming it."""
    if isinstance(templates, str):
        templates = [templates]
    items = check_strings(templates, name, min_len=0)
    if not items and not allow_empty:
        raise ValueError(f"{name} is empty; give at least one template such as 'a photo of a {{}}.'")
    checked = []
    for t in items:
        try:
            parts = list(string.Formatter().parse(t))
        except ValueError as err:
            raise ValueError(f"{name}: {t!r} has an unbalanced brace ({err}); {_TEMPLATE_RULE}") from None
        fields = ["{" + field + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
                  for _, field, spec, conv in parts if field is not None]
        if not fields:
            raise ValueError(f"{name}: {t!r} has no '{{}}'; {_TEMPLATE_RULE}")
        odd = [f for f in fields if f not in _CLASS_FIELDS]
        if odd:
            head = odd[0][1:2]
            kind = "a numbered field" if head.isdigit() else "a named field" if head.isidentifier() else "the field"
            raise ValueError(f"{name}: {t!r} has {kind} {odd[0]!r} where a plain '{{}}' belongs; {_TEMPLATE_RULE}")
        if len(fields) > 1:
            raise ValueError(f"{name}: {t!r} has {len(fields)} '{{}}' slots but takes one class name; "
                             f"{_TEMPLATE_RULE}")
        checked.append("".join(literal.replace("{", "{{").replace("}", "}}") + ("{}" if field is not None else "")
                               for literal, field, _, _ in parts))
    return checked


def check_random_state(random_state) -> np.random.Generator:
    """An int, a numpy ``Generator`` or ``None`` as a ``Generator``."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, Integral)):
        raise ValueError(f"random_state must be an int, a numpy Generator or None, got {_given(random_state)}")
    return np.random.default_rng(random_state)


# -- arrays ------------------------------------------------------------------------
def check_embeddings(x, name: str = "embeddings", min_rows: int = 1) -> np.ndarray:
    """``x`` (tensor or array) as a finite float64 numpy array ``[N, D]``
    with at least ``min_rows`` rows."""
    if x is None:
        raise ValueError(f"{name} is None; pass an array of embeddings of shape [N, D]")
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a numeric array [N, D]: {err}") from None
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be a 2-D array [N, D] of embeddings, got shape {tuple(arr.shape)}"
            + ("; for a single embedding use x[None, :]" if arr.ndim == 1 else "")
        )
    n, d = arr.shape
    if n == 0:
        raise ValueError(f"{name} is empty (shape {tuple(arr.shape)}); pass at least one embedding")
    if d == 0:
        raise ValueError(f"{name} has zero dimensions (shape {tuple(arr.shape)})")
    if n < min_rows:
        raise ValueError(f"{name} has {n} row(s); this figure needs at least {min_rows}")
    finite = np.isfinite(arr)
    if not finite.all():
        row = int(np.argwhere(~finite)[0, 0])
        raise ValueError(
            f"{name} has NaN or infinite entries (first in row {row}); "
            "drop or re-embed those rows before measuring"
        )
    return arr


def check_vector(x, name: str) -> np.ndarray:
    """``x`` as a finite float64 vector ``[D]``."""
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array [D], got shape {arr.shape}")
    return check_embeddings(arr[None, :], name)[0]


def unit_rows(x: np.ndarray, name: str) -> np.ndarray:
    """Rows of ``x`` scaled to unit length; a row of zero norm is an error."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    bad = np.flatnonzero(norms[:, 0] == 0)
    if bad.size:
        raise ValueError(
            f"{name} has {bad.size} row(s) of zero norm (first: row {int(bad[0])}), "
            "which cannot be normalised; drop them"
        )
    return x / norms


def check_same_dim(a, b, name_a: str, name_b: str) -> None:
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"{name_a} has dimension {a.shape[-1]} but {name_b} has dimension {b.shape[-1]}; "
            "both must come from the same model's embedding space"
        )


def check_pair(image_emb, text_emb, names=("image_emb", "text_emb")) -> tuple[np.ndarray, np.ndarray]:
    """Image and text embeddings as unit-length float64 arrays of one dimension."""
    img = unit_rows(check_embeddings(image_emb, names[0]), names[0])
    txt = unit_rows(check_embeddings(text_emb, names[1]), names[1])
    check_same_dim(img, txt, *names)
    return img, txt


def check_int_array(x, name: str) -> np.ndarray:
    """A 1-D array of integers (whole floats accepted) as int64."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    if isinstance(x, str):
        raise TypeError(f"{name} must be a 1-D array of integers, got the string {_given(x)}")
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of integers, got shape {arr.shape}")
    if arr.dtype == bool:
        raise ValueError(f"{name} must hold integers, got booleans; pass np.flatnonzero({name}) for positions")
    integral = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.number) and bool(np.all(np.isfinite(arr))) and bool(np.all(arr == np.round(arr)))
    )
    if arr.size and not integral:
        raise ValueError(f"{name} must hold integers, got dtype {arr.dtype}")
    return arr.astype(np.int64)


def check_labels(labels, n: int, n_classes: int, name: str = "labels", *, context: str = "",
                 classnames=None) -> np.ndarray:
    """Class indices ``[n]`` in ``0 .. n_classes - 1`` as int64; an error
    names the first label outside that range (``context`` says where the
    labels came from, e.g. a file)."""
    where = f"{name} ({context})" if context else name
    if labels is None:
        raise ValueError(f"{where} is None; pass the class index of every image")
    lab = check_int_array(labels, where)
    if lab.shape != (n,):
        raise ValueError(f"{where} must have one entry per image ({n}), got shape {lab.shape}")
    bad = (lab < 0) | (lab >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        known = f" {list(classnames)[:10]}" if classnames is not None else ""
        raise ValueError(f"{where}: label {int(lab[i])} at index {i} is outside 0..{n_classes - 1} "
                         f"(the {n_classes} classes{known})")
    return lab


def check_tensor(x, name: str, device=None) -> torch.Tensor:
    """``x`` (tensor or array of real numbers) as a finite 2-D float32 tensor."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.asarray(x))
        except (TypeError, ValueError) as e:
            raise TypeError(f"{name} must be a tensor or an array of numbers, got {type(x).__name__}") from e
    if not (t.is_floating_point() or t.dtype in (torch.int32, torch.int64)):
        raise TypeError(f"{name} must hold real numbers, got dtype {t.dtype}")
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D [rows, dim], got shape {tuple(t.shape)}")
    t = t.float()
    if device is not None:
        t = t.to(device)
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return t


def check_features(x, name: str) -> torch.Tensor:
    """A floating-point torch tensor ``[batch, dim]`` (kept on its device,
    with its graph, for losses)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise ValueError(f"{name} must be 2-D [batch, dim], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {x.dtype}")
    return x


def check_same_shape(**tensors) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shapes must match: {listed}")


def check_fraction_or_count(value, name: str) -> int | float:
    """A count ``>= 0`` (int) or a fraction in ``[0, 1)`` (float)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a count >= 0 or a fraction in [0, 1), got {_given(value)}")
    if isinstance(value, Integral):
        return check_int(value, name, min_value=0)
    return check_number(value, name, low=0.0, high=1.0, high_open=True)

