"""The training progress bar: Lightning's, with epochs counted as every mmfuse message counts them.

Lightning's bar shows ``Epoch 0/5`` for the first of six epochs (a zero-based index over the last index) and a
``v_num`` (the CSV logger's version folder), while mmfuse's own messages, the leaderboard and the interruption
notice count epochs from 1 (``interrupted by SIGINT during epoch 2; epoch 1 is saved``). This bar shows
``Epoch 1/6`` ... ``Epoch 6/6`` (a resumed run continues the count) and no ``v_num``. Imported only by ``training.fit`` (Lightning is loaded).
"""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.imports import _RICH_AVAILABLE


def epoch_description(current_epoch: int, max_epochs: int | None) -> str:
    """``Epoch k/N`` with k counted from 1 (``Epoch k`` when there is no ``max_epochs``)."""
    n = "" if max_epochs is None or max_epochs < 0 else f"/{max_epochs}"
    return f"Epoch {current_epoch + 1}{n}"


class _NoVersion:
    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)  # the CSV logger's version folder: nothing the user asked about
        return items


class EpochBar(_NoVersion, RichProgressBar):
    """Rich bar (Lightning's default when rich is installed) with 1-based epochs."""

    def _get_train_description(self, current_epoch: int) -> str:
        text = epoch_description(current_epoch, self.trainer.max_epochs)
        width = len(self.validation_description)
        return f"{text:{width}}" if width > len(text) else text  # Lightning's padding against flicker


class EpochTQDM(_NoVersion, TQDMProgressBar):
    """tqdm bar with 1-based epochs."""

    def on_train_epoch_start(self, trainer, *args):
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(epoch_description(trainer.current_epoch, trainer.max_epochs))


def progress_bar():
    """The progress-bar callback of a training run: rich when installed (as Lightning's default), else tqdm; module
    level classes, so the trainer stays picklable."""
    return EpochBar() if _RICH_AVAILABLE else EpochTQDM()
