output "nautes_hosts" {
  description = "Hosts for nautes-install: name, address, port, user, labels, roles."
  value = [for name, inst in alicloud_instance.host : {
    name    = name
    address = inst.public_ip != "" ? inst.public_ip : inst.private_ip
    port    = 22
    user    = var.ssh_user
    labels  = { "topology.kubernetes.io/zone" = inst.availability_zone, "nautes.io/private-ip" = inst.private_ip }
    roles   = [inst.tags["nautes.io/role"]]
  }]
}
