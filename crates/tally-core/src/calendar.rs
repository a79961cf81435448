//! UTC calendar arithmetic on ledger time (ms since the Unix epoch), without a clock or a
//! time-zone database: the proleptic Gregorian calendar is pure arithmetic.

use crate::view::Month;

pub const MS_PER_DAY: u64 = 86_400_000;
pub const MS_PER_WEEK: u64 = 7 * MS_PER_DAY;

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = if year >= 0 { year } else { year - 399 } / 400;
    let year_of_era = year - era * 400;
    let month_index = (month as i64 + 9) % 12; // March = 0
    let day_of_year = (153 * month_index + 2) / 5 + day as i64 - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Civil date of a day count since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = if days >= 0 { days } else { days - 146_096 } / 146_097;
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_index + 2) / 5 + 1) as u32;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    } as u32;
    let year = year_of_era + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

fn days_in_month(year: i64, month: u32) -> u32 {
    let next = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    (days_from_civil(next.0, next.1, 1) - days_from_civil(year, month, 1)) as u32
}

/// The calendar month (UTC) that contains `at_ms`.
pub fn month_of(at_ms: u64) -> Month {
    let (year, month, _) = civil_from_days((at_ms / MS_PER_DAY) as i64);
    Month {
        year: year as i32,
        month,
    }
}

/// First millisecond of `month`.
pub fn month_start_ms(month: Month) -> u64 {
    (days_from_civil(month.year as i64, month.month, 1) as u64) * MS_PER_DAY
}

/// `anchor_ms` moved `months` calendar months later, same day-of-month and time of day,
/// clamped to the last day of shorter months (Jan 31 + 1 month = Feb 28/29).
pub fn add_months(anchor_ms: u64, months: u64) -> u64 {
    let days = (anchor_ms / MS_PER_DAY) as i64;
    let time_of_day = anchor_ms % MS_PER_DAY;
    let (year, month, day) = civil_from_days(days);
    let month_index = (month as i64 - 1) + months as i64;
    let target_year = year + month_index.div_euclid(12);
    let target_month = (month_index.rem_euclid(12) + 1) as u32;
    let target_day = day.min(days_in_month(target_year, target_month));
    (days_from_civil(target_year, target_month, target_day) as u64) * MS_PER_DAY + time_of_day
}

/// Parses an RFC 3339 UTC time such as `2026-01-31T12:00:00Z` (optional `.mmm` fraction,
/// `Z` or `+00:00`) into ms since the epoch.
pub fn parse_utc(text: &str) -> Option<u64> {
    let text = text.trim();
    // RFC 3339 allows the `T` and `Z` in lower case.
    let body = text
        .strip_suffix(['Z', 'z'])
        .or_else(|| text.strip_suffix("+00:00"))?;
    let (date, time) = body.split_once(['T', 't'])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some() || !(1..=12).contains(&month) || year < 1970 {
        return None;
    }
    if day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let (clock, fraction) = match time.split_once('.') {
        Some((clock, fraction)) => (clock, Some(fraction)),
        None => (time, None),
    };
    let mut clock_parts = clock.split(':');
    let hours: u64 = clock_parts.next()?.parse().ok()?;
    let minutes: u64 = clock_parts.next()?.parse().ok()?;
    let seconds: u64 = clock_parts.next()?.parse().ok()?;
    if clock_parts.next().is_some() || hours > 23 || minutes > 59 || seconds > 59 {
        return None;
    }
    let millis: u64 = match fraction {
        None => 0,
        Some(f) if !f.is_empty() && f.len() <= 9 && f.bytes().all(|b| b.is_ascii_digit()) => {
            let padded = format!("{f:0<3}");
            padded[..3].parse().ok()?
        }
        Some(_) => return None,
    };
    let days = days_from_civil(year, month, day) as u64;
    Some(days * MS_PER_DAY + ((hours * 60 + minutes) * 60 + seconds) * 1000 + millis)
}

/// Formats ms since the epoch as RFC 3339 UTC, e.g. `2026-01-31T12:00:00.000Z`.
pub fn format_utc(at_ms: u64) -> String {
    let (year, month, day) = civil_from_days((at_ms / MS_PER_DAY) as i64);
    let in_day = at_ms % MS_PER_DAY;
    let (hours, minutes) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (seconds, millis) = (in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hours:02}:{minutes:02}:{seconds:02}.{millis:03}Z")
}

/// Parses `YYYY-MM`.
pub fn parse_month(text: &str) -> Option<Month> {
    let (year, month) = text.split_once('-')?;
    if year.len() != 4 || month.len() != 2 {
        return None;
    }
    let year: i32 = year.parse().ok()?;
    let month: u32 = month.parse().ok()?;
    (1..=12).contains(&month).then_some(Month { year, month })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trip() {
        for days in [-1_000_000i64, -1, 0, 1, 59, 365, 10_957, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_783), (2024, 3, 1));
    }

    #[test]
    fn months() {
        let jan31 = days_from_civil(2024, 1, 31) as u64 * MS_PER_DAY + 5;
        let feb = add_months(jan31, 1);
        assert_eq!(civil_from_days((feb / MS_PER_DAY) as i64), (2024, 2, 29));
        assert_eq!(feb % MS_PER_DAY, 5);
        let mar = add_months(jan31, 2);
        assert_eq!(civil_from_days((mar / MS_PER_DAY) as i64), (2024, 3, 31));
        let next_year = add_months(jan31, 13);
        assert_eq!(
            civil_from_days((next_year / MS_PER_DAY) as i64),
            (2025, 2, 28)
        );
        assert_eq!(
            month_of(jan31),
            Month {
                year: 2024,
                month: 1
            }
        );
        assert_eq!(
            month_start_ms(Month {
                year: 1970,
                month: 2
            }),
            31 * MS_PER_DAY
        );
        assert_eq!(
            parse_month("2026-11"),
            Some(Month {
                year: 2026,
                month: 11
            })
        );
        assert_eq!(parse_month("2026-13"), None);
        let t = parse_utc("2024-02-29T23:59:58.5Z").unwrap();
        assert_eq!(format_utc(t), "2024-02-29T23:59:58.500Z");
        assert_eq!(parse_utc("2023-02-29T00:00:00Z"), None);
        assert_eq!(parse_utc("1970-01-01T00:00:01+00:00"), Some(1000));
        assert_eq!(parse_utc("1970-01-01t00:00:01.5z"), Some(1500));
        // Kept in milliseconds: finer digits are cut, as ledger time has none.
        assert_eq!(parse_utc("1970-01-01T00:00:01.123999Z"), Some(1123));
    }
}
