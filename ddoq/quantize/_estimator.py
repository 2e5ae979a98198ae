"""Quantize stage: optimal quantization of one class's latents (data -> encode -> **quantize**).

Given the empirical measure mu = (1/N) sum_i delta_{z_i} of a class's latents, a grid
x = (x_1..x_K) quantizes it; the Voronoi cell masses w_k = mu(C_k(x)) are the weights
that make nu* = sum_k w_k delta_{x_k} the W2-closest measure on the grid
(paper Prop. 1, W2(mu, nu*)^2 = D(x), the quadratic distortion).

Reading order: the public functions, the input checks, `choose_backend` (the one place
where the back-end is picked: `_compiled` or `_torch`), the estimator `CLVQ`, and
`quantize_classes`. docs/quantizer.md tells the design.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real
from typing import cast

import numpy as np
import torch
from scipy import sparse
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.exceptions import NotFittedError
from sklearn.utils._param_validation import (
    Interval,
    StrOptions,
    validate_parameter_constraints,
    validate_params,
)

from ddoq.quantize import _torch
from ddoq.quantize._common import (
    _NOT_FINITE,
    ArrayLike,
    Backend,
    FitResult,
    History,
    StepRule,
    _all_finite,
)
from ddoq.quantize._torch import _State, resolve_device

# batch_size="auto": classes up to this size are processed as one full batch per epoch.
_FULL_BATCH_MAX = 2048
# Parameter values that passed `CLVQ._validate_params`, as (type, value) tuples.
_VALID_PARAMS: set[tuple] = set()


# --------------------------------------------------------------------------------------
# Public functions
# --------------------------------------------------------------------------------------


def nearest_centroid(points: ArrayLike, centers: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
    """Index of the nearest centroid and the squared distance to it, for each point.

    points: (N, d), centers: (K, d). Ties go to the lowest index (the Voronoi convention
    of DESIGN.md). Computed in float64 when either input is float64, else float32.
    Returns (labels (N,) int64, sq_dist (N,)) as tensors on the points' device.
    """
    p = torch.as_tensor(points)
    c = torch.as_tensor(centers, device=p.device)
    dtype = torch.float64 if torch.float64 in (p.dtype, c.dtype) else torch.float32
    labels, sq = _torch._assign_batched(p.to(dtype)[None], c.to(dtype)[None])
    return labels[0], sq[0]


@validate_params(
    {
        "points": ["array-like"],
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, None, None, closed="neither"), None],
        "n_local_trials": [Interval(Integral, 1, None, closed="left"), None],
        "device": [str, torch.device],
    },
    prefer_skip_nested_validation=True,
)
def kmeans_plusplus(
    points: ArrayLike,
    n_clusters: int,
    *,
    random_state: int | None = None,
    n_local_trials: int | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Greedy k-means++ seeds of `points` (N, d): returns a (K, d) float32 array of data points."""
    x = _as_points(points, "points")
    _check_n_clusters(n_clusters, x.shape[0])
    dev = resolve_device(device)
    gen = _torch._make_generator(_seed(random_state), dev)
    xt = torch.as_tensor(x, dtype=torch.float32, device=dev)[None]
    return (
        _torch._kmeans_plusplus_batched(xt, [x.shape[0]], n_clusters, [gen], n_local_trials)[0]
        .cpu()
        .numpy()
    )


def temper_weights(masses: ArrayLike, alpha: float) -> np.ndarray:
    """Weight variance reduction: w_k proportional to mass_k ** alpha, summing to 1.

    alpha = 1 keeps the raw Voronoi masses (DDOQ), alpha = 0 gives uniform weights
    (the D4M / Wasserstein-barycenter choice), alpha = 0.5 a square root. Empty cells
    (mass 0) keep weight 0 for every alpha > 0.
    """
    m = np.asarray(masses, dtype=np.float64)
    if m.ndim != 1 or m.size == 0 or np.any(m < 0) or not np.all(np.isfinite(m)):
        raise ValueError(f"masses must be a non-empty 1-D array of finite values >= 0, got {m!r}")
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    if m.sum() <= 0:
        raise ValueError("masses must not all be zero")
    w = np.ones_like(m) if alpha == 0 else np.where(m > 0, m, 0.0) ** alpha
    return w / w.sum()


# --------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------


