#!/usr/bin/env bash
# Tests the Terraform module as far as this machine allows (no AWS provider can be downloaded
# here, so no plan or apply of the root module): fmt, validate + terraform test of the
# provider-free logic submodule, the rendered boot script's syntax, checkov over the module
# (every skipped check explained inline), and structural assertions with python-hcl2.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
module=$here/aws
venv=${XDG_CACHE_HOME:-$HOME/.cache}/wharf-test/checkov
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1
say() { echo "terraform: $*"; }

terraform fmt -check -recursive "$module" >/dev/null || { terraform fmt -check -recursive -diff "$module"; exit 1; }
say "fmt -check: clean"

logic=$module/modules/logic
rm -rf "$logic/.terraform" "$logic/.terraform.lock.hcl"
terraform -chdir="$logic" init -backend=false -input=false >/dev/null
terraform -chdir="$logic" validate -no-color | grep -q "The configuration is valid" \
  && say "modules/logic: validate: the configuration is valid"
out=$(terraform -chdir="$logic" test -no-color)
echo "$out" | grep -q "0 failed" || { echo "$out"; exit 1; }
say "modules/logic: test: $(echo "$out" | grep -o '[0-9]* passed, [0-9]* failed')"

# The boot script as the test variables render it parses as bash.
script=$(mktemp)
terraform -chdir="$logic" console -var-file=<(cat <<'VARS'
name        = "mirror"
region      = "eu-west-1"
bucket_name = "acme-wharf-cache"
image       = "wharf:0.1.0"
asg_name    = "mirror-nodes"
upstreams = [{ name = "docker.io", url = "https://registry-1.docker.io", default = true,
  username = "acme", password_secret_arn = "arn:aws:secretsmanager:eu-west-1:1:secret:x" }]
ecr_repository_arn = "arn:aws:ecr:eu-west-1:1:repository/wharf"
cluster_secret_arn = "arn:aws:secretsmanager:eu-west-1:1:secret:cluster"
VARS
) <<<'nonsensitive(local.user_data)' | python3 -c 'import json,sys; t=sys.stdin.read().strip(); print(json.loads(t) if t.startswith("\"") else t.removeprefix("<<EOT").removesuffix("EOT"))' >"$script"
bash -n "$script" && say "the rendered boot script parses (bash -n)"
rm -f "$script" "$logic/.terraform.lock.hcl"; rm -rf "$logic/.terraform"

"$venv/bin/python" "$here/test_structure.py" "$module"

out=$("$venv/bin/checkov" --quiet --compact --skip-download --framework terraform -d "$module" --skip-path examples 2>&1 || true)
summary=$(echo "$out" | grep "Passed checks" | head -n1)
echo "$summary" | grep -q " Failed checks: 0," || { echo "$out" | tail -n 60; say "checkov: FAILED"; exit 1; }
say "checkov (terraform): $summary"
