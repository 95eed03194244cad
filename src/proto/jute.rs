//! Jute, ZooKeeper's binary record format: big-endian integers, length-prefixed
//! strings, buffers and vectors (length -1 means null). This module owns the
//! primitive readers and writers; records are built from them in `records.rs`.
//! Pure: no I/O. Every length read from the wire is checked against the bytes
//! that remain, so a hostile length can never make us allocate beyond the frame.

use bytes::{BufMut, Bytes, BytesMut};

/// Why a record could not be decoded. Carried to the connection, which closes
/// (a malformed frame) or answers MARSHALLINGERROR, as ZooKeeper does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The record ended before a field was complete.
    Truncated { needed: usize, remaining: usize },
    /// A length prefix is negative (other than the null marker) or larger than the frame.
    BadLength(i32),
    /// A ustring is not valid UTF-8.
    BadUtf8,
    /// A field has a value the protocol does not allow (an unknown opcode in a multi, say).
    Invalid(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Truncated { needed, remaining } => {
                write!(f, "record truncated: needed {needed} bytes, {remaining} remain")
            }
            DecodeError::BadLength(len) => write!(f, "bad length prefix {len}"),
            DecodeError::BadUtf8 => write!(f, "string is not valid UTF-8"),
            DecodeError::Invalid(what) => write!(f, "invalid record: {what}"),
        }
    }
}

impl std::error::Error for DecodeError {}

pub type DecodeResult<T> = Result<T, DecodeError>;

/// Reads jute fields from a frame. Buffers are returned as zero-copy slices of
/// the frame (`Bytes::slice`), so a znode's data is never copied on the way in.
pub struct Reader {
    frame: Bytes,
    position: usize,
}

impl Reader {
    pub fn new(frame: Bytes) -> Reader {
        Reader { frame, position: 0 }
    }

    pub fn remaining(&self) -> usize {
        self.frame.len() - self.position
    }

    pub fn position(&self) -> usize {
        self.position
    }

    /// The unread rest of the frame, without consuming it.
    pub fn rest(&self) -> Bytes {
        self.frame.slice(self.position..)
    }

    /// Consumes `expected` if the unread bytes start with it.
    pub fn skip_if_next(&mut self, expected: &[u8]) -> bool {
        let next = self.frame[self.position..].starts_with(expected);
        if next {
            self.position += expected.len();
        }
        next
    }

    fn take(&mut self, count: usize) -> DecodeResult<&[u8]> {
        if self.remaining() < count {
            return Err(DecodeError::Truncated { needed: count, remaining: self.remaining() });
        }
        let start = self.position;
        self.position += count;
        Ok(&self.frame[start..start + count])
    }

    pub fn read_i32(&mut self) -> DecodeResult<i32> {
        let bytes = self.take(4)?;
        Ok(i32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
    }

    pub fn read_i64(&mut self) -> DecodeResult<i64> {
        let bytes = self.take(8)?;
        let mut array = [0u8; 8];
        array.copy_from_slice(bytes);
        Ok(i64::from_be_bytes(array))
    }

    pub fn read_bool(&mut self) -> DecodeResult<bool> {
        Ok(self.take(1)?[0] != 0)
    }

    /// A length prefix: `None` for null (-1), else a length that fits in the frame.
    fn read_length(&mut self, element_bytes_min: usize) -> DecodeResult<Option<usize>> {
        let length = self.read_i32()?;
        if length == -1 {
            return Ok(None);
        }
        if length < 0 {
            return Err(DecodeError::BadLength(length));
        }
        let length = length as usize;
        if length.saturating_mul(element_bytes_min) > self.remaining() {
            return Err(DecodeError::BadLength(length as i32));
        }
        Ok(Some(length))
    }

    /// A jute `buffer`, keeping null distinct from empty (ZooKeeper stores and
    /// returns a null data buffer as null). The result owns its bytes: a
    /// slice of the frame would keep the whole read buffer the frame came
    /// from (a connection's, a peer link's, a log chunk's) alive for as long
    /// as the value lives, which for a znode's data is its lifetime.
    pub fn read_buffer_opt(&mut self) -> DecodeResult<Option<Bytes>> {
        match self.read_length(1)? {
            None => Ok(None),
            Some(length) => {
                let start = self.position;
                self.take(length)?;
                Ok(Some(Bytes::copy_from_slice(&self.frame[start..start + length])))
            }
        }
    }

    pub fn read_buffer(&mut self) -> DecodeResult<Bytes> {
        Ok(self.read_buffer_opt()?.unwrap_or_default())
    }

    /// A jute `ustring`; null reads as the empty string.
    pub fn read_string(&mut self) -> DecodeResult<String> {
        match self.read_length(1)? {
            None => Ok(String::new()),
            Some(length) => {
                let bytes = self.take(length)?;
                std::str::from_utf8(bytes).map(str::to_owned).map_err(|_| DecodeError::BadUtf8)
            }
        }
    }

    /// A jute `vector`: the element count is bounded by the bytes left (each
    /// element takes at least `element_bytes_min` bytes), so a forged count cannot
    /// reserve more memory than the frame holds.
    pub fn read_vec<T>(
        &mut self,
        element_bytes_min: usize,
        mut read_element: impl FnMut(&mut Reader) -> DecodeResult<T>,
    ) -> DecodeResult<Vec<T>> {
        match self.read_length(element_bytes_min.max(1))? {
            None => Ok(Vec::new()),
            Some(count) => {
                let mut elements = Vec::with_capacity(count);
                for _ in 0..count {
                    elements.push(read_element(self)?);
                }
                Ok(elements)
            }
        }
    }
}

/// Writes jute fields into a growable buffer.
#[derive(Default)]
pub struct Writer {
    pub buffer: BytesMut,
}

impl Writer {
    pub fn new() -> Writer {
        Writer { buffer: BytesMut::with_capacity(128) }
    }

