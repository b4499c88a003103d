//! A `u64`'s decimal digits without `core::fmt`, for the writers that run on every request
//! (the access log, the receipts' stored text): `core::fmt` costs several times as much.

/// The decimal digits of `n`, written into the end of `buf`.
pub fn digits(n: u64, buf: &mut [u8; 20]) -> &str {
    let mut n = n;
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #[test]
    fn digits_are_what_display_writes() {
        for n in [0, 7, 10, 99, 1_000_001, u64::MAX] {
            assert_eq!(super::digits(n, &mut [0; 20]), n.to_string());
        }
    }
}
