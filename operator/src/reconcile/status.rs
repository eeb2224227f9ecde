//! A policy's status: counts over the workloads, and the conditions. Pure: it reads the
//! in-memory stores only.

use super::*;

/// How many violating workloads a policy's status names.
const VIOLATING_LISTED: usize = 20;

/// Counts over the workloads, for a policy's status.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Counts {
    pub(super) matched: i64,
    pub(super) injected: i64,
    pub(super) conflicts: i64,
    pub(super) violations: i64,
    pub(super) violating: Vec<String>,
    pub(super) overlaps: Vec<String>,
    pub(super) still_injected: i64,
}

impl Ctx {
    pub(super) fn counts(&self, policy: &str) -> Counts {
        let mut c = Counts::default();
        for (kind, store) in &self.workloads {
            for w in store.state() {
                let stamped = w
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(INJECTED_ANNOTATION))
                    .is_some_and(|s| s.split_once('/').is_some_and(|(p, _)| p == policy));
                c.still_injected += i64::from(stamped);
                let d = self.decide(*kind, &w);
                let ours = d.policy.as_ref().is_some_and(|p| p.name_any() == policy);
                if d.overlap.iter().any(|n| n == policy) {
                    c.matched += 1;
                    for other in d.overlap.iter().filter(|n| n.as_str() != policy) {
                        if !c.overlaps.contains(other) {
                            c.overlaps.push(other.clone());
                        }
                    }
                }
                if !ours {
                    continue;
                }
                c.matched += 1;
                if d.plan
                    .as_ref()
                    .is_some_and(|p| p.skip.is_some() || !p.conflicts.is_empty())
                {
                    c.conflicts += 1;
                }
                if stamped && !d.plan.as_ref().is_some_and(Plan::is_empty) {
                    c.injected += 1;
                }
                // The engine's verdict on what runs now, from the decision's own report.
                if d.denied {
                    c.violations += 1;
                    if c.violating.len() < VIOLATING_LISTED {
                        c.violating.push(w.label(*kind));
                    }
                }
            }
        }
        c.violating.sort();
        c.overlaps.sort();
        c
    }

    /// Makes every workload reconcile once more.
    pub fn trigger_workloads(&self) {
        self.trigger.send_modify(|n| *n += 1);
    }
}

/// The status while the CA source cannot be read: the last copies stay as they were.
pub(super) fn unavailable_status(
    old: &PostgresTlsPolicyStatus,
    generation: Option<i64>,
    reason: &str,
    msg: String,
) -> PostgresTlsPolicyStatus {
    PostgresTlsPolicyStatus {
        observed_generation: generation,
        ca_hash: old.ca_hash.clone(),
        namespaces: old.namespaces,
        conditions: vec![
            condition(
                "Ready",
                false,
                reason,
                msg.clone(),
                generation,
                &old.conditions,
            ),
            condition("Degraded", true, reason, msg, generation, &old.conditions),
        ],
        ..Default::default()
    }
}

/// The status once the CA is copied into `namespaces` namespaces: the counts, Ready, and
/// Degraded when policies overlap or workloads set the mount themselves.
pub(super) fn distributed_status(
    old: &PostgresTlsPolicyStatus,
    generation: Option<i64>,
    namespaces: usize,
    ca_hash: String,
    c: Counts,
) -> PostgresTlsPolicyStatus {
    let ready_msg = format!(
        "CA copied into {namespaces} namespaces; {} of {} selected workloads carry it",
        c.injected, c.matched
    );
    let (degraded, reason, msg) = if !c.overlaps.is_empty() {
        (
            true,
            "OverlappingPolicies",
            format!(
                "workloads are also selected by {}; they are injected by none",
                c.overlaps.join(", ")
            ),
        )
    } else if c.conflicts > 0 {
        (
            true,
            "Conflicts",
            format!(
                "{} selected workloads set the CA mount or variables themselves; see their Events",
                c.conflicts
            ),
        )
    } else {
        (false, "AsExpected", "no conflicts".to_string())
    };
    PostgresTlsPolicyStatus {
        observed_generation: generation,
        matched: c.matched,
        injected: c.injected,
        conflicts: c.conflicts,
        violations: c.violations,
        violating: c.violating,
        namespaces: namespaces as i64,
        ca_hash: Some(ca_hash),
        conditions: vec![
            condition(
                "Ready",
                true,
                "CADistributed",
                ready_msg,
                generation,
                &old.conditions,
            ),
            condition(
                "Degraded",
                degraded,
                reason,
                msg,
                generation,
                &old.conditions,
            ),
        ],
    }
}

pub(super) fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    old: &[Condition],
) -> Condition {
    let status = if ok { "True" } else { "False" };
    let prev = old.iter().find(|c| c.type_ == type_);
    let since = match prev {
        Some(c) if c.status == status => c.last_transition_time.clone(),
        _ => Time(jiff::Timestamp::now()),
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: since,
    }
}
