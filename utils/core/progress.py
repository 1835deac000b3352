"""Progress reporting: the running run's log lines, tensorboard scalars, bars on a terminal and plain
progress lines otherwise (at most every PROGRESS_PERIOD seconds), and the run code that is given no
``run`` reports through (``active_run()``, ``stage_counter``: predict() and a query's inner loops)."""

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager


class Reporter:
    """How a run reports (mixed into utils.core.loop.Run): log lines and tensorboard scalars (rank 0),
    progress bars or lines (not with ``quiet``), timers. Needs ``is_main``, ``quiet``, ``tty``, ``config``
    (its ``settings`` go to tensorboard), ``folder.tb_dir`` and ``_tb`` (None until the first scalar)."""

    def log(self, message: str) -> None:
        if self.is_main:
            print(message, flush=True)

    def scalar(self, tag: str, value: float, step: int) -> None:
        if not self.is_main:
            return
        if self._tb is None:
            self._tb = summary_writer(self.folder.tb_dir) or False
            if self._tb:
                settings = self.config.get("settings", {})
                self._tb.add_text("settings", "\n".join(["| key | value |", "|---|---|"] + [
                    f"| {key} | {value} |" for key, value in sorted(settings.items())]), 0)
        if self._tb:
            self._tb.add_scalar(tag, value, step)

    def progress(self, iterable: Iterable, desc: str, total: int | None = None, what: str = "epoch") -> Iterable:
        """``iterable`` (usually the epochs of a stage) with its progress shown: a tqdm bar on a terminal, plain
        ``[desc] <what> i/total (p%) ... elapsed .. eta ..`` lines at most every PROGRESS_PERIOD seconds
        otherwise, nothing with --quiet (or off rank 0)."""
        if self.quiet:
            return iterable
        if not self.tty:
            return _Lines(self.log, desc, what, total, iterable)
        from tqdm import tqdm

        return tqdm(iterable, desc=desc, total=total, leave=False, dynamic_ncols=True)

    def counter(self, desc: str, what: str, total: int, unit: str, eta: bool = True):
        """A progress of ``total`` ``unit`` (``update(n)``, ``set_postfix_str(text)``, ``close()``): a tqdm bar on
        a terminal (shown after BAR_DELAY seconds), ``[desc] <what> n/total <unit> (p%) <text> elapsed .. eta ..``
        lines at most every PROGRESS_PERIOD seconds otherwise; None with --quiet (or off rank 0). ``eta=False``:
        ``total`` is only a cap the stage may stop well before (an iteration limit), the lines show neither the
        percentage nor an eta."""
        if self.quiet:
            return None
        if not self.tty:
            return _Lines(self.log, desc, what, total, unit=unit, eta=eta)
        from tqdm import tqdm

        return tqdm(desc=f"{desc} {what}", total=total, unit=f" {unit}", leave=False, dynamic_ncols=True,
                    delay=BAR_DELAY)

    def log_batch(self, bar, epoch: int, batch: int, batches: int, loss: Callable[[], float],
                  lr: float | None = None) -> None:
        """Progress within an epoch of ``bar`` (``progress()``'s): ``batch`` of ``batches`` done, ``loss()`` the
        epoch's mean loss so far, asked for only when shown (it may wait for the device); to the bar's postfix
        (redrawn at most every BAR_REFRESH seconds) or the progress lines."""
        if isinstance(bar, _Lines):
            bar.batch(epoch, batch, batches, loss, lr)
        elif hasattr(bar, "set_postfix"):
            now = clock()
            if now - getattr(bar, "_batch_shown", -BAR_REFRESH) >= BAR_REFRESH:
                bar._batch_shown = now
                bar.set_postfix(batch=f"{batch}/{batches}", loss=f"{loss():.3f}")

    def log_epoch(self, bar, tag: str, epoch: int, loss: float, lr: float | None = None) -> None:
        """The mean training loss of an epoch (and its learning rate): to tensorboard and the
        progress bar (or lines)."""
        self.scalar(f"{tag}/train_loss", loss, epoch)
        if lr is not None:
            self.scalar(f"{tag}/lr", lr, epoch)
        if isinstance(bar, _Lines):
            bar.set_postfix(loss=loss, lr=lr)
        elif hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{loss:.3f}")

    @contextmanager
    def timer(self, times: dict, key: str):
        start = time.perf_counter()
        yield
        times[key] = round(time.perf_counter() - start, 3)


