//! CRC-32/IEEE as nginx's `ngx_crc32_long` / `ngx_crc32_update` compute it.
//!
//! A 1 KiB table built at compile time; nginx's hash and consistent-hash
//! balancers need the streaming form (init, update, final) because the
//! ketama points continue from a shared prefix state.

const TABLE: [u32; 256] = make_table();

const fn make_table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// `ngx_crc32_init`.
pub const INIT: u32 = 0xFFFF_FFFF;

/// `ngx_crc32_update`: continue a running (non-finalised) state.
pub fn update(mut crc: u32, data: &[u8]) -> u32 {
    for &b in data {
        crc = TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    crc
}

/// `ngx_crc32_final`.
pub fn finish(crc: u32) -> u32 {
    crc ^ 0xFFFF_FFFF
}

/// `ngx_crc32_long`.
pub fn crc32(data: &[u8]) -> u32 {
    finish(update(INIT, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        // The CRC-32/IEEE check value from the catalogue of parametrised CRCs.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
        let s = update(update(INIT, b"1234"), b"56789");
        assert_eq!(finish(s), 0xCBF4_3926);
    }
}
