//! Fixes that work: each finding's fix is a list of changes that, made, let the engine pass
//! the target (docs/admission.md, "Fixes"). Built where the finding is made, since only
//! there is it known which settings the string itself holds; rendered as text here.

use std::fmt::Write;

use crate::verdict::{Change, Code, Finding, Fix, FixPlan, FixValue, Form, Scope};

impl Finding<'_> {
    /// The changes that make this target pass, one fix per alternative (each is enough on
    /// its own); empty where no mechanical change can.
    pub fn fixes(&self) -> Vec<Fix> {
        match &self.fix_plan {
            FixPlan::None => Vec::new(),
            FixPlan::Listed(fixes) => fixes.clone(),
            FixPlan::Libpq {
                scope,
                unset_node_tls,
            } => {
                let mut fixes = libpq(self.code, scope);
                if *unset_node_tls {
                    for fix in &mut fixes {
                        fix.changes.push(NODE_TLS_UNSET);
                    }
                }
                fixes
            }
        }
    }
}

const VERIFY_FULL: FixValue = FixValue::Literal("verify-full");
/// libpq's other sslmode stores, which a new sslmode must not compete with.
const MODE_ALIASES: &[&str] = &["requiressl", "ssl"];

fn param(key: &'static str, value: FixValue) -> Change {
    Change::Param {
        key,
        value,
        drop: &[],
    }
}

/// The fixes of a libpq-rules or pgjdbc finding: the string's own settings first, then the
/// environment where the string leaves the setting to it.
pub(crate) fn libpq(code: Code, scope: &Scope) -> Vec<Fix> {
    let mechanical = matches!(
        code,
        Code::SslModeTooWeak
            | Code::SslModeUnset
            | Code::SslModeInvalid
            | Code::RootCertSystemNeedsVerifyFull
            | Code::RootCertMissing
    );
    if !mechanical {
        return Vec::new();
    }
    // Every candidate of a repeated setting must pass, not only the reported one.
    let mode = !scope.mode_verify_full;
    let root = !scope.root_configured;
    let mut fixes = Vec::new();
    if scope.form != Form::Environment {
        let mut changes = Vec::new();
        if mode {
            changes.push(Change::Param {
                key: "sslmode",
                value: VERIFY_FULL,
                drop: if scope.mode_alias { MODE_ALIASES } else { &[] },
            });
        }
        if root {
            changes.push(param("sslrootcert", FixValue::CaFile));
        }
        fixes.push(Fix {
            driver: None,
            changes,
        });
    }
    let env_decides = scope.form != Form::Jdbc
        && !scope.service
        && (!mode || !scope.string_sets_mode)
        && (!root || !scope.string_sets_root);
    if env_decides {
        let mut changes = Vec::new();
        if mode {
            changes.push(Change::Env {
                name: "PGSSLMODE".into(),
                value: VERIFY_FULL,
            });
        }
        if root {
            changes.push(Change::Env {
                name: "PGSSLROOTCERT".into(),
                value: FixValue::CaFile,
            });
        }
        fixes.push(Fix {
            driver: None,
            changes,
        });
    }
    fixes
}

/// One fix for one driver, of string parameters.
pub(crate) fn params(driver: Option<&'static str>, changes: &[(&'static str, FixValue)]) -> Fix {
    Fix {
        driver,
        changes: changes.iter().map(|&(k, v)| param(k, v)).collect(),
    }
}

fn value(v: FixValue) -> &'static str {
    match v {
        FixValue::Literal(s) => s,
        FixValue::CaFile => "<CA file>",
    }
}

/// `set sslmode=verify-full and sslrootcert=<CA file> in DATABASE_URL, or set PGSSLMODE=…`.
pub(crate) fn render(fixes: &[Fix], variable: &str) -> String {
    let mut out = String::new();
    for (i, fix) in fixes.iter().enumerate() {
        if i > 0 {
            out.push_str(", or ");
        }
        if let Some(d) = fix.driver {
            let _ = write!(out, "for {d}: ");
        }
        let params: Vec<String> = fix
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Param { key, value: v, .. } => Some(format!("{key}={}", value(*v))),
                _ => None,
            })
            .collect();
        let dropped: Vec<&str> = fix
            .changes
            .iter()
            .flat_map(|c| match c {
                Change::Param { drop, .. } => *drop,
                _ => &[],
            })
            .copied()
            .collect();
        let mut parts = Vec::new();
        if !params.is_empty() {
            let mut p = format!("set {} in {variable}", params.join(" and "));
            if !dropped.is_empty() {
                let _ = write!(p, " (without {})", dropped.join(" or "));
            }
            parts.push(p);
        }
        let env: Vec<String> = fix
            .changes
            .iter()
            .filter_map(|c| match c {
                Change::Env { name, value: v } => Some(format!("{name}={}", value(*v))),
                _ => None,
            })
            .collect();
        if !env.is_empty() {
            parts.push(format!("set {}", env.join(" and ")));
        }
        for c in &fix.changes {
            if let Change::Unset { name } = c {
                parts.push(format!("remove {name} from the container"));
            }
        }
        out.push_str(&parts.join(" and "));
    }
    out
}

/// The fix that turns Node.js certificate checks back on.
pub(crate) const NODE_TLS_UNSET: Change = Change::Unset {
    name: std::borrow::Cow::Borrowed("NODE_TLS_REJECT_UNAUTHORIZED"),
};
