"""What every training method of modgap shares: the learning-rate schedule
and the estimator contract (see :class:`Estimator`)."""
from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator, clone

__all__ = ["SCHEDULES", "DivergenceError", "Estimator", "learning_rate_at", "run_estimator"]

SCHEDULES = ("constant", "cosine")


def learning_rate_at(step: int, total: int, peak: float, warmup: int = 0, schedule: str = "cosine") -> float:
    """The learning rate of optimiser step ``step`` (counting from 0) of
    ``total``: a linear ramp that reaches ``peak`` at step ``warmup - 1``,
    then ``peak`` held (``"constant"``) or a cosine decay from ``peak``
    towards zero at step ``total`` (``"cosine"``)."""
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "cosine":
        done = (step - warmup) / max(1, total - warmup)
        return peak * 0.5 * (1.0 + math.cos(math.pi * done))
    return peak


class DivergenceError(RuntimeError):
    """Training produced a loss that is not finite. The estimator is still
    fitted, with the last weights whose figures are in ``history_``."""


ON_DIVERGENCE = ("raise", "warn")


def trainable_snapshot(*models) -> list:
    """CPU copies of the parameters that train, to come back to if training diverges."""
    return [{n: p.detach().to("cpu", copy=True) for n, p in m.named_parameters() if p.requires_grad}
            for m in models]


def restore_snapshot(models, snapshot) -> None:
    with torch.no_grad():
        for model, saved in zip(models, snapshot, strict=True):
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n].to(p.device))


