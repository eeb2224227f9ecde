//! Exemption annotations (docs/rules.md, "Exemptions"). They live where the Pod carries them: a Pod's
//! metadata or a workload's Pod template. The clock is passed in.

use std::borrow::Cow;

use crate::context::Context;
use crate::verdict::{Cause, Code, Exemption, Finding, Note, Report};
use crate::workload::WorkloadKind;
use crate::workload::{PodView, containers};

pub(crate) const EXEMPT: &str = "verifyfull.dev/exempt";
pub(crate) const EXEMPT_REASON: &str = "verifyfull.dev/exempt-reason";
pub(crate) const EXEMPT_UNTIL: &str = "verifyfull.dev/exempt-until";

/// Whether an annotation key is one of the exemption annotations.
pub(crate) fn is_exemption_key(key: &str) -> bool {
    matches!(key, EXEMPT | EXEMPT_REASON | EXEMPT_UNTIL)
}

/// Reads the exemption of a Pod (or template) into `report`: the exemption in force, or
/// the findings and notes that explain why it is not applied.
pub(crate) fn apply<'a>(view: PodView<'a>, ctx: &Context<'a>, report: &mut Report<'a>) {
    let object_level = |f: Cause<'a>| Finding {
        code: match f {
            Cause::ExemptionNoReason => Code::ExemptionReasonMissing,
            _ => Code::ExemptionInvalid,
        },
        severity: ctx.settings.severity(Code::ExemptionInvalid),
        variable: None,
        origin: None,
        target: None,
        cause: f,
        if_remote: None,
        application: None,
        fix_plan: crate::verdict::FixPlan::None,
    };
    if view.kind != WorkloadKind::Pod
        && view
            .object
            .annotations
            .iter()
            .flatten()
            .any(|(k, _)| is_exemption_key(k))
    {
        report
            .findings
            .push(object_level(Cause::ExemptionMisplaced {
                path: view.kind.pod_annotations_path(),
            }));
    }
    match read(view) {
        Read::None => {}
        Read::Invalid(cause) => report.findings.push(object_level(cause)),
        Read::Exemption(e) if e.until.is_some_and(|u| ctx.now >= u) => {
            report.notes.push(Note::ExemptionExpired);
        }
        Read::Exemption(e) => report.exemption = Some(e),
    }
}

/// What a Pod's (or template's) exemption annotations say.
enum Read<'a> {
    None,
    Invalid(Cause<'a>),
    Exemption(Exemption<'a>),
}

fn read<'a>(view: PodView<'a>) -> Read<'a> {
    let Some(annotations) = view.pod.annotations.as_ref() else {
        return Read::None;
    };
    let Some(value) = annotations.get(EXEMPT).map(|v| v.trim()) else {
        return Read::None;
    };
    if value.is_empty() || value == "false" {
        return Read::None;
    }
    let reason = annotations
        .get(EXEMPT_REASON)
        .map(|r| r.trim())
        .filter(|r| !r.is_empty());
    let Some(reason) = reason else {
        return Read::Invalid(Cause::ExemptionNoReason);
    };
    let until = match annotations.get(EXEMPT_UNTIL).map(|v| parse_until(v.trim())) {
        None => None,
        Some(Some(t)) => Some(t),
        Some(None) => return Read::Invalid(Cause::ExemptionBadUntil),
    };
    let names = if value == "true" {
        None
    } else {
        let listed: Vec<&str> = value
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .collect();
        if let Some(missing) = listed
            .iter()
            .find(|n| !containers(view.spec).any(|c| c.name == **n))
        {
            return Read::Invalid(Cause::ExemptionUnknownContainer {
                name: Cow::Borrowed(missing),
            });
        }
        Some(listed)
    };
    Read::Exemption(Exemption {
        containers: names,
        reason,
        until,
    })
}

/// `exempt-until`: an RFC 3339 date-time with offset, or a date, which ends at the end of
/// that day UTC. Returns the first instant at which the exemption no longer applies.
pub(crate) fn parse_until(s: &str) -> Option<jiff::Timestamp> {
    let is_date = s.len() == 10 && s.as_bytes()[4] == b'-' && s.as_bytes()[7] == b'-';
    if is_date {
        let start: jiff::Timestamp = format!("{s}T00:00:00Z").parse().ok()?;
        return start.checked_add(jiff::SignedDuration::from_hours(24)).ok();
    }
    // RFC 3339 requires the offset; jiff's parser also takes time zone annotations, which
    // RFC 3339 does not have.
    if s.contains('[') {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> jiff::Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn until_forms() {
        assert_eq!(parse_until("2026-03-01"), Some(ts("2026-03-02T00:00:00Z")));
        assert_eq!(
            parse_until("2026-03-01T10:00:00+02:00"),
            Some(ts("2026-03-01T08:00:00Z"))
        );
        assert_eq!(
            parse_until("2026-03-01T10:00:00Z"),
            Some(ts("2026-03-01T10:00:00Z"))
        );
        for bad in [
            "2026-03-01T10:00:00",
            "tomorrow",
            "2026-13-01",
            "2026-02-30",
            "",
            "2026-03-01T10:00:00Z[UTC]",
        ] {
            assert_eq!(parse_until(bad), None, "{bad}");
        }
    }
}
