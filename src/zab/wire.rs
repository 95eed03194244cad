//! The peer protocol's bytes: every message servers exchange on the election
//! port and the quorum port, its frame and its decoder. Pure: no I/O, no
//! clock; the transport (`runtime::peer_net`) moves the frames and the ZAB
//! state machines decide what they mean.
//!
//! A frame is a u32 big-endian body length, then the body: a one-byte type
//! tag and the message's fields in jute encoding (big-endian integers,
//! length-prefixed buffers and strings). Txns use the log's encoding
//! (`storage::txn_codec`), forwarded requests the client protocol's
//! (`Request::encode`), so nothing has two encodings. ZooKeeper's own
//! `QuorumPacket` is not reproduced: warden servers talk only to warden
//! servers, and the first frame of a connection (`Hello`, `FollowerInfo`,
//! `ObserverInfo`) carries `WIRE_VERSION` so that mismatched builds refuse
//! each other cleanly.
//!
//! Decoding takes input straight from a socket: it never panics, never
//! allocates beyond what the frame holds, and rejects unknown tags, values
//! outside an enum, collections above their limits and trailing bytes. The
//! encoder refuses what the decoder would refuse, so a well-formed sender
//! never makes its peer drop the link.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::election::{Notification, ServerState, Vote};
use super::ServerId;
use crate::limits;
use crate::pipeline::{Committed, Origin, ToSequencer};
use crate::proto::jute::{DecodeError, Jute, Reader, Writer};
use crate::proto::records::RequestError;
use crate::proto::{ErrorCode, Id, Request};
use crate::storage::txn_codec::{decode_txn, encode_txn};
use crate::txn::Txn;

/// The peer protocol's version, carried by the first frame of every
/// connection. Bump it on any change to this file's encoding.
pub const WIRE_VERSION: i32 = 1;

/// Bytes of a frame's length prefix.
pub const FRAME_PREFIX_BYTES: usize = 4;

/// Everything servers say to each other.
#[derive(Debug)]
pub enum PeerMessage {
    // Election port. The first frame on every election connection is Hello.
    Hello { sid: ServerId },
    Notification(Notification),

    // Quorum port, learner -> leader.
    FollowerInfo { sid: ServerId, zxid: i64 },
    ObserverInfo { sid: ServerId, zxid: i64 },
    /// `current_epoch` None is ZooKeeper's -1: the learner has no current epoch yet.
    AckEpoch { last_logged_zxid: i64, current_epoch: Option<u32> },
    Ack { zxid: i64 },
    /// A learner's client request, sequenced by the leader.
    Forward(ToSequencer),

    // Quorum port, leader -> learner.
    LeaderInfo { zxid: i64, secret: u64 },
    Diff { zxid: i64 },
    Trunc { zxid: i64 },
    /// A snapshot at `zxid` follows in chunks: `bytes` in all, then SnapEnd.
    Snap { zxid: i64, bytes: u64 },
    /// A piece of an encoded snapshot, at most `limits::SNAP_CHUNK_BYTES`.
    SnapChunk { bytes: Bytes },
    SnapEnd,
    /// `zxid` equals `txn.zxid`; the decoder checks it.
    Proposal { zxid: i64, txn: Arc<Txn>, origin: Option<Origin> },
    Commit { zxid: i64 },
    /// A committed txn for an observer (ZooKeeper's INFORM); `zxid == txn.zxid`.
    Inform { zxid: i64, txn: Arc<Txn>, origin: Option<Origin> },
    NewLeader { zxid: i64 },
    UpToDate,
    /// The answer to a forwarded request that is not a txn: `SyncDone`,
    /// `Revalidated` or `Failed`. Txns reach learners as proposals or
    /// informs, so `Committed::Txn` has no encoding.
    Reply(Committed),

    // Both ways.
    Ping { zxid: i64 },
}

impl PeerMessage {
    /// The message's name, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            PeerMessage::Hello { .. } => "Hello",
            PeerMessage::Notification(_) => "Notification",
            PeerMessage::FollowerInfo { .. } => "FollowerInfo",
            PeerMessage::ObserverInfo { .. } => "ObserverInfo",
            PeerMessage::AckEpoch { .. } => "AckEpoch",
            PeerMessage::Ack { .. } => "Ack",
            PeerMessage::Forward(_) => "Forward",
            PeerMessage::LeaderInfo { .. } => "LeaderInfo",
            PeerMessage::Diff { .. } => "Diff",
            PeerMessage::Trunc { .. } => "Trunc",
            PeerMessage::Snap { .. } => "Snap",
            PeerMessage::SnapChunk { .. } => "SnapChunk",
            PeerMessage::SnapEnd => "SnapEnd",
            PeerMessage::Proposal { .. } => "Proposal",
            PeerMessage::Commit { .. } => "Commit",
            PeerMessage::Inform { .. } => "Inform",
            PeerMessage::NewLeader { .. } => "NewLeader",
            PeerMessage::UpToDate => "UpToDate",
            PeerMessage::Reply(_) => "Reply",
            PeerMessage::Ping { .. } => "Ping",
        }
    }
}

