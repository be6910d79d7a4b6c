"""SHAP explanations in the user's own feature names, within a latency budget.

This is the only module that imports :mod:`shap` (DESIGN.md, "Layers"); shap is
imported lazily, on the first explanation, so ``import safepredict`` stays fast
and predictors that never explain never pay for it.

How a model is explained
------------------------
* **Tree ensembles** (scikit-learn forests, gradient boosting, xgboost, lightgbm,
  catboost; detected by type, without importing those packages) use
  ``shap.TreeExplainer`` (``tree_path_dependent``, exact, no background needed).
* **Linear models** (``sklearn.linear_model``) use ``shap.LinearExplainer`` on the
  background's mean (exact, interventional).
* **Anything else** uses a model-agnostic explainer over a fixed-size background
  background of the calibration data: ``shap.ExactExplainer`` when the model has few
  input columns (at most :data:`EXACT_MAX_FEATURES`), else
  :class:`PermutationShap` (shap's antithetic permutation algorithm, drawing from a
  ``Generator`` seeded with ``random_state``, never numpy's global generator).

The background is by default aggregated: at most
:data:`AGNOSTIC_BACKGROUND_SIZE` k-means centroids of the calibration rows, each
summarising >= 20 rows, with their weights (the linear explainer uses their
weighted mean and covariance). ``explainer_background="sample"`` opts in to a
raw sample of calibration rows (stored verbatim in saved states).
* A scikit-learn ``Pipeline`` is explained by running the final estimator's
  explainer on the transformed data and summing the contributions of every
  transformed column back into the input column that produced it (one-hot
  columns sum to their source column). The map comes from the
  ``ColumnTransformer`` structure (``transformers_``, ``output_indices_``,
  ``get_feature_names_out``) and is verified by perturbing each input column; a
  preprocessor whose outputs mix several inputs is explained model-agnostically
  in the input columns instead.

What is explained (``Explanation.output``)
------------------------------------------
Additivity ``base_value + sum(values) == explained output`` holds for the
reported quantity:

* ``"prediction"``: the regression output.
* ``"proba[<label>]"``: the predicted class's probability (forests, which
  average leaf probabilities, and the model-agnostic explainers).
* ``"log_odds[<label>]"`` (binary) / ``"logit[<label>]"`` (multiclass): the
  predicted class's ``decision_function`` margin, for gradient boosting and
  linear classifiers, whose probabilities are a non-linear link of an additive
  margin (explaining the margin keeps the explanation exact and cheap).
"""

from __future__ import annotations

from safepredict.explain.backend import load_shap as _shap  # noqa: F401  (the lazy import, by its old name)
from safepredict.explain.backend import to_shap
from safepredict.explain.explainer import ModelExplainer
from safepredict.explain.groups import feature_groups
from safepredict.explain.permutation import PermutationShap
from safepredict.explain.select import (
    BACKGROUNDS,
    EXACT_MAX_FEATURES,
    METHODS,
    REQUESTS,
    candidate_methods,
    check_request,
    margin_output,
    model_kind,
    split_pipeline,
)
from safepredict.explain.select import (
    SKIPPED_BUDGET as SKIPPED_BUDGET,
)
from safepredict.explain.select import (
    SKIPPED_ERROR as SKIPPED_ERROR,
)
from safepredict.explain.state import ExplainerState
from safepredict.explain.tokens import TokenExplainer

__all__ = [
    "BACKGROUNDS",
    "EXACT_MAX_FEATURES",
    "METHODS",
    "REQUESTS",
    "ExplainerState",
    "ModelExplainer",
    "PermutationShap",
    "TokenExplainer",
    "candidate_methods",
    "check_request",
    "feature_groups",
    "margin_output",
    "model_kind",
    "split_pipeline",
    "to_shap",
]
