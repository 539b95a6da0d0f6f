"""scikit-learn estimators and pipelines (and anything with their interface) from joblib, pickle or skops."""

from __future__ import annotations

import logging
import platform
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import sklearn
import sklearn.exceptions
from sklearn.base import clone, is_classifier, is_regressor
from sklearn.pipeline import Pipeline

from berth.errors import InvalidInput, LibraryVersionMismatch, ModelLoadError, UnsafeModel
from berth.runtimes.base import Batch, Hints, Model, Vocabulary
from berth.runtimes.forest import forest_predictor
from berth.runtimes.text_linear import text_linear_predictor
from berth.security.unpickle import UnpicklePolicy, load_joblib, load_pickle, load_unrestricted
from berth.settings import Settings
from berth.types import Label, ModelCard, Outputs, Signature, Task

__all__ = ["SklearnModel", "describe_estimator"]

log = logging.getLogger("berth.runtimes.sklearn")

FORMATS = {
    ".joblib": "joblib",
    ".jbl": "joblib",
    ".pkl": "pickle",
    ".pickle": "pickle",
    ".skops": "skops",
}


def _load_artifact(path: Path, fmt: str, settings: Settings) -> Any:
    if fmt == "skops":
        import skops.io

        untrusted = skops.io.get_untrusted_types(file=path)
        refused = [t for t in untrusted if t.split(".")[0] not in settings.trusted_modules]
        if refused:
            raise UnsafeModel(
                f"{path.name} contains types outside the trusted modules "
                f"({', '.join(settings.trusted_modules)}): {', '.join(refused)}"
            )
        return skops.io.load(path, trusted=untrusted)
    policy = settings.pickle_policy
    if policy == "refuse":
        raise UnsafeModel(
            f"{path.name} is a {fmt} file and BERTH_PICKLE_POLICY=refuse: save the model with "
            "skops (`skops.io.dump`) or allow restricted pickle loading"
        )
    if policy == "trusted":
        return load_unrestricted(path, fmt)
    rules = UnpicklePolicy(settings.trusted_modules, "BERTH_TRUSTED_MODULES")
    return load_joblib(path, rules) if fmt == "joblib" else load_pickle(path, rules)


def _native(value: Any) -> Label:
    """A numpy scalar as the plain Python value JSON can carry."""
    item = value.item() if isinstance(value, np.generic) else value
    if not isinstance(item, str | int | float | bool):
        raise InvalidInput(f"class label {value!r} is not a string, number or boolean")
    return item


def _is_text_step(step: Any) -> bool:
    if hasattr(step, "build_analyzer"):  # CountVectorizer, TfidfVectorizer, HashingVectorizer
        return True
    parts = getattr(step, "transformer_list", None) or []  # FeatureUnion of vectorizers
    return bool(parts) and all(_is_text_step(t) for _, t in parts)


def _first_step(estimator: Any) -> Any:
    while hasattr(estimator, "steps"):
        estimator = estimator.steps[0][1]
    return estimator


def _final_step(estimator: Any) -> Any:
    while hasattr(estimator, "steps"):
        estimator = estimator.steps[-1][1]
    return estimator


def _pipeline_parts(estimator: Any) -> tuple[list[Any], Any]:
    """The transforms a Pipeline applies before its final estimator (nested final pipelines
    flattened, `"passthrough"` steps dropped), and that estimator. Calling them in turn is what
    `Pipeline.predict*` does, without its per-call fitted and routing checks: 30-60 µs a call."""
    transforms: list[Any] = []
    while type(estimator) is Pipeline:  # a subclass may predict differently
        *head, (_, estimator) = estimator.steps
        transforms += [step for _, step in head if not (step is None or isinstance(step, str))]
    return transforms, estimator


def _vectorizer(step: Any) -> Any:
    """The first fitted vectorizer with a vocabulary (a FeatureUnion's first one), or None."""
    if hasattr(step, "vocabulary_") and hasattr(step, "build_analyzer"):
        return step
    for _, part in getattr(step, "transformer_list", None) or []:
        found = _vectorizer(part)
        if found is not None:
            return found
    return None


