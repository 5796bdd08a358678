//! Integration tests: the operator binary against a real Kubernetes API server and an AWS
//! emulator with authorization enforced. Start them with `scripts/test.sh`.

mod access;
mod access_logging;
mod admission;
mod argocd;
mod authorizer;
mod backups;
mod control_plane;
mod deletion;
mod deletion_requests;
mod enforcement;
mod exports;
mod faults;
mod harness;
mod hostile;
mod operability;
mod ownership;
mod provisioning;
mod purge;
mod replication;
mod report;
mod residency;
mod restart;
mod steady_state;
