"""The Grafana dashboard, the alert rules and the autoscaler's adapter rule are built only from
what jetserve exports: every metric, label and label value their PromQL uses is checked against
the /metrics page of a live server. promtool (Debian's prometheus package) checks that every
expression parses and runs the alerts' unit tests.

Environment (set by CTest): JETSERVE_BIN, PYTHONPATH with tests/server (the harness) and the
generated *_pb2 modules, JETSERVE_CACHE_DIR, JETSERVE_SCRATCH.
"""
import json
import os
import re
import subprocess
import tempfile
import unittest

import yaml

from harness import Server, generate, request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "../.."))
DASHBOARD = os.path.join(ROOT, "deploy/monitoring/grafana-dashboard.json")
ALERTS = os.path.join(ROOT, "deploy/monitoring/jetserve-alerts.yaml")
ADAPTER = os.path.join(ROOT, "deploy/monitoring/prometheus-adapter-rules.yaml")
PROMETHEUS_RULE = os.path.join(ROOT,
                               "deploy/kubernetes/components/monitoring/prometheusrule.yaml")
ALERT_TESTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "alerts_test.yaml")

# Labels that Prometheus (or the Prometheus Operator's relabelling) attaches to every scraped
# series: they are never on /metrics itself.
TARGET_LABELS = {"namespace", "pod", "service", "container", "endpoint", "job", "instance"}
# Grafana's variables, replaced by what they expand to for parsing.
GRAFANA_VARS = {"$__rate_interval": "5m", "$model_name": ".*"}

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
                   "unless", "bool", "offset", "inf", "nan"}


def dashboard():
    with open(DASHBOARD) as f:
        return json.load(f)


def dashboard_exprs():
    """(where, PromQL) for every query of the dashboard, its variables' included."""
    d = dashboard()
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel '{p['title']}' {t['refId']}", t["expr"]))
    for v in d["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*([a-zA-Z_]\w*)\)", v["query"]["query"])
            if not m:
                raise AssertionError(f"variable {v['name']}: unexpected query {v['query']}")
            # label_values(selector, label): the selector, with the label it reads grouped on.
            out.append((f"variable {v['name']}", f"count by ({m.group(2)}) ({m.group(1)})"))
    return out


def alert_exprs():
    with open(ALERTS) as f:
        groups = yaml.safe_load(f)["groups"]
    return [(f"alert {r['alert']}", r["expr"]) for g in groups for r in g["rules"]]


def adapter_exprs():
    with open(ADAPTER) as f:
        rules = yaml.safe_load(f)["rules"]["custom"]
    return [(f"adapter rule {i}", r["seriesQuery"]) for i, r in enumerate(rules)]


def expand(expr):
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    return expr


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(\{[^}]*\})?')
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')
_GROUPING = re.compile(r'\b(?:by|without|on|ignoring)\s*\(([^)]*)\)')


def parse(expr):
    """A small PromQL reader for what these files use: returns the metric selectors as
    (name, [(label, op, value)]) and the label names of by/without/on/ignoring clauses.
    Identifiers followed by "(" are functions; range durations and numbers are skipped."""
    selectors = []
    # Label matchers hold strings that may contain anything; read them per selector, and blank
    # strings elsewhere (there are none outside matchers here, but a regex must not be fooled).
    pos = 0
    text = expr
    while True:
        m = _SELECTOR.search(text, pos)
        if not m:
            break
        name, braces = m.group(1), m.group(2)
        pos = m.end()
        before = text[:m.start()]
        if before.count('"') % 2 == 1:  # inside a string
            continue
        if re.match(r"\s*\(", text[m.end():]) and not braces:
            continue  # a function or aggregation
        if name in PROMQL_KEYWORDS or re.fullmatch(r"\d.*", name):
            continue
        if re.search(r"\[[^\]]*$", before):  # inside a range, e.g. [5m]
            continue
        if re.search(r"(?:by|without|on|ignoring)\s*\([^)]*$", before):  # a grouping label
            continue
        if re.fullmatch(r"[a-z]+", name) and name in {"sum", "max", "min", "avg", "count", "rate",
                                                     "histogram_quantile"}:
            continue
        matchers = _MATCHER.findall(braces or "")
        selectors.append((name, matchers))
    grouping = [l.strip() for g in _GROUPING.findall(expr) for l in g.split(",") if l.strip()]
    return selectors, grouping


class ParserTest(unittest.TestCase):
    """The reader must see what it is asked to check, or the live test would pass vacuously."""

    def test_reads_selectors_matchers_and_grouping(self):
        sels, grouping = parse('histogram_quantile(0.9, sum by (namespace, le) (rate('
                               'jetserve:x_bucket{a="b",c=~"d|e"}[5m]))) > 5 and on(pod) '
                               'jetserve:y')
        self.assertEqual(sels, [("jetserve:x_bucket", [("a", "=", "b"), ("c", "=~", "d|e")]),
                                ("jetserve:y", [])])
        self.assertEqual(grouping, ["namespace", "le", "pod"])

    def test_every_file_has_expressions(self):
        self.assertGreaterEqual(len(dashboard_exprs()), 20)
        self.assertEqual(len(alert_exprs()), 4)
        self.assertEqual(len(adapter_exprs()), 1)
        for where, expr in dashboard_exprs() + alert_exprs() + adapter_exprs():
            self.assertTrue(parse(expand(expr))[0], f"{where}: no metric found in {expr}")


def promtool(*args):
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120)


