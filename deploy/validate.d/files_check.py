"""Consistency checks between Herald's deployment files, for deploy/validate.

    files_check.py context REPO OUT     the Docker build context .dockerignore leaves:
                                        copies it to OUT and checks what must (not) be in it
    files_check.py compose COMPOSE_JSON REPO
                                        bind-mount sources, build contexts and
                                        Dockerfiles named by `docker compose config` exist
    files_check.py compose-env COMPOSE_JSON SERVICE DOCKERFILE
                                        the gateway's environment in compose (the image's
                                        ENV under the service's), one NAME=VALUE a line,
                                        HERALD_CONFIG mapped to the file on this machine
    files_check.py chart-env ENV_JSON HERALD_TOML
                                        the chart's gateway environment, secrets replaced
                                        by placeholders, one NAME=VALUE a line; files
                                        mounted from Secrets/ConfigMaps made next to
                                        ENV_JSON
    files_check.py compose-redis-user COMPOSE_JSON USER
                                        the `--user USER ...` arguments of the compose
                                        Redis, one a line
    files_check.py grafana REPO COMPOSE_JSON
                                        dashboard, datasource and provider agree
    files_check.py settings HERALD SCHEMA
                                        the chart's `config` schema names exactly the
                                        settings the herald binary accepts
"""

import fnmatch
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml


# ---- .dockerignore ---------------------------------------------------------------

def ignore_rules(repo):
    rules = []
    path = repo / ".dockerignore"
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = pattern.strip("/")
        rules.append((negate, pattern_regex(pattern)))
    return rules


def pattern_regex(pattern):
    """Docker's pattern syntax: `**` any number of directories, `*` and `?` within one."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def ignored(rules, rel):
    """A path is excluded if the last rule matching it or one of its parents excludes."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    result = False
    for negate, regex in rules:
        if any(regex.match(p) for p in prefixes):
            result = not negate
    return result


def context(repo, out):
    repo, out = pathlib.Path(repo).resolve(), pathlib.Path(out)
    rules = ignore_rules(repo)
    included = []
    for path in sorted(repo.rglob("*")):
        rel = path.relative_to(repo).as_posix()
        if rel.startswith(".git/") or rel == ".git" or "/node_modules/" in f"/{rel}/" \
                or rel.startswith("target/"):
            continue  # not walked: huge, and .dockerignore must exclude them (checked below)
        if path.is_file() and not ignored(rules, rel):
            included.append(rel)
    problems = []
    workspace = [p.relative_to(repo).as_posix() for p in repo.glob("**/Cargo.toml")
                 if "target" not in p.parts and "node_modules" not in p.parts]
    must = ["Cargo.lock", "deploy/stub-workspace.sh", "crates/herald/src/main.rs",
            "crates/herald-redis/src/herald.lua"] + workspace
    for rel in must:
        if rel not in included:
            problems.append(f"{rel} is not in the build context")
    for rel in ["target/debug/herald", ".git/HEAD", "tests/node/node_modules/x", ".env",
                "deploy/compose/.env", "helm/herald/values.yaml"]:
        if not ignored(rules, rel):
            problems.append(f"{rel} would be sent in the build context")
    for rel in included:
        if fnmatch.fnmatch(rel, "*.rs") and not any(rel.startswith(w.rsplit("Cargo.toml")[0])
                                                    for w in workspace):
            problems.append(f"{rel}: Rust source outside every workspace member")
        dest = out / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo / rel, dest)
    size = sum((repo / r).stat().st_size for r in included)
    print(f"  build context: {len(included)} files, {size / 1e6:.1f} MB")
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


# ---- docker compose ----------------------------------------------------------------

def compose(compose_json, repo):
    config = json.load(open(compose_json))
    repo = pathlib.Path(repo).resolve()
    problems = []
    for name, service in config["services"].items():
        for volume in service.get("volumes", []):
            if volume.get("type") == "bind" and not pathlib.Path(volume["source"]).exists():
                problems.append(f"{name}: bind mount {volume['source']} does not exist")
        build = service.get("build")
        if build:
            ctx = pathlib.Path(build["context"])
            dockerfile = ctx / build.get("dockerfile", "Dockerfile")
            if not dockerfile.is_file():
                problems.append(f"{name}: {dockerfile} does not exist")
        for port in service.get("ports", []):
            if port.get("host_ip") not in ("127.0.0.1", "::1"):
                problems.append(f"{name}: port {port.get('published')} is published beyond localhost")
    print(f"  {len(config['services'])} services: {', '.join(sorted(config['services']))}")
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


