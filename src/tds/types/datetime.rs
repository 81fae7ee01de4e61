//! Date and time values and their calendar conversions ([MS-TDS] 2.2.5.5.1.7
//! DATE/TIME/DATETIME2/DATETIMEOFFSET, 2.2.5.5.1.8 DATETIME/SMALLDATETIME).
//!
//! - DATE: 3 bytes, days since 0001-01-01 (proleptic Gregorian).
//! - TIME(n): 3/4/5 bytes, 10^-n second ticks since midnight.
//! - DATETIME2(n): TIME(n) then DATE. DATETIMEOFFSET(n): TIME(n) and DATE in
//!   UTC, then a signed 2-byte offset in minutes.
//! - DATETIME: signed 4-byte days since 1900-01-01, then 4-byte 1/300 s ticks.
//! - SMALLDATETIME: 2-byte days since 1900-01-01, then 2-byte minutes.

use super::type_info::MAX_TIME_SCALE;

/// Last valid DATE day number (9999-12-31).
pub const MAX_DATE_DAYS: u32 = 3_652_058;

/// Day number of 1900-01-01 counted from 0001-01-01.
pub const DAYS_0001_TO_1900: i64 = 693_595;

/// 1/300 s ticks in a day (DATETIME time part).
pub const DATETIME_TICKS_PER_DAY: u32 = 300 * 86_400;

/// Minutes in a day (SMALLDATETIME time part).
pub const MINUTES_PER_DAY: u16 = 1440;

const NANOS_PER_SECOND: u64 = 1_000_000_000;

/// A calendar date and time of day, at nanosecond resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Civil {
    pub year: i32,
    pub month: u8,
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    pub nanosecond: u32,
}

/// Days from 0001-01-01 to `year-month-day`, or `None` if the date does
/// not exist. Uses the era arithmetic of the proleptic Gregorian calendar.
pub fn days_from_civil(year: i32, month: u8, day: u8) -> Option<i64> {
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    let y = i64::from(year) - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    // 719468 shifts 0000-03-01 to day 0; 366 more moves the origin to 0001-01-01.
    Some(era * 146_097 + doe - 719_468 + 719_162)
}

/// The date `days` after 0001-01-01.
pub fn civil_from_days(days: i64) -> (i32, u8, u8) {
    let z = days - 719_162 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year as i32, month, day)
}

fn is_leap(year: i32) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i32, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// 10^scale.
pub fn ticks_per_second(scale: u8) -> u64 {
    10u64.pow(u32::from(scale.min(MAX_TIME_SCALE)))
}

/// Byte length of a TIME(scale) value (2.2.5.5.1.7).
pub fn time_len(scale: u8) -> usize {
    match scale {
        0..=2 => 3,
        3..=4 => 4,
        _ => 5,
    }
}

/// DATE: days since 0001-01-01.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Date {
    pub days: u32,
}

impl Date {
    pub fn from_ymd(year: i32, month: u8, day: u8) -> Option<Self> {
        let days = days_from_civil(year, month, day)?;
        let days = u32::try_from(days).ok().filter(|d| *d <= MAX_DATE_DAYS)?;
        Some(Date { days })
    }

    pub fn ymd(&self) -> (i32, u8, u8) {
        civil_from_days(i64::from(self.days))
    }
}

/// TIME(scale): ticks of 10^-scale seconds since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Time {
    pub ticks: u64,
    pub scale: u8,
}

impl Time {
    /// Builds a time of day; `nanosecond` is truncated to the scale.
    pub fn from_hms_nanos(
        hour: u8,
        minute: u8,
        second: u8,
        nanosecond: u32,
        scale: u8,
    ) -> Option<Self> {
        if hour > 23
            || minute > 59
            || second > 59
            || nanosecond >= 1_000_000_000
            || scale > MAX_TIME_SCALE
        {
            return None;
        }
        let secs = u64::from(hour) * 3600 + u64::from(minute) * 60 + u64::from(second);
        let per = ticks_per_second(scale);
        let frac = u64::from(nanosecond) / (NANOS_PER_SECOND / per);
        Some(Time {
            ticks: secs * per + frac,
            scale,
        })
    }

    /// (hour, minute, second, nanosecond).
    pub fn hms_nanos(&self) -> (u8, u8, u8, u32) {
        let per = ticks_per_second(self.scale);
        let secs = self.ticks / per;
        let nanos = (self.ticks % per) * (NANOS_PER_SECOND / per);
        (
            (secs / 3600) as u8,
            (secs / 60 % 60) as u8,
            (secs % 60) as u8,
            nanos as u32,
        )
    }

    /// Whether the ticks are below one day.
    pub fn is_valid(&self) -> bool {
        self.scale <= MAX_TIME_SCALE && self.ticks < 86_400 * ticks_per_second(self.scale)
    }
}

/// DATETIME2(scale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime2 {
    pub date: Date,
    pub time: Time,
}

