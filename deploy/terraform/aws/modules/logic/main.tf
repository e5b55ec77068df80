# The provider-free logic of the wharf module: names, the nodes' IAM policy, their boot script
# and wharf.toml. Tested offline with `terraform test`.

locals {
  bucket_arn     = "arn:${var.partition}:s3:::${var.bucket_name}"
  object_pattern = var.bucket_prefix == "" ? "${local.bucket_arn}/*" : "${local.bucket_arn}/${var.bucket_prefix}/*"
  storage        = var.bucket_prefix == "" ? "s3://${var.bucket_name}" : "s3://${var.bucket_name}/${var.bucket_prefix}"
  secret_arns    = compact(concat([for u in var.upstreams : u.password_secret_arn], [var.cluster_secret_arn]))

  tags = merge({ "app.kubernetes.io/name" = "wharf", "wharf:cluster" = var.name }, var.tags)

  statements = concat(
    [
      {
        Sid      = "ListTheCache"
        Effect   = "Allow"
        Action   = ["s3:ListBucket", "s3:ListBucketMultipartUploads"]
        Resource = [local.bucket_arn]
        Condition = var.bucket_prefix == "" ? null : {
          StringLike = { "s3:prefix" = ["${var.bucket_prefix}/*"] }
        }
      },
      {
        Sid      = "ReadWriteTheCache"
        Effect   = "Allow"
        Action   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"]
        Resource = [local.object_pattern]
      },
      {
        # Cluster discovery: the members of this Auto Scaling group. DescribeInstances
        # supports no resource-level restriction.
        Sid      = "FindPeers"
        Effect   = "Allow"
        Action   = ["ec2:DescribeInstances"]
        Resource = ["*"]
      },
    ],
    length(local.secret_arns) == 0 ? [] : [{
      Sid      = "ReadSecrets"
      Effect   = "Allow"
      Action   = ["secretsmanager:GetSecretValue"]
      Resource = local.secret_arns
    }],
    var.ecr_repository_arn == null ? [] : [
      {
        Sid      = "PullTheImage"
        Effect   = "Allow"
        Action   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
        Resource = [var.ecr_repository_arn]
      },
      {
        Sid      = "EcrLogin"
        Effect   = "Allow"
        Action   = ["ecr:GetAuthorizationToken"]
        Resource = ["*"]
      },
    ],
  )

  # Statements without a null Condition (IAM refuses "Condition": null).
  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [for s in local.statements : { for k, v in s : k => v if v != null }]
  })

  wharf_toml = join("\n", concat(
    [
      "storage = \"${local.storage}\"",
      "",
      "[metrics]",
      "listen = \"0.0.0.0:9090\"",
      "",
      "[cluster]",
      "secret_file = \"/etc/wharf/secrets/cluster.key\"",
      "dead_member_timeout_secs = ${var.dead_member_timeout_secs}",
      "max_voters = ${var.max_voters}",
      "max_peer_streams = ${var.max_peer_streams}",
    ],
    flatten([for u in var.upstreams : [
      "",
      "[[upstream]]",
      "name = \"${u.name}\"",
      "url = \"${u.url}\"",
      "default = ${u.default}",
      u.username == null ? "" : "username = \"${u.username}\"",
      u.password_secret_arn == null ? "" : "password_file = \"/etc/wharf/secrets/${u.name}\"",
      length(u.prefixes) == 0 ? "" : "prefixes = ${jsonencode(u.prefixes)}",
      length(u.hosts) == 0 ? "" : "hosts = ${jsonencode(u.hosts)}",
      u.credentials == "client" ? "credentials = \"client\"\nlogin_verdict_secs = ${u.login_verdict_secs}" : "",
    ]]),
    var.extra_config == "" ? [] : ["", var.extra_config],
  ))

  user_data = templatefile("${path.module}/templates/user-data.sh.tftpl", {
    region     = var.region
    asg_name   = var.asg_name
    image      = var.image
    wharf_toml = local.wharf_toml
    secrets    = merge({ for u in var.upstreams : u.name => u.password_secret_arn if u.password_secret_arn != null }, { "cluster.key" = var.cluster_secret_arn })
    ecr        = var.ecr_repository_arn != null
  })
}
