//! The detectors' byte encoding: `[FORMAT_VERSION][kind][fields...]`, little-endian, with a
//! bounds-checked reader. Any corrupt input is an `Error::Snapshot`.

use crate::error::{Error, Result};

/// Version of the detectors' byte encoding.
pub const FORMAT_VERSION: u8 = 1;

pub(crate) const KIND_ADWIN: u8 = 1;
pub(crate) const KIND_PAGE_HINKLEY: u8 = 2;
pub(crate) const KIND_DDM: u8 = 3;
pub(crate) const KIND_EDDM: u8 = 4;
pub(crate) const KIND_HDDM_A: u8 = 5;
pub(crate) const KIND_HDDM_W: u8 = 6;
pub(crate) const KIND_KSWIN: u8 = 7;

pub(crate) struct W(pub Vec<u8>);

impl W {
    pub fn new(kind: u8) -> Self {
        W(vec![FORMAT_VERSION, kind])
    }
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn bool(&mut self, v: bool) {
        self.0.push(v as u8);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
}

pub(crate) struct R<'a> {
    b: &'a [u8],
    pos: usize,
    what: &'static str,
}

fn corrupt(what: &str, msg: impl std::fmt::Display) -> Error {
    Error::Snapshot(format!("{what} state bytes are corrupt: {msg}"))
}

impl<'a> R<'a> {
    /// Checks the version and kind bytes.
    pub fn new(b: &'a [u8], kind: u8, what: &'static str) -> Result<Self> {
        let mut r = R { b, pos: 0, what };
        let v = r.u8()?;
        if v != FORMAT_VERSION {
            return Err(Error::Snapshot(format!("{what} state bytes have format version {v}; this build reads version {FORMAT_VERSION}")));
        }
        let k = r.u8()?;
        if k != kind {
            return Err(corrupt(what, format!("kind byte is {k}, expected {kind}")));
        }
        Ok(r)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| corrupt(self.what, format!("truncated: needed {n} bytes at offset {}", self.pos)))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    pub fn bool(&mut self) -> Result<bool> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(corrupt(self.what, format!("{v} is not a boolean"))),
        }
    }
    pub fn u32(&mut self) -> Result<u32> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    pub fn u64(&mut self) -> Result<u64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
    pub fn f64(&mut self) -> Result<f64> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(f64::from_le_bytes(a))
    }
    /// A `u64` that must be at most `max`, as a usize.
    pub fn usize_max(&mut self, max: u64) -> Result<usize> {
        let v = self.u64()?;
        if v > max || usize::try_from(v).is_err() {
            return Err(corrupt(self.what, format!("count {v} is larger than {max}")));
        }
        Ok(v as usize)
    }
    /// Fails if bytes are left over.
    pub fn finish(self) -> Result<()> {
        if self.pos != self.b.len() {
            return Err(corrupt(self.what, format!("{} trailing bytes", self.b.len() - self.pos)));
        }
        Ok(())
    }
    /// A corrupt-state error for a failed invariant.
    pub fn bad(&self, msg: impl std::fmt::Display) -> Error {
        corrupt(self.what, msg)
    }
}

/// Turns a parameter validation error into a snapshot error (bytes carrying bad parameters
/// are corrupt bytes).
pub(crate) fn params<T>(what: &str, r: Result<T>) -> Result<T> {
    r.map_err(|e| corrupt(what, e))
}
