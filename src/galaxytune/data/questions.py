"""Every Galaxy Zoo question's answer counts, as extra supervision beside the class label.

A galaxy's class (say ``disk_face_on_spiral``) is one bit of what its 40-odd volunteers said:
their answers to every question of the decision tree carry far more. When a vote table holds
the answer counts, each galaxy gets the vector of all of them, and the finetune stage trains a
second head on it (Dirichlet-multinomial per question, as Zoobot does; see
:mod:`galaxytune.training.losses`). Questions a galaxy was never asked have zero counts and
cost nothing.

Two naming schemes are recognised:

- GZ2 (Hart et al. 2016 and tables with its columns): ``t01_smooth_or_features_a01_smooth_count``;
- GZ DECaLS: ``smooth-or-featured_smooth`` beside ``smooth-or-featured_total-votes`` and
  ``smooth-or-featured_smooth_fraction``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_GZ2_COUNT = re.compile(r"^(t\d\d_.+?)_(a\d\d_.+)_count$")
_DECALS_TOTAL = "_total-votes"


@dataclass(frozen=True)
class Question:
    name: str
    answers: tuple[str, ...]
    columns: tuple[str, ...]
    """The table column counting each answer's votes."""


def find_questions(header: list[str]) -> list[Question]:
    """The questions whose answer counts ``header`` holds, in table order (empty: none)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for column in header:
        match = _GZ2_COUNT.match(column)
        if match:
            found.setdefault(match.group(1), []).append((match.group(2), column))
    names = set(header)
    for total in (c for c in header if c.endswith(_DECALS_TOTAL)):
        question = total[: -len(_DECALS_TOTAL)]
        answers = [c for c in header if c.startswith(question + "_") and c != total and f"{c}_fraction" in names]
        if answers:
            found[question] = [(c[len(question) + 1:], c) for c in answers]
    # One answer alone is no question: nothing to choose between.
    return [Question(q, tuple(a for a, _ in pairs), tuple(c for _, c in pairs))
            for q, pairs in found.items() if len(pairs) >= 2]


def count_columns(questions: list[Question]) -> list[str]:
    return [c for q in questions for c in q.columns]


def fraction_column(count_column: str) -> str:
    """The column holding the vote fraction of the answer that ``count_column`` counts."""
    if _GZ2_COUNT.match(count_column):
        return count_column.removesuffix("_count") + "_fraction"
    return f"{count_column}_fraction"


def answer_slices(questions: list[Question]) -> list[tuple[int, int]]:
    """Where each question's answers sit in a galaxy's count vector."""
    slices, start = [], 0
    for q in questions:
        slices.append((start, start + len(q.answers)))
        start += len(q.answers)
    return slices