def text_vocabulary(estimator: Any) -> Vocabulary | None:
    """The vocabulary of a text pipeline's vectorizer (a HashingVectorizer has none).

    Word analyzers count words: a pipeline with word n-grams (1, 2) knows bigrams too, but
    "unknown words" is what the out-of-vocabulary rate means, so bigrams are left out. Other
    analyzers (characters, callables) count the terms they produce.
    """
    vectorizer = _vectorizer(_first_step(estimator))
    if vectorizer is None:
        return None
    low, _ = getattr(vectorizer, "ngram_range", (1, 1))
    if getattr(vectorizer, "analyzer", None) == "word" and low == 1:
        analyze = clone(vectorizer).set_params(ngram_range=(1, 1)).build_analyzer()
    else:
        analyze = vectorizer.build_analyzer()
    return Vocabulary(analyze=analyze, terms=vectorizer.vocabulary_)


def describe_estimator(
    estimator: Any, feature_names: list[str] | None = None
) -> tuple[Task, Signature, list[Label] | None, bool]:
    """Infer task, input signature, classes and whether probabilities exist from a fitted estimator."""
    if not hasattr(estimator, "predict"):
        raise InvalidInput(f"{type(estimator).__name__} has no predict method")
    task: Task
    if is_classifier(estimator) or (hasattr(estimator, "classes_") and not is_regressor(estimator)):
        task = "classification"
    elif is_regressor(estimator):
        task = "regression"
    else:
        raise InvalidInput(
            f"cannot tell whether {type(estimator).__name__} is a classifier or a regressor"
        )
    if _is_text_step(_first_step(estimator)):
        signature = Signature(kind="text")
    else:
        names = getattr(estimator, "feature_names_in_", None)
        n_features = getattr(estimator, "n_features_in_", None)
        if names is not None:
            feature_names = [str(n) for n in names]
        if n_features is None:
            if feature_names is None:
                raise InvalidInput(
                    f"{type(estimator).__name__} does not record how many features it takes "
                    "(no n_features_in_): is it fitted?"
                )
            n_features = len(feature_names)
        if feature_names is not None and len(feature_names) != n_features:
            raise InvalidInput(
                f"the model takes {n_features} features but {len(feature_names)} names were given"
            )
        signature = Signature(
            kind="tabular", n_features=int(n_features), feature_names=feature_names
        )
    classes = None
    if task == "classification":
        raw = getattr(estimator, "classes_", None)
        if raw is None:
            raise InvalidInput(f"{type(estimator).__name__} has no classes_: is it fitted?")
        classes = [_native(c) for c in raw]
    return task, signature, classes, hasattr(estimator, "predict_proba")


def library_versions(estimator: Any, fmt: str) -> dict[str, str]:
    versions = {
        "python": platform.python_version(),
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "joblib": joblib.__version__,
    }
    packages = {type(_final_step(estimator)).__module__.split(".")[0]}
    if fmt == "skops":
        packages.add("skops")
    distributions = importlib_metadata.packages_distributions()
    for package in sorted(packages - {"sklearn", "numpy", "joblib", "__main__"}):
        # a module can ship under another name (xgboost in the xgboost-cpu distribution)
        for distribution in distributions.get(package, [package]):
            try:
                versions[distribution] = importlib_metadata.version(distribution)
            except importlib_metadata.PackageNotFoundError:
                continue
    return versions


