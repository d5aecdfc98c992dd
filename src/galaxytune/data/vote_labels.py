"""Class labels from volunteer votes: which columns a labelling needs, and the labels.

A vote table is read (by :mod:`galaxytune.data.readers.galaxy_zoo`) into a :class:`Catalog`
holding only the columns :func:`wanted_columns` names; :func:`vote_samples` labels its galaxies.

Ordered rules (:mod:`galaxytune.data.label_rules`) give one class per galaxy: the first rule
whose conditions all hold wins, as in a walk down the Galaxy Zoo decision tree. A binary
question labels every galaxy that answered it by one fraction against a threshold; soft
targets keep a question's fractions. Galaxies with too few votes, matching no rule or whose
deciding fractions are too weak are dropped, and the drops are counted by reason.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from galaxytune.config import DataConfig, LabelsConfig
from galaxytune.data.csv_table import numbers
from galaxytune.data.label_rules import Condition, Rule, parse_rules, rule_columns, vote_columns
from galaxytune.data.questions import Question, count_columns, fraction_column
from galaxytune.data.samples import Sample, SplitSamples, is_file, split_name
from galaxytune.errors import ConfigError, DataError

log = logging.getLogger(__name__)

OPERATORS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}


@dataclass
class Catalog:
    """A vote table as read: the galaxies' image paths and the columns their labels need."""

    source: Path
    paths: list[Path | None]
    """Where each galaxy's image should be (None: nowhere known); not yet checked on disk."""
    columns: dict[str, list[str] | np.ndarray]
    """The columns read, as text (or as numbers where derived here)."""
    votes: str
    """The vote-count expression in effect ('' where the table has no counts)."""
    questions: list[Question] = field(default_factory=list)
    """Questions whose answer counts were read (``data.labels.questions``), each column in ``columns``."""


def wanted_columns(cfg: DataConfig, votes: str, header: list[str]) -> dict[str, str]:
    """Column -> the setting that names it, for every column the labels need."""
    labels = cfg.labels
    # The config allows one kind of vote labels at most.
    setting = ("data.labels.rules" if labels.rules else "data.labels.soft" if labels.soft
               else "data.labels.binary.column")
    wanted = dict.fromkeys(label_columns(labels), setting)
    if not wanted:
        wanted[cfg.label_column] = "data.label_column (--label-column), or declare data.labels.rules"
    if labels.binary.column and labels.binary.min_votes > 0:
        wanted.update(dict.fromkeys(vote_columns(labels.binary.votes), "data.labels.binary.votes"))
    if labels.min_votes > 0:
        if not votes:
            raise ConfigError("data.labels.min_votes needs data.labels.votes: the column counting each "
                              "galaxy's votes (or a sum 'a_count + b_count').")
        wanted.update({c: "data.labels.votes" for c in vote_columns(votes) if c not in wanted})
    if "split" in header:
        wanted.setdefault("split", "the table")
    return wanted


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
    """(galaxies, classes) vote fractions summing to 1, classes in sorted order (soft targets), or
    with rule redraws each class's share of the re-votes."""


def _enough_votes(votes: np.ndarray | None, minimum: int, what: str, keep: np.ndarray, dropped: dict) -> None:
    if minimum > 0 and votes is not None:
        few = keep & ~(votes >= minimum)
        dropped[f"with fewer than {minimum} votes ({what})"] = int(few.sum())
        keep &= ~few


def _walk(rules: list[Rule], values: Mapping[str, np.ndarray], candidates: np.ndarray):
    """Each rule with the galaxies it takes: those of ``candidates`` that no earlier rule took and
    for which all its conditions hold."""
    open_ = candidates.copy()
    for rule in rules:
        match = open_.copy()
        for condition in rule.conditions:
            match &= _holds(condition, values)
        open_ &= ~match
        yield rule, match


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
    for rule, match in _walk(parse_rules(cfg.rules), values, keep):
        labels[match] = rule.label
        confidence[match] = _confidence(rule, values, n)[match]
        open_ &= ~match
    dropped["matching no rule"] = int(open_.sum())
    weak = keep & ~open_ & (confidence < cfg.min_confidence)
    dropped[f"with confidence below {cfg.min_confidence}"] = int(weak.sum())
    labels[open_ | weak] = None
    return Labels(labels.tolist(), {k: v for k, v in dropped.items() if v})


def _rule_counts(catalog: Catalog, rules: list[Rule]) -> tuple[dict[str, np.ndarray], dict[str, tuple[str, int]]]:
    """The answer counts of each question the rules read (question name -> (galaxies, answers)),
    and where each fraction column the rules read sits among them (column -> (question, answer))."""
    behind = {fraction_column(c): (q.name, i) for q in catalog.questions for i, c in enumerate(q.columns)}
    columns = rule_columns(rules)
    missing = [c for c in columns if c not in behind]
    if missing:
        raise DataError(
            f"{catalog.source}: data.labels.vote_redraws re-votes the rules' fractions from their answers' vote "
            f"counts, and the table counts no answer behind {', '.join(repr(c) for c in missing)}. Write the rules "
            "on the fractions of Galaxy Zoo questions whose answer counts the table holds (t01_..._count beside "
            "t01_..._fraction), or set data.labels.vote_redraws: 0.")
    where = {c: behind[c] for c in columns}
    asked = {name for name, _ in where.values()}
    counts = {q.name: np.nan_to_num(np.stack([_floats(catalog, c) for c in q.columns], axis=1))
              for q in catalog.questions if q.name in asked}
    return counts, where


