//! Durations written the way people type them in flags and query strings: `200ms`, `1.5s`.

use std::time::Duration;

/// The longest duration accepted, so a typo cannot park a request for days.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// A duration string that could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {reason} (examples: 250ms, 2s, 1.5s, 1m)")]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

/// Parses `<number><unit>` with unit `us`, `ms`, `s` or `m`; the number may have a fraction.
/// A bare `0` is accepted; any other number needs a unit.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let error = |reason| DurationError {
        input: input.to_owned(),
        reason,
    };
    let text = input.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| error("missing unit"))?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(error("missing number"));
    }
    let value: f64 = number.parse().map_err(|_| error("bad number"))?;
    let seconds_per_unit = match unit {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(error("unknown unit")),
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > MAX_DURATION.as_secs_f64() {
        return Err(error("longer than an hour"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Formats a duration compactly for reports: `850µs`, `12.3ms`, `1.20s`.
pub fn format_duration(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1000.0 {
        format!("{micros:.0}µs")
    } else if micros < 1e6 {
        format!("{:.1}ms", micros / 1e3)
    } else {
        format!("{:.2}s", micros / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_fractions_parse() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("750us"), Ok(Duration::from_micros(750)));
        assert_eq!(parse_duration(" 0 "), Ok(Duration::ZERO));
    }

    #[test]
    fn malformed_durations_say_why() {
        for (input, reason) in [
            ("200", "missing unit"),
            ("ms", "missing number"),
            ("1.2.3s", "bad number"),
            ("5h", "unknown unit"),
            ("-5ms", "missing number"),
            ("61m", "longer than an hour"),
        ] {
            let error = parse_duration(input).unwrap_err();
            assert_eq!(error.reason, reason, "{input}");
            assert!(error.to_string().contains(input));
        }
    }

    #[test]
    fn formatting_picks_a_readable_unit() {
        assert_eq!(format_duration(Duration::from_micros(850)), "850µs");
        assert_eq!(format_duration(Duration::from_micros(12_340)), "12.3ms");
        assert_eq!(format_duration(Duration::from_millis(1200)), "1.20s");
    }
}