PROGRESS_PERIOD = 30.0  # seconds between two progress lines of a stage when stderr is not a terminal
BAR_DELAY = 2.0  # seconds before a counter's bar appears on a terminal (short stages show none)
BAR_REFRESH = 0.5  # seconds between two redraws of a bar's batch postfix
clock = time.monotonic  # the progress lines' clock (tests replace it)
_active = None  # the Run of this process predict() reports through: the last one started and not closed


def set_active(run) -> None:
    """Make ``run`` the one predict() reports through (a Run does so when it starts)."""
    global _active
    _active = run


def release(run) -> None:
    """``run`` closes: nothing reports through it any more."""
    global _active
    if _active is run:
        _active = None


def active_run():
    """The Run whose progress predict() (and whatever has no ``run``) reports through, or None."""
    return _active


class _Unseen:
    """The counter of a stage no one watches (no active run, --quiet, off rank 0): does nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def stage_counter(desc: str, what: str, total: int, unit: str, eta: bool = True) -> Iterator:
    """``active_run().counter(...)`` (see ``Run.counter``) for code that is given no ``run`` (a query's inner
    loops), closed on exit; with no active run, --quiet or off rank 0 a counter that shows nothing."""
    run = active_run()
    report = run.counter(desc, what, total, unit, eta) if run is not None else None
    if report is None:
        report = _Unseen()
    try:
        yield report
    finally:
        report.close()


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class _Lines:
    """The progress of one running stage when stderr is not a terminal: a plain line through ``log`` at
    most every PROGRESS_PERIOD seconds, the first a period after the stage started (a short stage prints
    nothing). Wraps an iterable (``progress()``: ``[desc] <what> i/total (p%) loss .. lr ..``, per item and,
    through ``batch()``, per batch of an epoch) or counts (``counter()``: ``update(n)``,
    ``[desc] <what> n/total <unit> (p%) <text of set_postfix_str>``); each line ends ``elapsed <t> eta <t>``
    (without the percentage and the eta when ``eta`` is False)."""

    def __init__(self, log, desc: str, what: str, total: int | None, iterable: Iterable | None = None,
                 unit: str = "", eta: bool = True):
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.log, self.desc, self.what, self.total, self.iterable, self.unit = log, desc, what, total, iterable, unit
        self.eta = eta
        self.done, self.postfix, self.status = 0, {}, ""
        self.start = self.last = clock()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.done += 1
            self._show(self.done, None)

    def __len__(self):
        return self.total

    def set_postfix(self, **values):
        self.postfix = values

    def set_postfix_str(self, text: str = "", refresh: bool = True) -> None:
        """The stage's status in the next lines, after the count (tqdm's signature; nothing is redrawn)."""
        self.status = text

    def batch(self, epoch: int, batch: int, batches: int, loss: Callable[[], float], lr: float | None) -> None:
        self.postfix = {"loss": loss, "lr": lr}
        self._show(epoch + 1, (epoch + batch / max(batches, 1), f"batch {batch}/{batches}"))

    def update(self, n: int) -> None:
        self.done += n
        self._show(self.done, None)

    def close(self) -> None:
        pass

    def _show(self, position: int, within) -> None:
        now = clock()
        if now - self.last < PROGRESS_PERIOD:
            return
        self.last = now
        done = within[0] if within else position
        count = f"{position:,}/{self.total:,}" if self.total else f"{position:,}"
        parts = [f"[{self.desc}]", self.what, count] + ([self.unit] if self.unit else [])
        if within:
            parts.append(within[1])
        fraction = min(done / self.total, 1.0) if self.total and self.eta else None
        if fraction is not None:
            parts.append(f"({100 * fraction:.0f}%)")
        if self.status:
            parts.append(self.status)
        loss = self.postfix.get("loss")
        if loss is not None:
            parts.append(f"loss {loss() if callable(loss) else loss:.4f}")
        if self.postfix.get("lr") is not None:
            parts.append(f"lr {self.postfix['lr']:.4g}")
        elapsed = now - self.start
        parts.append(f"elapsed {_duration(elapsed)}")
        if fraction:
            parts.append(f"eta {_duration(elapsed * (1 - fraction) / fraction)}")
        self.log(" ".join(parts))


def summary_writer(folder: str):
    """A tensorboardX ``SummaryWriter`` of ``folder``, or None (after one line saying so) when tensorboardX is
    not installed: TensorBoard logging is then off and the run goes on."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        print("TensorBoard logging off: tensorboardX is not installed (pip install tensorboardX); the run goes on",
              flush=True)
        return None
    return SummaryWriter(folder)
