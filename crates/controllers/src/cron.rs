//! Cron schedules as CronJobs write them: the standard five fields (minute, hour, day of
//! month, month, day of week) with lists, ranges, steps and names, the `@yearly`,
//! `@monthly`, `@weekly`, `@daily`, `@hourly` and `@every <duration>` descriptors, and a
//! `TZ=`/`CRON_TZ=` prefix, with the semantics of the library upstream uses
//! (robfig/cron's standard parser): when both day fields are restricted a day matching
//! either runs.

use jiff::civil::{DateTime, date};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};

/// A parsed schedule.
#[derive(Clone, Debug)]
pub(crate) struct Schedule {
    kind: Kind,
    tz: TimeZone,
}

#[derive(Clone, Debug)]
enum Kind {
    Fields(Fields),
    Every(i64),
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    dom_star: bool,
    dow_star: bool,
}

/// Why a schedule did not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub(crate) struct ParseError(String);

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTES: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOURS: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTHS: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

impl Schedule {
    /// Parses `spec`, interpreting it in `default_tz` unless it has a `TZ=` prefix.
    pub(crate) fn parse(spec: &str, default_tz: TimeZone) -> Result<Self, ParseError> {
        let spec = spec.trim();
        let (tz, rest) = if let Some(rest) = spec
            .strip_prefix("TZ=")
            .or_else(|| spec.strip_prefix("CRON_TZ="))
        {
            let (name, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            let tz = TimeZone::get(name)
                .map_err(|e| ParseError(format!("provided bad location {name}: {e}")))?;
            (tz, rest.trim())
        } else {
            (default_tz, spec)
        };
        if rest.is_empty() {
            return Err(ParseError("empty spec string".into()));
        }
        let kind = if let Some(descriptor) = rest.strip_prefix('@') {
            descriptor_kind(descriptor)?
        } else {
            Kind::Fields(parse_fields(rest)?)
        };
        Ok(Self { kind, tz })
    }

    /// The schedule's time zone.
    pub(crate) fn time_zone(&self) -> &TimeZone {
        &self.tz
    }

    /// The first activation strictly after `after`, within five years.
    pub(crate) fn next(&self, after: Timestamp) -> Option<Timestamp> {
        match &self.kind {
            Kind::Every(seconds) => {
                let t = Timestamp::from_second(after.as_second() + seconds).ok()?;
                Some(t)
            }
            Kind::Fields(fields) => fields.next(after, &self.tz),
        }
    }
}

fn descriptor_kind(descriptor: &str) -> Result<Kind, ParseError> {
    let fields = match descriptor {
        "yearly" | "annually" => "0 0 1 1 *",
        "monthly" => "0 0 1 * *",
        "weekly" => "0 0 * * 0",
        "daily" | "midnight" => "0 0 * * *",
        "hourly" => "0 * * * *",
        _ => {
            if let Some(duration) = descriptor.strip_prefix("every ") {
                let span: jiff::SignedDuration = duration.trim().parse().map_err(|e| {
                    ParseError(format!("failed to parse duration @{descriptor}: {e}"))
                })?;
                return Ok(Kind::Every(span.as_secs().max(1)));
            }
            return Err(ParseError(format!(
                "unrecognized descriptor: @{descriptor}"
            )));
        }
    };
    Ok(Kind::Fields(parse_fields(fields)?))
}

fn parse_fields(spec: &str) -> Result<Fields, ParseError> {
    let parts: Vec<&str> = spec.split_whitespace().collect();
    if parts.len() != 5 {
        return Err(ParseError(format!(
            "expected exactly 5 fields, found {}: [{}]",
            parts.len(),
            parts.join(" ")
        )));
    }
    let (dom, dom_star) = parse_field(parts[2], &DOM)?;
    let (dow, dow_star) = parse_field(parts[4], &DOW)?;
    Ok(Fields {
        minute: parse_field(parts[0], &MINUTES)?.0,
        hour: parse_field(parts[1], &HOURS)?.0,
        dom,
        month: parse_field(parts[3], &MONTHS)?.0,
        dow,
        dom_star,
        dow_star,
    })
}

/// A field's bits and whether it is unrestricted (`*` or `?`, with no step above one).
fn parse_field(field: &str, bounds: &Bounds) -> Result<(u64, bool), ParseError> {
    let mut bits = 0u64;
    let mut star = false;
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| ParseError(format!("failed to parse int from {step}")))?;
                if step == 0 {
                    return Err(ParseError(format!(
                        "step of range should be a positive number: {item}"
                    )));
                }
                (range, Some(step))
            }
            None => (item, None),
        };
        let (start, end, item_star) = if range == "*" || range == "?" {
            (bounds.min, bounds.max, step.is_none_or(|s| s == 1))
        } else if let Some((lo, hi)) = range.split_once('-') {
            (value(lo, bounds)?, value(hi, bounds)?, false)
        } else {
            let v = value(range, bounds)?;
            (v, if step.is_some() { bounds.max } else { v }, false)
        };
        if start < bounds.min || end > bounds.max || start > end {
            return Err(ParseError(format!(
                "{item}: beginning of range ({start}) or end of range ({end}) beyond bounds ({}-{})",
                bounds.min, bounds.max
            )));
        }
        star |= item_star;
        let step = step.unwrap_or(1);
        let mut v = start;
        while v <= end {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

fn value(s: &str, bounds: &Bounds) -> Result<u32, ParseError> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = bounds.names.iter().position(|n| *n == lower) {
        return Ok(u32::try_from(i).unwrap_or(0) + bounds.min);
    }
    s.parse()
        .map_err(|_| ParseError(format!("failed to parse int from {s}")))
}