/// Why a frame could not be encoded or decoded. A decode error closes that
/// one connection (logged); an encode error is the sender's bug, returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WireError {
    /// A field could not be read (truncated, a bad length, bad UTF-8, ...).
    Decode(DecodeError),
    /// A declared or encoded frame length above the limit.
    FrameTooLarge { length: usize, limit: usize },
    /// A body ended with bytes no field accounts for.
    TrailingBytes(usize),
    /// A type tag (or a sub-type tag) this version does not know.
    UnknownTag(u8),
    /// A peer speaking another version of this protocol.
    Version(i32),
    /// A field holds a value the protocol does not allow.
    Invalid(&'static str),
    /// A forwarded request's opcode is unknown.
    UnknownOpcode(i32),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Decode(error) => write!(f, "{error}"),
            WireError::FrameTooLarge { length, limit } => write!(f, "frame of {length} bytes above the limit {limit}"),
            WireError::TrailingBytes(count) => write!(f, "{count} trailing bytes after the message"),
            WireError::UnknownTag(tag) => write!(f, "unknown message tag {tag}"),
            WireError::Version(version) => write!(f, "peer speaks wire version {version}, we speak {WIRE_VERSION}"),
            WireError::Invalid(what) => write!(f, "invalid message: {what}"),
            WireError::UnknownOpcode(opcode) => write!(f, "forwarded request has unknown opcode {opcode}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<DecodeError> for WireError {
    fn from(error: DecodeError) -> Self {
        WireError::Decode(error)
    }
}

impl From<RequestError> for WireError {
    fn from(error: RequestError) -> Self {
        match error {
            RequestError::Decode(error) => WireError::Decode(error),
            RequestError::UnknownOpcode(opcode) => WireError::UnknownOpcode(opcode),
        }
    }
}

type WireResult<T> = Result<T, WireError>;

/// Message type tags. Grouped by port and direction; gaps leave room.
mod tag {
    pub const HELLO: u8 = 1;
    pub const NOTIFICATION: u8 = 2;

    pub const FOLLOWER_INFO: u8 = 10;
    pub const OBSERVER_INFO: u8 = 11;
    pub const ACK_EPOCH: u8 = 12;
    pub const ACK: u8 = 13;
    pub const FORWARD: u8 = 14;

    pub const LEADER_INFO: u8 = 20;
    pub const DIFF: u8 = 21;
    pub const TRUNC: u8 = 22;
    pub const SNAP: u8 = 23;
    pub const SNAP_CHUNK: u8 = 24;
    pub const SNAP_END: u8 = 25;
    pub const PROPOSAL: u8 = 26;
    pub const COMMIT: u8 = 27;
    pub const INFORM: u8 = 28;
    pub const NEW_LEADER: u8 = 29;
    pub const UP_TO_DATE: u8 = 30;
    pub const REPLY: u8 = 31;

    pub const PING: u8 = 40;

    // Forward's sub-tags, one per ToSequencer variant.
    pub const FORWARD_WRITE: u8 = 1;
    pub const FORWARD_SYNC: u8 = 2;
    pub const FORWARD_CREATE_SESSION: u8 = 3;
    pub const FORWARD_REVALIDATE: u8 = 4;
    pub const FORWARD_TOUCH: u8 = 5;

    // Reply's sub-tags, one per encodable Committed variant.
    pub const REPLY_SYNC_DONE: u8 = 1;
    pub const REPLY_REVALIDATED: u8 = 2;
    pub const REPLY_FAILED: u8 = 3;
}

// ---------------------------------------------------------------------------
// Framing

/// Appends one whole frame (length prefix and body) for `message` to `out`.
/// On error `out` is left as it was. Errors: a `Reply(Committed::Txn)`, a
/// forwarded request whose opcode differs from its origin's, a collection
/// above its limit, or a frame above `limits::PEER_FRAME_BYTES_MAX`.
pub fn encode(message: &PeerMessage, out: &mut BytesMut) -> WireResult<()> {
    let start = out.len();
    out.put_u32(0);
    // The jute writer owns a BytesMut; lend it ours so the body lands in place.
    let mut writer = Writer::with_buffer(std::mem::take(out));
    let result = encode_body(message, &mut writer);
    *out = writer.buffer;
    let body_bytes = out.len() - start - FRAME_PREFIX_BYTES;
    let result = match result {
        Ok(()) if body_bytes > limits::PEER_FRAME_BYTES_MAX => {
            Err(WireError::FrameTooLarge { length: body_bytes, limit: limits::PEER_FRAME_BYTES_MAX })
        }
        other => other,
    };
    match result {
        Ok(()) => {
            out[start..start + FRAME_PREFIX_BYTES].copy_from_slice(&(body_bytes as u32).to_be_bytes());
            Ok(())
        }
        Err(error) => {
            out.truncate(start);
            Err(error)
        }
    }
}

/// Takes the next whole frame's body off the front of `buffer`, if one is
/// there. A declared length above `frame_bytes_max` (at most
/// `limits::PEER_FRAME_BYTES_MAX`) is an error before anything is buffered;
/// otherwise room for the whole frame is reserved once, so the reads that
/// fill it do not reallocate.
pub fn split_frame(buffer: &mut BytesMut, frame_bytes_max: usize) -> WireResult<Option<Bytes>> {
    debug_assert!(frame_bytes_max <= limits::PEER_FRAME_BYTES_MAX);
    if buffer.len() < FRAME_PREFIX_BYTES {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buffer[0], buffer[1], buffer[2], buffer[3]]) as usize;
    if length > frame_bytes_max {
        return Err(WireError::FrameTooLarge { length, limit: frame_bytes_max });
    }
    if buffer.len() < FRAME_PREFIX_BYTES + length {
        buffer.reserve(FRAME_PREFIX_BYTES + length - buffer.len());
        return Ok(None);
    }
    buffer.advance(FRAME_PREFIX_BYTES);
    Ok(Some(buffer.split_to(length).freeze()))
}

// ---------------------------------------------------------------------------
// Encoding

fn put_u8(writer: &mut Writer, value: u8) {
    writer.buffer.put_u8(value);
}

