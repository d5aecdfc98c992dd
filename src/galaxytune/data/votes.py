"""Class labels from volunteer vote fractions, by rules declared in the config (``data.labels``).

Ordered rules give one class per galaxy: the first rule whose conditions all hold wins, as in
a walk down the Galaxy Zoo decision tree. A binary question labels every galaxy that answered
it by one fraction against a threshold. Galaxies with too few votes, matching no rule or whose
deciding fractions are too weak are dropped, and the drops are counted by reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from galaxytune.errors import ConfigError

if TYPE_CHECKING:  # config.py parses rules with this module when it validates
    from galaxytune.config import LabelsConfig

OPERATORS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}
OTHERWISE = "otherwise"
"""A rule condition that always holds: a catch-all class at the end of the rules."""
_CLAUSE = re.compile(r"^\s*(\S+?)\s*(>=|<=|>|<)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Condition:
    column: str
    op: str
    value: float | str
    """A number, or the name of another column (e.g. spiral_fraction >= no_spiral_fraction)."""


@dataclass(frozen=True)
class Rule:
    label: str
    conditions: tuple[Condition, ...]
    """All must hold; none: the rule matches every galaxy (``otherwise``)."""


def _condition(text: str, where: str) -> Condition:
    match = _CLAUSE.match(text)
    if not match:
        raise ConfigError(f"{where}: '{text}' is not 'column >= number' (or >, <=, < ; clauses joined by 'and').")
    column, op, value = match.groups()
    try:
        return Condition(column, op, float(value))
    except ValueError:
        return Condition(column, op, value)


def parse_condition(text: str, where: str) -> tuple[Condition, ...]:
    if text.strip() == OTHERWISE:
        return ()
    return tuple(_condition(clause, where) for clause in re.split(r"\s+and\s+", text.strip()))


def parse_rules(rules: object, where: str = "data.labels.rules") -> list[Rule]:
    """Rules from the config: a list of one-entry mappings ``{class: "column >= 0.5 and ..."}``."""
    if not isinstance(rules, list):
        raise ConfigError(f"{where} must be a list of '- class: condition' entries, not {rules!r}.")
    parsed = []
    for i, item in enumerate(rules):
        if not (isinstance(item, Mapping) and len(item) == 1):
            raise ConfigError(f"{where}[{i}] must be one 'class: condition' entry, not {item!r}.")
        (label, text), = item.items()
        if not isinstance(text, str) or not str(label).strip():
            raise ConfigError(f"{where}[{i}]: the condition of class {label!r} must be a quoted text, not {text!r}.")
        parsed.append(Rule(str(label), parse_condition(text, f"{where}[{i}] ({label})")))
    if any(not rule.conditions for rule in parsed[:-1]) or (parsed and not parsed[0].conditions):
        raise ConfigError(f"{where}: '{OTHERWISE}' belongs to the last rule, after at least one other "
                          "(rules after it could never match).")
    return parsed


def vote_columns(expression: str) -> list[str]:
    """The columns summed by a votes expression: ``total_classifications`` or ``a_count + b_count``."""
    return [c.strip() for c in expression.split("+") if c.strip()]


def rule_columns(rules: list[Rule]) -> list[str]:
    columns = []
    for rule in rules:
        for c in rule.conditions:
            columns += [c.column] + ([c.value] if isinstance(c.value, str) else [])
    return list(dict.fromkeys(columns))


def label_columns(cfg: LabelsConfig) -> list[str]:
    """The vote-fraction columns that ``cfg`` labels galaxies from (none: labels from a column)."""
    if cfg.rules:
        return rule_columns(parse_rules(cfg.rules))
    if cfg.soft:
        return list(cfg.soft.values())
    return [cfg.binary.column] if cfg.binary.column else []


def _holds(condition: Condition, values: Mapping[str, np.ndarray]) -> np.ndarray:
    right = values[condition.value] if isinstance(condition.value, str) else condition.value
    # NaN (a question the galaxy never reached) compares False: the condition fails.
    return OPERATORS[condition.op](values[condition.column], right)


def _confidence(rule: Rule, values: Mapping[str, np.ndarray], n: int) -> np.ndarray:
    """The product of the fractions a rule requires to be high: the share of volunteers who
    would walk the rule's path down the tree."""
    lower_bounds = [values[c.column] for c in rule.conditions if c.op in (">=", ">")]
    return np.prod(lower_bounds, axis=0) if lower_bounds else np.ones(n)


