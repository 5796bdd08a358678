//! tenant-storage-operator: residency policy in the cluster, region-pinned, encrypted,
//! locked-down tenant storage in the cloud.

pub mod api;
pub mod cli;
pub mod cloud;
pub mod controllers;
pub mod evidence;
pub mod export;
pub mod fence;
pub mod leader;
pub mod plan;
pub mod policy;
pub mod purge;
pub mod report;
pub mod telemetry;
