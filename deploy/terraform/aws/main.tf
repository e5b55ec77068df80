# wharf on AWS: an S3 cache bucket, an Auto Scaling group of nodes across availability zones
# forming one Raft cluster, a network load balancer, optional TLS, DNS and CloudFront.
#
# Why an Auto Scaling group of EC2 instances and not ECS/Fargate: wharf's warm path is
# sendfile from local disk and its cluster needs stable, directly reachable peer addresses on
# port 6000; instances with host networking give both, and the group's tag is the discovery
# mechanism (no service mesh or Cloud Map needed).

data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

data "aws_ssm_parameter" "al2023" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-arm64"
}

locals {
  bucket_name = coalesce(var.bucket_name, "${var.name}-cache-${data.aws_caller_identity.current.account_id}")
  asg_name    = "${var.name}-nodes"
  tls         = var.certificate_arn != null || (var.domain_name != null && var.zone_id != null)
  certificate = var.certificate_arn != null ? var.certificate_arn : (local.tls ? aws_acm_certificate_validation.this[0].certificate_arn : null)
  lb_subnets  = length(var.lb_subnet_ids) > 0 ? var.lb_subnet_ids : var.subnet_ids
}

module "logic" {
  source = "./modules/logic"

  name                     = var.name
  region                   = data.aws_region.current.name
  partition                = data.aws_partition.current.partition
  bucket_name              = local.bucket_name
  bucket_prefix            = var.bucket_prefix
  image                    = var.image
  upstreams                = var.upstreams
  asg_name                 = local.asg_name
  cluster_secret_arn       = aws_secretsmanager_secret.cluster.arn
  ecr_repository_arn       = var.ecr_repository_arn
  extra_config             = var.extra_config
  dead_member_timeout_secs = var.dead_member_timeout_secs
  max_voters               = var.max_voters
  max_peer_streams         = var.max_peer_streams
  tags                     = var.tags
}

################################################################################
# The cluster key: every cluster RPC between the nodes proves it
################################################################################

