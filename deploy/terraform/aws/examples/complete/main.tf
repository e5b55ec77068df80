# A company-wide mirror of Docker Hub and ghcr.io behind TLS at mirror.example.com, with the
# Docker Hub credentials in Secrets Manager and a CloudFront distribution for remote offices.

provider "aws" {
  region = "eu-west-1"
}

module "wharf" {
  source = "../.."

  name          = "mirror"
  vpc_id        = "vpc-0123456789abcdef0"
  subnet_ids    = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1", "subnet-0123456789abcdef2"]
  internal      = true
  allowed_cidrs = ["10.0.0.0/8"]
  metrics_cidrs = ["10.20.0.0/16"]

  image              = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/wharf:0.1.0"
  ecr_repository_arn = "arn:aws:ecr:eu-west-1:123456789012:repository/wharf"
  upstreams = [
    {
      name                = "docker.io"
      url                 = "https://registry-1.docker.io"
      default             = true
      username            = "acme"
      password_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:wharf/dockerhub-AbCdEf"
    },
    { name = "ghcr.io", url = "https://ghcr.io" },
  ]

  domain_name = "mirror.example.com"
  zone_id     = "Z0123456789ABCDEFGHIJ"
  cloudfront  = false

  extra_config = <<-TOML
    [eviction]
    max_size_mib = 2000000
  TOML

  tags = { team = "platform" }
}

output "endpoint" {
  value = module.wharf.endpoint
}
