//! One client connection: a reader that decodes frames and routes requests
//! (reads to the shard, writes to the sequencer) and a writer that drains the
//! connection's outbound queue. Requests keep their order: a read that
//! arrives behind unanswered writes of its connection is parked (the reader
//! goes on reading) and answered right after the last of those writes
//! applies, before any later one, as ZooKeeper's CommitProcessor orders it.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Bytes, BytesMut};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

use super::shard::{ConnectionHandle, ParkedRead, Pending, ShardRuntime};
use super::{elapsed_ms, wall_clock_ms};
use crate::limits;
use crate::pipeline::auth::{authenticate, AuthOutcome};
use crate::pipeline::shard::{expired_connect_response, reply_frame};
use crate::pipeline::{ConnectionId, Origin, ToSequencer};
use crate::proto::codes::{op, xid};
use crate::proto::frame::FrameDecoder;
use crate::proto::records::RequestError;
use crate::proto::{AuthPacket, ConnectRequest, ErrorCode, Jute, Reader, Request, RequestHeader};

pub async fn serve_connection(runtime: Rc<ShardRuntime>, stream: TcpStream) {
    let Ok(remote) = stream.peer_addr() else { return };
    let _ = stream.set_nodelay(true);
    let config = &runtime.options.config;
    // maxClientCnxns: concurrent connections per client address, across all shards.
    let admitted = {
        let mut counts = runtime.shared.connections_by_ip.lock().unwrap_or_else(|poison| poison.into_inner());
        let count = counts.entry(remote.ip()).or_insert(0);
        if config.max_client_cnxns != 0 && *count >= config.max_client_cnxns {
            false
        } else {
            *count += 1;
            true
        }
    };
    if !admitted {
        tracing::warn!(%remote, limit = config.max_client_cnxns, "too many connections from this address; closing");
        return;
    }
    let connection = runtime.next_connection_id();
    let handle = Rc::new(ConnectionHandle::new(remote, wall_clock_ms()));
    runtime.handles.borrow_mut().insert(connection, handle.clone());
    let (reader, writer) = futures_lite::io::split(stream);
    let read = read_loop(&runtime, &handle, connection, remote, reader);
    let write = write_loop(&handle, writer);
    futures_lite::future::zip(read, write).await;

    runtime.handles.borrow_mut().remove(&connection);
    runtime.core.borrow_mut().close(connection);
    let mut counts = runtime.shared.connections_by_ip.lock().unwrap_or_else(|poison| poison.into_inner());
    if let Some(count) = counts.get_mut(&remote.ip()) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&remote.ip());
        }
    }
    tracing::debug!(%remote, "connection closed");
}

async fn write_loop(handle: &ConnectionHandle, mut writer: futures_lite::io::WriteHalf<TcpStream>) {
    let mut batch = BytesMut::new();
    loop {
        {
            let mut outbound = handle.outbound.borrow_mut();
            while let Some(frame) = outbound.pop_front() {
                batch.extend_from_slice(&frame);
            }
        }
        if batch.is_empty() {
            if handle.closing.get() {
                let _ = writer.close().await;
                return;
            }
            handle.writer_wake.notified().await;
            continue;
        }
        let written = batch.len();
        if writer.write_all(&batch).await.is_err() {
            handle.outbound.borrow_mut().clear();
            handle.close();
            return;
        }
        batch.clear();
        handle.outbound_bytes.set(handle.outbound_bytes.get().saturating_sub(written));
        handle.reader_wake.notify();
    }
}

/// Waits until `ready` holds or the connection is closing; false if closing.
async fn wait_until(handle: &ConnectionHandle, ready: impl Fn(&ConnectionHandle) -> bool) -> bool {
    loop {
        if handle.closing.get() {
            return false;
        }
        if ready(handle) {
            return true;
        }
        handle.reader_wake.notified().await;
    }
}

/// Reads into the decoder through `chunk` (one buffer per connection, reused);
/// None at EOF, on error, or once the connection closes.
async fn read_some(
    handle: &ConnectionHandle,
    reader: &mut futures_lite::io::ReadHalf<TcpStream>,
    decoder: &mut FrameDecoder,
    chunk: &mut [u8],
) -> Option<usize> {
    let read = async { Some(reader.read(chunk).await) };
    let closed = async {
        loop {
            handle.reader_wake.notified().await;
            if handle.closing.get() {
                return None;
            }
        }
    };
    match futures_lite::future::or(read, closed).await {
        Some(Ok(count)) if count > 0 => {
            decoder.buffer_mut().extend_from_slice(&chunk[..count]);
            Some(count)
        }
        _ => None,
    }
}

