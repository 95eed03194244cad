//! A learner's SNAP as it arrives: the header declares the snapshot's
//! length, the chunks fill a buffer reserved for exactly that many bytes,
//! and the end hands it over whole. Holding it needs the memory at once, so
//! a length that cannot be reserved is refused up front (a failed
//! allocation would abort the process), and a stream that runs past its
//! length or ends short is an error: the caller closes the link.

use bytes::Bytes;

pub struct IncomingSnapshot {
    zxid: i64,
    declared: usize,
    buffer: Vec<u8>,
}

impl IncomingSnapshot {
    /// Reserves `declared` bytes for a snapshot at `zxid`.
    pub fn begin(zxid: i64, declared: u64) -> Result<IncomingSnapshot, String> {
        let mut buffer = Vec::new();
        let declared = usize::try_from(declared).map_err(|_| format!("a snapshot of {declared} bytes does not fit in memory"))?;
        buffer.try_reserve_exact(declared).map_err(|error| format!("cannot reserve {declared} bytes for the snapshot: {error}"))?;
        Ok(IncomingSnapshot { zxid, declared, buffer })
    }

    /// Appends a chunk; an error once the chunks pass the declared length.
    pub fn chunk(&mut self, bytes: &[u8]) -> Result<(), String> {
        if self.buffer.len() + bytes.len() > self.declared {
            return Err(format!("the snapshot runs past its declared {} bytes", self.declared));
        }
        self.buffer.extend_from_slice(bytes);
        Ok(())
    }

    /// The snapshot's zxid and bytes; an error if it ended short.
    pub fn end(self) -> Result<(i64, Bytes), String> {
        if self.buffer.len() != self.declared {
            return Err(format!("the snapshot ended at {} of its declared {} bytes", self.buffer.len(), self.declared));
        }
        Ok((self.zxid, Bytes::from(self.buffer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_adding_up_to_the_declared_length_make_the_snapshot() {
        let mut incoming = IncomingSnapshot::begin(7, 5).unwrap();
        incoming.chunk(b"ab").unwrap();
        incoming.chunk(b"").unwrap();
        incoming.chunk(b"cde").unwrap();
        assert_eq!(incoming.buffer.capacity(), 5, "reserved once, never grown");
        assert_eq!(incoming.end().unwrap(), (7, Bytes::from_static(b"abcde")));
    }

    #[test]
    fn a_chunk_past_the_declared_length_is_refused_and_not_kept() {
        let mut incoming = IncomingSnapshot::begin(7, 4).unwrap();
        incoming.chunk(b"abc").unwrap();
        assert!(incoming.chunk(b"de").unwrap_err().contains("past its declared 4 bytes"));
        assert_eq!(incoming.buffer.len(), 3);
    }

    #[test]
    fn a_snapshot_ending_short_is_refused() {
        let mut incoming = IncomingSnapshot::begin(7, 4).unwrap();
        incoming.chunk(b"abc").unwrap();
        assert!(incoming.end().unwrap_err().contains("ended at 3 of its declared 4 bytes"));
    }

    #[test]
    fn a_length_that_cannot_be_reserved_is_refused_without_aborting() {
        for declared in [u64::MAX, isize::MAX as u64 + 1] {
            let error = IncomingSnapshot::begin(7, declared).err().expect("refused");
            assert!(error.contains(&declared.to_string()), "{error}");
        }
    }
}
