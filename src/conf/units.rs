//! nginx's value syntaxes: sizes (`16k`), times (`1h 30m`), flags (`on|off`).

use std::time::Duration;

/// `512`, `16k`, `80m`, `7g` (either case), as `ngx_parse_offset()`.
pub fn parse_size(s: &str) -> Option<u64> {
    let (digits, mult) = match s.as_bytes().last()? {
        b'k' | b'K' => (&s[..s.len() - 1], 1u64 << 10),
        b'm' | b'M' => (&s[..s.len() - 1], 1 << 20),
        b'g' | b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<u64>().ok()?.checked_mul(mult)
}

/// Times as `ngx_parse_time()`: `5` (seconds), `300ms`, `30s`, `20m`, `2h`,
/// `5d`, `1w`, `1M` (30 days), `1y` (365 days), and combinations such as
/// `1h 30m` or `1d12h`, each unit at most once and largest first.
pub fn parse_time(s: &str) -> Option<Duration> {
    const UNITS: [(&str, u64); 8] = [
        ("y", 365 * 86_400_000),
        ("M", 30 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1000),
        ("ms", 1),
    ];
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: u64 = 0;
    let mut last_rank: Option<usize> = None;
    let mut seen_any = false;
    while i < b.len() {
        if b[i] == b' ' {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: u64 = s[start..i].parse().ok()?;
        let rest = &s[i..];
        let (rank, len) = if rest.starts_with("ms") {
            (7, 2)
        } else {
            match rest.as_bytes().first() {
                None | Some(b' ') => {
                    // A bare number is seconds, and only as the last part.
                    if rest.trim().is_empty() {
                        (6, 0)
                    } else {
                        return None;
                    }
                }
                Some(&u) => {
                    // Compare bytes: slicing `rest` at 1 would split a multi-byte char.
                    (
                        UNITS.iter().position(|(name, _)| name.as_bytes() == [u])?,
                        1,
                    )
                }
            }
        };
        if let Some(prev) = last_rank {
            if rank <= prev {
                return None;
            }
        }
        last_rank = Some(rank);
        total = total.checked_add(n.checked_mul(UNITS[rank].1)?)?;
        i += len;
        seen_any = true;
    }
    seen_any.then(|| Duration::from_millis(total))
}

/// `on` / `off`, in any case as `ngx_conf_set_flag_slot()` accepts them.
pub fn parse_flag(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("on") {
        Some(true)
    } else if s.eq_ignore_ascii_case("off") {
        Some(false)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("16k"), Some(16 << 10));
        assert_eq!(parse_size("80m"), Some(80 << 20));
        assert_eq!(parse_size("7g"), Some(7 << 30));
        assert_eq!(parse_size("7G"), Some(7 << 30));
        for bad in [
            "",
            "k",
            "5q",
            "-1",
            "1.5k",
            "99999999999999999999g",
            "5é",
            "é",
            "ж5k",
        ] {
            assert_eq!(parse_size(bad), None, "{bad}");
        }
    }

    #[test]
    fn flags_ignore_case() {
        assert_eq!(parse_flag("ON"), Some(true));
        assert_eq!(parse_flag("Off"), Some(false));
        assert_eq!(parse_flag("yes"), None);
        assert_eq!(parse_flag("ö"), None);
    }

    #[test]
    fn times() {
        let ms = |s: &str| parse_time(s).map(|d| d.as_millis() as u64);
        assert_eq!(ms("5"), Some(5000));
        assert_eq!(ms("300ms"), Some(300));
        assert_eq!(ms("30s"), Some(30_000));
        assert_eq!(ms("20m"), Some(1_200_000));
        assert_eq!(ms("5d"), Some(5 * 86_400_000));
        assert_eq!(ms("1w"), Some(7 * 86_400_000));
        assert_eq!(ms("1y"), Some(365 * 86_400_000));
        assert_eq!(ms("1h 30m"), Some(5_400_000));
        assert_eq!(ms("1d12h"), Some(86_400_000 + 43_200_000));
        assert_eq!(ms("1m 5"), Some(65_000));
        for bad in [
            "", "5q", "m", "30m 1h", "1s 1s", "5 5", "1.5s", "5é", "1h5ж", "5€s",
        ] {
            assert_eq!(ms(bad), None, "{bad}");
        }
    }
}
