"""The paradigm a study runs: how many queries a trial shows, what chance is, and how an answer is scored.

The two-alternative forced choice of Borowski et al. (2021) and Zimmermann et al. (2023) is the
only one for now; a paradigm is a value in :data:`PARADIGMS`, named by the bundle's manifest.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import permutations


@dataclass(frozen=True)
class Paradigm:
    name: str
    title: str
    # Where each query of a trial comes from: the query range (or, for a catch trial, the
    # references) at that end of the unit's ranking, "max" or "min".
    query_roles: tuple[str, ...]
    answer_role: str  # the role of the correct query
    confidence_words: tuple[str, ...]  # the confidence ratings a response may carry, 1 = least sure

    @property
    def n_queries(self) -> int:
        """Images the participant chooses among."""
        return len(self.query_roles)

    @property
    def n_orders(self) -> int:
        """How many display orders the queries can take (a trial draws one)."""
        return len(self._orders())

    def _orders(self) -> list[tuple[int, ...]]:
        # Descending, so that draw 1 of the two 2AFC orders shows the max query first, as the
        # builder of schema version 1 did.
        return sorted(permutations(range(self.n_queries)), reverse=True)

    def query_order(self, draw: int) -> tuple[int, ...]:
        """Display order number ``draw`` (0 <= draw < n_orders), as indices into ``query_roles``."""
        return self._orders()[draw]

    def answer_position(self, order: tuple[int, ...]) -> int:
        """Where the correct query is shown, for a display order from :meth:`query_order`."""
        return order.index(self.query_roles.index(self.answer_role))

    @property
    def chance(self) -> float:
        """Accuracy of an observer who guesses."""
        return 1 / self.n_queries

    @property
    def confidence_levels(self) -> tuple[int, ...]:
        return tuple(range(1, len(self.confidence_words) + 1))

    def query_name(self, query: int) -> str:
        return string.ascii_uppercase[query]

    def answers(self) -> list[dict]:
        """The answer buttons the page shows, in order: one per query and confidence, with its key.

        Each query's buttons run from its most confident end towards the next query's, so that two
        queries read "A very sure ... A unsure | B unsure ... B very sure".
        """
        buttons = []
        for query in range(self.n_queries):
            levels = self.confidence_levels[::-1] if query % 2 == 0 else self.confidence_levels
            for confidence in levels:
                word = self.confidence_words[confidence - 1]
                buttons.append(
                    {
                        "query": query,
                        "confidence": confidence,
                        "key": str(len(buttons) + 1),
                        "label": f"{self.query_name(query)} · {word}",
                    }
                )
        return buttons

    def problem_with(self, chosen_query: int, confidence: int) -> str | None:
        """What is wrong with a response for this paradigm, or None."""
        if not 0 <= chosen_query < self.n_queries:
            return (
                f"chosen_query: {chosen_query} is not one of the {self.n_queries} queries (0 to {self.n_queries - 1})"
            )
        if confidence not in self.confidence_levels:
            return f"confidence: {confidence} is not one of {list(self.confidence_levels)}"
        return None

    def score(self, chosen_query: int, answer: int) -> bool:
        """Whether a response is correct: the chosen query is the answer (the more activating one)."""
        return chosen_query == answer


TWO_AFC = Paradigm(
    name="2afc",
    title="two-alternative forced choice: which of two queries activates the unit more",
    query_roles=("max", "min"),
    answer_role="max",
    confidence_words=("unsure", "fairly sure", "very sure"),
)

PARADIGMS: dict[str, Paradigm] = {p.name: p for p in (TWO_AFC,)}