async fn read_loop(
    runtime: &ShardRuntime,
    handle: &ConnectionHandle,
    connection: ConnectionId,
    remote: SocketAddr,
    mut reader: futures_lite::io::ReadHalf<TcpStream>,
) {
    let config = &runtime.options.config;
    // ZooKeeper accepts frames up to jute.maxbuffer plus a little header room.
    let mut decoder = FrameDecoder::new(config.jute_maxbuffer + 1024);
    let mut chunk = vec![0u8; limits::SOCKET_READ_BYTES];
    // A four-letter word arrives where the first frame's length would be.
    while decoder.buffered().len() < 4 {
        if read_some(handle, &mut reader, &mut decoder, &mut chunk).await.is_none() {
            handle.close();
            return;
        }
    }
    let first_four: [u8; 4] = [decoder.buffered()[0], decoder.buffered()[1], decoder.buffered()[2], decoder.buffered()[3]];
    if let Some(word) = crate::fourlw::is_four_letter_word(&first_four) {
        let response = super::four_letter_word(runtime, word);
        handle.push(Bytes::from(response));
        handle.close();
        return;
    }
    let mut established = false;
    loop {
        let frame = match decoder.next_frame() {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                if read_some(handle, &mut reader, &mut decoder, &mut chunk).await.is_none() {
                    break;
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(%remote, %error, "bad frame length; closing connection");
                break;
            }
        };
        runtime.packets_received.set(runtime.packets_received.get() + 1);
        handle.stats.borrow_mut().received += 1;
        if !established {
            if !handshake(runtime, handle, connection, remote, frame).await {
                break;
            }
            established = true;
            continue;
        }
        if !handle_request(runtime, handle, connection, remote, frame).await {
            break;
        }
        // Backpressure: stop reading while this client has a large backlog.
        if !wait_until(handle, |handle| handle.outbound_bytes.get() < limits::CONNECTION_OUTBOUND_BYTES_HIGH).await {
            break;
        }
    }
    handle.close();
}

/// The first frame: ConnectRequest. Returns false to close the connection.
async fn handshake(runtime: &ShardRuntime, handle: &ConnectionHandle, connection: ConnectionId, remote: SocketAddr, frame: Bytes) -> bool {
    let config = &runtime.options.config;
    let request = match ConnectRequest::decode(frame) {
        Ok(request) => request,
        Err(error) => {
            tracing::warn!(%remote, %error, "malformed connect request; closing connection");
            return false;
        }
    };
    if !runtime.shared.serving.load(std::sync::atomic::Ordering::Acquire) {
        // ZooKeeper closes a connection while its server is not running
        // (electing or syncing); the client tries another server.
        tracing::info!(%remote, "not serving yet (no synced leader); closing connection");
        return false;
    }
    // Everything sent to this shard before serving began (the synced tree,
    // the session secret) is applied before the session is looked at.
    runtime.catch_up().await;
    let last_zxid = runtime.core.borrow().tree().last_processed_zxid();
    if request.last_zxid_seen > last_zxid {
        // ZooKeeper refuses a client that has seen a newer state than this server.
        tracing::info!(
            %remote,
            client_zxid = format_args!("{:#x}", request.last_zxid_seen),
            server_zxid = format_args!("{last_zxid:#x}"),
            "refusing session: client has seen a zxid ahead of this server; client must try another server"
        );
        return false;
    }
    let timeout_ms = request
        .timeout_ms
        .clamp(config.session_timeout_ms_min as i32, config.session_timeout_ms_max as i32);
    let read_only_byte = request.read_only.is_some();
    runtime.core.borrow_mut().open(connection, remote.ip().to_string(), read_only_byte);
    let origin = Origin { server: runtime.options.config.server_id, connection, xid: 0, opcode: op::CREATE_SESSION };
    let message = if request.session_id == 0 {
        ToSequencer::CreateSession { origin, timeout_ms }
    } else if !runtime.core.borrow().check_password(request.session_id, &request.password) {
        tracing::info!(%remote, session = format_args!("{:#x}", request.session_id), "wrong session password");
        handle.push(expired_connect_response(read_only_byte));
        return false;
    } else {
        ToSequencer::Revalidate { origin, session_id: request.session_id, timeout_ms }
    };
    handle.writes_in_flight.set(handle.writes_in_flight.get() + 1);
    if runtime.to_sequencer.send(message).await.is_err() {
        return false;
    }
    // No request is read until the session is established (or refused).
    wait_until(handle, |handle| handle.writes_in_flight.get() == 0).await
}