def dockerfile_env(path):
    """HERALD_* settings of the Dockerfile's ENV instructions (NAME=VALUE form)."""
    text = pathlib.Path(path).read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.strip().startswith("ENV "):
            for name, value in re.findall(r"(HERALD_[A-Z0-9_]+)=(\S+)", line):
                env[name] = value
    return env


def compose_env(compose_json, service, dockerfile):
    config = json.load(open(compose_json))
    svc = config["services"][service]
    env = dockerfile_env(dockerfile)
    env.update({k: v for k, v in (svc.get("environment") or {}).items() if v is not None})
    mounts = {v["target"]: v["source"] for v in svc.get("volumes", []) if v.get("type") == "bind"}
    if "HERALD_CONFIG" in env:
        env["HERALD_CONFIG"] = mounts.get(env["HERALD_CONFIG"], env["HERALD_CONFIG"])
    # Files made from `configs: content`, written next to the compose JSON.
    work = pathlib.Path(compose_json).parent
    for ref in svc.get("configs") or []:
        content = config.get("configs", {}).get(ref["source"], {}).get("content")
        if content is None:
            continue
        local = work / f"compose-config-{ref['source']}"
        local.write_text(content)
        for name, value in env.items():
            if value == ref.get("target"):
                env[name] = str(local)
    for name, value in sorted(env.items()):
        print(f"{name}={value}")
    return 0


PLACEHOLDERS = {
    "HERALD_TOKEN_HMAC_SECRET": "placeholder-token-secret-for-validation-only",
    "HERALD_API_KEY": "placeholder-api-key",
    "HERALD_ADMIN_PASSWORD": "placeholder-admin-password",
    "HERALD_ADMIN_SECRET": "placeholder-admin-session-secret-for-validation",
    "HERALD_REDIS_URL": "redis://redis.invalid:6379",
    "HERALD_NODE_NAME": "herald-0",
}


def chart_env(env_json, toml_path):
    work = pathlib.Path(env_json).parent
    for entry in json.load(open(env_json)):
        name = entry["name"]
        if name == "HERALD_CONFIG":
            value = toml_path
        elif name.startswith("HERALD_REDIS_") and name.endswith("_FILE"):
            # Mounted from a Secret or ConfigMap: a placeholder file stands in.
            local = work / pathlib.Path(entry["value"]).name
            local.write_text("placeholder\n")
            value = str(local)
        elif entry.get("value") is not None:
            value = entry["value"]
        elif name in PLACEHOLDERS:
            value = PLACEHOLDERS[name]
        else:
            print(f"no placeholder for {name} (set from a Secret or field)", file=sys.stderr)
            return 1
        print(f"{name}={value}")
    return 0


# ---- grafana -----------------------------------------------------------------------

def grafana(repo, compose_json):
    repo = pathlib.Path(repo)
    base = repo / "deploy/grafana"
    problems = []
    datasources = yaml.safe_load(open(base / "provisioning/datasources/prometheus.yml"))
    uids = {d["uid"] for d in datasources["datasources"]}
    providers = yaml.safe_load(open(base / "provisioning/dashboards/herald.yml"))["providers"]
    grafana_svc = json.load(open(compose_json))["services"]["grafana"]
    mounts = {v["target"]: pathlib.Path(v["source"]) for v in grafana_svc["volumes"]
              if v.get("type") == "bind"}
    for provider in providers:
        path = provider["options"]["path"]
        if path not in mounts:
            problems.append(f"provider {provider['name']}: {path} is not mounted in compose")
    seen = set()
    for file in sorted((base / "dashboards").glob("*.json")):
        dashboard = json.load(open(file))
        if dashboard["uid"] in seen:
            problems.append(f"{file.name}: duplicate uid {dashboard['uid']}")
        seen.add(dashboard["uid"])
        variables = {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}
        ds_var = variables.get("datasource", {})
        if ds_var.get("current", {}).get("value") not in uids:
            problems.append(f"{file.name}: the datasource variable's default is not a provisioned uid")
        ids = set()

        def walk(node, title=""):
            if isinstance(node, dict):
                title = node.get("title", title)
                if "id" in node and node.get("type"):
                    if node["id"] in ids:
                        problems.append(f"{file.name}: duplicate panel id {node['id']}")
                    ids.add(node["id"])
                ds = node.get("datasource")
                if isinstance(ds, dict) and ds.get("uid") not in uids | {"${datasource}"}:
                    problems.append(f"{file.name}: {title!r} uses datasource {ds.get('uid')!r}")
                for value in node.values():
                    walk(value, title)
            elif isinstance(node, list):
                for value in node:
                    walk(value, title)

        walk(dashboard.get("panels", []))
        print(f"  {file.name}: {len(ids)} panels, datasource uid(s) {sorted(uids)}")
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


