"""The paradigm a study runs: how many queries a trial shows, what chance is, and how an answer is scored.

The two-alternative forced choice of Borowski et al. (2021) and Zimmermann et al. (2023) is the
only one for now; a paradigm is a value in :data:`PARADIGMS`, named by the bundle's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Paradigm:
    name: str
    title: str
    n_queries: int  # images the participant chooses among
    confidence_levels: tuple[int, ...]  # the confidence ratings a response may carry

    @property
    def chance(self) -> float:
        """Accuracy of an observer who guesses."""
        return 1 / self.n_queries

    def score(self, chosen_query: int, answer: int) -> bool:
        """Whether a response is correct: the chosen query is the answer (the more activating one)."""
        return chosen_query == answer


TWO_AFC = Paradigm(
    name="2afc",
    title="two-alternative forced choice: which of two queries activates the unit more",
    n_queries=2,
    confidence_levels=(1, 2, 3),
)

PARADIGMS: dict[str, Paradigm] = {p.name: p for p in (TWO_AFC,)}
