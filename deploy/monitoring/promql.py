"""The metrics and labels that the dashboard's and the alert rules' PromQL queries use.

A query on a metric or label the service does not export gives an empty panel or an alert
that can never fire, and nothing says so. The tests compare what these queries use with
what real servers export; this module reads the queries out of the files and the metric
and label names out of each query. It is a tokenizer, not a full PromQL parser: enough to
tell metric names from functions, keywords, label names, strings, numbers and durations,
and it refuses identifiers it cannot classify (an unknown function) instead of guessing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
DASHBOARD = HERE / "grafana" / "dashboards" / "kindle_sentiment.json"
ALERT_RULES = HERE / "rules" / "kindle_alerts.yml"

FUNCTIONS = frozenset(
    {
        "abs",
        "absent",
        "absent_over_time",
        "acos",
        "acosh",
        "asin",
        "asinh",
        "atan",
        "atanh",
        "avg_over_time",
        "ceil",
        "changes",
        "clamp",
        "clamp_max",
        "clamp_min",
        "cos",
        "cosh",
        "count_over_time",
        "day_of_month",
        "day_of_week",
        "day_of_year",
        "days_in_month",
        "deg",
        "delta",
        "deriv",
        "end",
        "exp",
        "floor",
        "group_over_time",
        "histogram_avg",
        "histogram_count",
        "histogram_fraction",
        "histogram_quantile",
        "histogram_stddev",
        "histogram_stdvar",
        "histogram_sum",
        "holt_winters",
        "hour",
        "idelta",
        "increase",
        "irate",
        "label_join",
        "label_replace",
        "last_over_time",
        "ln",
        "log10",
        "log2",
        "mad_over_time",
        "max_over_time",
        "min_over_time",
        "minute",
        "month",
        "predict_linear",
        "present_over_time",
        "pi",
        "quantile_over_time",
        "rad",
        "rate",
        "resets",
        "round",
        "scalar",
        "sgn",
        "sin",
        "sinh",
        "sort",
        "sort_by_label",
        "sort_by_label_desc",
        "sort_desc",
        "sqrt",
        "start",
        "stddev_over_time",
        "stdvar_over_time",
        "sum_over_time",
        "tan",
        "tanh",
        "time",
        "timestamp",
        "vector",
        "year",
    }
)
AGGREGATIONS = frozenset(
    {
        "avg",
        "bottomk",
        "count",
        "count_values",
        "group",
        "limit_ratio",
        "limitk",
        "max",
        "min",
        "quantile",
        "stddev",
        "stdvar",
        "sum",
        "topk",
    }
)
# Keywords followed by a parenthesised list of label names.
LABEL_LIST_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
OTHER_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<number>(?:0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)[a-zA-Z]*)
  | (?P<ident>[a-zA-Z_:][a-zA-Z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){},@])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Selector:
    """One vector selector: a metric name and the label names its `{...}` matches on."""

    metric: str
    labels: frozenset[str]


@dataclass(frozen=True)
class Query:
    expr: str
    selectors: tuple[Selector, ...]
    grouping: frozenset[str]  # labels named in by / without / on / ignoring / group_left / group_right

    @property
    def metrics(self) -> frozenset[str]:
        return frozenset(selector.metric for selector in self.selectors)


def _tokens(expr: str) -> list[tuple[str, str]]:
    tokens, position = [], 0
    while position < len(expr):
        match = _TOKEN.match(expr, position)
        if match is None:
            raise ValueError(f"cannot read PromQL at {expr[position : position + 20]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group()))
        position = match.end()
    return tokens


def _label_block(tokens: list[tuple[str, str]], start: int, closing: str) -> tuple[list[str], int]:
    """Label names up to `closing`, from `start` (just after the opening bracket); the index after it."""
    names, index = [], start
    while index < len(tokens) and tokens[index][1] != closing:
        kind, text = tokens[index]
        if kind in ("ident", "string") and (index == start or tokens[index - 1][1] == ","):
            names.append(text.strip("\"'`"))
        index += 1
    if index == len(tokens):
        raise ValueError(f"unclosed {closing!r}")
    return names, index + 1


def parse(expr: str) -> Query:
    """The selectors and grouping labels of one PromQL expression."""
    tokens = _tokens(expr)
    selectors: list[Selector] = []
    grouping: set[str] = set()
    index = 0
    while index < len(tokens):
        kind, text = tokens[index]
        following = tokens[index + 1][1] if index + 1 < len(tokens) else ""
        if kind == "ident" and text in LABEL_LIST_KEYWORDS:
            if following == "(":
                names, index = _label_block(tokens, index + 2, ")")
                grouping.update(names)
                continue
        elif kind == "ident" and _is_operator(text, following):
            pass
        elif kind == "ident" and following == "(":
            raise ValueError(f"unknown PromQL function {text!r} in {expr!r}")
        elif kind == "ident" or (kind == "op" and text == "{"):
            metric = text if kind == "ident" else ""
            labels: list[str] = []
            if following == "{" or text == "{":
                start = index + 2 if kind == "ident" else index + 1
                labels, next_index = _label_block(tokens, start, "}")
                metric = metric or _name_matcher(tokens[start:next_index])
                index = next_index
            else:
                index += 1
            selectors.append(Selector(metric, frozenset(labels) - {"__name__"}))
            continue
        index += 1
    return Query(expr, tuple(selectors), frozenset(grouping))


def _is_operator(text: str, following: str) -> bool:
    """A function call, an aggregation (`sum(...)`, `sum by (...)`), or a keyword."""
    return (
        (text in FUNCTIONS and following == "(")
        or (text in AGGREGATIONS and following in ("(", "by", "without"))
        or text in OTHER_KEYWORDS
    )


def _name_matcher(block: list[tuple[str, str]]) -> str:
    """`{__name__="m", ...}`: the metric name from its equality matcher."""
    for position in range(len(block) - 2):
        if block[position][1] == "__name__" and block[position + 1][1] == "=":
            return block[position + 2][1].strip("\"'`")
    raise ValueError("a selector without a metric name")


def dashboard_queries(path: Path = DASHBOARD) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every Prometheus target of every panel, rows included."""
    dashboard = json.loads(path.read_text())

    def walk(panels: list[dict]) -> Iterator[tuple[str, str]]:
        for panel in panels:
            for target in panel.get("targets", []):
                if target.get("expr"):
                    yield panel.get("title", ""), target["expr"]
            yield from walk(panel.get("panels", []))

    yield from walk(dashboard.get("panels", []))


def rule_queries(path: Path = ALERT_RULES) -> Iterator[tuple[str, str]]:
    """(alert or record name, expr) of every rule in a Prometheus rule file."""
    for group in yaml.safe_load(path.read_text())["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"]


def all_queries() -> list[tuple[str, Query]]:
    """Every query of the dashboard and the alert rules, parsed, named by where it is."""
    named = [(f"panel {title!r}", expr) for title, expr in dashboard_queries()]
    named += [(f"rule {name!r}", expr) for name, expr in rule_queries()]
    return [(where, parse(expr)) for where, expr in named]
