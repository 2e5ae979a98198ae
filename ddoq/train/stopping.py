"""The patience rule of the converged protocol (pipeline stage: train).

data -> encode -> quantize -> decode -> label -> **train** -> export

`EarlyStopping` watches the held-out loss after each epoch: training stops once the loss
has not improved on its best (by more than `min_delta`) for `patience` epochs in a row, or
at the maximum epoch count (`ddoq.train.loop.TrainConfig.epochs`), whichever comes first.
It is a small pure object, so the stopping epoch of any loss curve can be worked out by
hand, and its state goes into the training checkpoint, so a resumed run stops where an
uninterrupted one does.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

__all__ = ["EarlyStopping", "stopping_epoch"]


@dataclass
class EarlyStopping:
    """Stop when the held-out loss has not improved for `patience` epochs.

    Attributes
    ----------
    patience
        epochs without improvement that end training (>= 1).
    min_delta
        an improvement must lower the best loss by more than this.
    best
        the lowest loss seen so far.
    best_epoch
        the epoch (1-based) of `best`; 0 before the first update.
    epoch
        epochs seen so far.
    """

    patience: int
    min_delta: float = 0.0
    best: float = math.inf
    best_epoch: int = 0
    epoch: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or int(self.patience) < 1:
            raise ValueError(f"patience must be an integer >= 1, got {self.patience!r}")
        if not self.min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {self.min_delta!r}")

    def update(self, loss: float) -> bool:
        """Record the loss of the next epoch; True when training should stop there."""
        self.epoch += 1
        if loss < self.best - self.min_delta:
            self.best, self.best_epoch = float(loss), self.epoch
        return self.epoch - self.best_epoch >= self.patience

    def state(self) -> dict:
        """What a checkpoint keeps (`EarlyStopping(**state)` rebuilds it)."""
        return asdict(self)


def stopping_epoch(losses: list[float], patience: int, max_epochs: int, min_delta: float = 0.0):
    """The epoch (1-based) at which the rule stops on the loss curve `losses`.

    At most `max_epochs`; `losses` must cover the epochs up to the stop.
    """
    rule = EarlyStopping(patience, min_delta)
    for epoch, loss in enumerate(losses[:max_epochs], start=1):
        if rule.update(loss):
            return epoch
    if len(losses) < max_epochs:
        raise ValueError(f"the curve ends at epoch {len(losses)} before the rule stops")
    return max_epochs
