# Test module with the same output contract as the cloud modules under
# terraform/modules: `nautes_hosts`, a list of hosts. Only the null provider
# is used, so it runs offline from a filesystem mirror.
terraform {
  required_providers {
    null = {
      source  = "hashicorp/null"
      version = "2.1.2"
    }
  }
}

variable "hosts" {
  description = "Hosts to \"create\": name and address of each."
  type = list(object({
    name    = string
    address = string
  }))
}

variable "user" {
  type    = string
  default = "root"
}

variable "port" {
  type    = number
  default = 22
}

variable "fail" {
  description = "Make one resource fail, as a cloud API error would."
  type        = bool
  default     = false
}

variable "sleep_seconds" {
  description = "Time each host takes to \"create\" (for interruption tests)."
  type        = number
  default     = 0
}

variable "api_token" {
  description = "Stands for a cloud credential: must arrive, must never be logged."
  type        = string
  default     = ""
  sensitive   = true
}

resource "null_resource" "host" {
  for_each = { for h in var.hosts : h.name => h }
  triggers = {
    address   = each.value.address
    has_token = var.api_token != "" ? "yes" : "no"
  }
  provisioner "local-exec" {
    command = "sleep ${var.sleep_seconds}"
  }
}

resource "null_resource" "quota" {
  count = var.fail ? 1 : 0
  provisioner "local-exec" {
    command = "echo 'quota exceeded for instance type ecs.g6.large' >&2; exit 1"
  }
}

output "nautes_hosts" {
  value = [for h in var.hosts : {
    name    = h.name
    address = null_resource.host[h.name].triggers.address
    port    = var.port
    user    = var.user
    labels  = { provider = "null", has_token = null_resource.host[h.name].triggers.has_token }
    roles   = []
  }]
}
