"""A progress bar on stderr, written by hand (no tqdm): step, rate, ETA and the latest metrics
(the loop adds tokens/s as "tok/s" when its batches hold tokens).

On a terminal it redraws one line with '\r'; into a file or a pipe (CI logs, pytest) it prints a
plain line every tenth of the run instead, so logs stay readable.
"""
import sys
import time


def _clock(seconds):
    seconds = int(seconds)
    return f"{seconds // 60:d}:{seconds % 60:02d}"


class ProgressBar:
    def __init__(self, total, desc="", width=24, stream=None, min_interval=0.2, initial=0):
        self.total, self.desc, self.width = total, desc, width
        self.initial = initial  # steps already done before this bar (a resumed run): not in the rate
        self.stream = stream if stream is not None else sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.min_interval = min_interval
        self.start = time.time()
        self.last_draw = 0.0
        self.last_tenth = -1

    def line(self, done, metrics):
        elapsed = time.time() - self.start
        rate = (done - self.initial) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else 0.0
        filled = int(self.width * done / self.total)
        bar = "#" * filled + "-" * (self.width - filled)
        shown = " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items())
        return (f"{self.desc} [{bar}] {done}/{self.total} {rate:.1f} it/s "
                f"{_clock(elapsed)}<{_clock(eta)} {shown}").strip()

    def update(self, done, **metrics):
        """Call after each step with the number of steps done so far."""
        now = time.time()
        if self.tty:
            if now - self.last_draw >= self.min_interval or done == self.total:
                self.stream.write("\r" + self.line(done, metrics) + "\033[K")
                self.stream.flush()
                self.last_draw = now
        else:
            tenth = 10 * done // self.total
            if tenth != self.last_tenth:
                self.stream.write(self.line(done, metrics) + "\n")
                self.stream.flush()
                self.last_tenth = tenth

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