class PromtoolTest(unittest.TestCase):
    def test_alert_rules_check(self):
        r = promtool("check", "rules", ALERTS)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_alert_unit_tests(self):
        r = promtool("test", "rules", ALERT_TESTS)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("SUCCESS", r.stdout)

    def test_prometheus_rule_carries_the_same_groups(self):
        with open(ALERTS) as f:
            groups = yaml.safe_load(f)["groups"]
        with open(PROMETHEUS_RULE) as f:
            rule = yaml.safe_load(f)
        self.assertEqual(rule["spec"]["groups"], groups)

    def test_dashboard_and_adapter_expressions_parse(self):
        # promtool parses PromQL only inside rule files: one recording rule per expression.
        exprs = dashboard_exprs() + adapter_exprs()
        rules = [{"record": f"jetserve_check:expr_{i}", "expr": expand(e)}
                 for i, (_, e) in enumerate(exprs)]
        with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
            yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, f)
        try:
            r = promtool("check", "rules", f.name)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
            self.assertIn(f"SUCCESS: {len(rules)} rules found", r.stdout)
            # And promtool does fail on a broken expression, so the check above means something.
            with open(f.name, "w") as g:
                yaml.safe_dump({"groups": [{"name": "x", "rules": [
                    {"record": "x", "expr": "sum(rate(jetserve:a[5m])"}]}]}, g)
            self.assertNotEqual(promtool("check", "rules", f.name).returncode, 0)
        finally:
            os.unlink(f.name)


class DashboardStructureTest(unittest.TestCase):
    def test_panels(self):
        d = dashboard()
        ids = [p["id"] for p in d["panels"]]
        self.assertEqual(len(ids), len(set(ids)), "duplicate panel ids")
        cells = set()
        for p in d["panels"]:
            g = p["gridPos"]
            self.assertLessEqual(g["x"] + g["w"], 24, p["title"])
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    self.assertNotIn((x, y), cells, f"panel '{p['title']}' overlaps another")
                    cells.add((x, y))
            if p["type"] == "row":
                continue
            self.assertTrue(p["targets"], p["title"])
            self.assertEqual(p["datasource"]["uid"], "${datasource}", p["title"])
            refs = [t["refId"] for t in p["targets"]]
            self.assertEqual(len(refs), len(set(refs)), p["title"])

    def test_variables_used_are_defined(self):
        d = dashboard()
        defined = {v["name"] for v in d["templating"]["list"]}
        used = set(re.findall(r"\$\{?([a-zA-Z_]\w*)", json.dumps(d["panels"])))
        self.assertEqual(used - defined - {"__rate_interval"}, set())

    def test_covers_what_the_issue_asks(self):
        text = json.dumps(dashboard())
        for metric in ("generation_tokens_total", "time_to_first_token_seconds_bucket",
                       "inter_token_latency_seconds_bucket", "num_requests_waiting",
                       "kv_cache_usage_perc", "state_slot_usage_perc", "num_preemptions_total",
                       "request_rejected_total"):
            self.assertIn(f"jetserve:{metric}", text)


class LiveMetricsTest(unittest.TestCase):
    """Every metric, label and label value used exists on a live server's /metrics."""

    @classmethod
    def setUpClass(cls):
        cls.server = Server(name="deploy-monitoring")
        cls.addClassCleanup(cls.server.close)
        before = cls.server.metrics()
        for prompt in ("Hello", "Deployment"):
            generate(cls.server.stub, request(prompt=prompt, max_tokens=4, ignore_eos=True))
        cls.metrics = cls.server.wait_finished(before, 2)
        cls.labels = {}   # metric -> {label -> {values}}
        for name, labels, _ in cls.metrics.samples:
            for k, v in labels.items():
                cls.labels.setdefault(name, {}).setdefault(k, set()).add(v)

    def check(self, where, expr):
        selectors, grouping = parse(expand(expr))
        available = set(TARGET_LABELS)
        for name, matchers in selectors:
            if not name.startswith("jetserve:"):
                self.fail(f"{where}: {name} is not a jetserve metric")
            self.assertTrue(self.metrics.has(name), f"{where}: {name} is not on /metrics")
            known = self.labels.get(name, {})
            available |= set(known)
            for label, op, value in matchers:
                if label in TARGET_LABELS:
                    continue
                self.assertIn(label, known, f"{where}: {name} has no label {label}")
                if op in ("=", "=~") and re.fullmatch(r"[\w|]+", value):
                    for alternative in value.split("|"):
                        self.assertIn(alternative, known[label],
                                      f"{where}: {name}{{{label}}} is never {alternative!r}")
        for label in grouping:
            self.assertIn(label, available, f"{where}: grouping by unknown label {label}")

    def test_dashboard(self):
        for where, expr in dashboard_exprs():
            self.check(where, expr)
        d = dashboard()
        for p in d["panels"]:
            for t in p.get("targets", []):
                selectors, grouping = parse(expand(t["expr"]))
                for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t.get("legendFormat", "")):
                    self.assertIn(label, grouping, f"panel '{p['title']}': legend {{{{{label}}}}} "
                                  "is not a label the query keeps")

    def test_alert_rules(self):
        for where, expr in alert_exprs():
            self.check(where, expr)

    def test_adapter_rule(self):
        for where, expr in adapter_exprs():
            self.check(where, expr)

    def test_the_check_catches_a_wrong_name_label_and_value(self):
        for bad in ("jetserve:num_requests_queued",
                    'jetserve:request_success_total{finish_reason="stop"}',
                    'jetserve:request_success_total{finished_reason="timeout"}',
                    "sum by (model) (jetserve:num_requests_running)",
                    "jetserve:time_to_first_token_seconds"):  # a histogram has no plain series
            with self.assertRaises(AssertionError, msg=bad):
                self.check("test", bad)


if __name__ == "__main__":
    unittest.main()
