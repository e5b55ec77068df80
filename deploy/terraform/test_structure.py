#!/usr/bin/env python3
"""Structural assertions on the Terraform module (python-hcl2): what a reviewer checks by eye,
checked on every run: every resource and input described or listed, the bucket private and
encrypted with stale uploads aborted and no age expiry, the cluster port open to the nodes'
own group only, IMDSv2, health checks on /health, outputs documented in README.md.
Uses the hcl2 module checkov ships (bc-python-hcl2), which wraps attribute values in lists;
`one` unwraps them, so python-hcl2's plain values work too.
"""
import os
import sys

import hcl2

module = sys.argv[1]


def one(value):
    """An attribute's value: bc-python-hcl2 wraps it in a one-element list."""
    return value[0] if isinstance(value, list) and len(value) == 1 else value


def blocks(value):
    """A nested block's bodies, as a list."""
    return value if isinstance(value, list) else [value]


def load(name):
    with open(os.path.join(module, name)) as f:
        return hcl2.load(f)


main, variables, outputs = load("main.tf"), load("variables.tf"), load("outputs.tf")
readme = open(os.path.join(module, "README.md")).read()

resources = {}
for block in main.get("resource", []):
    for kind, named in block.items():
        for name, body in named.items():
            resources[f"{kind}.{name}"] = body

inputs = {name: body for block in variables["variable"] for name, body in block.items()}
outs = {name: body for block in outputs["output"] for name, body in block.items()}
for name, body in inputs.items():
    assert one(body.get("description")), f"variable {name} has no description"
    assert f"`{name}`" in readme, f"variable {name} is not in README.md"
for name, body in outs.items():
    assert one(body.get("description")), f"output {name} has no description"
    assert f"`{name}`" in readme, f"output {name} is not in README.md"

pab = resources["aws_s3_bucket_public_access_block.cache"]
assert all(one(pab[k]) is True for k in ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"))
assert "aws_s3_bucket_server_side_encryption_configuration.cache" in resources
lifecycle = resources["aws_s3_bucket_lifecycle_configuration.cache"]
rules = blocks(lifecycle["rule"])
assert any(r.get("abort_incomplete_multipart_upload") for r in rules), "stale multipart uploads are aborted"
assert not any(r.get("expiration") for r in rules), "no age expiry: wharf's eviction decides"

cluster = resources["aws_vpc_security_group_ingress_rule.cluster"]
assert one(cluster["from_port"]) == 6000 and "cidr_ipv4" not in cluster
assert "aws_security_group.node.id" in str(one(cluster["referenced_security_group_id"]))
for name, rule in resources.items():
    if name.startswith("aws_vpc_security_group_ingress_rule.") and "cidr_ipv4" in rule:
        assert one(rule.get("from_port")) != 6000, f"{name} opens the cluster port to a CIDR"

key = resources["aws_secretsmanager_secret_version.cluster"]
assert "secret_string" in str(blocks(key["lifecycle"])[0]["ignore_changes"]), "the cluster key is made once"
assert "aws_secretsmanager_secret.cluster" in resources

lt = resources["aws_launch_template.node"]
assert one(blocks(lt["metadata_options"])[0]["http_tokens"]) == "required", "IMDSv2 only"
ebs = blocks(blocks(lt["block_device_mappings"])[0]["ebs"])[0]
assert one(ebs["encrypted"]) is True
tg = resources["aws_lb_target_group.registry"]
assert one(blocks(tg["health_check"])[0]["path"]) == "/health"
asg = resources["aws_autoscaling_group.nodes"]
assert one(asg["health_check_type"]) == "ELB"

print(f"terraform: structure: {len(resources)} resources, {len(inputs)} inputs and {len(outs)} outputs "
      "described and listed in README.md; bucket private, encrypted, aborting stale uploads; "
      "cluster port open to the group only, cluster key in Secrets Manager; IMDSv2; /health checks")