# Generated once: later plans read a new random value, which ignore_changes keeps out of the
# secret, so a rolling replacement never splits the nodes between two keys.
data "aws_secretsmanager_random_password" "cluster" {
  password_length     = 64
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "cluster" {
  #checkov:skip=CKV_AWS_149:The key only authenticates nodes of this module to each other; the AWS-managed key encrypts it at rest, and a customer-managed KMS key is the deployer's addition (tags and policy are theirs).
  #checkov:skip=CKV2_AWS_57:Rotation would need every node to hold two keys during the change; replace the secret's value and roll the group instead (README).
  name_prefix             = "${var.name}-cluster-key-"
  description             = "wharf ${var.name}: the nodes' shared cluster key"
  recovery_window_in_days = 7
  tags                    = module.logic.tags
}

resource "aws_secretsmanager_secret_version" "cluster" {
  secret_id     = aws_secretsmanager_secret.cluster.id
  secret_string = data.aws_secretsmanager_random_password.cluster.random_password

  lifecycle {
    ignore_changes = [secret_string]
  }
}

################################################################################
# The cache bucket
################################################################################

resource "aws_s3_bucket" "cache" {
  # checkov:skip=CKV_AWS_18:A cache: access logging of every blob read would cost more than the cache; CloudTrail data events cover audits.
  # checkov:skip=CKV_AWS_21:A cache: versioning would keep every evicted blob; content is addressed by digest and refetchable.
  # checkov:skip=CKV_AWS_144:A cache: cross-region replication is what regional wharf tiers are for.
  # checkov:skip=CKV2_AWS_62:No consumer of bucket event notifications.
  bucket        = local.bucket_name
  force_destroy = var.force_destroy
  tags          = module.logic.tags
}

resource "aws_s3_bucket_public_access_block" "cache" {
  bucket                  = aws_s3_bucket.cache.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "cache" {
  bucket = aws_s3_bucket.cache.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "cache" {
  # checkov:skip=CKV_AWS_145:SSE-S3 by default; set kms_key_arn for a customer key.
  bucket = aws_s3_bucket.cache.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = var.kms_key_arn == null ? "AES256" : "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = var.kms_key_arn != null
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "cache" {
  bucket = aws_s3_bucket.cache.id
  # Uploads of nodes killed mid-blob; blobs/ never expire by age (wharf's eviction decides).
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = 1
    }
  }
}

data "aws_iam_policy_document" "tls_only" {
  statement {
    sid       = "DenyPlainHttp"
    effect    = "Deny"
    actions   = ["s3:*"]
    resources = [aws_s3_bucket.cache.arn, "${aws_s3_bucket.cache.arn}/*"]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "cache" {
  bucket     = aws_s3_bucket.cache.id
  policy     = data.aws_iam_policy_document.tls_only.json
  depends_on = [aws_s3_bucket_public_access_block.cache]
}

################################################################################
# The nodes' identity
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  name               = "${var.name}-node"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = module.logic.tags
}

resource "aws_iam_role_policy" "node" {
  name   = "${var.name}-cache"
  role   = aws_iam_role.node.id
  policy = module.logic.instance_policy_json
}

resource "aws_iam_role_policy_attachment" "ssm" {
  # Shell access through Session Manager instead of SSH keys and an open port 22.
  role       = aws_iam_role.node.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "node" {
  name = "${var.name}-node"
  role = aws_iam_role.node.name
  tags = module.logic.tags
}

################################################################################
# Network
################################################################################

resource "aws_security_group" "lb" {
  name        = "${var.name}-lb"
  description = "wharf load balancer: pulls from allowed_cidrs"
  vpc_id      = var.vpc_id
  tags        = module.logic.tags
}

resource "aws_vpc_security_group_ingress_rule" "lb_pull" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.lb.id
  description       = "registry clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.tls ? 443 : 5000
  to_port           = local.tls ? 443 : 5000
}

resource "aws_vpc_security_group_egress_rule" "lb_to_nodes" {
  for_each                     = toset(["5000", "9090"])
  security_group_id            = aws_security_group.lb.id
  description                  = "traffic and health checks to the nodes"
  referenced_security_group_id = aws_security_group.node.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_security_group" "node" {
  name        = "${var.name}-node"
  description = "wharf nodes: registry from the load balancer, cluster from each other only"
  vpc_id      = var.vpc_id
  tags        = module.logic.tags
}

resource "aws_vpc_security_group_ingress_rule" "node_from_lb" {
  for_each                     = toset(["5000", "9090"])
  security_group_id            = aws_security_group.node.id
  description                  = "registry traffic and health checks from the load balancer"
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_vpc_security_group_ingress_rule" "cluster" {
  # Defence in depth (every cluster RPC also proves the cluster key): members of this group only.
  security_group_id            = aws_security_group.node.id
  description                  = "Raft and peer streaming between wharf nodes"
  referenced_security_group_id = aws_security_group.node.id
  ip_protocol                  = "tcp"
  from_port                    = 6000
  to_port                      = 6000
}

resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each          = toset(var.metrics_cidrs)
  security_group_id = aws_security_group.node.id
  description       = "Prometheus and the status page"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 9090
  to_port           = 9090
}

resource "aws_vpc_security_group_egress_rule" "node_out" {
  # Upstream registries, S3, Secrets Manager, ECR and the OS packages are on the internet or
  # behind VPC endpoints: HTTPS (and HTTP for plain-HTTP upstreams) out.
  for_each          = toset(["443", "80"])
  security_group_id = aws_security_group.node.id
  description       = "upstreams and AWS APIs"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
}

resource "aws_vpc_security_group_egress_rule" "node_cluster" {
  security_group_id            = aws_security_group.node.id
  description                  = "Raft and peer streaming to the other nodes"
  referenced_security_group_id = aws_security_group.node.id
  ip_protocol                  = "tcp"
  from_port                    = 6000
  to_port                      = 6000
}

################################################################################
# Nodes
################################################################################

resource "aws_launch_template" "node" {
  name_prefix   = "${var.name}-"
  image_id      = var.ami_id != null ? var.ami_id : nonsensitive(data.aws_ssm_parameter.al2023[0].value)
  instance_type = var.instance_type
  user_data     = base64encode(module.logic.user_data)

  iam_instance_profile {
    arn = aws_iam_instance_profile.node.arn
  }
  vpc_security_group_ids = [aws_security_group.node.id]

  metadata_options {
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
    http_endpoint               = "enabled"
  }

  block_device_mappings {
    device_name = "/dev/xvda"
    ebs {
      volume_size           = var.root_volume_gb
      volume_type           = "gp3"
      encrypted             = true
      delete_on_termination = true
    }
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(module.logic.tags, { Name = "${var.name}-node" })
  }
  tags = module.logic.tags
}

resource "aws_autoscaling_group" "nodes" {
  name                      = local.asg_name
  min_size                  = var.node_count
  max_size                  = var.node_count
  desired_capacity          = var.node_count
  vpc_zone_identifier       = var.subnet_ids
  health_check_type         = "ELB"
  health_check_grace_period = 180
  target_group_arns         = [aws_lb_target_group.registry.arn]

  launch_template {
    id      = aws_launch_template.node.id
    version = aws_launch_template.node.latest_version
  }

  # One node at a time, so the Raft cluster keeps its quorum while it rolls.
  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 66
    }
  }

  dynamic "tag" {
    for_each = module.logic.tags
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

################################################################################
# Load balancer
################################################################################

resource "aws_lb" "this" {
  # checkov:skip=CKV_AWS_91:Access logs of a registry mirror are wharf's own (one line per request); enable NLB logs to a bucket of yours if required.
  # checkov:skip=CKV_AWS_150:Deletion protection would block terraform destroy of a stateless cache; turn it on in production stacks.
  name                             = var.name
  load_balancer_type               = "network"
  internal                         = var.internal
  subnets                          = local.lb_subnets
  security_groups                  = [aws_security_group.lb.id]
  enable_cross_zone_load_balancing = true
  tags                             = module.logic.tags
}

resource "aws_lb_target_group" "registry" {
  name                 = "${var.name}-registry"
  port                 = 5000
  protocol             = "TCP"
  vpc_id               = var.vpc_id
  deregistration_delay = 30
  health_check {
    protocol            = "HTTP"
    port                = "9090"
    path                = "/health"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
  tags = module.logic.tags
}

resource "aws_lb_listener" "plain" {
  # checkov:skip=CKV_AWS_2:Plain HTTP on 5000 only when no certificate is given (a private network); with one, the listener is TLS on 443.
  # checkov:skip=CKV2_AWS_74:See CKV_AWS_2: TLS listeners use ELBSecurityPolicy-TLS13-1-2-2021-06.
  count             = local.tls ? 0 : 1
  load_balancer_arn = aws_lb.this.arn
  port              = 5000
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.registry.arn
  }
  tags = module.logic.tags
}

resource "aws_lb_listener" "tls" {
  count             = local.tls ? 1 : 0
  load_balancer_arn = aws_lb.this.arn
  port              = 443
  protocol          = "TLS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = local.certificate
  alpn_policy       = "HTTP2Preferred"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.registry.arn
  }
  tags = module.logic.tags
}

################################################################################
# DNS and certificate
################################################################################

resource "aws_acm_certificate" "this" {
  count             = var.certificate_arn == null && var.domain_name != null && var.zone_id != null ? 1 : 0
  domain_name       = var.domain_name
  validation_method = "DNS"
  tags              = module.logic.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "validation" {
  for_each = length(aws_acm_certificate.this) == 0 ? {} : {
    for o in aws_acm_certificate.this[0].domain_validation_options : o.domain_name => o
  }
  zone_id = var.zone_id
  name    = each.value.resource_record_name
  type    = each.value.resource_record_type
  records = [each.value.resource_record_value]
  ttl     = 300
}

resource "aws_acm_certificate_validation" "this" {
  count                   = length(aws_acm_certificate.this)
  certificate_arn         = aws_acm_certificate.this[0].arn
  validation_record_fqdns = [for r in aws_route53_record.validation : r.fqdn]
}

resource "aws_route53_record" "mirror" {
  count   = var.domain_name != null && var.zone_id != null ? 1 : 0
  zone_id = var.zone_id
  name    = var.domain_name
  type    = "A"
  alias {
    name                   = var.cloudfront ? aws_cloudfront_distribution.this[0].domain_name : aws_lb.this.dns_name
    zone_id                = var.cloudfront ? aws_cloudfront_distribution.this[0].hosted_zone_id : aws_lb.this.zone_id
    evaluate_target_health = !var.cloudfront
  }
}

################################################################################
# CloudFront in front (CDN origin)
################################################################################

resource "aws_cloudfront_cache_policy" "registry" {
  count       = var.cloudfront ? 1 : 0
  name        = "${var.name}-registry"
  comment     = "wharf: origin Cache-Control decides (blobs immutable, tags short); Accept selects the manifest"
  default_ttl = 0
  min_ttl     = 0
  max_ttl     = 31536000
  parameters_in_cache_key_and_forwarded_to_origin {
    enable_accept_encoding_gzip   = false
    enable_accept_encoding_brotli = false
    headers_config {
      header_behavior = "whitelist"
      headers {
        items = ["Accept"]
      }
    }
    cookies_config {
      cookie_behavior = "none"
    }
    query_strings_config {
      query_string_behavior = "all"
    }
  }
}

resource "aws_cloudfront_distribution" "this" {
  # checkov:skip=CKV_AWS_68:A WAF in front of a pull-only mirror is the deployer's choice; attach one with web_acl_id if required.
  # checkov:skip=CKV_AWS_86:Access logs: wharf logs every request at the origin.
  # checkov:skip=CKV_AWS_310:One origin; origin failover is the multi-region tier design (issue 15), not a second origin here.
  # checkov:skip=CKV_AWS_374:Geo restriction does not apply to a company's registry mirror by default.
  # checkov:skip=CKV2_AWS_32:Response headers policies (HSTS etc.) concern browsers; registry clients ignore them.
  # checkov:skip=CKV2_AWS_47:No WAF (see CKV_AWS_68), so no Log4j rule set.
  # checkov:skip=CKV2_AWS_42:With a custom domain the certificate is the deployer's ACM certificate in us-east-1; default certificate otherwise.
  # checkov:skip=CKV2_AWS_46:The origin is the load balancer, not an S3 bucket.
  # checkov:skip=CKV_AWS_174:Without a custom domain CloudFront's default certificate allows TLSv1; with one, TLSv1.2_2021 is set.
  count           = var.cloudfront ? 1 : 0
  enabled         = true
  comment         = "wharf ${var.name}"
  price_class     = var.cloudfront_price_class
  is_ipv6_enabled = true
  http_version    = "http2and3"

  origin {
    origin_id   = "wharf"
    domain_name = var.domain_name != null && local.tls ? var.domain_name : aws_lb.this.dns_name
    custom_origin_config {
      http_port              = 5000
      https_port             = 443
      origin_protocol_policy = local.tls ? "https-only" : "http-only"
      origin_ssl_protocols   = ["TLSv1.2"]
      origin_read_timeout    = 60
    }
  }

  default_cache_behavior {
    target_origin_id       = "wharf"
    viewer_protocol_policy = "redirect-to-https"
    allowed_methods        = ["GET", "HEAD", "OPTIONS"]
    cached_methods         = ["GET", "HEAD"]
    cache_policy_id        = aws_cloudfront_cache_policy.registry[0].id
    compress               = false
  }

  restrictions {
    geo_restriction {
      restriction_type = "none"
    }
  }

  viewer_certificate {
    cloudfront_default_certificate = true
    minimum_protocol_version       = "TLSv1.2_2021"
  }

  tags = module.logic.tags
}
