//! The bytes of the format: LEB128 varints, zigzag for signed values, length-prefixed
//! strings, CRC-32 (IEEE, as zlib and PNG use). Readers never panic on short or bad input:
//! every getter returns `None` past the end.

/// A growing buffer of encoded values.
#[derive(Debug, Default, Clone)]
pub struct Put(pub Vec<u8>);

impl Put {
    /// An unsigned LEB128 varint (1 byte below 128, at most 10).
    pub fn u(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// A wide unsigned LEB128 varint (an update's field mask): the same bytes as [`Put::u`]
    /// below 2^64, at most 19.
    pub fn w(&mut self, mut v: u128) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    /// A signed value, zigzag-encoded (small magnitudes stay small).
    pub fn i(&mut self, v: i64) {
        self.u(((v << 1) ^ (v >> 63)) as u64);
    }

    /// One byte.
    pub fn b(&mut self, v: u8) {
        self.0.push(v);
    }

    /// An `f64` as its 8 little-endian bytes (exact).
    pub fn f(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_bits().to_le_bytes());
    }

    /// A string: its length, then its UTF-8 bytes.
    pub fn s(&mut self, v: &str) {
        self.u(v.len() as u64);
        self.0.extend_from_slice(v.as_bytes());
    }

    /// An optional string: 0 for none, else 1 + its length, then its bytes.
    pub fn os(&mut self, v: Option<&str>) {
        match v {
            None => self.u(0),
            Some(s) => {
                self.u(s.len() as u64 + 1);
                self.0.extend_from_slice(s.as_bytes());
            }
        }
    }
}

/// A cursor over encoded values.
#[derive(Debug, Clone)]
pub struct Get<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Get<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// True when everything was read.
    pub fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// An unsigned varint.
    pub fn u(&mut self) -> Option<u64> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A wide unsigned varint ([`Put::w`]).
    pub fn w(&mut self) -> Option<u128> {
        let mut v: u128 = 0;
        for shift in (0..128).step_by(7) {
            let byte = *self.buf.get(self.pos)?;
            self.pos += 1;
            v |= u128::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    /// A zigzag-encoded signed value.
    pub fn i(&mut self) -> Option<i64> {
        let z = self.u()?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    /// One byte.
    pub fn b(&mut self) -> Option<u8> {
        let v = *self.buf.get(self.pos)?;
        self.pos += 1;
        Some(v)
    }

    /// An `f64` from 8 little-endian bytes.
    pub fn f(&mut self) -> Option<f64> {
        let bytes = self.take(8)?;
        Some(f64::from_bits(u64::from_le_bytes(bytes.try_into().ok()?)))
    }

    /// `n` raw bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.buf.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    /// A string.
    pub fn s(&mut self) -> Option<String> {
        let n = usize::try_from(self.u()?).ok()?;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }

    /// An optional string.
    pub fn os(&mut self) -> Option<Option<String>> {
        let n = self.u()?;
        if n == 0 {
            return Some(None);
        }
        let n = usize::try_from(n - 1).ok()?;
        Some(Some(String::from_utf8(self.take(n)?.to_vec()).ok()?))
    }
}

/// CRC-32 of `parts`, as if concatenated.
pub fn crc(parts: &[&[u8]]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    h.finalize()
}

/// A little-endian u32 at `at` (None past the end).
pub fn le32(buf: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(buf.get(at..at + 4)?.try_into().ok()?))
}

/// A little-endian u64 at `at` (None past the end).
pub fn le64(buf: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(buf.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip() {
        let mut p = Put::default();
        let us = [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX];
        let is = [0, -1, 1, -64, 64, i64::MIN, i64::MAX];
        for v in us {
            p.u(v);
        }
        for v in is {
            p.i(v);
        }
        p.f(1.5e9);
        p.s("héllo");
        p.os(None);
        p.os(Some(""));
        let mut g = Get::new(&p.0);
        for v in us {
            assert_eq!(g.u(), Some(v));
        }
        for v in is {
            assert_eq!(g.i(), Some(v));
        }
        assert_eq!(g.f(), Some(1.5e9));
        assert_eq!(g.s().as_deref(), Some("héllo"));
        assert_eq!(g.os(), Some(None));
        assert_eq!(g.os(), Some(Some(String::new())));
        assert!(g.done());
        assert_eq!(g.u(), None);
    }

    /// A wide mask reads back whole, and below 2^64 is the same bytes as a plain varint.
    #[test]
    fn wide_varints_round_trip_and_match_narrow_ones() {
        for v in [0_u128, 1, 300, u128::from(u64::MAX), 1 << 68, u128::MAX] {
            let mut p = Put::default();
            p.w(v);
            let mut g = Get::new(&p.0);
            assert_eq!(g.w(), Some(v));
            assert!(g.done());
            if let Ok(narrow) = u64::try_from(v) {
                let mut q = Put::default();
                q.u(narrow);
                assert_eq!(p.0, q.0, "{v}");
            }
        }
        assert_eq!(Get::new(&[0xff; 20]).w(), None);
    }

    #[test]
    fn small_values_are_small() {
        let mut p = Put::default();
        p.u(127);
        p.i(-64);
        assert_eq!(p.0.len(), 2);
    }

    #[test]
    fn truncated_input_is_none_not_a_panic() {
        let mut p = Put::default();
        p.s("abcdef");
        p.u(u64::MAX);
        for n in 0..p.0.len() {
            let mut g = Get::new(&p.0[..n]);
            let _ = g.s();
            let _ = g.u();
        }
        // A varint that never ends.
        assert_eq!(Get::new(&[0xff; 11]).u(), None);
    }
}