def redrawn_shares(
    rules: list[Rule], values: Mapping[str, np.ndarray], counts: Mapping[str, np.ndarray],
    where: Mapping[str, tuple[str, int]], labels: list[str | None], draws: int, seed: int = 0,
) -> np.ndarray:
    """(galaxies, classes) share of ``draws`` re-votes in which each rule's class wins, classes in
    sorted order; a galaxy no re-vote puts in any class keeps its own ``labels`` entry.

    A re-vote asks every question the rules read (``counts``: its answers' votes; ``where``: each
    rule column's question and answer) of as many volunteers as answered it, whose answer shares are
    drawn from the posterior of the observed counts (Dirichlet, Jeffreys prior). A question nobody
    answered keeps the table's value."""
    classes = sorted({rule.label for rule in rules})
    n = len(labels)
    won = np.zeros((n, len(classes)))
    rng = np.random.default_rng(seed)
    totals = {question: k.sum(axis=1) for question, k in counts.items()}
    for _ in range(draws):
        revoted = {}
        for question, k in counts.items():
            shares = rng.gamma(k + 0.5)
            total = totals[question]
            votes = rng.multinomial(np.rint(total).astype(int), shares / shares.sum(axis=1, keepdims=True))
            revoted[question] = (votes / np.where(total > 0, total, 1)[:, None], total > 0)
        drawn = {}
        for column, (question, answer) in where.items():
            fractions, answered = revoted[question]
            drawn[column] = np.where(answered, fractions[:, answer], values[column])
        for rule, match in _walk(rules, drawn, np.ones(n, bool)):
            won[match, classes.index(rule.label)] += 1
    unplaced = [i for i in np.flatnonzero(won.sum(axis=1) == 0) if labels[i] is not None]
    won[unplaced, [classes.index(labels[i]) for i in unplaced]] = 1
    return won / np.maximum(won.sum(axis=1, keepdims=True), 1)


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


def _floats(catalog: Catalog, column: str) -> np.ndarray:
    values = catalog.columns[column]
    return values if isinstance(values, np.ndarray) else numbers(catalog.source, column, values)


def _vote_sum(catalog: Catalog, expression: str) -> np.ndarray:
    return np.sum([_floats(catalog, c) for c in vote_columns(expression)], axis=0)


def labels_of(catalog: Catalog, cfg: DataConfig) -> Labels:
    labels = cfg.labels
    votes = _vote_sum(catalog, catalog.votes) if labels.min_votes > 0 else None
    if labels.rules:
        rules = parse_rules(labels.rules)
        values = {c: _floats(catalog, c) for c in rule_columns(rules)}
        found = by_rules(labels, values, votes, catalog.votes)
        if labels.vote_redraws:
            counts, where = _rule_counts(catalog, rules)
            found.fractions = redrawn_shares(rules, values, counts, where, found.labels, labels.vote_redraws)
        return found
    if labels.soft:
        return by_fractions(labels, {c: _floats(catalog, c) for c in labels.soft.values()}, votes, catalog.votes)
    if labels.binary.column:
        binary = labels.binary
        question = _vote_sum(catalog, binary.votes) if binary.min_votes > 0 else None
        return by_threshold(labels, {binary.column: _floats(catalog, binary.column)}, votes, catalog.votes, question)
    return by_column(labels, catalog.columns[cfg.label_column], cfg.label_column, votes, catalog.votes)


def _split(catalog: Catalog, row: int) -> str:
    if "split" not in catalog.columns:
        return "train"
    return split_name(catalog.columns["split"][row], f"{catalog.source} line {row + 2}")


def _answer_counts(catalog: Catalog) -> np.ndarray | None:
    """(galaxies, answers) vote counts of ``catalog.questions``; an empty cell (a question never
    reached) counts zero votes."""
    columns = count_columns(catalog.questions)
    if not columns:
        return None
    return np.nan_to_num(np.stack([_floats(catalog, c) for c in columns], axis=1))


def vote_samples(catalog: Catalog, cfg: DataConfig) -> SplitSamples:
    """Label every galaxy of ``catalog``, drop (and count) those without a label or an image."""
    labels = labels_of(catalog, cfg)
    counts = _answer_counts(catalog)
    dropped, no_image, by_split = dict(labels.dropped), [], {}
    for row, (label, path) in enumerate(zip(labels.labels, catalog.paths)):
        if label is None:
            continue
        if path is None or not is_file(path):
            no_image.append(path)
            continue
        fractions = None if labels.fractions is None else tuple(labels.fractions[row].tolist())
        answers = None if counts is None else tuple(counts[row].tolist())
        by_split.setdefault(_split(catalog, row), []).append(Sample(path, label, fractions, answers))
    if no_image:
        example = next((p for p in no_image if p is not None), None)
        dropped["without an image file" + (f" (e.g. {example})" if example else "")] = len(no_image)
    kept = [s for samples in by_split.values() for s in samples]
    counts = ", ".join(f"{label} {n}" for label, n in sorted(Counter(s.label for s in kept).items()))
    why = "; dropped " + ", ".join(f"{n} {reason}" for reason, n in dropped.items()) if dropped else ""
    log.info(f"{catalog.source}: {len(kept)} of {len(labels.labels)} galaxies labelled ({counts}){why}.")
    if not kept:
        raise DataError(f"{catalog.source}: no galaxy is left to train on{why}. Loosen data.labels or check the "
                        "images are where the table says.")
    if "train" not in by_split:
        raise DataError(f"{catalog.source}: no rows belong to the train split.")
    return SplitSamples(by_split, catalog.questions)