# ---- the chart's config schema against Herald's settings ---------------------------

# Settings the chart sets through the environment or a Secret, never through `config`
# (the HMAC secret and the API key come from auth's Secret through HERALD_* variables,
# so their *_file variants are not used either).
NOT_IN_CHART_CONFIG = {"": {"listen", "node_name"}, "token": {"hmac_secret", "hmac_secret_file"},
                       "api": {"key", "key_file"}, "redis": {"url"},
                       "admin": {"password", "secret"}}
SECTIONS = ["", "token", "api", "client", "client.limits", "client.limits.connections",
            "client.limits.connections_per_ip", "client.limits.connections_per_user",
            "client.limits.connect_rate", "client.limits.connect_rate_per_ip",
            "client.rate_limits", "shutdown", "redis", "admin", "namespaces.probe",
            "namespaces.probe.rate_limits"]


def herald_fields(herald, section):
    """The keys `herald checkconfig` accepts in a section, from its own error message
    for a key it does not know."""
    header = f"[{section}]\n" if section else ""
    with tempfile.NamedTemporaryFile("w", suffix=".toml") as f:
        f.write(f"{header}no_such_setting = 1\n")
        f.flush()
        out = subprocess.run([herald, "checkconfig", "--config", f.name], capture_output=True,
                             text=True, env={"PATH": os.environ.get("PATH", "")})
    m = re.search(r"unknown field `no_such_setting`, expected (.*)", out.stderr)
    if not m:
        raise SystemExit(f"cannot read the [{section}] settings from herald: {out.stderr.strip()}")
    return set(re.findall(r"`([a-z_]+)`", m.group(1)))


def schema_fields(schema, section):
    node = schema["properties"]["config"]
    parts = section.split(".") if section else []
    if parts[:1] == ["namespaces"]:
        node = node["properties"]["namespaces"]["additionalProperties"]
        parts = parts[2:]  # namespaces.<any name>
    for part in parts:
        node = node["properties"][part]
    return set(node["properties"])


def settings(herald, schema_path):
    schema = json.load(open(schema_path))
    problems = []
    for section in SECTIONS:
        have = herald_fields(herald, section)
        chart = schema_fields(schema, section)
        expected = have - NOT_IN_CHART_CONFIG.get(section, set())
        name = f"[{section}]" if section else "top level"
        for key in sorted(expected - chart):
            problems.append(f"{name}: herald accepts `{key}`, the chart's schema does not "
                            "(add it to config in values.schema.json and values.yaml)")
        for key in sorted(chart - have):
            problems.append(f"{name}: the chart's schema allows `{key}`, herald does not know it")
        print(f"  {name}: {len(chart)} settings in the chart schema, {len(have)} in herald")
    for p in problems:
        print(f"  {p}")
    return 1 if problems else 0


def compose_redis_user(compose_json, user):
    command = json.load(open(compose_json))["services"]["redis"]["command"]
    for i, arg in enumerate(command):
        if arg == "--user" and i + 1 < len(command) and command[i + 1] == user:
            rest = command[i + 1:]
            end = next((j for j, a in enumerate(rest) if a.startswith("--")), len(rest))
            for a in rest[:end]:
                print(a)
            return 0
    print(f"the compose redis has no --user {user}", file=sys.stderr)
    return 1


def main(argv):
    commands = {
        "context": (context, 2), "compose": (compose, 2), "compose-env": (compose_env, 3),
        "chart-env": (chart_env, 2), "grafana": (grafana, 2), "settings": (settings, 2),
        "compose-redis-user": (compose_redis_user, 2),
    }
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 != commands[argv[1]][1]:
        sys.exit(__doc__)
    return commands[argv[1]][0](*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
