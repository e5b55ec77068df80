output "endpoint" {
  description = "What clients pull from: https://<domain_name>, the CloudFront domain, or the load balancer."
  value = (var.domain_name != null && var.zone_id != null ? "https://${var.domain_name}" :
    var.cloudfront ? "https://${aws_cloudfront_distribution.this[0].domain_name}" :
  "http://${aws_lb.this.dns_name}:5000")
}

output "lb_dns_name" {
  description = "DNS name of the network load balancer."
  value       = aws_lb.this.dns_name
}

output "bucket" {
  description = "The cache bucket."
  value       = aws_s3_bucket.cache.id
}

output "node_role_arn" {
  description = "IAM role of the nodes (to grant more, e.g. a KMS key)."
  value       = aws_iam_role.node.arn
}

output "node_security_group_id" {
  description = "Security group of the nodes (e.g. to let Prometheus in)."
  value       = aws_security_group.node.id
}

output "autoscaling_group_name" {
  description = "The nodes' Auto Scaling group."
  value       = aws_autoscaling_group.nodes.name
}
