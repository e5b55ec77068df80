variable "name" {
  description = "Name prefix of every resource (3-32 lower-case letters, digits, dashes)."
  type        = string
  default     = "wharf"
}

variable "vpc_id" {
  description = "VPC of the nodes and the load balancer."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the nodes, one per availability zone (at least two)."
  type        = list(string)
  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids: at least two subnets, in different availability zones."
  }
}

variable "lb_subnet_ids" {
  description = "Subnets of the network load balancer (public ones for an internet-facing mirror); defaults to subnet_ids."
  type        = list(string)
  default     = []
}

variable "internal" {
  description = "An internal load balancer (a company mirror) rather than an internet-facing one."
  type        = bool
  default     = true
}

variable "allowed_cidrs" {
  description = "Who may pull: CIDR blocks allowed to the load balancer's listeners."
  type        = list(string)
}

variable "metrics_cidrs" {
  description = "CIDR blocks allowed to scrape /metrics and see the status page on port 9090 (e.g. Prometheus)."
  type        = list(string)
  default     = []
}

variable "image" {
  description = "The wharf image (deploy/image/build.sh, pushed to your registry, e.g. ECR)."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ECR repository holding the image; the nodes get pull rights on it (null: a public image)."
  type        = string
  default     = null
}

variable "upstreams" {
  description = "Registries to mirror; exactly one is the default. prefixes and hosts route clients without ns= (README \"Point clients at it\"; each host needs a DNS name pointing at the load balancer); credentials = \"client\" sends each client's own login instead of a shared account (README \"Each user's own upstream login\"). Credentials from Secrets Manager (password_secret_arn, a plain-text secret)."
  type = list(object({
    name                = string
    url                 = string
    default             = optional(bool, false)
    username            = optional(string)
    password_secret_arn = optional(string)
    prefixes            = optional(list(string), [])
    hosts               = optional(list(string), [])
    credentials         = optional(string, "configured")
    login_verdict_secs  = optional(number, 60)
  }))
  default = [{ name = "docker.io", url = "https://registry-1.docker.io", default = true }]
}

variable "instance_type" {
  description = "Instance type of the nodes (network bandwidth matters most)."
  type        = string
  default     = "m7g.large"
}

variable "ami_id" {
  description = "AMI of the nodes (Amazon Linux 2023, matching the instance type's architecture); null: the latest AL2023 for arm64."
  type        = string
  default     = null
}

variable "node_count" {
  description = "Nodes in the cluster (3 or 5 keep a Raft quorum through one or two failures)."
  type        = number
  default     = 3
  validation {
    condition     = var.node_count >= 1 && var.node_count <= 9
    error_message = "node_count: 1 to 9."
  }
}

variable "dead_member_timeout_secs" {
  description = "The Raft leader removes a node it has not reached for this many seconds, if the rest keep a quorum (an Auto Scaling group's replaced instances would otherwise count towards the quorum forever); a node that comes back rejoins by itself. 0: never."
  type        = number
  default     = 600
  validation {
    condition     = var.dead_member_timeout_secs >= 0
    error_message = "dead_member_timeout_secs: 0 or more."
  }
}

variable "max_voters" {
  description = "At most this many nodes vote in Raft (odd); the others join as learners that serve and fetch like voters, and the most up-to-date learner is promoted when a voter leaves. Keeps consensus small in a large Auto Scaling group."
  type        = number
  default     = 5
  validation {
    condition     = var.max_voters >= 1 && var.max_voters % 2 == 1
    error_message = "max_voters: an odd number, 1 or more."
  }
}

variable "max_peer_streams" {
  description = "A node streams one cold blob to at most this many other nodes; the rest relay it from those (0: no limit). Caps the fetching instance's outbound traffic per blob in a large group."
  type        = number
  default     = 4
  validation {
    condition     = var.max_peer_streams >= 0
    error_message = "max_peer_streams: 0 or more."
  }
}

variable "root_volume_gb" {
  description = "Root volume of each node: the OS, the image, the Raft state and the download spool (largest blob in flight)."
  type        = number
  default     = 50
}

variable "bucket_name" {
  description = "Name of the cache bucket to create (null: <name>-cache-<account id>)."
  type        = string
  default     = null
}

variable "bucket_prefix" {
  description = "Key prefix of wharf's objects in the bucket."
  type        = string
  default     = ""
}

variable "kms_key_arn" {
  description = "KMS key for the bucket's encryption (null: SSE-S3)."
  type        = string
  default     = null
}

variable "force_destroy" {
  description = "Let terraform destroy a non-empty cache bucket (the cache can be refilled)."
  type        = bool
  default     = false
}

variable "certificate_arn" {
  description = "ACM certificate for a TLS listener on 443 (null: only plain HTTP on port 5000, unless domain_name and zone_id let the module request one)."
  type        = string
  default     = null
}

variable "domain_name" {
  description = "DNS name of the mirror (e.g. mirror.example.com); with zone_id, a Route 53 record and, if certificate_arn is null, an ACM certificate validated by DNS."
  type        = string
  default     = null
}

variable "zone_id" {
  description = "Route 53 hosted zone of domain_name."
  type        = string
  default     = null
}

variable "cloudfront" {
  description = "Put a CloudFront distribution in front (the CDN-origin use): blobs are cached at the edge by their immutable Cache-Control."
  type        = bool
  default     = false
}

variable "cloudfront_price_class" {
  description = "CloudFront price class."
  type        = string
  default     = "PriceClass_100"
}

variable "extra_config" {
  description = "Raw TOML appended to every node's wharf.toml ([[access]], [eviction], [auth] with secret files you provision)."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
