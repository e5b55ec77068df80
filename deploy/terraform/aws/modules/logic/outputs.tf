output "instance_policy_json" {
  description = "The nodes' IAM policy: the cache bucket (prefix), peer discovery, upstream secrets, the image."
  value       = local.policy
}

output "user_data" {
  description = "The nodes' boot script."
  value       = local.user_data
}

output "wharf_toml" {
  description = "wharf.toml of every node."
  value       = local.wharf_toml
}

output "storage" {
  description = "wharf's storage URL."
  value       = local.storage
}

output "tags" {
  description = "Tags on every resource."
  value       = local.tags
}
