"""Progress of an epoch: a tqdm bar when tqdm is installed, else a plain line every ~10%."""
from __future__ import annotations

import time


class Progress:
    """A tqdm bar per epoch when tqdm is installed, else a plain line every ~10%."""

    def __init__(self, total: int, initial: int, desc: str, enabled: bool):
        self.total, self.done, self.desc, self.enabled = total, initial, desc, enabled
        self.every = max(1, total // 10)
        self.bar = None
        if enabled:
            try:
                from tqdm import tqdm
            except ImportError:  # tqdm is optional (extra "progress")
                tqdm = None
            if tqdm is not None:
                self.bar = tqdm(total=total, initial=initial, desc=desc, unit="batch", dynamic_ncols=True)
        self.start, self.start_done = time.perf_counter(), initial

    def update(self, loss: float, acc: float, images_per_s: float) -> None:
        self.done += 1
        text = f"loss {loss:.4f} acc {100 * acc:.2f}% {images_per_s:.0f} img/s"
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.enabled and (self.done % self.every == 0 or self.done == self.total):
            rate = (self.done - self.start_done) / max(time.perf_counter() - self.start, 1e-9)
            eta = (self.total - self.done) / rate if rate > 0 else 0.0
            print(f"{self.desc} [{self.done}/{self.total}] {text} ETA {clock(eta)}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