impl DateTime2 {
    pub fn from_civil(c: &Civil, scale: u8) -> Option<Self> {
        Some(DateTime2 {
            date: Date::from_ymd(c.year, c.month, c.day)?,
            time: Time::from_hms_nanos(c.hour, c.minute, c.second, c.nanosecond, scale)?,
        })
    }

    pub fn to_civil(&self) -> Civil {
        civil(self.date.ymd(), self.time.hms_nanos())
    }
}

/// DATETIMEOFFSET(scale): the date and time are UTC; `offset_minutes` gives
/// the local offset (-840..=840).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTimeOffset {
    pub utc: DateTime2,
    pub offset_minutes: i16,
}

impl DateTimeOffset {
    /// Builds a value from local calendar fields and the offset of that
    /// local time from UTC; the stored date and time are UTC.
    pub fn from_local_civil(c: &Civil, offset_minutes: i16, scale: u8) -> Option<Self> {
        let local = DateTime2::from_civil(c, scale)?;
        let utc = shift(&local, -i64::from(offset_minutes))?;
        Some(DateTimeOffset {
            utc,
            offset_minutes,
        })
    }

    /// The local calendar fields (UTC plus the offset).
    pub fn to_local_civil(&self) -> Option<Civil> {
        shift(&self.utc, i64::from(self.offset_minutes)).map(|dt| dt.to_civil())
    }
}

/// Moves a DATETIME2 by whole minutes; `None` outside 0001-01-01..9999-12-31.
fn shift(dt: &DateTime2, minutes: i64) -> Option<DateTime2> {
    let per = i64::try_from(ticks_per_second(dt.time.scale)).ok()?;
    let per_day = 86_400 * per;
    let total =
        i64::from(dt.date.days) * per_day + i64::try_from(dt.time.ticks).ok()? + minutes * 60 * per;
    let days = u32::try_from(total.div_euclid(per_day))
        .ok()
        .filter(|d| *d <= MAX_DATE_DAYS)?;
    Some(DateTime2 {
        date: Date { days },
        time: Time {
            ticks: u64::try_from(total.rem_euclid(per_day)).ok()?,
            scale: dt.time.scale,
        },
    })
}

/// DATETIME: days since 1900-01-01 and 1/300 s ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DateTime {
    pub days: i32,
    pub ticks: u32,
}

impl DateTime {
    /// Builds a DATETIME, rounding the nanoseconds to the nearest 1/300 s
    /// (a value that rounds up to midnight is refused).
    pub fn from_civil(c: &Civil) -> Option<Self> {
        let days = days_from_civil(c.year, c.month, c.day)? - DAYS_0001_TO_1900;
        let secs = u64::from(c.hour) * 3600 + u64::from(c.minute) * 60 + u64::from(c.second);
        let frac = (u64::from(c.nanosecond) * 300 + NANOS_PER_SECOND / 2) / NANOS_PER_SECOND;
        let ticks = u32::try_from(secs * 300 + frac).ok()?;
        if ticks >= DATETIME_TICKS_PER_DAY || c.hour > 23 || c.minute > 59 || c.second > 59 {
            return None;
        }
        Some(DateTime {
            days: i32::try_from(days).ok()?,
            ticks,
        })
    }

    /// The calendar value; nanoseconds are truncated (1/300 s is not a whole
    /// number of nanoseconds), which [`DateTime::from_civil`] rounds back.
    pub fn to_civil(&self) -> Civil {
        let date = civil_from_days(i64::from(self.days) + DAYS_0001_TO_1900);
        let secs = u64::from(self.ticks / 300);
        let nanos = u64::from(self.ticks % 300) * NANOS_PER_SECOND / 300;
        civil(
            date,
            (
                (secs / 3600) as u8,
                (secs / 60 % 60) as u8,
                (secs % 60) as u8,
                nanos as u32,
            ),
        )
    }
}

/// SMALLDATETIME: days since 1900-01-01 and minutes since midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SmallDateTime {
    pub days: u16,
    pub minutes: u16,
}

impl SmallDateTime {
    /// Builds a SMALLDATETIME; seconds must be zero (no rounding is done).
    pub fn from_civil(c: &Civil) -> Option<Self> {
        let days = days_from_civil(c.year, c.month, c.day)? - DAYS_0001_TO_1900;
        if c.hour > 23 || c.minute > 59 || c.second != 0 || c.nanosecond != 0 {
            return None;
        }
        Some(SmallDateTime {
            days: u16::try_from(days).ok()?,
            minutes: u16::from(c.hour) * 60 + u16::from(c.minute),
        })
    }

    pub fn to_civil(&self) -> Civil {
        let date = civil_from_days(i64::from(self.days) + DAYS_0001_TO_1900);
        civil(
            date,
            ((self.minutes / 60) as u8, (self.minutes % 60) as u8, 0, 0),
        )
    }
}