/// One request after the handshake. Returns false to close the connection.
async fn handle_request(runtime: &ShardRuntime, handle: &ConnectionHandle, connection: ConnectionId, remote: SocketAddr, frame: Bytes) -> bool {
    let mut reader = Reader::new(frame);
    let Ok(header) = RequestHeader::decode(&mut reader) else {
        tracing::warn!(%remote, "truncated request header; closing connection");
        return false;
    };
    let session_id = handle.session_id.get();
    runtime.touched_sessions.borrow_mut().insert(session_id);
    {
        let mut stats = handle.stats.borrow_mut();
        stats.last_operation = operation_abbreviation(header.opcode).to_owned();
        stats.last_cxid = header.xid;
    }
    let zxid_now = || runtime.core.borrow().tree().last_processed_zxid();
    if header.opcode == op::AUTH {
        let Ok(packet) = AuthPacket::decode(&mut reader) else {
            handle.push(reply_frame(header.xid, zxid_now(), ErrorCode::MarshallingError, None));
            return true;
        };
        if !wait_until(handle, |handle| handle.pending.borrow().is_empty()).await {
            return false;
        }
        let super_digest = runtime.options.config.super_digest.as_deref();
        return match authenticate(&packet.scheme, &packet.auth, super_digest) {
            AuthOutcome::Added(ids) => {
                runtime.core.borrow_mut().add_auth(connection, ids);
                // ZooKeeper answers with the request's xid (the Java client sends -4).
                handle.push(reply_frame(header.xid, 0, ErrorCode::Ok, None));
                true
            }
            AuthOutcome::Failed => {
                tracing::info!(%remote, scheme = %packet.scheme, "authentication failed; closing connection");
                handle.push(reply_frame(header.xid, 0, ErrorCode::AuthFailed, None));
                false
            }
        };
    }
    let request = match Request::decode(header.opcode, &mut reader, limits::MULTI_OPS_MAX) {
        Ok(request) => request,
        Err(RequestError::UnknownOpcode(opcode)) => {
            // ZooKeeper's UnimplementedRequestProcessor answers, then closes the
            // connection; the session lives on and the client may resume it.
            tracing::warn!(%remote, opcode, "unknown request type; closing connection");
            handle.push(reply_frame(header.xid, zxid_now(), ErrorCode::Unimplemented, None));
            return false;
        }
        Err(RequestError::Decode(error)) => {
            tracing::warn!(%remote, opcode = header.opcode, %error, "malformed request");
            handle.push(reply_frame(header.xid, zxid_now(), ErrorCode::MarshallingError, None));
            return true;
        }
    };
    let origin = Origin { server: runtime.options.config.server_id, connection, xid: header.xid, opcode: header.opcode };
    if request.is_write() || matches!(request, Request::Sync(_)) {
        if !wait_until(handle, |handle| handle.writes_in_flight.get() < limits::CONNECTION_WRITES_IN_FLIGHT_MAX).await {
            return false;
        }
        handle.writes_in_flight.set(handle.writes_in_flight.get() + 1);
        handle.pending.borrow_mut().push_back(Pending::Write);
        handle.write_started_ms.borrow_mut().push_back(elapsed_ms());
        let message = match request {
            Request::Sync(request) => ToSequencer::Sync { origin, path: request.path },
            request => {
                let auth = runtime.core.borrow().connection(connection).map(|info| info.auth.clone()).unwrap_or_default();
                ToSequencer::Write { origin, session_id, request, auth }
            }
        };
        return runtime.to_sequencer.send(message).await.is_ok();
    }
    // A read sees every earlier write of this connection, and every write
    // another client has already been answered for (on any shard), and no
    // later write of this connection.
    if !wait_until(handle, |handle| handle.parked_reads.get() < limits::CONNECTION_PARKED_READS_MAX).await {
        return false;
    }
    let reply_xid = if let Request::Ping = request { xid::PING } else { header.xid };
    let started_ms = elapsed_ms();
    let applied_at_least = runtime.shared.commits_sent[runtime.index].load(std::sync::atomic::Ordering::Acquire);
    if handle.pending.borrow().is_empty() && runtime.commits_applied.get() >= applied_at_least {
        runtime.serve_read(connection, handle, reply_xid, &request, started_ms);
    } else {
        runtime.park_read(connection, handle, ParkedRead { xid: reply_xid, request, started_ms, applied_at_least });
    }
    true
}

/// The names ZooKeeper's `cons` and `stat` give the last operation.
fn operation_abbreviation(opcode: i32) -> &'static str {
    match opcode {
        op::PING => "PING",
        op::CREATE_SESSION => "SESS",
        op::MULTI => "MULT",
        op::MULTI_READ => "MLTR",
        op::CREATE | op::CREATE2 | op::CREATE_CONTAINER | op::CREATE_TTL => "CREA",
        op::DELETE | op::DELETE_CONTAINER => "DELE",
        op::SET_DATA => "SETD",
        op::RECONFIG => "RECO",
        op::SET_ACL => "SETA",
        op::CLOSE_SESSION => "CLOS",
        op::SYNC => "SYNC",
        op::CHECK => "CHEC",
        op::EXISTS => "EXIS",
        op::GET_DATA => "GETD",
        op::SET_WATCHES => "SETW",
        op::SET_WATCHES2 => "STW2",
        op::ADD_WATCH => "ADDW",
        op::GET_ACL => "GETA",
        op::GET_CHILDREN | op::GET_CHILDREN2 => "GETC",
        op::GET_ALL_CHILDREN_NUMBER => "GETACN",
        op::CHECK_WATCHES => "CHKW",
        op::REMOVE_WATCHES => "REMW",
        op::WHO_AM_I => "HOMI",
        op::GET_EPHEMERALS => "GETE",
        _ => "NA",
    }
}
