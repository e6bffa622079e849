//! Step plumbing the components share, none of it an installable thing:
//! reaching a host ([`hosts`], [`remote`]) or a cluster ([`kube_target`]),
//! making release files available ([`release_files`]), applying a set of
//! Kubernetes objects ([`manifests`]), and the user's hooks ([`hooks`]).
//! Knows nothing of any one component.

pub mod hooks;
pub mod host_files;
pub mod hosts;
pub mod kube_target;
pub mod kubeconfig;
pub mod manifests;
pub mod release_files;
pub mod remote;
