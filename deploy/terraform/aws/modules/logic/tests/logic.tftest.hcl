# Offline tests of the module's logic: no provider, no AWS account.

variables {
  name        = "mirror"
  region      = "eu-west-1"
  bucket_name = "acme-wharf-cache"
  image       = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/wharf:0.1.0"
  asg_name    = "mirror-nodes"
  upstreams = [
    { name = "docker.io", url = "https://registry-1.docker.io", default = true,
    username = "acme", password_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hub-AbCdEf" },
    { name = "ghcr.io", url = "https://ghcr.io", prefixes = ["gh"], hosts = ["ghcr.mirror.example.com"] },
    { name = "registry.corp.example", url = "https://registry.corp.example", credentials = "client", login_verdict_secs = 30 },
  ]
  ecr_repository_arn = "arn:aws:ecr:eu-west-1:123456789012:repository/wharf"
  cluster_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mirror-cluster-key-AbCdEf"
}

run "the_policy_is_least_privilege" {
  command = plan
  assert {
    condition = alltrue([
      for s in jsondecode(output.instance_policy_json).Statement :
      !contains(s.Resource, "*") if anytrue([for a in s.Action : startswith(a, "s3:") || startswith(a, "secretsmanager:")])
    ])
    error_message = "S3 and Secrets Manager actions must name their resources."
  }
  assert {
    condition     = contains(flatten([for s in jsondecode(output.instance_policy_json).Statement : s.Resource]), "arn:aws:s3:::acme-wharf-cache/*")
    error_message = "the nodes must reach the cache's objects."
  }
  assert {
    condition     = contains(flatten([for s in jsondecode(output.instance_policy_json).Statement : s.Resource]), "arn:aws:secretsmanager:eu-west-1:123456789012:secret:hub-AbCdEf")
    error_message = "the nodes must read the upstream's secret, and only it."
  }
  assert {
    condition     = !strcontains(output.instance_policy_json, "s3:*") && !strcontains(output.instance_policy_json, "\"Action\":\"*\"")
    error_message = "no wildcard actions."
  }
}

run "a_prefix_narrows_the_policy" {
  command = plan
  variables {
    bucket_prefix = "mirror"
  }
  assert {
    condition     = output.storage == "s3://acme-wharf-cache/mirror"
    error_message = "storage names the prefix."
  }
  assert {
    condition     = strcontains(output.instance_policy_json, "arn:aws:s3:::acme-wharf-cache/mirror/*") && strcontains(output.instance_policy_json, "s3:prefix")
    error_message = "objects and listing are limited to the prefix."
  }
}

run "the_boot_script_configures_a_cluster_member" {
  command = plan
  assert {
    condition     = strcontains(output.user_data, "Name=tag:aws:autoscaling:groupName,Values=mirror-nodes")
    error_message = "peers are found by the group's tag."
  }
  assert {
    condition     = strcontains(output.user_data, "WHARF_CLUSTER__JOIN=$join") && strcontains(output.user_data, "sort |")
    error_message = "every member gets the same ordered join list."
  }
  assert {
    condition     = strcontains(output.user_data, "secretsmanager get-secret-value") && strcontains(output.user_data, "chmod 0400 '/etc/wharf/secrets/docker.io'")
    error_message = "the upstream password is read from Secrets Manager into a private file."
  }
  assert {
    condition     = strcontains(output.wharf_toml, "password_file = \"/etc/wharf/secrets/docker.io\"") && !strcontains(output.wharf_toml, "password =")
    error_message = "wharf.toml names the secret file, never a password."
  }
  assert {
    condition     = strcontains(output.user_data, "aws ecr get-login-password")
    error_message = "an ECR image is pulled after logging in."
  }
  assert {
    condition     = strcontains(output.user_data, "chmod 0400 '/etc/wharf/secrets/cluster.key'") && strcontains(output.wharf_toml, "secret_file = \"/etc/wharf/secrets/cluster.key\"") && strcontains(output.wharf_toml, "dead_member_timeout_secs = 600") && strcontains(output.wharf_toml, "max_voters = 5") && !strcontains(output.user_data, "INSECURE")
    error_message = "the cluster key comes from Secrets Manager into a private file that wharf.toml names; the port is never left open."
  }
  assert {
    condition     = contains(flatten([for s in jsondecode(output.instance_policy_json).Statement : s.Resource]), "arn:aws:secretsmanager:eu-west-1:123456789012:secret:mirror-cluster-key-AbCdEf")
    error_message = "the nodes must read the cluster key."
  }
}

run "exactly_one_default_upstream" {
  command = plan
  variables {
    upstreams = [
      { name = "docker.io", url = "https://registry-1.docker.io" },
      { name = "ghcr.io", url = "https://ghcr.io" },
    ]
  }
  expect_failures = [var.upstreams]
}

run "credentials_come_in_pairs" {
  command = plan
  variables {
    upstreams = [{ name = "docker.io", url = "https://registry-1.docker.io", default = true, username = "acme" }]
  }
  expect_failures = [var.upstreams]
}

run "names_are_checked" {
  command = plan
  variables {
    name = "Mirror_1"
  }
  expect_failures = [var.name]
}

run "routes_without_ns_reach_the_config" {
  command = plan
  assert {
    condition     = strcontains(output.user_data, "prefixes = [\"gh\"]") && strcontains(output.user_data, "hosts = [\"ghcr.mirror.example.com\"]")
    error_message = "an upstream's prefixes and hosts are written into wharf.toml."
  }
}

run "client_logins_reach_the_config" {
  command = plan
  assert {
    condition     = strcontains(output.user_data, "credentials = \"client\"\nlogin_verdict_secs = 30")
    error_message = "an upstream taking each client's own login is written into wharf.toml."
  }
}

run "client_logins_take_no_shared_account" {
  command = plan
  variables {
    upstreams = [
      { name = "docker.io", url = "https://registry-1.docker.io", default = true },
      { name = "corp", url = "https://registry.corp.example", credentials = "client",
      username = "robot", password_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:corp-AbCdEf" },
    ]
  }
  expect_failures = [var.upstreams]
}
