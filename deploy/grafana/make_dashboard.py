#!/usr/bin/env python3
"""Writes wharf.json, the Grafana dashboard over wharf's metrics (run it after editing panels).

Import it in Grafana (Dashboards > Import) and pick the Prometheus data source that scrapes
wharf; nodes/node/tests/observe.rs checks that every metric it queries exists in /metrics.
"""
import json
import os

DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}


def panel(pid, title, exprs, x, y, w=12, h=8, kind="timeseries", unit=None, desc=""):
    targets = [
        {"datasource": DS, "expr": e, "legendFormat": legend, "refId": chr(65 + i)}
        for i, (e, legend) in enumerate(exprs)
    ]
    p = {
        "id": pid,
        "type": kind,
        "title": title,
        "description": desc,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "targets": targets,
        "fieldConfig": {"defaults": {}, "overrides": []},
        "options": {},
    }
    if unit:
        p["fieldConfig"]["defaults"]["unit"] = unit
    return p


R = "[$__rate_interval]"
panels = [
    panel(1, "Cache hit ratio",
          [(f'sum(rate(wharf_cache_requests_total{{result=~"hit|stale"}}{R})) / sum(rate(wharf_cache_requests_total{R}))', "hit ratio")],
          0, 0, 6, 6, "stat", "percentunit", "Content requests answered from the cache"),
    panel(2, "Bytes served from the cache (upstream traffic saved)",
          [(f'sum(increase(wharf_cache_served_bytes_total{{result=~"hit|stale"}}[24h]))', "last 24 h")],
          6, 0, 6, 6, "stat", "bytes"),
    panel(3, "Store size",
          [("sum(max by (instance) (wharf_store_bytes))", "bytes")], 12, 0, 6, 6, "stat", "bytes"),
    panel(4, "Docker Hub pull allowance left",
          [("min by (upstream) (wharf_upstream_ratelimit_remaining / wharf_upstream_ratelimit_limit)", "{{upstream}}")],
          18, 0, 6, 6, "stat", "percentunit", "ratelimit-remaining / ratelimit-limit as the upstream announced them"),
    panel(5, "Served bytes by source",
          [(f"sum by (result) (rate(wharf_cache_served_bytes_total{R}))", "{{result}}")],
          0, 6, 12, 8, unit="Bps"),
    panel(6, "Cache results",
          [(f"sum by (type, result) (rate(wharf_cache_requests_total{R}))", "{{type}} {{result}}")],
          12, 6, 12, 8, unit="reqps"),
    panel(7, "Upstream requests by answer",
          [(f"sum by (upstream, code) (rate(wharf_upstream_requests_total{R}))", "{{upstream}} {{code}}"),
           (f"sum by (upstream) (rate(wharf_upstream_throttled_total{R}))", "{{upstream}} throttled (429)"),
           (f"sum by (upstream) (rate(wharf_upstream_retries_total{R}))", "{{upstream}} retries")],
          0, 14, 12, 8, unit="reqps"),
    panel(8, "Upstream bytes and latency (p95)",
          [(f"sum by (upstream) (rate(wharf_upstream_bytes_total{R}))", "{{upstream}} bytes/s"),
           (f"histogram_quantile(0.95, sum by (le, upstream) (rate(wharf_upstream_request_duration_seconds_bucket{R})))", "{{upstream}} p95 s")],
          12, 14, 12, 8),
    panel(9, "Request latency to first byte",
          [(f"histogram_quantile({q}, sum by (le, route) (rate(wharf_http_request_duration_seconds_bucket{R})))", f"{{{{route}}}} p{int(q*100)}")
           for q in (0.5, 0.95, 0.99)],
          0, 22, 12, 8, unit="s"),
    panel(10, "Requests by route and status",
          [(f"sum by (route, code) (rate(wharf_http_requests_total{R}))", "{{route}} {{code}}"),
           ("sum(wharf_http_in_flight_requests)", "in flight")],
          12, 22, 12, 8, unit="reqps"),
    panel(11, "Downloads in flight and waiting clients",
          [("sum(wharf_downloads_in_flight)", "downloads"), ("sum(wharf_download_waiters)", "waiting clients"),
           (f"sum by (reason) (rate(wharf_download_failures_total{R}))", "failures {{reason}}")],
          0, 30, 12, 8),
    panel(12, "Store operations",
          [(f"histogram_quantile(0.95, sum by (le, op) (rate(wharf_store_operation_duration_seconds_bucket{R})))", "{{op}} p95"),
           (f"sum(rate(wharf_store_errors_total{R}))", "errors/s"), ("min(wharf_store_up)", "store up")],
          12, 30, 12, 8),
    panel(13, "Cluster",
          [("max(wharf_cluster_members)", "members"), ("sum(wharf_cluster_is_leader)", "leaders"),
           ("max(wharf_cluster_term)", "term"), ("sum(wharf_cluster_leases_held)", "leases held"),
           (f"sum(rate(wharf_cluster_fallbacks_total{R}))", "fallbacks/s"),
           (f"sum(increase(wharf_cluster_members_removed_total{R}))", "dead members removed"),
           (f"sum(increase(wharf_cluster_members_promoted_total{R}))", "learners promoted"),
           (f"histogram_quantile(0.99, sum by (le) (rate(wharf_cluster_raft_rtt_seconds_bucket{R})))", "Raft round trip p99 s")],
          0, 38, 12, 8),
    panel(14, "Cluster coordination",
          [(f"sum by (result) (rate(wharf_cluster_lease_requests_total{R}))", "lease {{result}}"),
           (f"sum(rate(wharf_cluster_peer_bytes_total{R}))", "peer bytes/s"),
           (f"sum(rate(wharf_upstream_resumes_total{R}))", "resumed downloads/s"),
           (f"sum(rate(wharf_evicted_bytes_total{R}))", "evicted bytes/s")],
          12, 38, 12, 8),
    panel(15, "Versions", [("count by (version, commit) (wharf_build_info)", "{{version}} {{commit}}")],
          0, 46, 24, 4, "table"),
]

dashboard = {
    "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                  "pluginId": "prometheus", "pluginName": "Prometheus"}],
    "title": "wharf",
    "uid": "wharf-mirror",
    "tags": ["wharf", "registry"],
    "timezone": "browser",
    "schemaVersion": 39,
    "version": 1,
    "refresh": "30s",
    "time": {"from": "now-6h", "to": "now"},
    "templating": {"list": []},
    "panels": panels,
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wharf.json")
with open(out, "w") as f:
    json.dump(dashboard, f, indent=2)
    f.write("\n")