fn encode_body(message: &PeerMessage, writer: &mut Writer) -> WireResult<()> {
    match message {
        PeerMessage::Hello { sid } => {
            put_u8(writer, tag::HELLO);
            writer.write_i32(WIRE_VERSION);
            writer.write_i64(*sid as i64);
        }
        PeerMessage::Notification(notification) => {
            put_u8(writer, tag::NOTIFICATION);
            encode_notification(notification, writer);
        }
        PeerMessage::FollowerInfo { sid, zxid } => {
            put_u8(writer, tag::FOLLOWER_INFO);
            writer.write_i32(WIRE_VERSION);
            writer.write_i64(*sid as i64);
            writer.write_i64(*zxid);
        }
        PeerMessage::ObserverInfo { sid, zxid } => {
            put_u8(writer, tag::OBSERVER_INFO);
            writer.write_i32(WIRE_VERSION);
            writer.write_i64(*sid as i64);
            writer.write_i64(*zxid);
        }
        PeerMessage::AckEpoch { last_logged_zxid, current_epoch } => {
            put_u8(writer, tag::ACK_EPOCH);
            writer.write_i64(*last_logged_zxid);
            writer.write_i64(current_epoch.map_or(-1, i64::from));
        }
        PeerMessage::Ack { zxid } => zxid_message(writer, tag::ACK, *zxid),
        PeerMessage::Forward(forwarded) => {
            put_u8(writer, tag::FORWARD);
            encode_forward(forwarded, writer)?;
        }
        PeerMessage::LeaderInfo { zxid, secret } => {
            put_u8(writer, tag::LEADER_INFO);
            writer.write_i64(*zxid);
            writer.write_i64(*secret as i64);
        }
        PeerMessage::Diff { zxid } => zxid_message(writer, tag::DIFF, *zxid),
        PeerMessage::Trunc { zxid } => zxid_message(writer, tag::TRUNC, *zxid),
        PeerMessage::Snap { zxid, bytes } => {
            zxid_message(writer, tag::SNAP, *zxid);
            writer.write_i64(i64::try_from(*bytes).map_err(|_| WireError::Invalid("snapshot length above i64"))?);
        }
        PeerMessage::SnapChunk { bytes } => {
            if bytes.len() > limits::SNAP_CHUNK_BYTES {
                return Err(WireError::Invalid("snapshot chunk above SNAP_CHUNK_BYTES"));
            }
            put_u8(writer, tag::SNAP_CHUNK);
            writer.write_buffer(bytes);
        }
        PeerMessage::SnapEnd => put_u8(writer, tag::SNAP_END),
        PeerMessage::Proposal { zxid, txn, origin } => encode_txn_message(writer, tag::PROPOSAL, *zxid, txn, origin)?,
        PeerMessage::Commit { zxid } => zxid_message(writer, tag::COMMIT, *zxid),
        PeerMessage::Inform { zxid, txn, origin } => encode_txn_message(writer, tag::INFORM, *zxid, txn, origin)?,
        PeerMessage::NewLeader { zxid } => zxid_message(writer, tag::NEW_LEADER, *zxid),
        PeerMessage::UpToDate => put_u8(writer, tag::UP_TO_DATE),
        PeerMessage::Reply(committed) => {
            put_u8(writer, tag::REPLY);
            encode_reply(committed, writer)?;
        }
        PeerMessage::Ping { zxid } => zxid_message(writer, tag::PING, *zxid),
    }
    Ok(())
}

fn zxid_message(writer: &mut Writer, message_tag: u8, zxid: i64) {
    put_u8(writer, message_tag);
    writer.write_i64(zxid);
}

fn encode_notification(notification: &Notification, writer: &mut Writer) {
    writer.write_i64(notification.vote.leader as i64);
    writer.write_i64(notification.vote.zxid);
    writer.write_i64(notification.vote.election_epoch as i64);
    writer.write_i32(notification.vote.peer_epoch as i32);
    put_u8(writer, server_state_code(notification.state));
    writer.write_i64(notification.sid as i64);
}

/// ZooKeeper's `ServerState` ordinals.
fn server_state_code(state: ServerState) -> u8 {
    match state {
        ServerState::Looking => 0,
        ServerState::Following => 1,
        ServerState::Leading => 2,
        ServerState::Observing => 3,
    }
}

fn encode_txn_message(
    writer: &mut Writer,
    message_tag: u8,
    zxid: i64,
    txn: &Txn,
    origin: &Option<Origin>,
) -> WireResult<()> {
    if zxid != txn.zxid {
        return Err(WireError::Invalid("message zxid differs from its txn's"));
    }
    put_u8(writer, message_tag);
    writer.write_i64(zxid);
    encode_txn(txn, writer);
    match origin {
        None => put_u8(writer, 0),
        Some(origin) => {
            put_u8(writer, 1);
            encode_origin(origin, writer);
        }
    }
    Ok(())
}

fn encode_origin(origin: &Origin, writer: &mut Writer) {
    writer.write_i64(origin.server as i64);
    writer.write_i64(origin.connection as i64);
    writer.write_i32(origin.xid);
    writer.write_i32(origin.opcode);
}

fn encode_forward(forwarded: &ToSequencer, writer: &mut Writer) -> WireResult<()> {
    match forwarded {
        ToSequencer::Write { origin, session_id, request, auth } => {
            // The receiver decodes the request by the origin's opcode, as the
            // connection that read it from the client did.
            if request.opcode() != origin.opcode {
                return Err(WireError::Invalid("forwarded request's opcode differs from its origin's"));
            }
            put_u8(writer, tag::FORWARD_WRITE);
            encode_origin(origin, writer);
            writer.write_i64(*session_id);
            // Length-prefixed, so the receiver can check that the request
            // used exactly its bytes.
            let length_at = writer.len();
            writer.write_i32(0);
            let request_start = writer.len();
            request.encode(writer);
            let request_bytes = writer.len() - request_start;
            if request_bytes > limits::PEER_FRAME_BYTES_MAX {
                return Err(WireError::FrameTooLarge { length: request_bytes, limit: limits::PEER_FRAME_BYTES_MAX });
            }
            writer.buffer[length_at..request_start].copy_from_slice(&(request_bytes as i32).to_be_bytes());
            writer.write_records(auth);
        }
        ToSequencer::Sync { origin, path } => {
            put_u8(writer, tag::FORWARD_SYNC);
            encode_origin(origin, writer);
            writer.write_string(path);
        }
        ToSequencer::CreateSession { origin, timeout_ms } => {
            put_u8(writer, tag::FORWARD_CREATE_SESSION);
            encode_origin(origin, writer);
            writer.write_i32(*timeout_ms);
        }
        ToSequencer::Revalidate { origin, session_id, timeout_ms } => {
            put_u8(writer, tag::FORWARD_REVALIDATE);
            encode_origin(origin, writer);
            writer.write_i64(*session_id);
            writer.write_i32(*timeout_ms);
        }
        ToSequencer::Touch { session_ids } => {
            if session_ids.len() > limits::SESSION_TOUCH_BATCH_MAX {
                return Err(WireError::Invalid("touch above SESSION_TOUCH_BATCH_MAX sessions"));
            }
            put_u8(writer, tag::FORWARD_TOUCH);
            session_ids.encode(writer);
        }
    }
    Ok(())
}

