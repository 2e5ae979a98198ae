"""`CLVQ` is a scikit-learn estimator: it passes every check of `check_estimator`."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from ddoq.quantize import CLVQ


# Every check applies and passes: no tag exempts CLVQ and `expected_failed_checks` is empty.
@parametrize_with_checks([CLVQ(n_clusters=3)], expected_failed_checks=lambda est: {})
def test_clvq_passes_scikit_learn_checks(estimator, check):
    check(estimator)
