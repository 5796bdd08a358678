//! Integration tests: the operator binary against a real Kubernetes API server and an AWS
//! emulator with authorization enforced. Start them with `scripts/test.sh`.

mod harness;
mod provisioning;
mod residency;
mod steady_state;
