variable "name" {
  description = "Name prefix of every resource."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name: 3-32 characters, lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  description = "AWS region of the bucket and the nodes."
  type        = string
}

variable "partition" {
  description = "AWS partition (aws, aws-cn, aws-us-gov)."
  type        = string
  default     = "aws"
}

variable "bucket_name" {
  description = "The cache bucket."
  type        = string
}

variable "bucket_prefix" {
  description = "Key prefix of wharf's objects in the bucket (empty: the whole bucket)."
  type        = string
  default     = ""
  validation {
    condition     = var.bucket_prefix == "" || can(regex("^[A-Za-z0-9._/-]+[^/]$", var.bucket_prefix))
    error_message = "bucket_prefix: key characters only, no trailing slash."
  }
}

variable "image" {
  description = "The wharf container image the nodes run (e.g. an ECR repository URL with a tag)."
  type        = string
}

variable "upstreams" {
  description = "Registries to mirror; exactly one is the default. prefixes and hosts route clients without ns= (README \"Point clients at it\"; each host needs a DNS name pointing at the load balancer); credentials = \"client\" sends each client's own login instead of a shared account (README \"Each user's own upstream login\"). Passwords come from Secrets Manager (password_secret_arn), never from variables."
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
  validation {
    condition     = length([for u in var.upstreams : u if u.default]) == 1
    error_message = "upstreams: exactly one upstream must be the default."
  }
  validation {
    condition     = alltrue([for u in var.upstreams : can(regex("^https?://[^/]+", u.url))])
    error_message = "upstreams: every url must be http:// or https://."
  }
  validation {
    condition     = alltrue([for u in var.upstreams : (u.username == null) == (u.password_secret_arn == null)])
    error_message = "upstreams: username and password_secret_arn go together."
  }
  validation {
    condition = alltrue([for u in var.upstreams : contains(["configured", "client"], u.credentials) && (
    u.credentials == "configured" || (u.username == null && u.password_secret_arn == null))])
    error_message = "upstreams: credentials is \"configured\" or \"client\", and a \"client\" upstream takes no username or password_secret_arn (each client brings its own login)."
  }
}

variable "cluster_secret_arn" {
  description = "Secrets Manager secret holding the cluster key (32+ bytes) every node proves on every cluster RPC."
  type        = string
}

variable "asg_name" {
  description = "Name of the Auto Scaling group, by whose tag the nodes find each other."
  type        = string
}

variable "ecr_repository_arn" {
  description = "ECR repository of the image, to let the nodes pull it (null: a public image)."
  type        = string
  default     = null
}

variable "dead_member_timeout_secs" {
  description = "[cluster] dead_member_timeout_secs of every node."
  type        = number
  default     = 600
}

variable "max_voters" {
  description = "[cluster] max_voters of every node."
  type        = number
  default     = 5
}

variable "max_peer_streams" {
  description = "[cluster] max_peer_streams of every node."
  type        = number
  default     = 4
}

variable "extra_config" {
  description = "Raw TOML appended to wharf.toml ([[access]] rules, [eviction], ...)."
  type        = string
  default     = ""
}

variable "tags" {
  description = "Tags on every resource."
  type        = map(string)
  default     = {}
}
