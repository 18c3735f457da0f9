"""Training progress that works everywhere: a bar on a terminal, one kept line per epoch on stderr.

On a terminal the bar shows steps within an epoch and is erased when the fit ends; the epoch
lines (stage, epoch, loss, accuracy, time) are written above it and stay. In a log file or a
pipe there is no bar, only the epoch lines. ``-q`` (the edgetool logger at ERROR) silences both.
"""

from __future__ import annotations

import logging
import sys
from typing import Optional, TextIO

from edgetool.runtime.log import logger as edgetool_logger


def progress_wanted() -> bool:
    """False under -q / --quiet (the edgetool logger at ERROR or above)."""
    return edgetool_logger.getEffectiveLevel() <= logging.WARNING


def epoch_line(desc: str, epoch: int, epochs: int, loss: float, acc: float, seconds: float) -> str:
    return "{}: epoch {}/{}  loss {:.4f}  train acc {:.2%}  {:.1f} s".format(desc, epoch, epochs, loss, acc, seconds)


class FitProgress:
    """Progress of one fit: ``step(epoch, loss)`` after each optimizer step, ``epoch_done`` after each epoch."""

    def __init__(self, desc: str, epochs: int, start_epoch: int, steps_per_epoch: int, enabled: bool, stream=None):
        self.desc, self.epochs = desc, epochs
        self.stream: Optional[TextIO] = (stream or sys.stderr) if enabled and progress_wanted() else None
        self.bar = None
        if self.stream is not None and _isatty(self.stream):
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=(epochs - start_epoch) * steps_per_epoch,
                desc=desc,
                file=self.stream,
                leave=False,
                unit="step",
                dynamic_ncols=True,
            )

    def step(self, epoch: int, loss: float) -> None:
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(epoch=epoch + 1, loss="{:.3f}".format(loss))

    def epoch_done(self, epoch: int, loss: float, acc: float, seconds: float) -> None:
        if self.stream is None:
            return
        self.line(epoch_line(self.desc, epoch, self.epochs, loss, acc, seconds))

    def line(self, text: str) -> None:
        """One kept line (above the bar on a terminal), unless progress is off."""
        if self.stream is None:
            return
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _isatty(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False
