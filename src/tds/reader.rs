//! A bounds-checked cursor over a fully buffered structure.
//!
//! Every read checks the remaining length first and fails with
//! [`DecodeError::Truncated`] naming the structure, so no peer input can make
//! a decoder panic. For a nested length, take a sub-reader over exactly that
//! many bytes with [`Reader::take`] and call [`Reader::finish`] on it.

use super::error::DecodeError;

/// Reads little- and big-endian integers and byte runs from a slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    structure: &'static str,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`; errors will name `structure`.
    pub fn new(buf: &'a [u8], structure: &'static str) -> Self {
        Reader {
            buf,
            pos: 0,
            structure,
        }
    }

    /// The structure name errors are reported against.
    pub fn structure(&self) -> &'static str {
        self.structure
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// The unconsumed bytes, without consuming them.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Whether every byte has been consumed.
    pub fn is_empty(&self) -> bool {
        self.remaining() == 0
    }

    fn truncated(&self, needed: usize) -> DecodeError {
        DecodeError::Truncated {
            structure: self.structure,
            needed,
            available: self.remaining(),
        }
    }

    /// Consumes `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(self.truncated(n));
        }
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    /// Consumes `n` bytes and returns a reader over exactly them, for a
    /// structure nested inside a length prefix.
    pub fn take(&mut self, n: usize, structure: &'static str) -> Result<Reader<'a>, DecodeError> {
        let inner = self.bytes(n)?;
        Ok(Reader::new(inner, structure))
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Result<(), DecodeError> {
        self.bytes(n).map(|_| ())
    }

    /// Consumes a fixed-size array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16_le(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u16_be(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub fn u32_le(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn u32_be(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// Fails unless every byte was consumed: a nested structure must use
    /// exactly the length its prefix declared.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.is_empty() {
            return Ok(());
        }
        Err(DecodeError::LengthMismatch {
            structure: self.structure,
            declared: self.buf.len(),
            used: self.pos,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_an_error_not_a_panic() {
        let mut r = Reader::new(&[1, 2, 3], "test");
        assert_eq!(r.u16_le().unwrap(), 0x0201);
        assert!(matches!(
            r.u32_le(),
            Err(DecodeError::Truncated {
                needed: 4,
                available: 1,
                ..
            })
        ));
        assert_eq!(r.u8().unwrap(), 3);
        r.finish().unwrap();
    }

    #[test]
    fn take_limits_the_inner_reader() {
        let mut r = Reader::new(&[0xAA, 0xBB, 0xCC], "outer");
        let mut inner = r.take(2, "inner").unwrap();
        assert_eq!(inner.u16_be().unwrap(), 0xAABB);
        inner.finish().unwrap();
        assert_eq!(r.remaining(), 1);
        assert!(r.clone().finish().is_err());
    }
}