fn encode_reply(committed: &Committed, writer: &mut Writer) -> WireResult<()> {
    match committed {
        Committed::SyncDone { origin, path } => {
            put_u8(writer, tag::REPLY_SYNC_DONE);
            encode_origin(origin, writer);
            writer.write_string(path);
        }
        Committed::Revalidated { origin, session_id, timeout_ms, valid } => {
            put_u8(writer, tag::REPLY_REVALIDATED);
            encode_origin(origin, writer);
            writer.write_i64(*session_id);
            writer.write_i32(*timeout_ms);
            put_u8(writer, *valid as u8);
        }
        Committed::Failed { origin, err } => {
            put_u8(writer, tag::REPLY_FAILED);
            encode_origin(origin, writer);
            writer.write_i32(err.code());
        }
        // Txns reach learners as proposals and informs; the other items
        // (a reset, the session secret) are a server's own, never sent.
        _ => return Err(WireError::Invalid("only SyncDone, Revalidated and Failed travel as replies")),
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Decoding

/// Decodes one frame body (after its length prefix). Never panics; the whole
/// body must be used.
pub fn decode(body: Bytes) -> WireResult<PeerMessage> {
    let mut reader = Reader::new(body);
    let message = decode_message(&mut reader)?;
    if reader.remaining() != 0 {
        return Err(WireError::TrailingBytes(reader.remaining()));
    }
    Ok(message)
}

/// One byte. The jute reader has no u8; `read_bool` consumes exactly one
/// byte and fails cleanly on an empty rest, so read the value first.
fn read_u8(reader: &mut Reader) -> WireResult<u8> {
    let rest = reader.rest();
    reader.read_bool()?;
    Ok(rest[0])
}

fn read_version(reader: &mut Reader) -> WireResult<()> {
    match reader.read_i32()? {
        WIRE_VERSION => Ok(()),
        other => Err(WireError::Version(other)),
    }
}

fn decode_message(reader: &mut Reader) -> WireResult<PeerMessage> {
    let message_tag = read_u8(reader)?;
    Ok(match message_tag {
        tag::HELLO => {
            read_version(reader)?;
            PeerMessage::Hello { sid: reader.read_i64()? as u64 }
        }
        tag::NOTIFICATION => PeerMessage::Notification(decode_notification(reader)?),
        tag::FOLLOWER_INFO => {
            read_version(reader)?;
            PeerMessage::FollowerInfo { sid: reader.read_i64()? as u64, zxid: reader.read_i64()? }
        }
        tag::OBSERVER_INFO => {
            read_version(reader)?;
            PeerMessage::ObserverInfo { sid: reader.read_i64()? as u64, zxid: reader.read_i64()? }
        }
        tag::ACK_EPOCH => {
            let last_logged_zxid = reader.read_i64()?;
            let current_epoch = match reader.read_i64()? {
                -1 => None,
                epoch if (0..=u32::MAX as i64).contains(&epoch) => Some(epoch as u32),
                _ => return Err(WireError::Invalid("current epoch outside -1..=u32::MAX")),
            };
            PeerMessage::AckEpoch { last_logged_zxid, current_epoch }
        }
        tag::ACK => PeerMessage::Ack { zxid: reader.read_i64()? },
        tag::FORWARD => PeerMessage::Forward(decode_forward(reader)?),
        tag::LEADER_INFO => PeerMessage::LeaderInfo { zxid: reader.read_i64()?, secret: reader.read_i64()? as u64 },
        tag::DIFF => PeerMessage::Diff { zxid: reader.read_i64()? },
        tag::TRUNC => PeerMessage::Trunc { zxid: reader.read_i64()? },
        tag::SNAP => {
            let zxid = reader.read_i64()?;
            let bytes = u64::try_from(reader.read_i64()?).map_err(|_| WireError::Invalid("negative snapshot length"))?;
            PeerMessage::Snap { zxid, bytes }
        }
        tag::SNAP_CHUNK => {
            let bytes = reader.read_buffer()?;
            if bytes.len() > limits::SNAP_CHUNK_BYTES {
                return Err(WireError::Invalid("snapshot chunk above SNAP_CHUNK_BYTES"));
            }
            PeerMessage::SnapChunk { bytes }
        }
        tag::SNAP_END => PeerMessage::SnapEnd,
        tag::PROPOSAL => {
            let (zxid, txn, origin) = decode_txn_message(reader)?;
            PeerMessage::Proposal { zxid, txn, origin }
        }
        tag::COMMIT => PeerMessage::Commit { zxid: reader.read_i64()? },
        tag::INFORM => {
            let (zxid, txn, origin) = decode_txn_message(reader)?;
            PeerMessage::Inform { zxid, txn, origin }
        }
        tag::NEW_LEADER => PeerMessage::NewLeader { zxid: reader.read_i64()? },
        tag::UP_TO_DATE => PeerMessage::UpToDate,
        tag::REPLY => PeerMessage::Reply(decode_reply(reader)?),
        tag::PING => PeerMessage::Ping { zxid: reader.read_i64()? },
        unknown => return Err(WireError::UnknownTag(unknown)),
    })
}

fn decode_notification(reader: &mut Reader) -> WireResult<Notification> {
    let vote = Vote {
        leader: reader.read_i64()? as u64,
        zxid: reader.read_i64()?,
        election_epoch: reader.read_i64()? as u64,
        peer_epoch: reader.read_i32()? as u32,
    };
    let state = match read_u8(reader)? {
        0 => ServerState::Looking,
        1 => ServerState::Following,
        2 => ServerState::Leading,
        3 => ServerState::Observing,
        _ => return Err(WireError::Invalid("unknown server state")),
    };
    Ok(Notification { vote, state, sid: reader.read_i64()? as u64 })
}

fn decode_txn_message(reader: &mut Reader) -> WireResult<(i64, Arc<Txn>, Option<Origin>)> {
    let zxid = reader.read_i64()?;
    let txn = decode_txn(reader)?;
    if txn.zxid != zxid {
        return Err(WireError::Invalid("message zxid differs from its txn's"));
    }
    let origin = match read_u8(reader)? {
        0 => None,
        1 => Some(decode_origin(reader)?),
        _ => return Err(WireError::Invalid("origin presence flag is not 0 or 1")),
    };
    Ok((zxid, Arc::new(txn), origin))
}

fn decode_origin(reader: &mut Reader) -> WireResult<Origin> {
    Ok(Origin {
        server: reader.read_i64()? as u64,
        connection: reader.read_i64()? as u64,
        xid: reader.read_i32()?,
        opcode: reader.read_i32()?,
    })
}

fn decode_forward(reader: &mut Reader) -> WireResult<ToSequencer> {
    Ok(match read_u8(reader)? {
        tag::FORWARD_WRITE => {
            let origin = decode_origin(reader)?;
            let session_id = reader.read_i64()?;
            let mut request_reader = Reader::new(reader.read_buffer()?);
            let request = Request::decode(origin.opcode, &mut request_reader, limits::MULTI_OPS_MAX)?;
            if request_reader.remaining() != 0 {
                return Err(WireError::Invalid("forwarded request has trailing bytes"));
            }
            let auth = Vec::<Id>::decode(reader)?.into();
            ToSequencer::Write { origin, session_id, request, auth }
        }
        tag::FORWARD_SYNC => ToSequencer::Sync { origin: decode_origin(reader)?, path: reader.read_string()? },
        tag::FORWARD_CREATE_SESSION => {
            ToSequencer::CreateSession { origin: decode_origin(reader)?, timeout_ms: reader.read_i32()? }
        }
        tag::FORWARD_REVALIDATE => ToSequencer::Revalidate {
            origin: decode_origin(reader)?,
            session_id: reader.read_i64()?,
            timeout_ms: reader.read_i32()?,
        },
        tag::FORWARD_TOUCH => {
            let session_ids = Vec::<i64>::decode(reader)?;
            if session_ids.len() > limits::SESSION_TOUCH_BATCH_MAX {
                return Err(WireError::Invalid("touch above SESSION_TOUCH_BATCH_MAX sessions"));
            }
            ToSequencer::Touch { session_ids }
        }
        unknown => return Err(WireError::UnknownTag(unknown)),
    })
}

fn decode_reply(reader: &mut Reader) -> WireResult<Committed> {
    Ok(match read_u8(reader)? {
        tag::REPLY_SYNC_DONE => Committed::SyncDone { origin: decode_origin(reader)?, path: reader.read_string()? },
        tag::REPLY_REVALIDATED => Committed::Revalidated {
            origin: decode_origin(reader)?,
            session_id: reader.read_i64()?,
            timeout_ms: reader.read_i32()?,
            valid: match read_u8(reader)? {
                0 => false,
                1 => true,
                _ => return Err(WireError::Invalid("valid flag is not 0 or 1")),
            },
        },
        tag::REPLY_FAILED => {
            let origin = decode_origin(reader)?;
            let code = reader.read_i32()?;
            let err = ErrorCode::from_code(code).ok_or(WireError::Invalid("unknown error code"))?;
            Committed::Failed { origin, err }
        }
        unknown => return Err(WireError::UnknownTag(unknown)),
    })
}

#[cfg(test)]
mod tests {
    use std::panic::{catch_unwind, AssertUnwindSafe};

    use super::*;
    use crate::proto::codes::op;
    use crate::proto::{CreateRequest, DeleteRequest, MultiOp, MultiRequest, PathRequest, SetDataRequest};
    use crate::rng::Rng;
    use crate::tree::open_acl_unsafe;
    use crate::txn::{CreateTxn, TxnBody};
    use crate::zab::election::NO_LEADER;

    fn origin(xid: i32, opcode: i32) -> Origin {
        Origin { server: 3, connection: (2 << 48) | 17, xid, opcode }
    }

    fn txn(zxid: i64, body: TxnBody) -> Arc<Txn> {
        Arc::new(Txn { session_id: 0x1234_5678_9abc, cxid: 9, zxid, time_ms: 1_700_000_000_000, body })
    }

    fn notification(state: ServerState, leader: ServerId) -> Notification {
        Notification {
            vote: Vote { leader, zxid: 0x0000_0002_0000_0005, election_epoch: u64::MAX - 1, peer_epoch: u32::MAX },
            state,
            sid: 2,
        }
    }

    fn create_request(path: &str, data: Option<Bytes>) -> CreateRequest {
        CreateRequest { path: path.into(), data, acl: open_acl_unsafe(), flags: 0 }
    }

    /// At least one of every message, every ToSequencer and encodable
    /// Committed variant, and every optional field both ways.
    fn samples() -> Vec<PeerMessage> {
        let multi = MultiRequest {
            ops: vec![
                MultiOp::Create { opcode: op::CREATE, request: create_request("/m/a", Some(Bytes::from_static(b"1"))) },
                MultiOp::Delete { opcode: op::DELETE, request: DeleteRequest { path: "/m/b".into(), version: -1 } },
                MultiOp::SetData(SetDataRequest { path: "/m".into(), data: None, version: 3 }),
            ],
        };
        let create_body = TxnBody::Create(CreateTxn {
            opcode: op::CREATE2,
            path: "/a".into(),
            data: Some(Bytes::from_static(b"payload")),
            acl: open_acl_unsafe().into(),
            ephemeral_owner: 0x1234_5678_9abc,
            parent_cversion: 4,
        });
        let mut messages = vec![
            PeerMessage::Hello { sid: 1 },
            PeerMessage::Hello { sid: u64::MAX },
            PeerMessage::FollowerInfo { sid: 2, zxid: 0x0000_0001_0000_0009 },
            PeerMessage::ObserverInfo { sid: 7, zxid: -1 },
            PeerMessage::AckEpoch { last_logged_zxid: 5, current_epoch: None },
            PeerMessage::AckEpoch { last_logged_zxid: 5, current_epoch: Some(0) },
            PeerMessage::AckEpoch { last_logged_zxid: i64::MAX, current_epoch: Some(u32::MAX) },
            PeerMessage::Ack { zxid: 0x0000_0003_0000_0001 },
            PeerMessage::Forward(ToSequencer::Write {
                origin: origin(5, op::CREATE2),
                session_id: 77,
                request: Request::Create { opcode: op::CREATE2, request: create_request("/a", None) },
                auth: vec![Id { scheme: "digest".into(), id: "user:hash".into() }, Id { scheme: "ip".into(), id: "127.0.0.1".into() }].into(),
            }),
            PeerMessage::Forward(ToSequencer::Write {
                origin: origin(6, op::MULTI),
                session_id: 77,
                request: Request::Multi(multi),
                auth: Arc::from([]),
            }),
            PeerMessage::Forward(ToSequencer::Write {
                origin: origin(7, op::DELETE_CONTAINER),
                session_id: 78,
                request: Request::DeleteContainer(PathRequest { path: "/c".into() }),
                auth: Arc::from([]),
            }),
            PeerMessage::Forward(ToSequencer::Write {
                origin: origin(8, op::CLOSE_SESSION),
                session_id: 79,
                request: Request::CloseSession,
                auth: Arc::from([]),
            }),
            PeerMessage::Forward(ToSequencer::Sync { origin: origin(9, op::SYNC), path: "/s".into() }),
            PeerMessage::Forward(ToSequencer::CreateSession { origin: origin(0, op::CREATE_SESSION), timeout_ms: 30_000 }),
            PeerMessage::Forward(ToSequencer::Revalidate { origin: origin(0, op::CREATE_SESSION), session_id: -5, timeout_ms: 4000 }),
            PeerMessage::Forward(ToSequencer::Touch { session_ids: vec![] }),
            PeerMessage::Forward(ToSequencer::Touch { session_ids: vec![1, i64::MIN, i64::MAX] }),
            PeerMessage::LeaderInfo { zxid: 0x0000_0004_0000_0000, secret: u64::MAX - 3 },
            PeerMessage::Diff { zxid: 1 },
            PeerMessage::Trunc { zxid: 2 },
            PeerMessage::Snap { zxid: 3, bytes: 300 },
            PeerMessage::SnapChunk { bytes: Bytes::new() },
            PeerMessage::SnapChunk { bytes: Bytes::from(vec![0xa5; 300]) },
            PeerMessage::SnapEnd,
            PeerMessage::Proposal { zxid: 10, txn: txn(10, create_body), origin: Some(origin(11, op::CREATE2)) },
            PeerMessage::Proposal {
                zxid: 11,
                txn: txn(
                    11,
                    TxnBody::Multi(vec![
                        TxnBody::Delete { path: "/a".into() },
                        TxnBody::SetData { path: "/b".into(), data: None, version: 2 },
                        TxnBody::Check { path: "/c".into() },
                    ]),
                ),
                origin: None,
            },
            PeerMessage::Commit { zxid: 10 },
            PeerMessage::Inform { zxid: 12, txn: txn(12, TxnBody::CloseSession), origin: None },
            PeerMessage::Inform {
                zxid: 13,
                txn: txn(13, TxnBody::Error { err: ErrorCode::NodeExists }),
                origin: Some(origin(-3, op::CREATE)),
            },
            PeerMessage::NewLeader { zxid: 0x0000_0005_0000_0000 },
            PeerMessage::UpToDate,
            PeerMessage::Reply(Committed::SyncDone { origin: origin(12, op::SYNC), path: "/s".into() }),
            PeerMessage::Reply(Committed::Revalidated { origin: origin(0, op::CREATE_SESSION), session_id: 5, timeout_ms: 6000, valid: true }),
            PeerMessage::Reply(Committed::Revalidated { origin: origin(0, op::CREATE_SESSION), session_id: 5, timeout_ms: 6000, valid: false }),
            PeerMessage::Reply(Committed::Failed { origin: origin(13, op::SET_DATA), err: ErrorCode::SystemError }),
            PeerMessage::Ping { zxid: -1 },
        ];
        for state in [ServerState::Looking, ServerState::Following, ServerState::Leading, ServerState::Observing] {
            messages.push(PeerMessage::Notification(notification(state, 1)));
        }
        messages.push(PeerMessage::Notification(notification(ServerState::Observing, NO_LEADER)));
        messages
    }

    fn frame_of(message: &PeerMessage) -> BytesMut {
        let mut out = BytesMut::new();
        encode(message, &mut out).unwrap_or_else(|error| panic!("encode {message:?}: {error}"));
        out
    }

    fn body_of(message: &PeerMessage) -> Bytes {
        let mut frame = frame_of(message);
        let body = split_frame(&mut frame, limits::PEER_FRAME_BYTES_MAX).unwrap().unwrap();
        assert!(frame.is_empty());
        body
    }

    #[test]
    fn every_message_round_trips() {
        let samples = samples();
        let mut names = std::collections::BTreeSet::new();
        for message in &samples {
            names.insert(message.name());
            let frame = frame_of(message);
            let body = body_of(message);
            assert_eq!(frame.len(), FRAME_PREFIX_BYTES + body.len());
            let decoded = decode(body.clone()).unwrap_or_else(|error| panic!("decode {message:?}: {error}"));
            assert_eq!(format!("{decoded:?}"), format!("{message:?}"));
            // And the encoding is canonical: the decoded value encodes to the same bytes.
            assert_eq!(frame_of(&decoded), frame);
        }
        assert_eq!(names.len(), 20, "a sample of every message: {names:?}");
    }

    #[test]
    fn frames_concatenate_and_split_at_any_byte_boundary() {
        let samples = samples();
        let mut stream = BytesMut::new();
        for message in &samples {
            encode(message, &mut stream).unwrap();
        }
        // Feed the stream one byte at a time, as the slowest socket would.
        let mut buffer = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in stream.iter() {
            buffer.extend_from_slice(&[*byte]);
            while let Some(body) = split_frame(&mut buffer, limits::PEER_FRAME_BYTES_MAX).unwrap() {
                decoded.push(decode(body).unwrap());
            }
        }
        assert!(buffer.is_empty());
        assert_eq!(format!("{decoded:?}"), format!("{samples:?}"));
    }

    #[test]
    fn truncation_at_every_byte_fails_cleanly() {
        for message in samples() {
            let body = body_of(&message);
            for length in 0..body.len() {
                assert!(decode(body.slice(..length)).is_err(), "{message:?} truncated to {length} bytes decoded");
            }
            let mut frame = frame_of(&message);
            frame.truncate(frame.len() - 1);
            assert_eq!(split_frame(&mut frame, limits::PEER_FRAME_BYTES_MAX), Ok(None));
        }
    }

    #[test]
    fn trailing_bytes_unknown_tags_and_bad_values_are_rejected() {
        let mut body = body_of(&PeerMessage::Ack { zxid: 1 }).to_vec();
        body.push(0);
        assert_eq!(decode(Bytes::from(body)).unwrap_err(), WireError::TrailingBytes(1));
        assert_eq!(decode(Bytes::from_static(&[0])).unwrap_err(), WireError::UnknownTag(0));
        assert_eq!(decode(Bytes::from_static(&[255])).unwrap_err(), WireError::UnknownTag(255));
        assert!(decode(Bytes::new()).is_err());

        let mut hello = body_of(&PeerMessage::Hello { sid: 1 }).to_vec();
        hello[1..5].copy_from_slice(&(WIRE_VERSION + 1).to_be_bytes());
        assert_eq!(decode(Bytes::from(hello)).unwrap_err(), WireError::Version(WIRE_VERSION + 1));

        // The server state is the byte before the sender's id.
        let mut vote = body_of(&PeerMessage::Notification(notification(ServerState::Leading, 1))).to_vec();
        let state_at = vote.len() - 9;
        assert_eq!(vote[state_at], 2);
        vote[state_at] = 4;
        assert_eq!(decode(Bytes::from(vote)).unwrap_err(), WireError::Invalid("unknown server state"));

        let mut ack_epoch = body_of(&PeerMessage::AckEpoch { last_logged_zxid: 0, current_epoch: None }).to_vec();
        ack_epoch[9..17].copy_from_slice(&(-2i64).to_be_bytes());
        assert!(matches!(decode(Bytes::from(ack_epoch.clone())), Err(WireError::Invalid(_))));
        ack_epoch[9..17].copy_from_slice(&(u32::MAX as i64 + 1).to_be_bytes());
        assert!(matches!(decode(Bytes::from(ack_epoch)), Err(WireError::Invalid(_))));

        let mut reply = body_of(&PeerMessage::Reply(Committed::Failed { origin: origin(1, op::SET_DATA), err: ErrorCode::NoNode })).to_vec();
        let code_at = reply.len() - 4;
        reply[code_at..].copy_from_slice(&(-9999i32).to_be_bytes());
        assert_eq!(decode(Bytes::from(reply)).unwrap_err(), WireError::Invalid("unknown error code"));

        let mut presence = body_of(&PeerMessage::Inform { zxid: 1, txn: txn(1, TxnBody::CloseSession), origin: None }).to_vec();
        *presence.last_mut().unwrap() = 2;
        assert!(matches!(decode(Bytes::from(presence)), Err(WireError::Invalid(_))));

        // A proposal whose zxid is not its txn's.
        let mut proposal = body_of(&PeerMessage::Proposal { zxid: 1, txn: txn(1, TxnBody::CloseSession), origin: None }).to_vec();
        proposal[1..9].copy_from_slice(&2i64.to_be_bytes());
        assert!(matches!(decode(Bytes::from(proposal)), Err(WireError::Invalid(_))));
    }

    #[test]
    fn oversized_collections_are_refused_both_ways() {
        let mut out = BytesMut::from(&b"kept"[..]);
        let too_many = PeerMessage::Forward(ToSequencer::Touch { session_ids: vec![1; limits::SESSION_TOUCH_BATCH_MAX + 1] });
        assert!(encode(&too_many, &mut out).is_err());
        assert_eq!(&out[..], b"kept", "a failed encode leaves the buffer as it was");
        // Hand-made: tag, sub-tag, a vector of one too many ids.
        let mut body = vec![tag::FORWARD, tag::FORWARD_TOUCH];
        body.extend_from_slice(&((limits::SESSION_TOUCH_BATCH_MAX + 1) as i32).to_be_bytes());
        body.resize(body.len() + 8 * (limits::SESSION_TOUCH_BATCH_MAX + 1), 0);
        assert!(matches!(decode(Bytes::from(body)), Err(WireError::Invalid(_))));

        let chunk = PeerMessage::SnapChunk { bytes: Bytes::from(vec![0; limits::SNAP_CHUNK_BYTES]) };
        assert_eq!(decode(body_of(&chunk)).unwrap().name(), "SnapChunk");
        let chunk = PeerMessage::SnapChunk { bytes: Bytes::from(vec![0; limits::SNAP_CHUNK_BYTES + 1]) };
        assert!(encode(&chunk, &mut out).is_err());
        let mut body = vec![tag::SNAP_CHUNK];
        body.extend_from_slice(&((limits::SNAP_CHUNK_BYTES + 1) as i32).to_be_bytes());
        body.resize(body.len() + limits::SNAP_CHUNK_BYTES + 1, 0);
        assert!(matches!(decode(Bytes::from(body)), Err(WireError::Invalid(_))));

        // A SNAP header declares its snapshot's length; a negative one is refused.
        let mut body = vec![tag::SNAP];
        body.extend_from_slice(&7i64.to_be_bytes());
        body.extend_from_slice(&(-1i64).to_be_bytes());
        assert!(matches!(decode(Bytes::from(body)), Err(WireError::Invalid(_))));

        // A forged vector count larger than the frame allocates nothing.
        let mut body = vec![tag::FORWARD, tag::FORWARD_TOUCH];
        body.extend_from_slice(&i32::MAX.to_be_bytes());
        assert!(decode(Bytes::from(body)).is_err());
    }

    #[test]
    fn unencodable_messages_are_errors_not_frames() {
        let mut out = BytesMut::new();
        let committed_txn = PeerMessage::Reply(Committed::Txn { txn: txn(1, TxnBody::CloseSession), origin: None });
        assert!(matches!(encode(&committed_txn, &mut out), Err(WireError::Invalid(_))));
        let mismatched = PeerMessage::Proposal { zxid: 2, txn: txn(1, TxnBody::CloseSession), origin: None };
        assert!(matches!(encode(&mismatched, &mut out), Err(WireError::Invalid(_))));
        let wrong_opcode = PeerMessage::Forward(ToSequencer::Write {
            origin: origin(1, op::DELETE),
            session_id: 1,
            request: Request::Create { opcode: op::CREATE, request: create_request("/a", None) },
            auth: Arc::from([]),
        });
        assert!(matches!(encode(&wrong_opcode, &mut out), Err(WireError::Invalid(_))));
        let huge = PeerMessage::Forward(ToSequencer::Write {
            origin: origin(1, op::SET_DATA),
            session_id: 1,
            request: Request::SetData(SetDataRequest {
                path: "/a".into(),
                data: Some(Bytes::from(vec![0; limits::PEER_FRAME_BYTES_MAX])),
                version: -1,
            }),
            auth: Arc::from([]),
        });
        assert!(matches!(encode(&huge, &mut out), Err(WireError::FrameTooLarge { .. })));
        assert!(out.is_empty());
    }

    #[test]
    fn split_frame_rejects_a_declared_length_above_the_limit() {
        let mut buffer = BytesMut::from(&[0x00, 0x80, 0x00, 0x01][..]);
        assert_eq!(
            split_frame(&mut buffer, limits::PEER_FRAME_BYTES_MAX),
            Err(WireError::FrameTooLarge { length: 0x0080_0001, limit: limits::PEER_FRAME_BYTES_MAX })
        );
        let mut buffer = BytesMut::from(&[0xff, 0xff, 0xff, 0xff][..]);
        assert!(split_frame(&mut buffer, limits::PEER_FRAME_BYTES_MAX).is_err());
        // The election port's smaller bound.
        let mut buffer = BytesMut::from(&((limits::ELECTION_FRAME_BYTES_MAX + 1) as u32).to_be_bytes()[..]);
        assert!(split_frame(&mut buffer, limits::ELECTION_FRAME_BYTES_MAX).is_err());
        let mut buffer = BytesMut::from(&[0, 0][..]);
        assert_eq!(split_frame(&mut buffer, limits::PEER_FRAME_BYTES_MAX), Ok(None));
        // An empty body is a frame (which then fails to decode).
        let mut buffer = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(split_frame(&mut buffer, limits::PEER_FRAME_BYTES_MAX), Ok(Some(Bytes::new())));
    }

    fn mutate(rng: &mut Rng, input: &mut Vec<u8>, samples: &[Bytes]) {
        for _ in 0..1 + rng.below(4) {
            match rng.below(7) {
                0 if !input.is_empty() => {
                    let at = rng.index(input.len());
                    input[at] ^= 1 << rng.below(8);
                }
                1 => input.truncate(rng.index(input.len() + 1)),
                2 => {
                    let at = rng.index(input.len() + 1);
                    input.insert(at, rng.next_u64() as u8);
                }
                3 if !input.is_empty() => {
                    let at = rng.index(input.len());
                    input.remove(at);
                }
                4 if input.len() >= 4 => {
                    // A length or count forced to an extreme.
                    let at = rng.index(input.len() - 3);
                    let value = *rng.pick(&[-1, -2, i32::MAX, i32::MIN, 0, 1, 0x0010_0000]);
                    input[at..at + 4].copy_from_slice(&value.to_be_bytes());
                }
                5 => {
                    // Splice the tail of another sample.
                    let other = rng.pick(samples);
                    let from = rng.index(other.len() + 1);
                    let at = rng.index(input.len() + 1);
                    input.truncate(at);
                    input.extend_from_slice(&other[from..]);
                }
                _ if !input.is_empty() => input[0] = rng.next_u64() as u8,
                _ => {}
            }
        }
    }

    #[test]
    fn mutated_bodies_never_panic_and_what_decodes_round_trips() {
        let seed = std::env::var("FUZZ_SEED").ok().and_then(|text| text.parse().ok()).unwrap_or(0x5eed_fa11_u64);
        let iterations = 100_000;
        let samples: Vec<Bytes> = samples().iter().map(body_of).collect();
        let mut rng = Rng::new(seed);
        let mut decoded_count = 0;
        for iteration in 0..iterations {
            let mut input = rng.pick(&samples).to_vec();
            mutate(&mut rng, &mut input, &samples);
            let outcome = catch_unwind(AssertUnwindSafe(|| {
                let Ok(message) = decode(Bytes::copy_from_slice(&input)) else { return false };
                // What the decoder accepts, the encoder accepts, and it decodes back the same.
                let body = body_of(&message);
                let again = decode(body).expect("re-encoded message decodes");
                assert_eq!(format!("{again:?}"), format!("{message:?}"));
                true
            }));
            match outcome {
                Ok(decoded) => decoded_count += decoded as usize,
                Err(_) => panic!(
                    "wire fuzz failed: FUZZ_SEED={seed} iteration {iteration} input {}",
                    input.iter().map(|byte| format!("{byte:02x}")).collect::<String>()
                ),
            }
        }
        // Some mutations (a flipped zxid bit) must still decode, or the loop tests nothing.
        assert!(decoded_count > iterations / 20, "only {decoded_count} of {iterations} mutated inputs decoded");
    }
}
