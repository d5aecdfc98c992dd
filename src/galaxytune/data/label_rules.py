"""Label rules as the config declares them (``data.labels.rules``), parsed and checked.

Kept apart from the labelling itself (:mod:`galaxytune.data.vote_labels`) so that the config
can check the rules when it validates without importing the data pipeline.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from galaxytune.errors import ConfigError

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
