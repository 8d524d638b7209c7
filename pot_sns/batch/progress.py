"""Progress bars: tqdm when installed, otherwise a one-line bar on stderr."""

import sys
import time


class Bar:
    """Progress over ``total`` problems; does nothing unless ``enabled``.

    Parameters
    ----------
    total : int
        Number of problems to solve.
    enabled : bool
        Show the bar.
    desc : str
        Label in front of the bar.
    initial : int, optional
        Problems already done (from a checkpoint).
    """

    def __init__(self, total, enabled, desc, initial=0):
        self.total, self.enabled, self.desc = total, bool(enabled), desc
        self.count, self._tqdm, self._last = initial, None, 0.0
        self._start = time.perf_counter()
        if not self.enabled:
            return
        try:
            from tqdm.auto import tqdm
        except ImportError:
            pass  # drawn at the first update
        else:
            self._tqdm = tqdm(total=total, initial=initial, desc=desc, unit="problem")

    def update(self, n=1):
        """``n`` more problems done."""
        self.count += n
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.update(n)
        else:
            self._draw()

    def _draw(self, force=False):
        now = time.perf_counter()
        if not force and now - self._last < 0.2 and self.count < self.total:
            return  # at most five redraws a second
        self._last = now
        frac = self.count / self.total if self.total else 1.0
        width = 30
        fill = int(round(width * frac))
        sys.stderr.write("\r%s: |%s%s| %d/%d problems (%3.0f%%) %.1f s" % (
            self.desc, "#" * fill, "-" * (width - fill), self.count, self.total, 100 * frac,
            now - self._start))
        sys.stderr.flush()

    def note(self, text):
        """Print a line (e.g. the dashboard link) above the bar."""
        if self.enabled:
            sys.stderr.write("%s\n" % text)
            sys.stderr.flush()

    def close(self):
        """Finish the bar."""
        if not self.enabled:
            return
        if self._tqdm is not None:
            self._tqdm.close()
        else:
            self._draw(force=True)
            sys.stderr.write("\n")
            sys.stderr.flush()
