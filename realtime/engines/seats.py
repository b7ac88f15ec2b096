"""Which of the native engine's sessions hear each turn with several ears (the vote)."""

from __future__ import annotations

import threading


class VotingSeats:
    """Which sessions may hear with ``votes`` ears: at most ``most`` at a time (0: all), the
    first to ask; the others with one. And whether they do, turn by turn: only while at
    most ``up_to_open`` sessions are open (0: always). Thread-safe (sessions open on
    worker threads)."""

    def __init__(self, votes: int, most: int, up_to_open: int = 0) -> None:
        self.votes, self.most, self.up_to_open = votes, most, up_to_open
        self.taken = 0  # seats held
        self.open = 0  # sessions open, with a seat or not
        self._lock = threading.Lock()

    def claim(self) -> int:
        """Ears for a session opening now (its slots); give them back with ``release``."""
        with self._lock:
            self.open += 1
            if self.votes > 1 and (not self.most or self.taken < self.most):
                self.taken += 1
                return self.votes
        return 1

    def release(self, ears: int) -> None:
        with self._lock:
            self.open -= 1
            self.taken -= ears > 1

    def ears_now(self, seat: int) -> int:
        """Ears for a turn starting now, of a session holding ``seat`` ears."""
        return seat if not self.up_to_open or self.open <= self.up_to_open else 1
