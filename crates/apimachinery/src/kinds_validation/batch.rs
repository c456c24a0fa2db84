//! Validation of batch/v1 kinds: Job and CronJob.

use serde_json::Value;

use super::apps::{one_of, parse_selector, template_matches};
use super::pod::{RestartPolicies, template};
use super::{Errs, field, immutable, non_negative, str_of};

pub(crate) fn job(obj: &Value, e: &mut Errs) {
    job_spec(field(obj, "spec"), "spec", e);
}

/// Checks a Job spec found at `prefix` (`spec`, or `spec.jobTemplate.spec` in a CronJob).
///
/// The selector is required only with `manualSelector: true`: otherwise the Job strategy
/// generates it from the object's uid before validation.
fn job_spec(spec: &Value, prefix: &str, e: &mut Errs) {
    if !spec.is_object() {
        e.required(&format!("{prefix}.template"), "");
        return;
    }
    for key in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "backoffLimitPerIndex",
        "maxFailedIndexes",
        "ttlSecondsAfterFinished",
    ] {
        non_negative(spec, key, &format!("{prefix}.{key}"), e);
    }
    let mode = field(spec, "completionMode");
    if !mode.is_null() {
        one_of(
            mode,
            &format!("{prefix}.completionMode"),
            &["NonIndexed", "Indexed"],
            e,
        );
    }
    if mode == "Indexed" && field(spec, "completions").is_null() {
        e.required(
            &format!("{prefix}.completions"),
            "when completion mode is Indexed",
        );
    }
    let replacement = field(spec, "podReplacementPolicy");
    if !replacement.is_null() {
        one_of(
            replacement,
            &format!("{prefix}.podReplacementPolicy"),
            &["TerminatingOrFailed", "Failed"],
            e,
        );
    }
    let sel_v = field(spec, "selector");
    let sel_path = format!("{prefix}.selector");
    if sel_v.is_null() {
        if field(spec, "manualSelector") == &Value::Bool(true) {
            e.required(&sel_path, "");
        }
    } else if let Some(sel) = parse_selector(sel_v, &sel_path, e) {
        template_matches(spec, prefix, &sel, e);
    }
    let t = field(spec, "template");
    template(t, &format!("{prefix}.template"), RestartPolicies::Job, e);
}

pub(crate) fn cron_job(obj: &Value, e: &mut Errs) {
    let spec = field(obj, "spec");
    let schedule_v = field(spec, "schedule");
    let schedule = str_of(spec, "schedule");
    if schedule.is_empty() {
        e.required("spec.schedule", "");
    } else if schedule.contains("TZ") {
        e.invalid(
            "spec.schedule",
            schedule_v,
            "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
        );
    } else if let Err(msg) = cron_schedule(schedule) {
        e.invalid("spec.schedule", schedule_v, &msg);
    }
    one_of(
        field(spec, "concurrencyPolicy"),
        "spec.concurrencyPolicy",
        &["Allow", "Forbid", "Replace"],
        e,
    );
    for key in [
        "startingDeadlineSeconds",
        "successfulJobsHistoryLimit",
        "failedJobsHistoryLimit",
    ] {
        non_negative(spec, key, &format!("spec.{key}"), e);
    }
    let job = field(spec, "jobTemplate");
    if field(job, "spec").get("manualSelector") == Some(&Value::Bool(true)) {
        e.not_supported(
            "spec.jobTemplate.spec.manualSelector",
            &Value::Bool(true),
            &["nil", "false"],
        );
    }
    job_spec(field(job, "spec"), "spec.jobTemplate.spec", e);
}

/// Checks the shape of a cron schedule: a `@` descriptor, `@every <duration>`, or five
/// fields of digits, names, `*`, `?`, `/`, `,` and `-`.
fn cron_schedule(s: &str) -> Result<(), String> {
    if let Some(descriptor) = s.strip_prefix('@') {
        return match descriptor {
            "yearly" | "annually" | "monthly" | "weekly" | "daily" | "midnight" | "hourly" => {
                Ok(())
            }
            d if d.starts_with("every ") => Ok(()),
            _ => Err(format!("unrecognized descriptor: {s}")),
        };
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {s:?}",
            fields.len()
        ));
    }
    let ok = fields.iter().all(|f| {
        f.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | '?' | '/' | ',' | '-'))
    });
    if ok {
        Ok(())
    } else {
        Err(format!("invalid schedule: {s:?}"))
    }
}

/// The template fields a suspended Job that never started may change.
const SCHEDULING_DIRECTIVES: &[(&str, &str)] = &[
    ("metadata", "labels"),
    ("metadata", "annotations"),
    ("spec", "nodeSelector"),
    ("spec", "tolerations"),
    ("spec", "affinity"),
    ("spec", "schedulingGates"),
];

pub(crate) fn job_update(new: &Value, old: &Value, e: &mut Errs) {
    immutable(new, old, "spec.selector", e);
    let suspended_unstarted = field(field(old, "spec"), "suspend") == &Value::Bool(true)
        && field(field(old, "status"), "startTime").is_null();
    if suspended_unstarted {
        let strip = |obj: &Value| {
            let mut t = field(field(obj, "spec"), "template").clone();
            for (part, key) in SCHEDULING_DIRECTIVES {
                if let Some(m) = t.get_mut(*part).and_then(Value::as_object_mut) {
                    m.remove(*key);
                }
            }
            t
        };
        let new_template = field(field(new, "spec"), "template");
        if strip(new) != strip(old) {
            e.invalid("spec.template", new_template, "field is immutable");
        }
    } else {
        immutable(new, old, "spec.template", e);
    }
    immutable(new, old, "spec.completionMode", e);
    if field(field(new, "spec"), "completionMode") != "Indexed" {
        immutable(new, old, "spec.completions", e);
    }
}
