//! Building the `status.conditions` list without losing transition times.

use crate::api::{Condition, ConditionStatus};

pub const READY: &str = "Ready";
pub const RESIDENCY_COMPLIANT: &str = "ResidencyCompliant";
pub const ENCRYPTED: &str = "Encrypted";
pub const PUBLIC_ACCESS_BLOCKED: &str = "PublicAccessBlocked";

/// Sets one condition. `lastTransitionTime` only moves when the status flips, as kstatus and
/// `kubectl wait` expect.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: ConditionStatus,
    reason: &str,
    message: impl Into<String>,
    generation: i64,
    now: &str,
) {
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = now.to_owned();
            }
            c.status = status;
            c.reason = reason.to_owned();
            c.message = message;
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            last_transition_time: now.to_owned(),
            observed_generation: generation,
        }),
    }
}

/// The reason of a condition, if present.
pub fn reason<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a str> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        set(
            &mut c,
            READY,
            ConditionStatus::False,
            "Provisioning",
            "x",
            1,
            "t1",
        );
        set(
            &mut c,
            READY,
            ConditionStatus::False,
            "AwsError",
            "y",
            2,
            "t2",
        );
        assert_eq!(c[0].last_transition_time, "t1");
        assert_eq!(c[0].reason, "AwsError");
        assert_eq!(c[0].observed_generation, 2);
        set(
            &mut c,
            READY,
            ConditionStatus::True,
            "Provisioned",
            "z",
            2,
            "t3",
        );
        assert_eq!(c[0].last_transition_time, "t3");
        assert_eq!(c.len(), 1);
        assert_eq!(reason(&c, READY), Some("Provisioned"));
    }
}
