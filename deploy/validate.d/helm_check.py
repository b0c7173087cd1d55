"""Offline checks of the Herald Helm chart through the Helm Go SDK (helm-python-sdk).

    helm_check.py lint CHART KUBE_VERSION...      strict lint of every ci/*-values.yaml
    helm_check.py render CHART OUT                schema + render of every ci/*-values.yaml
    helm_check.py reject CHART CASES_DIR          each bad values file must be refused

`render` writes, per fixture, OUT/<fixture>/: core.yaml (built-in kinds, for
kubernetes-validate), crds/*.json (ServiceMonitor, HTTPRoute), herald.toml (the
ConfigMap's file, for `herald checkconfig`), env.json (the gateway's environment),
test.sh (the `helm test` pod's script) and NOTES.txt.

A bad values file names the message it must be refused with in a leading comment:
    # expect: additional properties 'replicas' not allowed
"""

import json
import pathlib
import sys

import helm_python as helm
import yaml

CRD_KINDS = {"ServiceMonitor", "HTTPRoute"}
RELEASE, NAMESPACE = "herald", "realtime"


def fixtures(chart):
    found = sorted((pathlib.Path(chart) / "ci").glob("*-values.yaml"))
    if not found:
        sys.exit(f"no ci/*-values.yaml in {chart}")
    return found


def load(path):
    return yaml.safe_load(path.read_text()) or {}


def lint(chart, kube_versions):
    failed = False
    for values_file in fixtures(chart):
        for kube in kube_versions:
            report = helm.lint(chart, load(values_file), strict=True, kube_version=f"v{kube}")
            # Severity: 1 info, 2 warning, 3 error. Strict means warnings fail too.
            problems = [m for m in report["messages"] if m["severity"] >= 2]
            problems += [{"path": "", "error": e} for e in report["errors"]
                         if not any(e == m["error"] for m in problems)]
            status = "ok" if not problems else "FAILED"
            print(f"  {values_file.name} (Kubernetes {kube}): {status}")
            for p in problems:
                print(f"    {p['path']}: {p['error'].strip()}")
            failed |= bool(problems)
    return 1 if failed else 0


def split(rendered):
    docs = []
    for name in sorted(rendered):
        if name.endswith(".yaml"):
            docs += [(name, d) for d in yaml.safe_load_all(rendered[name]) if d]
    return docs


def render(chart, out):
    out = pathlib.Path(out)
    with helm.Chart.load(chart) as ch:
        for values_file in fixtures(chart):
            values = load(values_file)
            ch.validate_schema(values)
            rendered = ch.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
            target = out / values_file.name.removesuffix("-values.yaml")
            (target / "crds").mkdir(parents=True, exist_ok=True)
            docs = split(rendered)
            core = [d for _, d in docs if d["kind"] not in CRD_KINDS]
            (target / "core.yaml").write_text(yaml.safe_dump_all(core, sort_keys=False))
            for _, d in docs:
                if d["kind"] in CRD_KINDS:
                    path = target / "crds" / f"{d['kind']}-{d['metadata']['name']}.json"
                    path.write_text(json.dumps(d, indent=2))
            by_kind = {d["kind"]: d for d in core}
            config = by_kind["ConfigMap"]["data"]["herald.toml"]
            (target / "herald.toml").write_text(config)
            gateway = by_kind["Deployment"]["spec"]["template"]["spec"]["containers"][0]
            env = [{"name": e["name"], "value": e.get("value")} for e in gateway["env"]]
            (target / "env.json").write_text(json.dumps(env))
            tests = [d for d in core if d["kind"] == "Pod"
                     and d["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
            if tests:
                (target / "test.sh").write_text(tests[0]["spec"]["containers"][0]["args"][0])
            notes = next((v for k, v in rendered.items() if k.endswith("NOTES.txt")), "")
            if not notes.strip():
                sys.exit(f"{values_file.name}: NOTES.txt rendered empty")
            (target / "NOTES.txt").write_text(notes)
            kinds = ", ".join(sorted(d["kind"] for _, d in docs))
            print(f"  {values_file.name}: {len(docs)} objects ({kinds})")
    return 0


def reject(chart, cases_dir):
    failed = False
    cases = sorted(pathlib.Path(cases_dir).glob("*.yaml"))
    if not cases:
        sys.exit(f"no bad values files in {cases_dir}")
    with helm.Chart.load(chart) as ch:
        for case in cases:
            text = case.read_text()
            expect = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                           if line.startswith("# expect:")), None)
            if not expect:
                sys.exit(f"{case.name}: no '# expect:' line")
            try:
                ch.render(yaml.safe_load(text), name=RELEASE, namespace=NAMESPACE, is_install=True)
                message = None
            except helm.HelmError as e:
                message = " ".join(str(e).split())
            if message is None:
                print(f"  {case.name}: ACCEPTED, but it must be refused ({expect})")
                failed = True
            elif expect not in message:
                print(f"  {case.name}: refused for another reason: {message}")
                failed = True
            else:
                print(f"  {case.name}: refused: {expect}")
    return 1 if failed else 0


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    command, chart, rest = argv[1], argv[2], argv[3:]
    if command == "lint" and rest:
        return lint(chart, rest)
    if command == "render" and len(rest) == 1:
        return render(chart, rest[0])
    if command == "reject" and len(rest) == 1:
        return reject(chart, rest[0])
    sys.exit(__doc__)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