    pub fn with_buffer(buffer: BytesMut) -> Writer {
        Writer { buffer }
    }

    pub fn write_i32(&mut self, value: i32) {
        self.buffer.put_i32(value);
    }

    pub fn write_i64(&mut self, value: i64) {
        self.buffer.put_i64(value);
    }

    pub fn write_bool(&mut self, value: bool) {
        self.buffer.put_u8(value as u8);
    }

    pub fn write_buffer_opt(&mut self, value: &Option<Bytes>) {
        match value {
            None => self.write_i32(-1),
            Some(bytes) => self.write_buffer(bytes),
        }
    }

    pub fn write_buffer(&mut self, value: &[u8]) {
        self.write_i32(value.len() as i32);
        self.buffer.put_slice(value);
    }

    pub fn write_string(&mut self, value: &str) {
        self.write_buffer(value.as_bytes());
    }

    pub fn write_vec<T>(&mut self, elements: &[T], mut write_element: impl FnMut(&mut Writer, &T)) {
        self.write_i32(elements.len() as i32);
        for element in elements {
            write_element(self, element);
        }
    }

    /// A vector of records, encoded as `Vec<T>` is, from any slice (a
    /// shared `Arc<[T]>` too).
    pub fn write_records<T: Jute>(&mut self, elements: &[T]) {
        self.write_vec(elements, |writer, element| element.encode(writer))
    }

    pub fn len(&self) -> usize {
        self.buffer.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty()
    }

    pub fn into_bytes(self) -> Bytes {
        self.buffer.freeze()
    }
}

/// A value with a jute encoding. Implemented for the primitives and, through
/// `jute_record!`, for every record.
pub trait Jute: Sized {
    /// The fewest bytes an encoding of this type takes; bounds vector counts.
    const ENCODED_BYTES_MIN: usize;
    fn decode(reader: &mut Reader) -> DecodeResult<Self>;
    fn encode(&self, writer: &mut Writer);

    fn decode_from(frame: Bytes) -> DecodeResult<Self> {
        Self::decode(&mut Reader::new(frame))
    }

