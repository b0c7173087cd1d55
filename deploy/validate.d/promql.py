"""The PromQL in the Grafana dashboard and the alerting rules, checked against reality.

    promql.py dashboard-rules DASHBOARD OUT   the dashboard's queries as a rules file, so
                                              `promtool check rules` parses them
    promql.py names DASHBOARD RULES           the metric names both refer to
    promql.py check DASHBOARD RULES EXPOSITION...
                                              fail unless every referenced metric appears
                                              in at least one scraped exposition

Metric names are found with a small PromQL scanner: string literals, label matchers
{...}, ranges [...], grouping clauses (by/without/on/ignoring/group_left/group_right
(...)) and function calls are removed, and what remains of the identifiers are
metric names.
"""

import json
import re
import sys

import yaml

# Grafana's variables, replaced by something PromQL accepts.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "atan2", "inf", "nan", "start", "end",
}
# Series Prometheus makes itself, not exported by a target.
BUILTIN = {"up", "scrape_duration_seconds", "scrape_samples_scraped",
           "scrape_samples_post_metric_relabeling", "scrape_series_added", "ALERTS",
           "ALERTS_FOR_STATE"}


def dashboard_queries(path):
    """Every PromQL expression in a dashboard: panel targets and templating queries."""
    found = []

    def walk(node, where):
        if isinstance(node, dict):
            title = node.get("title", where)
            if isinstance(node.get("expr"), str):
                found.append((f"panel {title!r}", node["expr"]))
            for value in node.values():
                walk(value, title)
        elif isinstance(node, list):
            for value in node:
                walk(value, where)

    dashboard = json.load(open(path))
    walk(dashboard.get("panels", []), "")
    for var in dashboard.get("templating", {}).get("list", []):
        query = var.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        if var.get("type") == "query" and isinstance(query, str):
            # label_values(METRIC, LABEL): the first argument is a series selector.
            m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", query)
            found.append((f"variable {var['name']!r}", m.group(1) if m else query))
    return found


def rule_queries(path):
    rules = yaml.safe_load(open(path))
    return [(f"rule {r.get('alert') or r.get('record')!r}", r["expr"])
            for g in rules["groups"] for r in g["rules"]]


def substitute(expr):
    for name, value in GRAFANA_VARS.items():
        expr = expr.replace(name, value)
    return re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", ".*", expr)


def metric_names(expr):
    text = substitute(expr)
    text = re.sub(r'"(\\.|[^"\\])*"|\'(\\.|[^\'\\])*\'|`[^`]*`', '""', text)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    names = set()
    for m in re.finditer(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word.lower() in KEYWORDS:
            continue
        names.add(word)
    return names


def references(dashboard, rules):
    refs = {}
    for where, expr in dashboard_queries(dashboard) + rule_queries(rules):
        for name in metric_names(expr):
            refs.setdefault(name, []).append(where)
    return refs


def exported(paths):
    names = set()
    for path in paths:
        for line in open(path):
            if line and not line.startswith("#"):
                m = re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)
                if m:
                    names.add(m.group(0))
    return names


def dashboard_rules(dashboard, out):
    queries = dashboard_queries(dashboard)
    rules = [{"record": f"dashboard:query_{i}", "expr": substitute(expr)}
             for i, (_, expr) in enumerate(queries)]
    yaml.safe_dump({"groups": [{"name": "dashboard-queries", "rules": rules}]},
                   open(out, "w"), sort_keys=False)
    print(f"  {len(rules)} queries:")
    for i, (where, _) in enumerate(queries):
        print(f"    dashboard:query_{i} is {where}")
    return 0


def check(dashboard, rules, expositions):
    refs = references(dashboard, rules)
    have = exported(expositions)
    missing = {n: w for n, w in refs.items() if n not in have and n not in BUILTIN}
    print(f"  {len(refs)} metric names referenced; {len(have)} series names exported")
    for name in sorted(refs):
        state = "MISSING" if name in missing else "builtin" if name in BUILTIN else "ok"
        print(f"    {state:8} {name}")
    for name, where in sorted(missing.items()):
        print(f"  not exported: {name} (used by {', '.join(sorted(set(where)))})")
    return 1 if missing else 0


def main(argv):
    if len(argv) == 4 and argv[1] == "dashboard-rules":
        return dashboard_rules(argv[2], argv[3])
    if len(argv) == 4 and argv[1] == "names":
        for name, where in sorted(references(argv[2], argv[3]).items()):
            print(name, "\t", ", ".join(sorted(set(where))))
        return 0
    if len(argv) >= 5 and argv[1] == "check":
        return check(argv[2], argv[3], argv[4:])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
