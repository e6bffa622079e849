//! nautes-install: reads one inventory, plans a DAG of steps, and runs them
//! resumably against hosts, Terraform, Ansible and Kubernetes.

pub mod drivers;
pub mod secret;