    fn encode_to_bytes(&self) -> Bytes {
        let mut writer = Writer::new();
        self.encode(&mut writer);
        writer.into_bytes()
    }
}

impl Jute for i32 {
    const ENCODED_BYTES_MIN: usize = 4;
    fn decode(reader: &mut Reader) -> DecodeResult<Self> {
        reader.read_i32()
    }
    fn encode(&self, writer: &mut Writer) {
        writer.write_i32(*self)
    }
}

impl Jute for i64 {
    const ENCODED_BYTES_MIN: usize = 8;
    fn decode(reader: &mut Reader) -> DecodeResult<Self> {
        reader.read_i64()
    }
    fn encode(&self, writer: &mut Writer) {
        writer.write_i64(*self)
    }
}

impl Jute for bool {
    const ENCODED_BYTES_MIN: usize = 1;
    fn decode(reader: &mut Reader) -> DecodeResult<Self> {
        reader.read_bool()
    }
    fn encode(&self, writer: &mut Writer) {
        writer.write_bool(*self)
    }
}

impl Jute for String {
    const ENCODED_BYTES_MIN: usize = 4;
    fn decode(reader: &mut Reader) -> DecodeResult<Self> {
        reader.read_string()
    }
    fn encode(&self, writer: &mut Writer) {
        writer.write_string(self)
    }
}

impl Jute for Bytes {
    const ENCODED_BYTES_MIN: usize = 4;
    fn decode(reader: &mut Reader) -> DecodeResult<Self> {
        reader.read_buffer()
    }
    fn encode(&self, writer: &mut Writer) {
        writer.write_buffer(self)
    }
}

impl Jute for Option<Bytes> {
    const ENCODED_BYTES_MIN: usize = 4;
    fn decode(reader: &mut Reader) -> DecodeResult<Self> {
        reader.read_buffer_opt()
    }
    fn encode(&self, writer: &mut Writer) {
        writer.write_buffer_opt(self)
    }
}

impl<T: Jute> Jute for Vec<T> {
    const ENCODED_BYTES_MIN: usize = 4;
    fn decode(reader: &mut Reader) -> DecodeResult<Self> {
        reader.read_vec(T::ENCODED_BYTES_MIN, T::decode)
    }
    fn encode(&self, writer: &mut Writer) {
        writer.write_records(self)
    }
}

/// Declares a jute record: a plain struct whose fields are encoded in order.
#[macro_export]
macro_rules! jute_record {
    ($(#[$meta:meta])* pub struct $name:ident { $(pub $field:ident : $type:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
        pub struct $name { $(pub $field: $type),* }

        impl $crate::proto::jute::Jute for $name {
            const ENCODED_BYTES_MIN: usize = 0 $(+ <$type as $crate::proto::jute::Jute>::ENCODED_BYTES_MIN)*;
            #[allow(unused_variables)]
            fn decode(reader: &mut $crate::proto::jute::Reader) -> $crate::proto::jute::DecodeResult<Self> {
                Ok($name { $($field: <$type as $crate::proto::jute::Jute>::decode(reader)?),* })
            }
            #[allow(unused_variables)]
            fn encode(&self, writer: &mut $crate::proto::jute::Writer) {
                $($crate::proto::jute::Jute::encode(&self.$field, writer);)*
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decoded_buffer_does_not_keep_its_frame_alive() {
        let mut writer = Writer::new();
        writer.write_buffer(b"value");
        writer.write_i64(7);
        let frame = writer.into_bytes();
        let frame_range = frame.as_ptr() as usize..frame.as_ptr() as usize + frame.len();
        let data = Reader::new(frame.clone()).read_buffer_opt().unwrap().unwrap();
        assert_eq!(&data[..], b"value");
        assert!(!frame_range.contains(&(data.as_ptr() as usize)), "the value is a slice of the frame");
    }

    #[test]
    fn primitives_round_trip_big_endian() {
        let mut writer = Writer::new();
        writer.write_i32(-2);
        writer.write_i64(0x0102030405060708);
        writer.write_bool(true);
        writer.write_string("/a");
        writer.write_buffer_opt(&None);
        let bytes = writer.into_bytes();
        assert_eq!(
            &bytes[..],
            &[0xff, 0xff, 0xff, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0, 0, 0, 2, b'/', b'a', 0xff, 0xff, 0xff, 0xff]
        );
        let mut reader = Reader::new(bytes);
        assert_eq!(reader.read_i32().unwrap(), -2);
        assert_eq!(reader.read_i64().unwrap(), 0x0102030405060708);
        assert!(reader.read_bool().unwrap());
        assert_eq!(reader.read_string().unwrap(), "/a");
        assert_eq!(reader.read_buffer_opt().unwrap(), None);
        assert_eq!(reader.remaining(), 0);
    }

    #[test]
    fn hostile_lengths_are_rejected_without_allocating() {
        let mut reader = Reader::new(Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff]));
        assert_eq!(reader.read_buffer(), Err(DecodeError::BadLength(i32::MAX)));
        let mut reader = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xfe]));
        assert_eq!(reader.read_string(), Err(DecodeError::BadLength(-2)));
        // A vector claiming a million strings in an 8-byte frame.
        let mut reader = Reader::new(Bytes::from_static(&[0, 0x0f, 0x42, 0x40, 0, 0, 0, 0]));
        assert!(Vec::<String>::decode(&mut reader).is_err());
        let mut reader = Reader::new(Bytes::from_static(&[0, 0, 0]));
        assert!(matches!(reader.read_i32(), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut reader = Reader::new(Bytes::from_static(&[0, 0, 0, 1, 0xff]));
        assert_eq!(reader.read_string(), Err(DecodeError::BadUtf8));
    }
}