class Estimator(BaseEstimator):
    """The contract every adaptation method of modgap keeps, on top of
    scikit-learn's ``BaseEstimator``.

    - ``__init__`` only stores its arguments; :meth:`fit` validates them.
      ``get_params``, ``set_params`` and the repr come from the constructor's
      signature, so ``sklearn.base.clone`` gives an unfitted copy (sharing
      the pre-trained ``clip``, which no method modifies, instead of copying
      its weights).
    - ``callback(estimator, row)`` is called after every logged step or
      epoch with the new row of ``history_`` (a dict); returning ``False``
      stops the fit there, with a complete, usable result.
    - :meth:`to_clip` hands a trained model back as a :class:`modgap.Clip`.
    - :meth:`save` writes a folder as a whole (one rename; nothing is
      replaced unless ``overwrite=True``), which :meth:`load` and
      :func:`modgap.load_model` read.

    A subclass names its trained models in :meth:`fitted_models` (the first
    is the default one), the array and scalar attributes :meth:`save` keeps
    in ``_saved_arrays`` and ``_saved_scalars``, and restores its models in
    :meth:`_restore_models`.
    """

    _saved_arrays: tuple[str, ...] = ()
    _saved_scalars: tuple[str, ...] = ()
    _retired_params: tuple[str, ...] = ()
    # set by fit once the result is complete
    _fitted_attr = "history_"
    # constructor arguments that are live objects, not settings to save
    _live_params = ("clip", "callback")

    def __sklearn_clone__(self):
        params = self.get_params(deep=False)
        return type(self)(**{k: v if k in self._live_params else clone(v, safe=False) for k, v in params.items()})

    # -- fitted state ---------------------------------------------------------
    def fitted_models(self) -> dict:
        """The trained open_clip models by name, the default one first."""
        raise NotImplementedError

    def _restore_models(self, models: dict) -> None:
        raise NotImplementedError

    def _end_of_divergence(self, message: str | None) -> None:
        """After a fit that stopped on a non-finite loss: raise or warn, as
        ``on_divergence`` asks (the estimator is fitted either way)."""
        self.diverged_ = message
        if message is None:
            return
        if self.on_divergence == "warn":
            import warnings

            warnings.warn(message, RuntimeWarning, stacklevel=3)
            return
        raise DivergenceError(message)

    def _check_fitted(self) -> None:
        if not hasattr(self, self._fitted_attr):
            raise RuntimeError(f"this {type(self).__name__} is not fitted yet; call fit() first "
                               f"(or {type(self).__name__}.load(path))")

    def _report(self, rows: list, row: dict, models: dict | None = None) -> bool:
        """Append ``row`` to ``rows`` and ``history_``, and ask the callback
        whether to go on; ``models`` (the models in training, by the names of
        :meth:`fitted_models`) are what :meth:`to_clip` hands the callback."""
        import pandas as pd

        rows.append(row)
        self.history_ = pd.DataFrame(rows)
        if self.callback is None:
            return True
        from .. import distributed

        self._models_in_training = models
        try:
            go_on = self.callback(self, dict(row)) is not False
        finally:
            self._models_in_training = None
        # under torchrun every rank runs the callback; rank 0's answer holds for all
        return distributed.broadcast_object(go_on)

    def to_clip(self, model: str | None = None):
        """A trained model as a :class:`modgap.Clip` (the default model, or
        the one ``model`` names: see :meth:`fitted_models`), with the
        original preprocessing and tokenizer. Inside a ``callback``, during
        ``fit``, it is the model as it is at that history row (the one being
        trained, not a copy: embed with it, do not train it)."""
        models = getattr(self, "_models_in_training", None)
        if models is None:
            self._check_fitted()
            models = self.fitted_models()
        name = next(iter(models)) if model is None else model
        if name not in models:
            raise ValueError(f"model must be one of {tuple(models)} or None, got {model!r}")
        return self.clip.with_model(models[name], name=f"{self.clip.name}+{self._suffix(name)}")

    def _suffix(self, model_name: str) -> str:
        return type(self).__name__.lower()

    # -- save / load ----------------------------------------------------------
    def save(self, path, overwrite: bool = False):
        """Write the fitted estimator to the folder ``path``, as a whole.

        Layout: ``estimator.json`` (the estimator, its settings and the
        base model's name), ``history.csv``, ``arrays.safetensors`` where
        the method has learned arrays, and one folder per trained model in
        open_clip's own format (``open_clip_config.json`` and
        ``open_clip_model.safetensors``), so ``modgap.load_model(path)``
        loads the default model and ``load_model("local-dir:PATH/NAME")``
        any of them (for a ``clip`` built by hand, with no open_clip config,
        the model folders hold the weights alone, and only :meth:`load` with
        ``clip=`` reads them). The folder is written beside ``path`` and renamed into
        place; an existing folder is replaced only with ``overwrite=True``
        and only if an estimator wrote it.

        Under torchrun (:mod:`modgap.distributed`) every rank calls it, rank
        0 writes and the others wait for it: do not call it on rank 0 alone.
        """
        import json

        from safetensors.torch import save_file

        from .. import distributed
        from ..io import RUN_FILE, atomic_folder, save_state_dict

        self._check_fitted()
        if not distributed.is_main():
            # under torchrun every rank holds the same fit: rank 0 writes it
            distributed.barrier()
            return Path(path).expanduser()
        models = self.fitted_models()
        with atomic_folder(path, overwrite=overwrite, marker=RUN_FILE) as tmp:
            for name, model in models.items():
                (tmp / name).mkdir()
                clip = self.clip.with_model(model)
                if clip.config is not None:
                    clip.write_model_folder(tmp / name)
                else:
                    save_state_dict(model, tmp / name / "open_clip_model.safetensors")
            if self._saved_arrays:
                arrays = {k: torch.as_tensor(np.asarray(getattr(self, k))).contiguous() for k in self._saved_arrays}
                save_file(arrays, str(tmp / "arrays.safetensors"))
            self.history_.to_csv(tmp / "history.csv", index=False)
            meta = {
                "format": _FORMAT, "version": _FORMAT_VERSION, "estimator": type(self).__name__,
                "base_model": getattr(self.clip, "name", None), "default_model": next(iter(models)),
                "models": list(models), "params": self._settings(),
                "tuple_params": [k for k, v in self.get_params(deep=False).items() if isinstance(v, tuple)],
                "fitted": {k: _plain(getattr(self, k)) for k in self._saved_scalars},
            }
            (tmp / RUN_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        distributed.barrier()
        return Path(path).expanduser()

    def _settings(self) -> dict:
        return {k: _plain(v) for k, v in self.get_params(deep=False).items() if k not in self._live_params}

    @classmethod
    def load(cls, path, clip=None):
        """A fitted estimator from a folder :meth:`save` wrote.

        ``clip`` becomes the estimator's pre-trained model (its preprocessing
        and tokenizer are used, and the saved weights are loaded into copies
        of its model, so it must be the same architecture). Without it, the
        saved default model stands in as ``clip``: enough to predict, embed
        and save again; pass the original with ``set_params(clip=...)``
        before fitting anew.
        """
        import json

        import pandas as pd
        from safetensors.torch import load_file

        from ..io import RUN_FILE, check_manifest
        from ..models import load_model

        path = Path(path).expanduser()
        run_file = path / RUN_FILE
        if not run_file.is_file():
            raise FileNotFoundError(f"{path} holds no {RUN_FILE}; is it a folder {cls.__name__}.save wrote?")
        check_manifest(path)
        meta = json.loads(run_file.read_text(encoding="utf-8"))
        if meta.get("format") != _FORMAT:
            raise ValueError(f"{run_file} is not a modgap estimator file (format {meta.get('format')!r})")
        if meta.get("version", 0) > _FORMAT_VERSION:
            raise ValueError(f"{run_file} was written by a newer modgap (version {meta['version']}); upgrade modgap")
        if meta.get("estimator") != cls.__name__:
            raise ValueError(f"{path} holds a {meta.get('estimator')}, not a {cls.__name__}; "
                             f"load it with {meta.get('estimator')}.load")
        models = {}
        for name in meta["models"]:
            folder = path / name
            if clip is None:
                loaded = load_model(f"local-dir:{folder}")
                clip = loaded.with_model(loaded.model, name=meta.get("base_model") or loaded.name)
                models[name] = loaded.model
                continue
            model = copy.deepcopy(clip.model)
            state = load_file(str(folder / "open_clip_model.safetensors"), device="cpu")
            try:
                model.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise ValueError(f"{folder} does not fit the architecture of clip {clip.name!r} "
                                 f"(fitted from {meta.get('base_model')!r}): {str(e).splitlines()[0]}") from e
            models[name] = model.to(clip.device)
        for model in models.values():
            model.eval().requires_grad_(False)
        # JSON has no tuples: the settings that were tuples come back as tuples
        tuples = set(meta.get("tuple_params", ()))
        params = {k: tuple(v) if k in tuples else v for k, v in meta["params"].items()
                  if k not in cls._retired_params}
        est = cls(clip=clip, **params)
        est._restore_models(models)
        if est._saved_arrays:
            for k, v in load_file(str(path / "arrays.safetensors"), device="cpu").items():
                setattr(est, k, v.numpy())
        for k, v in meta.get("fitted", {}).items():
            setattr(est, k, v)
        est.history_ = pd.read_csv(path / "history.csv")
        return est


_FORMAT = "modgap-estimator"
_FORMAT_VERSION = 1


def _plain(value):
    """``value`` as JSON: tuples and numpy scalars and arrays as lists and numbers."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)  # e.g. a torch.device, which its constructor takes back as a string


def run_estimator(estimator_class, clip, fit_args: tuple, fit_kwargs: dict, out=None, overwrite: bool = False,
                  **params):
    """Build ``estimator_class(clip, **params)``, fit it and, where ``out``
    is given, save it there: the body of the one-call helpers
    (:func:`~modgap.adapt.reclip.run_reclip`,
    :func:`~modgap.adapt.clip_refine.run_refine`) and of the command line.
    ``clip`` may be a spec for :func:`modgap.load_model`; ``out`` is checked
    before any work, so a bad output path fails first."""
    from ..io import RUN_FILE, check_free_folder
    from ..models import load_model

    if out is not None:
        check_free_folder(out, overwrite, RUN_FILE)
    if isinstance(clip, str):
        clip = load_model(clip)
    est = estimator_class(clip, **params).fit(*fit_args, **fit_kwargs)
    if out is not None:
        est.save(out, overwrite=overwrite)
    return est
