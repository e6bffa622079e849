# Alibaba Cloud ECS hosts for Nautes: a VPC, a vswitch, a security group with
# the ports Nautes needs, a key pair, and instances per role. Outputs follow
# the nautes-install host contract (`nautes_hosts`, see ../../README.md).
terraform {
  required_version = ">= 1.0"
  required_providers {
    alicloud = {
      source  = "aliyun/alicloud"
      version = ">= 1.200.0"
    }
  }
}

data "alicloud_zones" "available" {
  available_instance_type     = var.instance_type
  available_resource_creation = "VSwitch"
}

data "alicloud_images" "os" {
  name_regex  = var.image_name_regex
  owners      = "system"
  most_recent = true
}

locals {
  zone_id = var.zone_id != "" ? var.zone_id : data.alicloud_zones.available.zones[0].id
  # Every host: name, role, and its index within the role.
  hosts = concat(
    [for i in range(var.server_count) : { name = "${var.name_prefix}-server-${i + 1}", role = "server" }],
    [for i in range(var.agent_count) : { name = "${var.name_prefix}-agent-${i + 1}", role = "agent" }],
    [for i in range(var.service_host_count) : { name = "${var.name_prefix}-service-${i + 1}", role = "service" }],
  )
  tcp_ports = ["22/22", "80/80", "443/443", "6443/6443", "10250/10250", "2379/2380", "30000/32767"]
  udp_ports = ["8472/8472"]
}

resource "alicloud_vpc" "nautes" {
  vpc_name   = "${var.name_prefix}-vpc"
  cidr_block = var.vpc_cidr
}

resource "alicloud_vswitch" "nautes" {
  vswitch_name = "${var.name_prefix}-vsw"
  vpc_id       = alicloud_vpc.nautes.id
  cidr_block   = var.vswitch_cidr
  zone_id      = local.zone_id
}

resource "alicloud_security_group" "nautes" {
  name   = "${var.name_prefix}-sg"
  vpc_id = alicloud_vpc.nautes.id
}

resource "alicloud_security_group_rule" "tcp" {
  for_each          = toset(local.tcp_ports)
  type              = "ingress"
  ip_protocol       = "tcp"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = each.value
  priority          = 1
  security_group_id = alicloud_security_group.nautes.id
  cidr_ip           = each.value == "22/22" ? var.ssh_source_cidr : var.allowed_cidr
}

resource "alicloud_security_group_rule" "udp" {
  for_each          = toset(local.udp_ports)
  type              = "ingress"
  ip_protocol       = "udp"
  nic_type          = "intranet"
  policy            = "accept"
  port_range        = each.value
  priority          = 1
  security_group_id = alicloud_security_group.nautes.id
  cidr_ip           = var.vswitch_cidr
}

resource "alicloud_ecs_key_pair" "nautes" {
  key_pair_name = "${var.name_prefix}-key"
  public_key    = var.ssh_public_key
}

resource "alicloud_instance" "host" {
  for_each                   = { for h in local.hosts : h.name => h }
  instance_name              = each.key
  host_name                  = each.key
  availability_zone          = local.zone_id
  vswitch_id                 = alicloud_vswitch.nautes.id
  security_groups            = [alicloud_security_group.nautes.id]
  instance_type              = var.instance_type
  image_id                   = data.alicloud_images.os.images[0].id
  system_disk_category       = "cloud_essd"
  system_disk_size           = var.system_disk_gb
  internet_max_bandwidth_out = var.public_bandwidth_mbps
  key_name                   = alicloud_ecs_key_pair.nautes.key_pair_name
  tags = {
    "nautes.io/role" = each.value.role
  }
}
