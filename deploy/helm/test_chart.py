#!/usr/bin/env python3
"""Tests the wharf Helm chart without a Kubernetes cluster (none can run here):

1. `helm lint --strict` through the real Helm library (helm-python-sdk);
2. renders value sets (3 nodes on S3 = defaults; a single node on disk; every option on),
   validates every object against Kubernetes 1.29 and 1.33 schemas (kubernetes-validate
   --strict) and every wharf.toml key against deploy/wharf.example.toml;
3. checkov over the rendered manifests, every skipped check explained in .checkov.yaml;
4. behaviour: the rendered StatefulSet's containers (image, args, env, config, security
   context) run on a Docker network whose aliases stand in for the headless service's DNS
   names, in order, against an S3 server and an upstream registry; they form one cluster and a
   herd of clients over the three replicas makes one upstream fetch.

Usage: test_chart.py [--no-behaviour]; needs the venv test.sh makes (helm-python-sdk,
kubernetes-validate, pyyaml, checkov) and, for the behaviour test, docker, skopeo and the
images of deploy/compose/build-images.sh --with-upstream.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request

import helm_python
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
CHART = os.path.join(HERE, "wharf")
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
VENV_BIN = os.path.dirname(sys.executable)


def say(msg):
    print(f"chart: {msg}", flush=True)


def render(values, name="wharf", namespace="default"):
    chart = helm_python.Chart.load(CHART)
    out = chart.render(values=values, name=name, namespace=namespace)
    docs = []
    for path, text in sorted(out.items()):
        if path.endswith(".txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


def key_paths(table, prefix=""):
    out = set()
    for k, v in table.items():
        path = f"{prefix}.{k}" if prefix else k
        out.add(path)
        if isinstance(v, dict):
            out |= key_paths(v, path)
        elif isinstance(v, list) and v and isinstance(v[0], dict):
            for item in v:
                out |= key_paths(item, path)
    return out


REFERENCE = key_paths(tomllib.load(open(os.path.join(ROOT, "deploy", "wharf.example.toml"), "rb")))

VALUE_SETS = {
    "3 nodes on S3 (defaults)": {},
    "single node on disk": {"replicaCount": 1, "s3": {"enabled": False},
                            "persistence": {"size": "50Gi"}},
    "every option": {
        "s3": {"existingSecret": "wharf-s3", "endpoint": "https://s3.example.com",
               "pathStyle": True, "redirectBlobs": True, "prefix": "mirror"},
        "upstreams": [
            {"name": "docker.io", "url": "https://registry-1.docker.io", "default": True,
             "username": "robot", "existingSecret": "hub-token"},
            {"name": "ghcr.io", "url": "https://wharf-central.example.com", "parent": True,
             "fallbackUrls": ["https://wharf-us.example.com", "https://ghcr.io"],
             "prefixes": ["gh"], "hosts": ["ghcr.mirror.example.com"]},
            {"name": "registry.corp.example", "url": "https://registry.corp.example",
             "credentials": "client", "loginVerdictSecs": 30,
             "hosts": ["corp.mirror.example.com"]},
        ],
        "hotCache": {"maxSizeMib": 10240},
        "fetch": {"chunkMib": 32, "parallel": 8, "upstreamConnections": 64},
        "tls": {"enabled": True, "existingSecret": "wharf-tls"},
        "auth": {"htpasswd": {"existingSecret": "wharf-htpasswd"}},
        "cluster": {"existingSecret": "wharf-cluster-key"},
        "extraConfig": "[[access]]\nrepositories = [\"**\"]\nusers = [\"*\"]\n",
        "ingress": {"enabled": True, "className": "nginx",
                    "tls": [{"secretName": "mirror-tls", "hosts": ["registry-mirror.example.com"]}]},
        "httpRoute": {"enabled": True, "parentRefs": [{"name": "gateway"}],
                      "hostnames": ["registry-mirror.example.com"]},
        "metrics": {"serviceMonitor": {"enabled": True}},
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/wharf"}},
    },
}


def static_checks(workdir):
    lint = helm_python.lint(CHART, strict=True)
    problems = [m for m in lint["messages"] if m["severity"] >= 1] + list(lint["errors"])
    assert not problems, f"helm lint --strict: {problems}"
    say("helm lint --strict: no warning")
    rendered_files = []
    for label, values in VALUE_SETS.items():
        docs = render(values)
        path = os.path.join(workdir, label.replace(" ", "-").replace("(", "").replace(")", "") + ".yaml")
        with open(path, "w") as f:
            yaml.safe_dump_all(docs, f)
        rendered_files.append(path)
        # Custom resources (ServiceMonitor, HTTPRoute) have no built-in schema.
        core = [d for d in docs if d["apiVersion"] not in ("monitoring.coreos.com/v1", "gateway.networking.k8s.io/v1")]
        core_path = path + ".core"
        with open(core_path, "w") as f:
            yaml.safe_dump_all(core, f)
        for version in ("1.29.0", "1.33.0"):
            run([os.path.join(VENV_BIN, "kubernetes-validate"), "--strict", "-k", version, "--quiet", core_path])
        config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["wharf.toml"]
        unknown = key_paths(tomllib.loads(config)) - REFERENCE
        assert not unknown, f"{label}: wharf.toml keys not in the reference: {unknown}"
        upstream_hosts = [h for u in values.get("upstreams", []) for h in u.get("hosts", [])]
        if upstream_hosts:
            parsed = tomllib.loads(config)["upstream"]
            assert [h for u in parsed for h in u.get("hosts", [])] == upstream_hosts, config
            ingress = next(d for d in docs if d["kind"] == "Ingress")
            route = next(d for d in docs if d["kind"] == "HTTPRoute")
            for host in upstream_hosts:
                assert host in [r["host"] for r in ingress["spec"]["rules"]], ingress
                assert host in route["spec"]["hostnames"], route
            say(f"{label}: host routes {upstream_hosts} in wharf.toml, the Ingress and the HTTPRoute")
        for given, written in zip(values.get("upstreams", []), tomllib.loads(config).get("upstream", [])):
            if given.get("credentials") == "client":
                assert written.get("credentials") == "client", config
                assert written.get("login_verdict_secs") == given.get("loginVerdictSecs", 60), config
                assert "username" not in written and "password_file" not in written, config
                say(f"{label}: {given['name']} takes each client's own login")
        fetch = tomllib.loads(config)["fetch"]
        given_fetch = {"chunkMib": 16, "parallel": 4, "upstreamConnections": 32} | values.get("fetch", {})
        assert fetch == {"chunk_mib": given_fetch["chunkMib"], "parallel": given_fetch["parallel"],
                         "upstream_connections": given_fetch["upstreamConnections"]}, config
        kinds = sorted(d["kind"] for d in docs)
        say(f"{label}: {len(docs)} manifests valid on Kubernetes 1.29 and 1.33 ({', '.join(kinds)}); wharf.toml keys known")
    checkov = os.path.expanduser("~/.cache/wharf-test/checkov/bin/checkov")
    out = run([checkov, "--quiet", "--compact", "--skip-download", "--framework", "kubernetes",
               "--config-file", os.path.join(HERE, ".checkov.yaml")] + sum((["-f", p] for p in rendered_files), []),
              check=False)
    summary = [l for l in out.splitlines() if "Passed checks" in l]
    assert summary and " Failed checks: 0," in summary[0], f"checkov:\n{out}"
    say(f"checkov (kubernetes): {summary[0].strip()}")


def run(cmd, check=True, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr


def http(url, timeout=20):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read()


def behaviour():
    """The rendered pods as containers: names, args, env, config and security as rendered."""
    ns, net = "default", "wharf-chart-test"
    docs = render({"image": {"tag": "latest"}, "s3": {"bucket": "wharf", "endpoint": "http://s3:9000",
                                                         "pathStyle": True, "existingSecret": "wharf-s3"},
                   "upstreams": [{"name": "upstream", "url": "http://upstream:5000", "default": True}]})
    sts = next(d for d in docs if d["kind"] == "StatefulSet")
    config = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["wharf.toml"]
    peers = sts["spec"]["serviceName"]
    pod = sts["spec"]["template"]["spec"]
    container = pod["containers"][0]
    cluster_secret = next(d for d in docs if d["kind"] == "Secret" and d["metadata"]["name"].endswith("-cluster"))
    import base64
    cluster_key = base64.b64decode(cluster_secret["data"]["cluster-key"]).decode()
    assert len(cluster_key) >= 32, "the chart's cluster key"
    secret = {"AWS_ACCESS_KEY_ID": "wharf", "AWS_SECRET_ACCESS_KEY": "wharf-chart-secret",
              "cluster-key": cluster_key}
    names = []
    tmp = tempfile.mkdtemp()
    cfg = os.path.join(tmp, "wharf.toml")
    with open(cfg, "w") as f:
        f.write(config)
    os.chmod(cfg, 0o644)

    def docker(*args, check=True):
        return run(["docker", *args], check=check)

    def cleanup():
        for n in names + ["wharf-chart-s3", "wharf-chart-upstream"]:
            docker("rm", "-f", "-v", n, check=False)
        docker("network", "rm", net, check=False)

    cleanup()
    try:
        docker("network", "create", net)
        docker("run", "-d", "--name", "wharf-chart-s3", "--network", net, "--network-alias", "s3",
               "wharf-s3s-fs:latest", "--host", "0.0.0.0", "--port", "9000", "--access-key", "wharf",
               "--secret-key", "wharf-chart-secret", "/data")
        docker("run", "-d", "--name", "wharf-chart-upstream", "--network", net, "--network-alias", "upstream",
               "-p", "127.0.0.1::5000", "-v", f"{os.path.join(ROOT, 'deploy/compose/smoke-registry.yml')}:/etc/r.yml:ro",
               "wharf-test-registry:latest", "docker-registry", "serve", "/etc/r.yml")
        uport = docker("port", "wharf-chart-upstream", "5000").split(":")[-1].strip()
        wait(lambda: http(f"http://127.0.0.1:{uport}/v2/")[0] == 200, "the upstream registry")
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", "docker-daemon:wharf:latest",
             f"docker://127.0.0.1:{uport}/team/app:v1"])
        manifest = json.loads(run(["skopeo", "inspect", "--raw", "--tls-verify=false",
                                   f"docker://127.0.0.1:{uport}/team/app:v1"]))
        layer = max(manifest["layers"], key=lambda l: l["size"])["digest"]

        sc = container["securityContext"]
        psc = pod["securityContext"]
        ports = {}
        for i in range(sts["spec"]["replicas"]):
            name = f"{sts['metadata']['name']}-{i}"
            names.append(name)
            env = {}
            for e in container["env"]:
                if "value" in e:
                    env[e["name"]] = e["value"]
                elif "fieldRef" in e.get("valueFrom", {}):
                    env[e["name"]] = name
                else:
                    env[e["name"]] = secret[e["valueFrom"]["secretKeyRef"]["key"]]
            args = [a.replace("$(POD_NAME)", name) for a in container["args"]]
            cmd = ["run", "-d", "--name", name, "--hostname", name, "--network", net,
                   "--network-alias", f"{name}.{peers}.{ns}.svc.cluster.local",
                   "--user", f"{psc['runAsUser']}:{psc['runAsGroup']}",
                   "--group-add", str(psc["fsGroup"]), "--cap-drop", "ALL",
                   "--security-opt", "no-new-privileges", "--tmpfs", "/tmp",
                   "-v", f"{cfg}:/etc/wharf/wharf.toml:ro", "-v", "/data",
                   "-p", "127.0.0.1::5000", "-p", "127.0.0.1::9090"]
            if sc.get("readOnlyRootFilesystem"):
                cmd.append("--read-only")
            for k, v in env.items():
                cmd += ["-e", f"{k}={v}"]
            cmd += [f"{sts['spec']['template']['spec']['containers'][0]['image']}"] + args
            docker(*cmd)
            port = docker("port", name, "5000").split(":")[-1].strip()
            mport = docker("port", name, "9090").split(":")[-1].strip()
            ports[name] = port
            probe = container["readinessProbe"]["httpGet"]["path"]
            # OrderedReady: the next pod starts once this one is ready.
            wait(lambda: http(f"http://127.0.0.1:{mport}{probe}")[0] == 200, f"{name} ready",
                 logs=name)
        say(f"{len(names)} pods of the rendered StatefulSet ready, in order")

        def members():
            out = docker("exec", names[0], "wharf", "cluster", "status", "--node", "127.0.0.1:6000", "--json", check=False)
            try:
                s = json.loads(out[out.index("{"):])
            except ValueError:
                return 0, None
            return len(s["members"]), s["leader_id"]

        wait(lambda: members()[0] == 3 and members()[1], "one cluster of 3 members", logs=names[0])
        assert "bootstrapping a new cluster" in docker("logs", names[0]), "replica 0 founds the cluster"
        for other in names[1:]:
            log = docker("logs", other)
            assert "joined the cluster" in log and "bootstrapping" not in log, f"{other} joins"
        say("one cluster of 3 members (replica 0 started it, the others joined)")
        for wrong in ("", "x" * 40):
            out = docker("exec", "-e", f"WHARF_CLUSTER__SECRET={wrong}", names[0], "wharf", "cluster",
                         "status", "--node", "127.0.0.1:6000", "--json", check=False)
            assert '"members"' not in out, "the cluster port answered a caller without the key"
        say("the cluster port refuses callers without the chart's key")

        results = []

        def pull(port):
            try:
                status, body = http(f"http://127.0.0.1:{port}/v2/team/app/blobs/{layer}", timeout=120)
                results.append(status == 200 and len(body) > 0)
            except Exception as e:  # noqa: BLE001 - reported below
                results.append(f"{e}")

        threads = [threading.Thread(target=pull, args=(ports[n],)) for n in names for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(r is True for r in results), f"herd results: {results}"
        time.sleep(1)
        logs = docker("logs", "wharf-chart-upstream")
        fetches = logs.count(f"\"GET /v2/team/app/blobs/{layer} HTTP")
        assert fetches == 1, f"{fetches} upstream fetches of the blob"
        say(f"a herd of {len(threads)} over {len(names)} replicas: 1 upstream fetch")
    finally:
        cleanup()


def wait(check, what, timeout=90, logs=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    extra = run(["docker", "logs", "--tail", "40", logs], check=False) if logs else ""
    raise AssertionError(f"timed out waiting for {what}\n{extra}")


def main():
    with tempfile.TemporaryDirectory() as workdir:
        static_checks(workdir)
    if "--no-behaviour" not in sys.argv:
        behaviour()
    say("passed")


if __name__ == "__main__":
    main()
