terraform {
  # Provider-free on purpose: everything here is computed, so `terraform test` runs offline.
  required_version = ">= 1.6"
}
