variable "name_prefix" {
  description = "Prefix of every resource and host name (lower case, digits, '-')."
  type        = string
  default     = "nautes"
}

variable "server_count" {
  description = "K3s servers (1, 3 or 5: embedded etcd needs an odd number)."
  type        = number
  default     = 1
}

variable "agent_count" {
  description = "K3s agents."
  type        = number
  default     = 1
}

variable "service_host_count" {
  description = "Hosts for GitLab / Vault placed on dedicated hosts."
  type        = number
  default     = 0
}

variable "instance_type" {
  description = "ECS instance type, e.g. ecs.g6.large (2 vCPU, 8 GiB)."
  type        = string
  default     = "ecs.g6.large"
}

variable "image_name_regex" {
  description = "System image to use."
  type        = string
  default     = "^ubuntu_22_04_x64"
}

variable "zone_id" {
  description = "Zone; empty picks the first zone offering the instance type."
  type        = string
  default     = ""
}

variable "vpc_cidr" {
  type    = string
  default = "172.16.0.0/16"
}

variable "vswitch_cidr" {
  type    = string
  default = "172.16.1.0/24"
}

variable "allowed_cidr" {
  description = "Who may reach the platform ports (80, 443, 6443, NodePorts)."
  type        = string
  default     = "0.0.0.0/0"
}

variable "ssh_source_cidr" {
  description = "Who may reach SSH (the machine running nautes-install)."
  type        = string
}

variable "ssh_public_key" {
  description = "Public key installed for the login user (pass with secretVariables or a file)."
  type        = string
}

variable "ssh_user" {
  type    = string
  default = "root"
}

variable "system_disk_gb" {
  type    = number
  default = 80
}

variable "public_bandwidth_mbps" {
  description = "Public bandwidth; 0 gives no public IP (reach hosts through a bastion)."
  type        = number
  default     = 10
}