class SklearnModel(Model):
    """A fitted scikit-learn estimator or pipeline."""

    framework = "sklearn"

    @classmethod
    def inspect(
        cls,
        path: Path,
        settings: Settings,
        feature_names: list[str] | None = None,
        hints: Hints | None = None,
    ) -> ModelCard:
        fmt = FORMATS.get(path.suffix.lower())
        if fmt is None:
            raise InvalidInput(f"{path.name}: expected one of {', '.join(sorted(FORMATS))}")
        estimator = _load_artifact(path, fmt, settings)
        task, signature, classes, has_proba = describe_estimator(estimator, feature_names)
        return ModelCard(
            framework=cls.framework,
            format=fmt,
            artifact=path.name,
            task=task,
            signature=signature,
            classes=classes,
            has_probabilities=has_proba,
            libraries=library_versions(estimator, fmt),
            description=type(estimator).__name__,
        )

    def load(self) -> None:
        mismatch = self._check_library_versions()
        path = self.directory / self.card.artifact
        try:
            with warnings.catch_warnings():
                if mismatch:  # already logged once, in our words
                    warnings.simplefilter("ignore", sklearn.exceptions.InconsistentVersionWarning)
                self.estimator = _load_artifact(path, self.card.format, self.settings)
        except UnsafeModel:
            raise
        except Exception as exc:
            raise ModelLoadError(f"{self.card.ref}: cannot load {path.name}: {exc}") from exc
        self._classes = np.asarray(self.card.classes, dtype=object) if self.card.classes else None
        # SVMs compute probabilities separately from their decision (Platt scaling), so their
        # label must come from predict(); for every other classifier argmax(proba) is the label.
        self._proba_gives_label = self.card.has_probabilities and (
            getattr(_final_step(self.estimator), "probability", False) is not True
        )
        names = getattr(self.estimator, "feature_names_in_", None)
        self._frame_columns = list(names) if names is not None else None
        # scikit-learn's answers without its per-call overhead, for the estimators that allow it
        self._lean = forest_predictor(self.estimator) or text_linear_predictor(self.estimator)
        self._transforms, self._final = _pipeline_parts(self.estimator)

    def predict(self, batch: Batch) -> Outputs:
        if self._lean is not None:  # rows arrive in the order the model was fitted on
            return self._outputs(self._lean(batch), batch)
        # The codec has refused non-finite numbers already, and a fitted model's parameters were
        # checked when it was fitted: scikit-learn's own checks of both cost 8-22% of a predict.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self._predict(self._as_model_input(batch), batch)

    def _predict(self, rows: Any, batch: Batch) -> Outputs:
        for transform in self._transforms:
            rows = transform.transform(rows)
        final = self._final
        if self.card.task == "regression":
            return self._outputs(final.predict(rows), batch)
        if not self.card.has_probabilities:
            return Outputs(labels=self._labels(final.predict(rows)))
        outputs = self._outputs(final.predict_proba(rows), batch)
        if outputs.labels is None:  # from the same transformed rows: one pass of the transforms
            labels = self._labels(final.predict(rows))
            return Outputs(labels=labels, probabilities=outputs.probabilities)
        return outputs

    def _outputs(self, raw: Any, batch: Batch) -> Outputs:
        """Outputs from a regressor's values or a classifier's probabilities (with the labels
        when the probabilities decide them)."""
        if self.card.task == "regression":
            values = np.asarray(raw, dtype=np.float64).reshape(len(batch), -1)
            return Outputs(values=values[:, 0])
        proba = np.asarray(raw, dtype=np.float64)
        if self._proba_gives_label and self._classes is not None:
            return Outputs(labels=self._classes[proba.argmax(axis=1)].tolist(), probabilities=proba)
        return Outputs(probabilities=proba)

    def vocabulary(self) -> Vocabulary | None:
        if self.card.signature.kind != "text":
            return None
        try:
            return text_vocabulary(self.estimator)
        except Exception:  # an odd vectorizer must not stop the model from serving
            log.warning("%s: no vocabulary for the out-of-vocabulary rate", self.card.ref)
            return None

    def _as_model_input(self, batch: Batch) -> Any:
        if self._frame_columns is None or isinstance(batch, list):
            return batch
        import pandas as pd  # type: ignore[import-untyped]  # a model fitted on a DataFrame was trained where pandas exists

        return pd.DataFrame(batch, columns=self._frame_columns)

    @staticmethod
    def _labels(raw: Any) -> list[Label]:
        return [_native(v) for v in raw]

    def _check_library_versions(self) -> bool:
        recorded = self.card.libraries.get("scikit-learn")
        if recorded is None or recorded.split(".")[:2] == sklearn.__version__.split(".")[:2]:
            return False
        message = (
            f"{self.card.ref} was registered with scikit-learn {recorded}, "
            f"this server runs {sklearn.__version__}"
        )
        if recorded.split(".")[0] != sklearn.__version__.split(".")[0]:
            if not self.settings.force_library_versions:
                raise LibraryVersionMismatch(
                    message + ": a different major version may not read it correctly; "
                    "retrain and register it again, or set BERTH_FORCE_LIBRARY_VERSIONS=true"
                )
            log.warning(message + "; loading anyway (BERTH_FORCE_LIBRARY_VERSIONS)")
            return True
        if self.settings.strict_library_versions:
            raise LibraryVersionMismatch(message + " (BERTH_STRICT_LIBRARY_VERSIONS is on)")
        log.warning(message + "; predictions may differ")
        return True
