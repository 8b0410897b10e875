"""Model artifacts: serialise a risk model with skops under a trust list kept in this code, log and load it.

MLflow reads a skops trust list from the artifact itself, so a crafted model could trust anything;
the list lives here instead.
"""

from __future__ import annotations

import math
import tempfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import skops.io as sio

from models.training.estimators import RiskModel

MODEL_NAME = "incident-risk"


CHALLENGER = "challenger"


CHAMPION = "champion"


#: Registered-model tags: the champion versions in promotion order, and a log of every change.
STACK_TAG = "champion_stack"


LOG_TAG = "champion_log"


#: Types a risk model may contain beyond skops' defaults; the HistGradientBoosting entries are its
#: tree predictor and the ``partial(check_array, ...)`` it keeps for input validation.
TRUSTED_TYPES = [
    "models.training.estimators.RiskModel",
    "models.training.estimators.RiskClassifier",
    "models.training.estimators.ScoreCalibrator",
    "models.training.transformers.LogStandardizer",
    "models.training.transformers.OneHotArray",
    "models.training.transformers.OrdinalArray",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.utils.validation.check_array",
    "functools.partial",
]


SKOPS_FILE = "model.skops"


class RegistryError(RuntimeError):
    """A registry operation that cannot proceed (unknown version, nothing to revert to...)."""


def pip_requirements() -> list[str]:
    """Pinned requirements of the logged model; explicit, so MLflow does not spend seconds inferring."""
    out = []
    for package in ("scikit-learn", "skops", "numpy", "pandas", "scipy"):
        try:
            out.append(f"{package}=={version(package)}")
        except PackageNotFoundError:
            out.append(package)
    return out


def dumps(model: RiskModel) -> bytes:
    """skops bytes of a model, refusing any type outside ``TRUSTED_TYPES`` already at save time."""
    data = sio.dumps(model)
    untrusted = sorted(set(sio.get_untrusted_types(data=data)) - set(TRUSTED_TYPES))
    if untrusted:
        raise RegistryError(f"model contains types not on the trust list: {untrusted}")
    return data


def loads(data: bytes) -> RiskModel:
    """A model from skops bytes, trusting only ``TRUSTED_TYPES``."""
    model = sio.loads(data, trusted=TRUSTED_TYPES)
    if not isinstance(model, RiskModel):
        raise RegistryError(f"artifact holds a {type(model).__name__}, not a RiskModel")
    return model


def log_model(model: RiskModel, input_example: pd.DataFrame, metadata: dict[str, Any]) -> str:
    """Log ``model`` to the active run (skops, signature, example, pinned requirements); returns its URI."""
    import mlflow.sklearn
    from mlflow.models import infer_signature

    dumps(model)  # fail early, with our message, if anything is untrusted
    example = input_example[list(model.classifier_.numeric_) + list(model.classifier_.categorical_)]
    signature = infer_signature(example, model.predict_proba(example))
    info = mlflow.sklearn.log_model(
        model,
        name="model",
        serialization_format="skops",
        skops_trusted_types=TRUSTED_TYPES,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
        pyfunc_predict_fn="predict_proba",
        metadata=_jsonable(metadata),
    )
    return str(info.model_uri)


def load_model(model_uri: str) -> RiskModel:
    """Download a logged model and load it with this code's trust list (no pickle, no env flag)."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory() as tmp:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
        path = local / SKOPS_FILE if local.is_dir() else local
        if not path.exists():
            raise RegistryError(f"{model_uri} has no {SKOPS_FILE}")
        return loads(path.read_bytes())


def _jsonable(value: Any) -> Any:
    """Plain JSON values (NaN -> None, numpy scalars -> Python, anything else -> str)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return None if math.isnan(float(value)) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    return str(value)