def _as_points(
    data: ArrayLike, name: str = "X", *, finite: bool = True
) -> np.ndarray | torch.Tensor:
    """Validate (N, d) or (N, *feature_shape) numeric data; return it as given (not copied).

    `finite=False` leaves out the check for NaN and infinite values, for callers that make
    it themselves (the back-ends check the squared norms they compute anyway).
    """
    if sparse.issparse(data):
        raise TypeError(
            f"{name} is a scipy sparse matrix, and sparse input is not supported: CLVQ works "
            "on dense arrays; convert it with X.toarray() first"
        )
    if not isinstance(data, np.ndarray | torch.Tensor) or data.dtype == object:
        try:
            data = np.asarray(data, dtype=np.float32)
        except (TypeError, ValueError) as err:
            error = TypeError if isinstance(err, TypeError) else ValueError
            raise error(
                f"{name} must be a numeric array or tensor, got {type(data).__name__} ({err})"
            ) from err
    if data.dtype.is_complex if isinstance(data, torch.Tensor) else data.dtype.kind == "c":
        raise ValueError(f"Complex data not supported: {name} holds complex numbers")
    if data.ndim < 2:
        raise ValueError(
            f"{name} must have shape (N, d) or (N, C, H, W), got shape {tuple(data.shape)}; "
            "Reshape your data: a single sample with X[None], a 1-D feature with X[:, None]"
        )
    if data.shape[0] == 0:
        raise ValueError(
            f"{name} is empty: 0 sample(s) (shape={tuple(data.shape)}) while a minimum of 1 is "
            "required; give at least one point"
        )
    if math.prod(data.shape[1:]) == 0:
        raise ValueError(
            f"{name} is empty: 0 feature(s) (shape={tuple(data.shape)}) while a minimum of 1 is "
            "required; give at least one feature"
        )
    if finite and not _all_finite(data):
        raise ValueError(_NOT_FINITE.format(name=name))
    return data


def _check_n_clusters(n_clusters: int, n_points: int) -> None:
    """n_clusters (an integer, checked by the parameter constraints) against N."""
    if n_clusters > n_points:
        raise ValueError(
            f"n_clusters={n_clusters} is larger than the number of points ({n_points}); "
            "ask for at most as many centroids as points"
        )


def _seed(random_state: int | None) -> int:
    if random_state is None:
        return int(np.random.default_rng().integers(2**62))
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        raise ValueError(f"random_state must be an int or None, got {random_state!r}")
    return int(random_state)


# --------------------------------------------------------------------------------------
# The back-end choice
# --------------------------------------------------------------------------------------


def choose_backend(est: CLVQ, sizes: Sequence[int], device: torch.device) -> Backend:
    """The back-end that fits `est` on classes of `sizes` points on `device`, and why.

    The compiled loops (`_compiled`, numba) fit one class as a whole on the CPU: one
    whole-class CLVQ step with the 1/count rule, then the polish (the default settings up
    to 2,048 points). Everything else runs on the torch solver (`_torch`): one class after
    another on the CPU, where a stack of classes would only add padding and lock-step
    waste, and all classes stacked on a GPU. `est.backend` other than "auto" asks for one.
    """
    unsupported = [
        (est.solver != "clvq", f"solver={est.solver!r}"),
        (est.max_iter != 1, f"max_iter={est.max_iter}"),
        (est.step != "count", "a step schedule"),
        (est.polish_iter == 0, "polish_iter=0"),
        (any(est._batch(n) < n for n in sizes), "mini-batches"),
        (device.type != "cpu", f"device {device.type!r}"),
    ]
    why_not = ", ".join(text for applies, text in unsupported if applies)
    if est.backend == "compiled":
        if why_not:
            raise ValueError(
                "backend='compiled' fits one class as a whole on the CPU (one CLVQ step with "
                f"step='count', then the polish), not with {why_not}; use 'auto' or 'torch'"
            )
        return Backend("compiled", "asked for")
    if est.backend != "auto":
        return Backend(est.backend, "asked for")
    if device.type != "cpu":
        return Backend("batched", f"on {device.type}, all classes stacked")
    if not why_not:
        return Backend("compiled", "one class fitted as a whole on the CPU")
    return Backend("torch", f"on the CPU with {why_not}, one class after another")


# --------------------------------------------------------------------------------------
# The estimator
# --------------------------------------------------------------------------------------


def _seed_key(value):
    """The memo key of a seed: every integer seed is valid (`_parameter_constraints`), so
    all of them share one check across a run of fits; any other value is its own key."""
    if isinstance(value, Integral) and not isinstance(value, bool):
        return Integral
    return value


