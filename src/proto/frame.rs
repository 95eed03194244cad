//! Length-prefixed framing: every client frame is a 4-byte big-endian length
//! and that many bytes. A length above `jute.maxbuffer` (or negative) closes
//! the connection, as ZooKeeper's "Len error" does. The first four bytes of a
//! connection may instead be a four-letter word (`ruok`, `stat`, ...).

use bytes::{Buf, Bytes, BytesMut};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix is negative or above the limit.
    Length { length: i64, limit: usize },
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Length { length, limit } => write!(f, "frame length {length} outside 0..={limit}"),
        }
    }
}

/// Splits an incoming byte stream into frames. Holds at most one partial frame,
/// whose size the length check bounds.
pub struct FrameDecoder {
    buffer: BytesMut,
    frame_bytes_max: usize,
}

impl FrameDecoder {
    pub fn new(frame_bytes_max: usize) -> FrameDecoder {
        FrameDecoder { buffer: BytesMut::with_capacity(4096), frame_bytes_max }
    }

    /// Space to read into; the caller reads from the socket into it.
    pub fn buffer_mut(&mut self) -> &mut BytesMut {
        &mut self.buffer
    }

    pub fn buffered(&self) -> &[u8] {
        &self.buffer
    }

    /// The next complete frame, if one is buffered.
    pub fn next_frame(&mut self) -> Result<Option<Bytes>, FrameError> {
        if self.buffer.len() < 4 {
            return Ok(None);
        }
        let length = i32::from_be_bytes([self.buffer[0], self.buffer[1], self.buffer[2], self.buffer[3]]);
        if length < 0 || length as usize > self.frame_bytes_max {
            return Err(FrameError::Length { length: length as i64, limit: self.frame_bytes_max });
        }
        let length = length as usize;
        if self.buffer.len() < 4 + length {
            // Reserve once for the whole frame so the reads that follow do not reallocate.
            self.buffer.reserve(4 + length - self.buffer.len());
            return Ok(None);
        }
        self.buffer.advance(4);
        Ok(Some(self.buffer.split_to(length).freeze()))
    }
}

/// Prefixes `body` with its length.
pub fn encode_frame(body: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(&(body.len() as i32).to_be_bytes());
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_split_across_reads() {
        let mut decoder = FrameDecoder::new(100);
        decoder.buffer_mut().extend_from_slice(&[0, 0, 0, 3, b'a']);
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.buffer_mut().extend_from_slice(&[b'b', b'c', 0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Ok(Some(Bytes::from_static(b"abc"))));
        assert_eq!(decoder.next_frame(), Ok(Some(Bytes::new())));
        assert_eq!(decoder.next_frame(), Ok(None));
    }

    #[test]
    fn oversized_and_negative_lengths_are_errors() {
        let mut decoder = FrameDecoder::new(100);
        decoder.buffer_mut().extend_from_slice(&[0, 0, 0, 101]);
        assert!(decoder.next_frame().is_err());
        let mut decoder = FrameDecoder::new(100);
        decoder.buffer_mut().extend_from_slice(&[0xff, 0, 0, 0]);
        assert!(decoder.next_frame().is_err());
    }
}