@dataclass
class Labels:
    labels: list[str | None]
    """One per galaxy; None where it was dropped."""
    dropped: dict[str, int]
    """Reason -> number of galaxies dropped for it (zero counts left out)."""
    fractions: np.ndarray | None = None
    """(galaxies, classes) vote fractions summing to 1, classes in sorted order (soft targets)."""


def _enough_votes(votes: np.ndarray | None, minimum: int, what: str, keep: np.ndarray, dropped: dict) -> None:
    if minimum > 0 and votes is not None:
        few = keep & ~(votes >= minimum)
        dropped[f"with fewer than {minimum} votes ({what})"] = int(few.sum())
        keep &= ~few


def by_rules(
    cfg: LabelsConfig, values: Mapping[str, np.ndarray], votes: np.ndarray | None, votes_name: str
) -> Labels:
    """Labels from ``cfg.rules``; ``values`` maps every column the rules name to floats."""
    n = len(next(iter(values.values()))) if values else len(votes)
    keep, dropped = np.ones(n, bool), {}
    _enough_votes(votes, cfg.min_votes, votes_name, keep, dropped)
    labels = np.full(n, None, dtype=object)
    confidence = np.ones(n)
    open_ = keep.copy()
    for rule in parse_rules(cfg.rules):
        match = open_.copy()
        for condition in rule.conditions:
            match &= _holds(condition, values)
        labels[match] = rule.label
        confidence[match] = _confidence(rule, values, n)[match]
        open_ &= ~match
    dropped["matching no rule"] = int(open_.sum())
    weak = keep & ~open_ & (confidence < cfg.min_confidence)
    dropped[f"with confidence below {cfg.min_confidence}"] = int(weak.sum())
    labels[open_ | weak] = None
    return Labels(labels.tolist(), {k: v for k, v in dropped.items() if v})


def by_threshold(
    cfg: LabelsConfig, values: Mapping[str, np.ndarray], votes: np.ndarray | None, votes_name: str,
    question_votes: np.ndarray | None,
) -> Labels:
    """Labels from ``cfg.binary``: positive where the fraction reaches the threshold."""
    b = cfg.binary
    fraction = values[b.column]
    keep, dropped = np.ones(len(fraction), bool), {}
    _enough_votes(votes, cfg.min_votes, votes_name, keep, dropped)
    _enough_votes(question_votes, b.min_votes, b.votes, keep, dropped)
    unanswered = keep & np.isnan(fraction)
    dropped[f"with no value in {b.column}"] = int(unanswered.sum())
    keep &= ~unanswered
    labels = np.where(fraction >= b.threshold, b.positive, b.negative).astype(object)
    labels[~keep] = None
    return Labels(labels.tolist(), {k: v for k, v in dropped.items() if v})


def by_fractions(
    cfg: LabelsConfig, values: Mapping[str, np.ndarray], votes: np.ndarray | None, votes_name: str
) -> Labels:
    """Soft targets from ``cfg.soft``: each galaxy's fractions over the question's answers,
    renormalised to sum to 1 (debiased fractions need not), and its most-voted answer as class."""
    names = sorted(cfg.soft)
    fractions = np.stack([values[cfg.soft[name]] for name in names], axis=1)
    total = np.nansum(fractions, axis=1)
    keep, dropped = np.ones(len(fractions), bool), {}
    _enough_votes(votes, cfg.min_votes, votes_name, keep, dropped)
    unanswered = keep & ~(total > 0)
    dropped[f"with no votes on {', '.join(cfg.soft.values())}"] = int(unanswered.sum())
    keep &= ~unanswered
    fractions = np.nan_to_num(fractions) / np.where(total > 0, total, 1)[:, None]
    labels = np.array(names, dtype=object)[fractions.argmax(axis=1)]
    labels[~keep] = None
    return Labels(labels.tolist(), {k: v for k, v in dropped.items() if v}, fractions)


def by_column(
    cfg: LabelsConfig, texts: list[str], column: str, votes: np.ndarray | None, votes_name: str
) -> Labels:
    """Labels already in a column of the table (e.g. GZ2's gz2_class), after the vote-count filter."""
    keep, dropped = np.ones(len(texts), bool), {}
    _enough_votes(votes, cfg.min_votes, votes_name, keep, dropped)
    labels = [t.strip() if k and t.strip() else None for t, k in zip(texts, keep)]
    dropped[f"with an empty '{column}'"] = sum(k and not t.strip() for t, k in zip(texts, keep))
    return Labels(labels, {k: v for k, v in dropped.items() if v})