fn civil(
    (year, month, day): (i32, u8, u8),
    (hour, minute, second, nanosecond): (u8, u8, u8, u32),
) -> Civil {
    Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanosecond,
    }
}

/// Reads a little-endian TIME of `time_len(scale)` bytes.
pub(crate) fn time_from_bytes(bytes: &[u8], scale: u8) -> Time {
    let mut buf = [0u8; 8];
    let n = bytes.len().min(8);
    buf[..n].copy_from_slice(&bytes[..n]);
    Time {
        ticks: u64::from_le_bytes(buf),
        scale,
    }
}

pub(crate) fn time_to_bytes(t: &Time, out: &mut Vec<u8>) {
    out.extend_from_slice(&t.ticks.to_le_bytes()[..time_len(t.scale)]);
}

pub(crate) fn date_from_bytes(bytes: [u8; 3]) -> Date {
    Date {
        days: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], 0]),
    }
}

pub(crate) fn date_to_bytes(d: &Date, out: &mut Vec<u8>) {
    out.extend_from_slice(&d.days.to_le_bytes()[..3]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_day_numbers() {
        assert_eq!(days_from_civil(1, 1, 1), Some(0));
        assert_eq!(days_from_civil(1900, 1, 1), Some(DAYS_0001_TO_1900));
        assert_eq!(
            days_from_civil(9999, 12, 31),
            Some(i64::from(MAX_DATE_DAYS))
        );
        assert_eq!(days_from_civil(2023, 2, 29), None);
        assert_eq!(civil_from_days(0), (1, 1, 1));
        assert_eq!(civil_from_days(738_579), (2023, 3, 1));
    }

    #[test]
    fn every_day_round_trips() {
        for days in (0..=MAX_DATE_DAYS).step_by(7).chain([MAX_DATE_DAYS]) {
            let (y, m, d) = Date { days }.ymd();
            assert_eq!(Date::from_ymd(y, m, d), Some(Date { days }));
        }
    }

    #[test]
    fn time_round_trips_at_every_scale() {
        for scale in 0..=MAX_TIME_SCALE {
            let per = ticks_per_second(scale);
            for ticks in [0, 1, per - 1, 12_345 * per + per / 3, 86_400 * per - 1] {
                let t = Time { ticks, scale };
                assert!(t.is_valid());
                let (h, m, s, n) = t.hms_nanos();
                assert_eq!(
                    Time::from_hms_nanos(h, m, s, n, scale),
                    Some(t),
                    "scale {scale}"
                );
            }
            assert!(!Time {
                ticks: 86_400 * per,
                scale
            }
            .is_valid());
        }
        let t = Time::from_hms_nanos(13, 14, 15, 123_456_700, 7).unwrap();
        assert_eq!(t.ticks, (13 * 3600 + 14 * 60 + 15) * 10_000_000 + 1_234_567);
    }

    #[test]
    fn datetime2_and_offset_round_trip_at_every_scale() {
        let c = Civil {
            year: 2024,
            month: 2,
            day: 29,
            hour: 0,
            minute: 30,
            second: 59,
            nanosecond: 123_456_700,
        };
        for scale in 0..=MAX_TIME_SCALE {
            let dt = DateTime2::from_civil(&c, scale).unwrap();
            let back = dt.to_civil();
            assert_eq!(DateTime2::from_civil(&back, scale), Some(dt));
            let step = 1_000_000_000 / ticks_per_second(scale) as u32;
            assert_eq!(back.nanosecond, c.nanosecond / step * step);

            let dto = DateTimeOffset::from_local_civil(&c, 60, scale).unwrap();
            let utc = dto.utc.to_civil();
            assert_eq!((utc.month, utc.day, utc.hour), (2, 28, 23));
            assert_eq!(dto.to_local_civil(), Some(back));
        }
        let first = Civil {
            year: 1,
            month: 1,
            day: 1,
            hour: 0,
            minute: 0,
            second: 0,
            nanosecond: 0,
        };
        assert_eq!(DateTimeOffset::from_local_civil(&first, 60, 7), None);
    }

    #[test]
    fn datetime_ticks_round_trip() {
        for ticks in [0, 1, 2, 299, 300, 12_345_678, DATETIME_TICKS_PER_DAY - 1] {
            for days in [-53_690, 0, 45_000, 2_958_463] {
                let dt = DateTime { days, ticks };
                assert_eq!(DateTime::from_civil(&dt.to_civil()), Some(dt));
            }
        }
        let c = DateTime { days: 0, ticks: 1 }.to_civil();
        assert_eq!(
            (c.year, c.month, c.day, c.nanosecond),
            (1900, 1, 1, 3_333_333)
        );
    }

    #[test]
    fn smalldatetime_round_trip() {
        for (days, minutes) in [(0, 0), (1, 1439), (u16::MAX, 720)] {
            let v = SmallDateTime { days, minutes };
            assert_eq!(SmallDateTime::from_civil(&v.to_civil()), Some(v));
        }
    }
}