class CLVQ(ClusterMixin, BaseEstimator):
    """Optimal quantization by CLVQ (online k-means) with Voronoi-mass weights.

    Competitive Learning Vector Quantization is stochastic gradient descent on the
    quadratic distortion D(x) = E min_k |Z - x_k|^2 (paper Alg. 1, Prop. 6): draw
    xi ~ mu, find the winner k*, move it x_{k*} <- x_{k*} - gamma (x_{k*} - xi), update the
    companion weights p_k <- p_k - gamma (p_k - 1{k = k*}) and the running distortion.
    With the default step rule gamma = 1/(points won by k so far) this is mini-batch
    k-means (Sculley 2010), applied here in closed form per centroid on mini-batches.
    By default one epoch of mini-batch steps is followed by a short full-batch Lloyd
    polish (`polish_iter`), which lands on a Lloyd fixed point (no mini-batch bias).
    After the last step, one exact pass over all points gives the Voronoi cell masses
    `weights_` and the exact `distortion_` (= W2^2 to the weighted grid, Prop. 1).

    Parameters
    ----------
    n_clusters : int
        K, the number of centroids (images per class).
    solver : {"clvq", "lloyd"}
        "clvq": mini-batch CLVQ for `max_iter` epochs. "lloyd": full-batch Lloyd
        iterations (k-means) until the centroids move less than `tol`.
    batch_size : int or "auto"
        Mini-batch size B of CLVQ (ignored by Lloyd). "auto" (default): the whole class
        when it has at most 2,048 points (one full-batch step per epoch), else 256.
    max_iter : int
        CLVQ: number of passes (epochs) over the data. Lloyd: maximum iterations.
    init : {"k-means++", "random"} or array (K, d)
        Seeding: greedy k-means++ on `init_size` points, K distinct random points, or
        given centroids.
    init_size : int or None
        Points used by the seeding; None means 3 * batch_size (at least 3 K) for CLVQ, all
        points for Lloyd (the scikit-learn defaults of MiniBatchKMeans and KMeans).
    init_dim : int or None
        k-means++ measures its distances in a count sketch of the data to this many
        dimensions when the data have more (64 by default; None: in the data's own
        dimension). The seeds are data points either way.
    init_draws : int or "auto"
        k-means++ seedings drawn side by side; the one with the lowest potential (where
        the seeding measures) is kept. "auto" (default): up to 40 // K, as many as cost at
        most two assignment passes (4 at K = 10 and d = 4,096, 1 at d = 64).
    init_swaps : int or "auto"
        After k-means++, Lloyd where the seeding measured and at most this many
        split-merge moves there (merge the cheapest pair of cells, split the cell whose
        split gains most, keep the move if the distortion falls); the fit starts from the
        means of those cells in the data. "auto" (default): 3 when the seeding is
        sketched and 3 <= K <= 20, else 0.
    polish_iter : int
        CLVQ only: at most this many full-batch Lloyd iterations after the mini-batch
        epochs (default 10; 0 turns the polish off). They remove the mini-batch bias and
        stop as soon as no label changes; the last assignment is the exact final pass.
    step : "count", float in (0, 1], or callable n -> gamma_n
        CLVQ step rule: per-centroid 1/count (default), a constant gamma, or a global
        schedule gamma_{n+1} evaluated at the number of samples seen (Bally and Pagès'
        convergence needs sum gamma = inf, sum gamma^2 < inf, e.g. lambda n: 1 / (1 + n) ** 0.7).
    tol : float
        Lloyd's stopping tolerance, relative to the mean per-feature variance.
    random_state : int or None
        Seed of the seeding, shuffling and re-seeding; equal seeds give equal results.
    device : str or torch.device
        "cpu" (default), "cuda", or "auto". All computation happens there in float32.
    backend : {"auto", "compiled", "torch", "batched"}
        The solver's implementation (`choose_backend`). "auto" (default): the compiled
        loops for one class fitted as a whole on the CPU, the torch solver otherwise, all
        classes of a `quantize_classes` call stacked on a GPU. The others ask for one:
        "compiled" (CPU, one whole-class step then the polish), "torch" (one class after
        another), "batched" (the torch solver on all classes at once).

    Attributes
    ----------
    cluster_centers_ : ndarray (K, d) float32
    weights_ : ndarray (K,) float64, exact Voronoi cell masses, summing to 1
    labels_ : ndarray (N,) int64, nearest centroid of each training point
    distortion_ : float, exact mean squared distance to the nearest centroid
    companion_weights_ : ndarray (K,), Alg. 1's online estimate of the cell masses
    running_distortion_ : float, Alg. 1's online estimate of the distortion
    counts_ : ndarray (K,), points won by each centroid during the steps
    n_steps_ : int, CLVQ mini-batch steps (or Lloyd iterations) taken
    n_polish_ : int, Lloyd polish iterations after the CLVQ steps (0 for Lloyd)
    n_iter_ : int, passes over the data by `fit` (CLVQ: `max_iter` epochs; Lloyd: iterations)
    n_features_in_ : int, d, the number of features of one (flattened) sample
    n_samples_seen_ : int
    history_ : History, per-step record for convergence plots
    feature_shape_ : tuple, the shape of one input sample (for `get_centers`)
    backend_ : Backend, the back-end that fitted the estimator and why
    """

    _parameter_constraints: dict = {
        "n_clusters": [Interval(Integral, 1, None, closed="left")],
        "solver": [StrOptions({"clvq", "lloyd"})],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "init": [StrOptions({"k-means++", "random"}), "array-like"],
        "init_size": [Interval(Integral, 1, None, closed="left"), None],
        "init_dim": [Interval(Integral, 1, None, closed="left"), None],
        "init_draws": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "init_swaps": [Interval(Integral, 0, None, closed="left"), StrOptions({"auto"})],
        "polish_iter": [Interval(Integral, 0, None, closed="left")],
        "step": [StrOptions({"count"}), Interval(Real, 0, 1, closed="right"), callable],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": [Interval(Integral, None, None, closed="neither"), None],
        "device": [str, torch.device],
        "backend": [StrOptions({"auto", "compiled", "torch", "batched"})],
    }

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        solver: str = "clvq",
        batch_size: int | str = "auto",
        max_iter: int = 1,
        init: str | ArrayLike = "k-means++",
        init_size: int | None = None,
        init_dim: int | None = 64,
        init_draws: int | str = "auto",
        init_swaps: int | str = "auto",
        polish_iter: int = 10,
        step: StepRule = "count",
        tol: float = 1e-4,
        random_state: int | None = None,
        device: str | torch.device = "cpu",
        backend: str = "auto",
    ) -> None:
        self.n_clusters = n_clusters
        self.solver = solver
        self.batch_size = batch_size
        self.max_iter = max_iter
        self.init = init
        self.init_size = init_size
        self.init_dim = init_dim
        self.init_draws = init_draws
        self.init_swaps = init_swaps
        self.polish_iter = polish_iter
        self.step = step
        self.tol = tol
        self.random_state = random_state
        self.device = device
        self.backend = backend

    def _validate_params(self) -> None:
        """Check the parameters against `_parameter_constraints` (scikit-learn's rules and
        messages). Values that passed once (with their types) are not checked again: the
        check costs about 0.1 ms, a quarter of a small fit."""
        params = {name: getattr(self, name) for name in self._parameter_constraints}
        key: tuple | None = tuple((type(v), _seed_key(v) if n == "random_state" else v)
                                  for n, v in params.items())  # fmt: skip
        try:
            if key in _VALID_PARAMS:
                return
        except TypeError:  # not hashable (an array `init`): checked every time
            key = None
        validate_parameter_constraints(self._parameter_constraints, params, "CLVQ")
        if key is not None and len(_VALID_PARAMS) < 1024:
            _VALID_PARAMS.add(key)

    # -- settings that depend on the data ------------------------------------------------

    def _init_size(self, n: int) -> int:
        if self.init_size is not None:
            return max(min(n, int(self.init_size)), self.n_clusters)
        if self.solver == "lloyd":
            return n
        return min(n, max(3 * self._batch(n), 3 * self.n_clusters))

    def _batch(self, n: int) -> int:
        """The mini-batch size for a class of n points ("auto": see the class docstring)."""
        if self.batch_size == "auto":
            return n if n <= _FULL_BATCH_MAX else 256
        return int(self.batch_size)

    def _draws(self, d: int) -> int:
        """k-means++ seedings to draw for d-dimensional data ("auto": see the docstring)."""
        if self.init_draws != "auto":
            return int(self.init_draws)
        k = self.n_clusters
        if k == 1:
            return 1
        measured = d if self.init_dim is None else min(d, self.init_dim)
        per_draw = (k - 1) * _torch._kpp_trials(k) * measured  # multiply-adds per point
        return max(1, min(40 // k, (2 * k * d) // per_draw))

    def _swaps(self, d: int) -> int:
        """Split-merge moves after k-means++ for d-dimensional data ("auto": see the docstring)."""
        if self.init_swaps != "auto":
            return int(self.init_swaps)
        sketched = self.init_dim is not None and self.init_dim < d
        return 3 if sketched and 3 <= self.n_clusters <= 20 else 0

    def _seed_centers(
        self, x: torch.Tensor, lengths: Sequence[int], generators: Sequence[torch.Generator]
    ) -> torch.Tensor:
        """Initial centers (C, K, d) for the padded data x (C, n, d) (`_torch.seed_centers`)."""
        return _torch.seed_centers(self, x, lengths, generators)

    # -- fitting --------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: object = None) -> CLVQ:
        """Quantize X (N, d) or (N, C, H, W); returns self with the fitted attributes."""
        X = _as_points(X, finite=False)  # the back-ends check
        self._validate_params()
        _check_n_clusters(self.n_clusters, X.shape[0])
        _fit_classes([self], [X], ["X"])
        return self

    def partial_fit(self, X: ArrayLike, y: object = None) -> CLVQ:
        """One CLVQ step on the mini-batch X (streaming; drives the live view).

        The first call seeds the grid from this batch (which must hold at least K points).
        Centroids that win nothing during about 10 K samples are re-seeded. `weights_`,
        `labels_` and `distortion_` are only set by `fit` or by `assign(X_all)`: until then
        the online estimates `companion_weights_` and `running_distortion_` are what
        the steps know.
        """
        X = _as_points(X)
        dev = resolve_device(self.device)
        if not hasattr(self, "_state"):
            self._validate_params()
            _check_n_clusters(self.n_clusters, X.shape[0])
            self.feature_shape_ = tuple(X.shape[1:])
            self._generator: torch.Generator | None = _torch._make_generator(
                _seed(self.random_state), dev
            )
            x = _torch._to_tensor(X, dev)[None]
            self._state = _State.start(self._seed_centers(x, [x.shape[1]], [self._generator]))
            self.history_ = History()
            self._window_samples = 0
            self.backend_ = Backend("torch", "partial_fit steps the torch solver")
        else:
            self._check_features(X)
            if self._generator is None:  # fitted by the compiled loops, which needed none
                self._generator = _torch._make_generator(self._seed_value, dev)
        x = _torch._to_tensor(X, dev)[None]
        mask = torch.ones(x.shape[:2], dtype=torch.bool, device=dev)
        _, sq, _ = _torch._clvq_step(self._state, x, mask, self.step)
        self._window_samples += x.shape[1]
        if self._window_samples >= 10 * self.n_clusters:
            _torch._reseed_dead(self._state, x, mask, sq, [self._generator])
            self._window_samples = 0
        self._publish_state(self._state)
        assert self.running_distortion_ is not None  # (the state's, just published)
        h = self.history_
        h.step.append(self.n_steps_)
        h.n_samples.append(self.n_samples_seen_)
        h.distortion.append(float(sq.mean()))
        h.running_distortion.append(self.running_distortion_)
        return self

    def assign(self, X: ArrayLike) -> CLVQ:
        """Exact pass over all points X: sets `labels_`, `weights_` and `distortion_`."""
        self._publish_exact(*self._nearest(X))
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Index of the nearest centroid of each point of X (ties: lowest index)."""
        return self._nearest(X)[0].cpu().numpy()

    def score(self, X: ArrayLike, y: object = None) -> float:
        """Minus the distortion of X under the grid (higher is better, as in scikit-learn)."""
        return -float(self._nearest(X)[1].mean())

    def _nearest(self, X: ArrayLike) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest centroid (N,) and exact squared distance (N,) of each point of X."""
        X = _as_points(X)
        self._check_features(X)
        x = _torch._to_tensor(X, resolve_device(self.device))
        labels, sq = _torch._assign_batched(x[None], self._centers()[None])
        return labels[0], sq[0]

    def get_centers(self, *, unflatten: bool = True, as_tensor: bool = False) -> ArrayLike:
        """The centroids, in the input's sample shape (K, *feature_shape_) by default."""
        centers = self._centers()
        if unflatten:
            centers = centers.reshape(self.n_clusters, *self.feature_shape_)
        return centers if as_tensor else centers.cpu().numpy()

    # -- internals --------------------------------------------------------------------

    @property
    def _state(self) -> _State:
        """The solver state (C = 1) that `partial_fit` continues from.

        A fit leaves it as host arrays (`FitResult.state`): tensors on the estimator's
        device are made of them on first use, so that a fit nobody continues does not
        pay for them.
        """
        state = self.__dict__.get("_solver_state")
        if state is None:
            host = self.__dict__.pop("_host_state", None)
            if host is None:
                raise AttributeError("_state")
            dev = resolve_device(self.device)
            state = _State(**{f: torch.from_numpy(a)[None].to(dev) for f, a in host.items()})
            self.__dict__["_solver_state"] = state
        return state

    @_state.setter
    def _state(self, state: _State) -> None:
        self.__dict__.pop("_host_state", None)
        self.__dict__["_solver_state"] = state

    def _centers(self) -> torch.Tensor:
        host = self.__dict__.get("_host_state")
        dev = resolve_device(self.device)
        if host is not None:  # read without making the state's tensors (predict is read-only)
            return torch.from_numpy(host["centers"]).to(dev)
        if hasattr(self, "_state"):
            return self._state.centers[0]
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError(
                "this CLVQ is not fitted yet; call fit(X) or partial_fit(batch) first"
            )
        return torch.as_tensor(self.cluster_centers_, device=dev)

    def _check_features(self, X: ArrayLike) -> None:
        if not hasattr(self, "feature_shape_"):
            raise NotFittedError(
                "this CLVQ is not fitted yet; call fit(X) or partial_fit(batch) first"
            )
        d_expected = math.prod(self.feature_shape_)
        d_given = math.prod(X.shape[1:])
        if d_given != d_expected:
            raise ValueError(
                f"X has {d_given} features, but CLVQ is expecting {d_expected} features as "
                f"input ({d_given} features per sample in X of shape {tuple(X.shape)}; "
                f"fitted on sample shape {self.feature_shape_})"
            )

    def _publish_state(self, state: _State) -> None:
        """Copy the solver state (C = 1) into the public attributes."""
        self.cluster_centers_ = state.centers[0].cpu().numpy().astype(np.float32)
        self.counts_ = state.counts[0].cpu().numpy().astype(np.int64)
        self.companion_weights_: np.ndarray | None = (
            state.companion[0].cpu().numpy().astype(np.float64)
        )
        self.running_distortion_: float | None = float(state.running[0])
        self.n_samples_seen_ = int(state.n_seen[0])
        self.n_steps_ = int(state.n_steps[0])
        self.n_features_in_ = int(state.centers.shape[-1])

    def _set_fitted(self, result: FitResult, backend: Backend, feature_shape: tuple) -> None:
        """Set the fitted attributes from a back-end's result (arrays copied)."""
        self.backend_ = backend
        self.feature_shape_ = feature_shape
        self.__dict__.pop("_solver_state", None)
        self._host_state = result.state  # partial_fit makes the solver state of it
        self._generator, self._seed_value, self._window_samples = result.generator, result.seed, 0
        self.cluster_centers_ = np.array(result.centers, dtype=np.float32)
        self.counts_ = result.counts.astype(np.int64)
        self.companion_weights_ = (
            None if result.companion is None else result.companion.astype(np.float64)
        )
        self.running_distortion_ = result.running
        self.n_samples_seen_ = result.n_samples_seen
        self.n_steps_ = result.n_steps
        self.n_features_in_ = int(result.centers.shape[-1])
        self.n_polish_ = result.n_polish
        self.n_iter_ = result.n_iter
        self.history_ = result.history
        self._publish_exact(result.labels, result.sq_dist, result.cell_counts)

    def _publish_exact(
        self, labels: ArrayLike, sq: ArrayLike, counts: np.ndarray | None = None
    ) -> None:
        """Set labels_, weights_ (from `counts`, the points per cell, when known) and
        distortion_ from an exact pass."""
        n = labels.shape[0]
        self.labels_ = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else labels
        if counts is None:
            counts = np.bincount(self.labels_, minlength=self.n_clusters)
        self.weights_ = counts / float(n)
        sq = sq.cpu().numpy() if isinstance(sq, torch.Tensor) else sq
        self.distortion_ = float(np.add.reduce(sq, dtype=np.float64)) / n  # ndarray.mean: 3x slower


def _fit_classes(
    estimators: Sequence[CLVQ], data: Sequence[ArrayLike], names: Sequence[str]
) -> None:
    """Fit estimators (identical parameters but seeds) on their classes, on the back-end
    `choose_backend` picks; each records the one that fitted it as `backend_`."""
    first = estimators[0]
    dev = resolve_device(first.device)
    backend = choose_backend(first, [X.shape[0] for X in data], dev)
    seeds = [_seed(est.random_state) for est in estimators]
    if backend.name == "batched":
        fitted = [(r, backend) for r in _torch.fit(first, data, names, seeds, dev)]
    else:
        fitted = [_fit_one(first, *args, dev, backend) for args in zip(data, names, seeds)]
    for est, X, (result, used) in zip(estimators, data, fitted):
        est._set_fitted(result, used, tuple(X.shape[1:]))


def _fit_one(
    est: CLVQ, X: ArrayLike, name: str, seed: int, device: torch.device, backend: Backend
) -> tuple[FitResult, Backend]:
    """One class on the compiled loops or the torch solver; data whose squared norms
    overflow float32 go from the first to the second."""
    if backend.name == "compiled":
        from ddoq.quantize import _compiled  # numba is imported by the first compiled fit

        result = _compiled.fit(est, X, name, seed)
        if result is not None:
            return result, backend
        backend = Backend("torch", "squared norms overflow float32 in the compiled loops")
    return _torch.fit(est, [X], [name], [seed], device)[0], backend


def quantize_classes(
    X: ArrayLike | Sequence[ArrayLike],
    y: ArrayLike | None = None,
    *,
    n_clusters: int,
    random_state: int | Sequence[int] | None = None,
    **params: object,
) -> list[CLVQ]:
    """Quantize many classes at once; returns one fitted CLVQ per class.

    X is either a list of per-class arrays (n_c, d) / (n_c, C, H, W), or one array with
    labels `y` (classes taken in sorted label order). `random_state` is one seed per class,
    or an int s giving class i the seed s + i. The result equals, class by class,
    `CLVQ(n_clusters, random_state=seed_i, **params).fit(X_i)`: the batched solvers run
    the same arithmetic on a padded (C, N_max, d) stack, so one call keeps a GPU busy.
    """
    if y is not None:
        data = _as_points(cast(ArrayLike, X), finite=False)  # one array, with its labels y
        labels = (
            np.asarray(torch.as_tensor(y).cpu()) if isinstance(y, torch.Tensor) else np.asarray(y)
        )
        if labels.shape != (data.shape[0],):
            raise ValueError(f"y must have shape ({data.shape[0]},), got {labels.shape}")
        groups = [
            data[torch.as_tensor(labels == c) if isinstance(data, torch.Tensor) else labels == c]
            for c in np.unique(labels)
        ]
        names = ["X"] * len(groups)
    else:
        if isinstance(X, np.ndarray | torch.Tensor):
            raise ValueError("give a list of per-class arrays, or one array X with labels y")
        names = [f"X[{i}]" for i in range(len(X))]
        groups = [_as_points(g, name, finite=False) for g, name in zip(X, names)]
        if not groups:
            raise ValueError("X is an empty list; give at least one class")
    shapes = {tuple(g.shape[1:]) for g in groups}
    if len(shapes) > 1:
        raise ValueError(f"all classes must have the same sample shape, got {sorted(shapes)}")
    if random_state is None:
        seeds = [_seed(None) for _ in groups]
    elif isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        seeds = [int(random_state) + i for i in range(len(groups))]
    else:
        seeds = [int(s) for s in random_state]  # type: ignore[union-attr]
        if len(seeds) != len(groups):
            raise ValueError(f"random_state has {len(seeds)} seeds for {len(groups)} classes")
    estimators = [CLVQ(n_clusters, random_state=s, **params) for s in seeds]  # type: ignore[arg-type]
    if not isinstance(estimators[0].init, str):
        raise ValueError(
            "quantize_classes seeds each class itself: init must be 'k-means++' or 'random'"
        )
    estimators[0]._validate_params()  # the others differ by their seed only
    for g in groups:
        _check_n_clusters(n_clusters, g.shape[0])
    _fit_classes(estimators, groups, names)
    return estimators
