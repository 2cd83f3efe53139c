"""The paradigm a study runs: how many queries a trial shows, what chance is, and how an answer is scored.

- ``2afc``: the two-alternative forced choice of Borowski et al. (2021) and Zimmermann et al.
  (2023): which of two queries activates the unit more, beside its max and min references;
- ``odd_one_out_<n>`` (3 <= n <= 9): n images, n - 1 of them among the unit's most activating
  and one the odd image; which is the odd one (Issa, Liu & Klindt's O3). Chance is 1/n.

A paradigm is a value, named by the bundle's manifest and found with :func:`paradigm_named`;
docs/paradigms.md says how to add one.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from itertools import permutations
from typing import Literal


@dataclass(frozen=True)
class Paradigm:
    name: str
    title: str
    # Where each query of a trial comes from: the query range (or, for a catch trial, the
    # references) at that end of the unit's ranking, "max" or "min".
    query_roles: tuple[str, ...]
    answer_role: str  # the role of the correct query
    confidence_words: tuple[str, ...]  # the confidence ratings a response may carry, 1 = least sure
    # Whether a trial shows max and min references beside its queries.
    shows_references: bool = True
    # How the page asks: "pair", a button per query and confidence; "grid", the queries in a grid
    # (click one, or press its number), then a confidence button (or its key).
    layout: Literal["pair", "grid"] = "pair"
    confidence_keys: tuple[str, ...] = ()  # grid layout: the key of each confidence button
    # Whether a catch trial's copies may be served mirrored (a paradigm whose answer depended on
    # left and right would say no).
    catch_flip: bool = True
    question: str = "Which query activates the unit more, and how sure are you?"
    wrong_feedback: str = "Wrong: the other query activates the unit more."

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
        return string.ascii_uppercase[query] if self.layout == "pair" else str(query + 1)

    def answers(self) -> list[dict]:
        """The answer controls the page shows, in order, each with its key.

        Pair layout: one button per query and confidence; each query's buttons run from its most
        confident end towards the next query's, so that two queries read "A very sure ... A unsure |
        B unsure ... B very sure". Grid layout: one choice per query (key: its number), then one
        button per confidence.
        """
        if self.layout == "grid":
            choices = [{"query": q, "key": str(q + 1), "label": self.query_name(q)} for q in range(self.n_queries)]
            ratings = [
                {"confidence": c, "key": key, "label": word}
                for c, word, key in zip(
                    self.confidence_levels, self.confidence_words, self.confidence_keys, strict=True
                )
            ]
            return choices + ratings
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

ODD_ONE_OUT_PREFIX = "odd_one_out_"
ODD_ONE_OUT_SIZES = range(3, 10)  # one key per image, 1 to 9


def odd_one_out(n_images: int = 5) -> Paradigm:
    """``n_images`` images: ``n_images - 1`` of the unit's most activating and one odd; which is odd?"""
    if n_images not in ODD_ONE_OUT_SIZES:
        raise ValueError(
            f"odd-one-out shows {ODD_ONE_OUT_SIZES.start} to {ODD_ONE_OUT_SIZES.stop - 1} images, not {n_images}"
        )
    return Paradigm(
        name=f"{ODD_ONE_OUT_PREFIX}{n_images}",
        title=f"odd one out: which of {n_images} images does not belong with the others",
        query_roles=("max",) * (n_images - 1) + ("odd",),
        answer_role="odd",
        confidence_words=("unsure", "fairly sure", "very sure"),
        shows_references=False,
        layout="grid",
        confidence_keys=("a", "s", "d"),
        question="Which image is the odd one out, and how sure are you?",
        wrong_feedback="Wrong: another image was the odd one out.",
    )


PARADIGMS: dict[str, Paradigm] = {p.name: p for p in (TWO_AFC, *(odd_one_out(n) for n in ODD_ONE_OUT_SIZES))}


def paradigm_named(name: str) -> Paradigm:
    """The paradigm a manifest or a response table names; a ValueError lists the known names."""
    try:
        return PARADIGMS[name]
    except KeyError:
        raise ValueError(f"paradigm {name!r} is unknown; known: {sorted(PARADIGMS)}") from None