impl Fields {
    fn day_matches(&self, dt: DateTime) -> bool {
        let dom = self.dom & (1 << dt.day()) != 0;
        let dow = self.dow & (1 << dt.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = after.to_zoned(tz.clone()).datetime();
        let mut dt = start
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .ok()?
            .checked_add(1.minute())
            .ok()?;
        let limit = start.year() + 5;
        while dt.year() <= limit {
            if self.month & (1 << dt.month()) == 0 {
                let first =
                    date(dt.year(), dt.month(), 1).to_datetime(jiff::civil::time(0, 0, 0, 0));
                dt = first.checked_add(1.month()).ok()?;
                continue;
            }
            if !self.day_matches(dt) {
                dt = dt
                    .date()
                    .to_datetime(jiff::civil::time(0, 0, 0, 0))
                    .checked_add(1.day())
                    .ok()?;
                continue;
            }
            if self.hour & (1 << dt.hour()) == 0 {
                dt = dt
                    .with()
                    .minute(0)
                    .build()
                    .ok()?
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if self.minute & (1 << dt.minute()) == 0 {
                dt = dt.checked_add(1.minute()).ok()?;
                continue;
            }
            // Times skipped by a daylight-saving change run at the shifted time; times
            // repeated by one run once.
            let t = tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
            if t > after {
                return Some(t);
            }
            dt = dt.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        let schedule = Schedule::parse(spec, TimeZone::UTC).unwrap();
        schedule.next(utc(after)).unwrap().to_string()
    }

    #[test]
    fn next_activations() {
        let cases = [
            (
                "*/1 * * * *",
                "2024-01-01T00:00:00Z",
                "2024-01-01T00:01:00Z",
            ),
            ("* * * * *", "2024-01-01T00:00:30Z", "2024-01-01T00:01:00Z"),
            (
                "*/15 * * * *",
                "2024-01-01T00:14:59Z",
                "2024-01-01T00:15:00Z",
            ),
            ("5 4 * * *", "2024-01-01T04:05:00Z", "2024-01-02T04:05:00Z"),
            ("0 0 29 2 *", "2024-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            (
                "0 9 * * MON-FRI",
                "2024-01-05T10:00:00Z",
                "2024-01-08T09:00:00Z",
            ),
            ("0 0 1 * 1", "2024-01-01T00:00:00Z", "2024-01-08T00:00:00Z"),
            ("0 0 13 * 5", "2024-09-01T00:00:00Z", "2024-09-06T00:00:00Z"),
            (
                "0 0 */10 * *",
                "2024-01-01T00:00:00Z",
                "2024-01-11T00:00:00Z",
            ),
            (
                "30 6-16/4 * * 1-5",
                "2024-01-01T07:00:00Z",
                "2024-01-01T10:30:00Z",
            ),
            (
                "0 0 * jan,jul ?",
                "2024-02-01T00:00:00Z",
                "2024-07-01T00:00:00Z",
            ),
            ("@hourly", "2024-01-01T00:00:00Z", "2024-01-01T01:00:00Z"),
            ("@daily", "2024-01-01T00:00:00Z", "2024-01-02T00:00:00Z"),
            ("@weekly", "2024-01-01T00:00:00Z", "2024-01-07T00:00:00Z"),
            ("@monthly", "2024-01-15T00:00:00Z", "2024-02-01T00:00:00Z"),
            ("@yearly", "2024-01-15T00:00:00Z", "2025-01-01T00:00:00Z"),
            ("@every 90s", "2024-01-01T00:00:00Z", "2024-01-01T00:01:30Z"),
            (
                "TZ=Asia/Tokyo 0 9 * * *",
                "2024-01-01T00:00:00Z",
                "2024-01-02T00:00:00Z",
            ),
            (
                "CRON_TZ=America/New_York 0 1 * * *",
                "2024-01-01T00:00:00Z",
                "2024-01-01T06:00:00Z",
            ),
        ];
        for (spec, after, want) in cases {
            assert_eq!(next(spec, after), want, "{spec} after {after}");
        }
    }

    #[test]
    fn daylight_saving_changes() {
        let ny = TimeZone::get("America/New_York").unwrap();
        // 2:30 does not exist on 2024-03-10 in New York: it runs at 3:30 EDT.
        let s = Schedule::parse("30 2 * * *", ny.clone()).unwrap();
        assert_eq!(
            s.next(utc("2024-03-10T05:00:00Z")).unwrap().to_string(),
            "2024-03-10T07:30:00Z"
        );
        // 1:30 happens twice on 2024-11-03: it runs once.
        let s = Schedule::parse("30 1 * * *", ny).unwrap();
        let first = s.next(utc("2024-11-03T04:00:00Z")).unwrap();
        assert_eq!(first.to_string(), "2024-11-03T05:30:00Z");
        assert_eq!(s.next(first).unwrap().to_string(), "2024-11-04T06:30:00Z");
    }

    #[test]
    fn errors() {
        for bad in [
            "",
            "* * * *",
            "* * * * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "* * * * 7",
            "*/0 * * * *",
            "5-1 * * * *",
            "a * * * *",
            "@fortnightly",
            "TZ=Nowhere/City * * * * *",
        ] {
            assert!(
                Schedule::parse(bad, TimeZone::UTC).is_err(),
                "{bad:?} should not parse"
            );
        }
    }
}
