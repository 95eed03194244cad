//! The peer transport: TCP connections between servers, carrying
//! `zab::wire` frames. It owns sockets, queues and reconnects; it makes no
//! protocol decisions — what a message means, who leads, when a learner is
//! dropped is the ZAB layer's business, told through `NetEvent`s.
//!
//! Two ports per server, as in ZooKeeper (`server.N=host:quorumPort:electionPort`):
//!
//! * **Election.** Every server keeps one outbound connection per other
//!   server for what it sends (first frame `Hello { sid }`), and reads
//!   notifications from the inbound connections others opened to it. Two
//!   one-way connections per pair keep it simple: ZooKeeper's single-connection
//!   tie-break (the larger sid wins) is not needed. Outbound queues hold at
//!   most `ELECTION_QUEUE_MAX` notifications and drop the oldest when full
//!   (FLE re-sends on every timeout); a link connects lazily and reconnects
//!   with a short backoff. An inbound connection whose first frame is not a
//!   `Hello` from a known server, or that sends anything undecodable or not a
//!   notification, is closed with a warning. A newer connection from the same
//!   server replaces the older.
//! * **Quorum.** A link is one connection, accepted (`QuorumAccepted`) or
//!   opened by `connect_leader` (`QuorumConnected`). Each link has a bounded
//!   FIFO (`LEARNER_QUEUE_MAX` messages and `PEER_QUEUE_BYTES_MAX` encoded
//!   bytes); `send` encodes at once into it and never blocks, and one writer
//!   task per link writes everything queued in one large write. Any error, a
//!   bad frame, the peer closing or `close` ends the link, and
//!   `QuorumClosed` follows exactly once.
//!
//! Everything lives on one glommio executor (core 0) behind an `Rc`. Events
//! go out on a bounded local channel; when it is full the reader awaits
//! (backpressure: the connection stops being read, and the sender's queue
//! fills up to QueueFull). Addresses are resolved when used (a host name
//! blocks the executor for the lookup, as ZooKeeper's resolution blocks its
//! thread), so a server whose name does not resolve yet is retried.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_lite::future::or;
use futures_lite::io::{ReadHalf, WriteHalf};
use futures_lite::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel::LocalSender;
use glommio::net::{TcpListener, TcpStream};
use hashbrown::HashMap;

use super::listener;
use super::notify::{Notify, NotifyAll};
use crate::config::ServerSpec;
use crate::limits;
use crate::zab::broadcast::LEARNER_QUEUE_MAX;
use crate::zab::election::Notification;
use crate::zab::wire::{self, PeerMessage, WireError};
use crate::zab::ServerId;

/// How long an outbound election connection may take to open (ZooKeeper's
/// `cnxTimeout` default).
const ELECTION_CONNECT_TIMEOUT_MS: u64 = 5000;
/// The first wait after an election link fails to connect; it doubles on
/// every failure up to the maximum and resets after a successful write.
const ELECTION_RECONNECT_BACKOFF_MS_MIN: u64 = 20;
const ELECTION_RECONNECT_BACKOFF_MS_MAX: u64 = 1000;
/// An inbound election connection must say Hello within this long.
const HELLO_TIMEOUT_MS: u64 = 5000;
/// A write batch this much larger than a frame is not kept for reuse, so one
/// burst (a snapshot) does not pin its buffer for the link's life.
const WRITE_BUFFER_KEEP_BYTES_MAX: usize = limits::PEER_FRAME_BYTES_MAX;

/// A quorum connection, unique for the life of a `PeerNet`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u64);

impl std::fmt::Display for LinkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "link-{}", self.0)
    }
}

/// What the transport reports. For one link the order is: `QuorumAccepted`
/// or `QuorumConnected`, its messages in the order they were sent, then
/// `QuorumClosed` exactly once (also after `close`; messages already read
/// may still arrive before it).
#[derive(Debug)]
pub enum NetEvent {
    /// A notification read from `from`'s election connection (`from` is the
    /// sid its Hello named; the notification carries its own `sid` too).
    Notification { from: ServerId, notification: Notification },
    /// A peer connected to our quorum port (a learner, presumably; its first
    /// message says who it is).
    QuorumAccepted { link: LinkId },
    /// `connect_leader` succeeded.
    QuorumConnected { link: LinkId, leader: ServerId },
    /// `connect_leader` failed: refused, timed out, unknown server, not resolvable.
    QuorumConnectFailed { leader: ServerId },
    QuorumMessage { link: LinkId, msg: PeerMessage },
    /// The link is gone: closed by either side, an I/O error or a bad frame.
    QuorumClosed { link: LinkId },
}

/// Why `send` did not queue a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The link's queue holds `LEARNER_QUEUE_MAX` messages or
    /// `PEER_QUEUE_BYTES_MAX` bytes: the peer is not keeping up.
    QueueFull,
    /// The link is closed or closing (or never existed).
    Closed,
    /// The message has no valid encoding (see `wire::encode`): a bug in the sender.
    Encode(WireError),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::QueueFull => write!(f, "peer link queue full"),
            SendError::Closed => write!(f, "peer link closed"),
            SendError::Encode(error) => write!(f, "peer message not encodable: {error}"),
        }
    }
}

impl std::error::Error for SendError {}

/// Where a server listens.
struct PeerAddress {
    host: String,
    election_port: u16,
    quorum_port: u16,
}

impl PeerAddress {
    /// The first address `host:port` resolves to.
    fn resolve(&self, port: u16) -> std::io::Result<SocketAddr> {
        (self.host.as_str(), port).to_socket_addrs()?.next().ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotFound, format!("{} resolves to no address", self.host))
        })
    }
}

/// A close flag with one waiter (the task that owns the connection).
#[derive(Default)]
struct Closer {
    closing: Cell<bool>,
    wake: Notify,
}

impl Closer {
    fn close(&self) {
        self.closing.set(true);
        self.wake.notify();
    }
}

/// Resolves once `closing` is set; `wake` must be notified when it is.
async fn until_closing(closing: &Cell<bool>, wake: &Notify) {
    while !closing.get() {
        wake.notified().await;
    }
}

/// One outbound election link: notifications waiting for the sender task.
#[derive(Default)]
struct ElectionOut {
    queue: RefCell<VecDeque<Notification>>,
    wake: Notify,
}

/// One quorum link's shared state: the sender side's queue and the flags
/// its two tasks (reader, writer) watch.
struct QuorumLink {
    id: LinkId,
    /// Encoded frames not yet taken by the writer.
    pending: RefCell<BytesMut>,
    pending_messages: Cell<usize>,
    /// The batch the writer is writing now, still counted as queued.
    writing_messages: Cell<usize>,
    writing_bytes: Cell<usize>,
    closing: Cell<bool>,
    reader_wake: Notify,
    writer_wake: Notify,
    /// Woken whenever the queue shrinks or the link closes (`wait_stream_room`).
    room: NotifyAll,
    /// While a stream (a snapshot) is fed into `pending` piece by piece,
    /// what `send_ref` queues waits here, encoded, and follows the stream's
    /// end (`begin_stream` .. `end_stream`).
    held: RefCell<Option<BytesMut>>,
    held_messages: Cell<usize>,
}

impl QuorumLink {
    fn new(id: LinkId) -> QuorumLink {
        QuorumLink {
            id,
            pending: RefCell::new(BytesMut::new()),
            pending_messages: Cell::new(0),
            writing_messages: Cell::new(0),
            writing_bytes: Cell::new(0),
            closing: Cell::new(false),
            reader_wake: Notify::default(),
            writer_wake: Notify::default(),
            room: NotifyAll::default(),
            held: RefCell::new(None),
            held_messages: Cell::new(0),
        }
    }

    fn queued(&self) -> usize {
        self.pending_messages.get() + self.writing_messages.get() + self.held_messages.get()
    }

    fn queued_bytes(&self) -> usize {
        self.unheld_bytes() + self.held.borrow().as_ref().map_or(0, |held| held.len())
    }

    /// Bytes queued for the writer or being written, not counting held ones.
    fn unheld_bytes(&self) -> usize {
        self.pending.borrow().len() + self.writing_bytes.get()
    }

    fn close(&self) {
        self.closing.set(true);
        self.reader_wake.notify();
        self.writer_wake.notify();
        self.room.notify_all();
    }
}

/// The peer transport of one server. Create with `start`; stop with `shutdown`
/// (its tasks hold it alive until then).
pub struct PeerNet {
    my_id: ServerId,
    peers: HashMap<ServerId, PeerAddress>,
    events: LocalSender<NetEvent>,
    stopped: Cell<bool>,
    election_accept_stop: Notify,
    quorum_accept_stop: Notify,
    accept_loops_running: Cell<usize>,
    accept_loop_exited: NotifyAll,
    election_out: RefCell<HashMap<ServerId, Rc<ElectionOut>>>,
    /// The current inbound election connection of each server.
    election_in: RefCell<HashMap<ServerId, Rc<Closer>>>,
    links: RefCell<HashMap<LinkId, Rc<QuorumLink>>>,
    next_link: Cell<u64>,
    /// `limits::PEER_QUEUE_BYTES_MAX`, lowered by tests.
    queue_bytes_max: usize,
    /// `LEARNER_QUEUE_MAX`, lowered by tests.
    queue_messages_max: usize,
}

impl PeerNet {
    /// Binds my election and quorum ports (the addresses in my `server.N`
    /// line, with SO_REUSEADDR so a restarted server rebinds at once) and
    /// starts their accept loops on the current glommio executor.
    pub fn start(my_id: ServerId, servers: &[ServerSpec], events: LocalSender<NetEvent>) -> std::io::Result<Rc<PeerNet>> {
        PeerNet::start_with_queue_bounds(my_id, servers, events, limits::PEER_QUEUE_BYTES_MAX, LEARNER_QUEUE_MAX)
    }

    fn start_with_queue_bounds(
        my_id: ServerId,
        servers: &[ServerSpec],
        events: LocalSender<NetEvent>,
        queue_bytes_max: usize,
        queue_messages_max: usize,
    ) -> std::io::Result<Rc<PeerNet>> {
        assert!(queue_bytes_max >= limits::PEER_FRAME_BYTES_MAX, "every frame must fit in an empty queue");
        let peers: HashMap<ServerId, PeerAddress> = servers
            .iter()
            .map(|server| {
                let address = PeerAddress {
                    host: server.host.clone(),
                    election_port: server.election_port,
                    quorum_port: server.quorum_port,
                };
                (server.id, address)
            })
            .collect();
        let me = peers.get(&my_id).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("server.{my_id} is not in the configuration"))
        })?;
        let election_listener = bind(me.resolve(me.election_port)?)?;
        let quorum_listener = bind(me.resolve(me.quorum_port)?)?;
        let net = Rc::new(PeerNet {
            my_id,
            peers,
            events,
            stopped: Cell::new(false),
            election_accept_stop: Notify::default(),
            quorum_accept_stop: Notify::default(),
            accept_loops_running: Cell::new(2),
            accept_loop_exited: NotifyAll::default(),
            election_out: RefCell::new(HashMap::new()),
            election_in: RefCell::new(HashMap::new()),
            links: RefCell::new(HashMap::new()),
            next_link: Cell::new(1),
            queue_bytes_max,
            queue_messages_max,
        });
        glommio::spawn_local(election_accept_loop(net.clone(), election_listener)).detach();
        glommio::spawn_local(quorum_accept_loop(net.clone(), quorum_listener)).detach();
        Ok(net)
    }

    pub fn my_id(&self) -> ServerId {
        self.my_id
    }

    /// Queues `notification` for `to`'s election port. Never blocks: past
    /// `ELECTION_QUEUE_MAX` queued the oldest is dropped (FLE re-sends). A
    /// notification to myself or an unknown server is dropped.
    pub fn send_notification(self: &Rc<Self>, to: ServerId, notification: Notification) {
        if self.stopped.get() || to == self.my_id || !self.peers.contains_key(&to) {
            tracing::debug!(to, "notification for no other known server dropped");
            return;
        }
        let out = {
            let mut links = self.election_out.borrow_mut();
            match links.get(&to) {
                Some(out) => out.clone(),
                None => {
                    let out = Rc::new(ElectionOut::default());
                    links.insert(to, out.clone());
                    glommio::spawn_local(election_sender(self.clone(), to, out.clone())).detach();
                    out
                }
            }
        };
        let mut queue = out.queue.borrow_mut();
        if queue.len() >= limits::ELECTION_QUEUE_MAX {
            queue.pop_front();
            tracing::debug!(to, "election queue full; oldest notification dropped");
        }
        queue.push_back(notification);
        drop(queue);
        out.wake.notify();
    }

    /// Opens a quorum connection to `leader`'s quorum port, giving up after
    /// `timeout_ms`. Reports `QuorumConnected` or `QuorumConnectFailed`.
    pub fn connect_leader(self: &Rc<Self>, leader: ServerId, timeout_ms: u64) {
        glommio::spawn_local(connect_leader(self.clone(), leader, timeout_ms)).detach();
    }

    /// Queues `msg` on `link`; see `send_ref`.
    pub fn send(&self, link: LinkId, msg: PeerMessage) -> Result<(), SendError> {
        self.send_ref(link, &msg)
    }

    /// Encodes `msg` into `link`'s queue. Never blocks. `QueueFull` when the
    /// queue holds `LEARNER_QUEUE_MAX` messages or the frame would take it
    /// past `limits::PEER_QUEUE_BYTES_MAX` bytes; `Closed` when the link is closing
    /// or gone. Messages are written in the order they were queued.
    /// While `link` carries a stream, the message is held until its end.
    pub fn send_ref(&self, link: LinkId, msg: &PeerMessage) -> Result<(), SendError> {
        self.enqueue(link, msg, false)
    }

    /// `link`, unless it is closing or gone.
    fn open_link(&self, link: LinkId) -> Result<Rc<QuorumLink>, SendError> {
        match self.links.borrow().get(&link) {
            Some(link) if !link.closing.get() => Ok(link.clone()),
            _ => Err(SendError::Closed),
        }
    }

    fn enqueue(&self, link: LinkId, msg: &PeerMessage, streamed: bool) -> Result<(), SendError> {
        let link = self.open_link(link)?;
        if link.queued() >= self.queue_messages_max {
            return Err(SendError::QueueFull);
        }
        let queued_bytes_before = link.queued_bytes();
        let mut held = link.held.borrow_mut();
        let mut pending = link.pending.borrow_mut();
        let (buffer, count, to_writer) = match held.as_mut() {
            Some(held) if !streamed => (held, &link.held_messages, false),
            _ => (&mut *pending, &link.pending_messages, true),
        };
        let before = buffer.len();
        wire::encode(msg, buffer).map_err(SendError::Encode)?;
        if queued_bytes_before + (buffer.len() - before) > self.queue_bytes_max {
            buffer.truncate(before);
            return Err(SendError::QueueFull);
        }
        count.set(count.get() + 1);
        drop((held, pending));
        if to_writer {
            link.writer_wake.notify();
        }
        Ok(())
    }

    /// Starts a stream on `link`: from now until `end_stream`, messages
    /// queued with `send`/`send_ref` are held back, and only those queued
    /// with `send_streamed` go to the socket. So a sender can feed a large
    /// message sequence (a snapshot) at the socket's pace with
    /// `wait_stream_room`, while what it (or anyone) queues meanwhile, still
    /// bounded by the queue limits, follows the whole stream.
    pub fn begin_stream(&self, link: LinkId) -> Result<(), SendError> {
        let link = self.open_link(link)?;
        let mut held = link.held.borrow_mut();
        if held.is_some() {
            // One stream at a time: a second snapshot for the same link
            // means the learner restarted its sync; let it reconnect.
            return Err(SendError::QueueFull);
        }
        *held = Some(BytesMut::new());
        Ok(())
    }

    /// Queues `msg` as the next part of `link`'s stream, ahead of everything
    /// held; the same bounds as `send_ref`.
    pub fn send_streamed(&self, link: LinkId, msg: &PeerMessage) -> Result<(), SendError> {
        self.enqueue(link, msg, true)
    }

    /// Waits until at most `ahead_bytes` of `link`'s queue, held messages
    /// not counted, are waiting for the socket. `Closed` if the link closes.
    pub async fn wait_stream_room(&self, link: LinkId, ahead_bytes: usize) -> Result<(), SendError> {
        loop {
            let link = self.open_link(link)?;
            if link.unheld_bytes() <= ahead_bytes {
                return Ok(());
            }
            link.room.notified().await;
        }
    }

    /// Ends `link`'s stream: what was held follows it, in the order queued.
    pub fn end_stream(&self, link: LinkId) {
        let links = self.links.borrow();
        let Some(link) = links.get(&link) else { return };
        let Some(held) = link.held.borrow_mut().take() else { return };
        link.pending.borrow_mut().extend_from_slice(&held);
        link.pending_messages.set(link.pending_messages.get() + link.held_messages.replace(0));
        link.writer_wake.notify();
    }

    /// Closes `link` now, dropping what is still queued; `QuorumClosed`
    /// follows (unless it already did).
    pub fn close(&self, link: LinkId) {
        if let Some(link) = self.links.borrow().get(&link) {
            link.close();
        }
    }

    /// Whether `link` is still open (not closed or closing).
    pub fn is_open(&self, link: LinkId) -> bool {
        self.open_link(link).is_ok()
    }

    /// Messages queued on `link` and not yet written to the socket (0 if gone).
    pub fn queued(&self, link: LinkId) -> usize {
        self.links.borrow().get(&link).map_or(0, |link| link.queued())
    }

    /// Encoded bytes queued on `link` and not yet written (0 if gone).
    pub fn queued_bytes(&self, link: LinkId) -> usize {
        self.links.borrow().get(&link).map_or(0, |link| link.queued_bytes())
    }

    /// Stops everything: the accept loops (their ports are free once this
    /// returns), the election links, and every quorum link (each still
    /// reports `QuorumClosed` if the events channel takes it).
    pub async fn shutdown(&self) {
        if self.stopped.replace(true) {
            return;
        }
        self.election_accept_stop.notify();
        self.quorum_accept_stop.notify();
        for out in self.election_out.borrow().values() {
            out.wake.notify();
        }
        for closer in self.election_in.borrow().values() {
            closer.close();
        }
        for link in self.links.borrow().values() {
            link.close();
        }
        while self.accept_loops_running.get() > 0 {
            self.accept_loop_exited.notified().await;
        }
    }

    fn new_link(&self) -> Rc<QuorumLink> {
        let id = LinkId(self.next_link.get());
        self.next_link.set(id.0 + 1);
        let link = Rc::new(QuorumLink::new(id));
        self.links.borrow_mut().insert(id, link.clone());
        link
    }

    fn accept_loop_done(&self) {
        self.accept_loops_running.set(self.accept_loops_running.get() - 1);
        self.accept_loop_exited.notify_all();
    }
}

fn bind(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = listener::bind(address, false)?;
    // SAFETY: we hand over ownership of a bound, listening TCP socket.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

/// Runs `future` unless `stop` is notified first (None then).
async fn unless<T>(future: impl Future<Output = T>, stop: impl Future<Output = ()>) -> Option<T> {
    or(async { Some(future.await) }, async {
        stop.await;
        None
    })
    .await
}

/// Why a connection stopped being read.
enum ReadEnd {
    Eof,
    Io(std::io::Error),
    Frame(WireError),
}

impl std::fmt::Display for ReadEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadEnd::Eof => write!(f, "closed by the peer"),
            ReadEnd::Io(error) => write!(f, "{error}"),
            ReadEnd::Frame(error) => write!(f, "bad frame: {error}"),
        }
    }
}

/// The next frame's body, reading as needed. Whatever is read beyond it
/// stays in `buffer` for the next call; a frame's declared length is checked
/// before its body is buffered.
async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
    buffer: &mut BytesMut,
    chunk: &mut [u8],
    frame_bytes_max: usize,
) -> Result<Bytes, ReadEnd> {
    loop {
        if let Some(body) = wire::split_frame(buffer, frame_bytes_max).map_err(ReadEnd::Frame)? {
            return Ok(body);
        }
        match reader.read(chunk).await {
            Ok(0) => return Err(ReadEnd::Eof),
            Ok(count) => buffer.extend_from_slice(&chunk[..count]),
            Err(error) => return Err(ReadEnd::Io(error)),
        }
    }
}

// ---------------------------------------------------------------------------
// Election port

/// Sends `to`'s queued notifications over one outbound connection, opened
/// when there is something to send and reopened after a failure.
async fn election_sender(net: Rc<PeerNet>, to: ServerId, out: Rc<ElectionOut>) {
    let mut backoff_ms = ELECTION_RECONNECT_BACKOFF_MS_MIN;
    let mut batch = BytesMut::new();
    let mut probe = [0u8; 64];
    loop {
        while out.queue.borrow().is_empty() && !net.stopped.get() {
            out.wake.notified().await;
        }
        if net.stopped.get() {
            return;
        }
        let Some(peer) = net.peers.get(&to) else { return };
        let connected = match peer.resolve(peer.election_port) {
            Ok(address) => {
                let timeout = Duration::from_millis(ELECTION_CONNECT_TIMEOUT_MS);
                let stopped = until_closing(&net.stopped, &out.wake);
                match unless(TcpStream::connect_timeout(address, timeout), stopped).await {
                    None => return,
                    Some(connected) => connected.map_err(std::io::Error::from),
                }
            }
            Err(error) => Err(error),
        };
        let stream = match connected {
            Ok(stream) => stream,
            Err(error) => {
                tracing::debug!(to, %error, backoff_ms, "election connection failed; retrying");
                let stopped = until_closing(&net.stopped, &out.wake);
                unless(glommio::timer::sleep(Duration::from_millis(backoff_ms)), stopped).await;
                backoff_ms = (backoff_ms * 2).min(ELECTION_RECONNECT_BACKOFF_MS_MAX);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (mut reader, mut writer) = futures_lite::io::split(stream);
        batch.clear();
        wire::encode(&PeerMessage::Hello { sid: net.my_id }, &mut batch).expect("Hello encodes");
        loop {
            for notification in out.queue.borrow_mut().drain(..) {
                wire::encode(&PeerMessage::Notification(notification), &mut batch).expect("notifications encode");
            }
            if !batch.is_empty() {
                let stopped = until_closing(&net.stopped, &out.wake);
                match unless(writer.write_all(&batch), stopped).await {
                    None => return,
                    Some(Err(error)) => {
                        tracing::debug!(to, %error, "election connection lost; reconnecting");
                        break;
                    }
                    Some(Ok(())) => {}
                }
                batch.clear();
                backoff_ms = ELECTION_RECONNECT_BACKOFF_MS_MIN;
            }
            if net.stopped.get() {
                return;
            }
            // Idle: wait for more to send, or notice the peer closing (it never
            // writes on this connection, so any read ends it) and reconnect at
            // the next send instead of writing into a dead socket.
            let idle = or(
                async {
                    out.wake.notified().await;
                    None
                },
                async { Some(reader.read(&mut probe).await) },
            )
            .await;
            match idle {
                None => {}
                Some(Ok(0)) => {
                    tracing::debug!(to, "election connection closed by the peer");
                    break;
                }
                Some(Ok(_)) => {
                    tracing::warn!(to, "peer wrote on our outbound election connection; reconnecting");
                    break;
                }
                Some(Err(error)) => {
                    tracing::debug!(to, %error, "election connection lost");
                    break;
                }
            }
        }
    }
}

async fn election_accept_loop(net: Rc<PeerNet>, listener: TcpListener) {
    loop {
        if net.stopped.get() {
            break;
        }
        let Some(accepted) = unless(listener.accept(), net.election_accept_stop.notified()).await else { continue };
        match accepted {
            Ok(stream) => {
                glommio::spawn_local(serve_election_inbound(net.clone(), stream)).detach();
            }
            Err(error) => {
                tracing::warn!(%error, "election port accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    drop(listener);
    net.accept_loop_done();
}

/// Reads notifications from one inbound election connection.
async fn serve_election_inbound(net: Rc<PeerNet>, stream: TcpStream) {
    let remote = stream.peer_addr().map_or_else(|_| "unknown".to_owned(), |address| address.to_string());
    let _ = stream.set_nodelay(true);
    let mut reader = stream;
    let mut buffer = BytesMut::new();
    let mut chunk = vec![0u8; limits::ELECTION_FRAME_BYTES_MAX];
    let frame_max = limits::ELECTION_FRAME_BYTES_MAX;

    let hello_timeout = glommio::timer::sleep(Duration::from_millis(HELLO_TIMEOUT_MS));
    let first = match unless(read_frame(&mut reader, &mut buffer, &mut chunk, frame_max), hello_timeout).await {
        None => {
            tracing::warn!(%remote, "election connection sent no Hello in time; closing");
            return;
        }
        Some(Err(end)) => {
            tracing::debug!(%remote, %end, "election connection ended before Hello");
            return;
        }
        Some(Ok(body)) => wire::decode(body),
    };
    let sid = match first {
        Ok(PeerMessage::Hello { sid }) if sid != net.my_id && net.peers.contains_key(&sid) => sid,
        Ok(PeerMessage::Hello { sid }) => {
            tracing::warn!(%remote, sid, "election Hello from an unknown server; closing");
            return;
        }
        Ok(other) => {
            tracing::warn!(%remote, message = other.name(), "election connection did not start with Hello; closing");
            return;
        }
        Err(error) => {
            tracing::warn!(%remote, %error, "bad first frame on the election port; closing");
            return;
        }
    };
    if net.stopped.get() {
        return;
    }
    let closer = Rc::new(Closer::default());
    if let Some(older) = net.election_in.borrow_mut().insert(sid, closer.clone()) {
        older.close();
    }
    tracing::debug!(%remote, sid, "election connection from a peer");
    loop {
        let closed = until_closing(&closer.closing, &closer.wake);
        let Some(read) = unless(read_frame(&mut reader, &mut buffer, &mut chunk, frame_max), closed).await else {
            break;
        };
        let body = match read {
            Ok(body) => body,
            Err(ReadEnd::Frame(error)) => {
                tracing::warn!(%remote, sid, %error, "bad election frame; closing");
                break;
            }
            Err(end) => {
                tracing::debug!(%remote, sid, %end, "election connection ended");
                break;
            }
        };
        let notification = match wire::decode(body) {
            Ok(PeerMessage::Notification(notification)) => notification,
            Ok(other) => {
                tracing::warn!(%remote, sid, message = other.name(), "not a notification on the election port; closing");
                break;
            }
            Err(error) => {
                tracing::warn!(%remote, sid, %error, "bad election frame; closing");
                break;
            }
        };
        let event = NetEvent::Notification { from: sid, notification };
        let closed = until_closing(&closer.closing, &closer.wake);
        match unless(net.events.send(event), closed).await {
            Some(Ok(())) => {}
            Some(Err(_)) | None => break,
        }
    }
    let mut inbound = net.election_in.borrow_mut();
    if inbound.get(&sid).is_some_and(|current| Rc::ptr_eq(current, &closer)) {
        inbound.remove(&sid);
    }
}

// ---------------------------------------------------------------------------
// Quorum port

async fn quorum_accept_loop(net: Rc<PeerNet>, listener: TcpListener) {
    loop {
        if net.stopped.get() {
            break;
        }
        let Some(accepted) = unless(listener.accept(), net.quorum_accept_stop.notified()).await else { continue };
        let stream = match accepted {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(%error, "quorum port accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if net.links.borrow().len() >= limits::QUORUM_LINKS_MAX {
            tracing::warn!(limit = limits::QUORUM_LINKS_MAX, "too many quorum connections; closing the new one");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let link = net.new_link();
        tracing::debug!(link = %link.id, remote = ?stream.peer_addr().ok(), "quorum connection accepted");
        let announced = unless(net.events.send(NetEvent::QuorumAccepted { link: link.id }), net.quorum_accept_stop.notified());
        match announced.await {
            Some(Ok(())) => {
                glommio::spawn_local(serve_link(net.clone(), link, stream)).detach();
            }
            Some(Err(_)) | None => {
                net.links.borrow_mut().remove(&link.id);
            }
        }
    }
    drop(listener);
    net.accept_loop_done();
}

async fn connect_leader(net: Rc<PeerNet>, leader: ServerId, timeout_ms: u64) {
    let connected = match net.peers.get(&leader) {
        _ if net.stopped.get() => Err(std::io::Error::other("transport stopped")),
        None => Err(std::io::Error::new(std::io::ErrorKind::NotFound, "unknown server")),
        Some(peer) => match peer.resolve(peer.quorum_port) {
            Ok(address) => TcpStream::connect_timeout(address, Duration::from_millis(timeout_ms.max(1)))
                .await
                .map_err(std::io::Error::from),
            Err(error) => Err(error),
        },
    };
    match connected {
        Ok(stream) if !net.stopped.get() => {
            let _ = stream.set_nodelay(true);
            let link = net.new_link();
            tracing::debug!(leader, link = %link.id, "quorum connection to the leader open");
            if net.events.send(NetEvent::QuorumConnected { link: link.id, leader }).await.is_ok() {
                serve_link(net, link, stream).await;
            } else {
                net.links.borrow_mut().remove(&link.id);
            }
        }
        Ok(_) => {
            let _ = net.events.send(NetEvent::QuorumConnectFailed { leader }).await;
        }
        Err(error) => {
            tracing::debug!(leader, %error, "quorum connection to the leader failed");
            let _ = net.events.send(NetEvent::QuorumConnectFailed { leader }).await;
        }
    }
}

/// Runs a link's reader and writer until either ends, then reports it closed.
async fn serve_link(net: Rc<PeerNet>, link: Rc<QuorumLink>, stream: TcpStream) {
    let (reader, writer) = futures_lite::io::split(stream);
    futures_lite::future::zip(link_reader(&net, &link, reader), link_writer(&link, writer)).await;
    net.links.borrow_mut().remove(&link.id);
    tracing::debug!(link = %link.id, "quorum connection closed");
    let _ = net.events.send(NetEvent::QuorumClosed { link: link.id }).await;
}

async fn link_reader(net: &PeerNet, link: &QuorumLink, mut reader: ReadHalf<TcpStream>) {
    let mut buffer = BytesMut::with_capacity(limits::SOCKET_READ_BYTES);
    let mut chunk = vec![0u8; limits::SOCKET_READ_BYTES];
    loop {
        let closed = until_closing(&link.closing, &link.reader_wake);
        let read = read_frame(&mut reader, &mut buffer, &mut chunk, limits::PEER_FRAME_BYTES_MAX);
        let Some(read) = unless(read, closed).await else { break };
        let body = match read {
            Ok(body) => body,
            Err(ReadEnd::Frame(error)) => {
                tracing::warn!(link = %link.id, %error, "bad frame on a quorum connection; closing");
                break;
            }
            Err(end) => {
                tracing::debug!(link = %link.id, %end, "quorum connection ended");
                break;
            }
        };
        let msg = match wire::decode(body) {
            Ok(msg) => msg,
            Err(error) => {
                tracing::warn!(link = %link.id, %error, "bad message on a quorum connection; closing");
                break;
            }
        };
        let closed = until_closing(&link.closing, &link.reader_wake);
        match unless(net.events.send(NetEvent::QuorumMessage { link: link.id, msg }), closed).await {
            Some(Ok(())) => {}
            Some(Err(_)) | None => break,
        }
    }
    link.close();
}

async fn link_writer(link: &QuorumLink, mut writer: WriteHalf<TcpStream>) {
    let mut batch = BytesMut::new();
    loop {
        if link.closing.get() {
            break;
        }
        if link.pending_messages.get() == 0 {
            link.writer_wake.notified().await;
            continue;
        }
        // Take everything queued as one write; senders refill the other buffer.
        std::mem::swap(&mut *link.pending.borrow_mut(), &mut batch);
        link.writing_messages.set(link.pending_messages.replace(0));
        link.writing_bytes.set(batch.len());
        let closed = until_closing(&link.closing, &link.writer_wake);
        let written = unless(writer.write_all(&batch), closed).await;
        link.writing_messages.set(0);
        link.writing_bytes.set(0);
        batch.clear();
        if batch.capacity() > WRITE_BUFFER_KEEP_BYTES_MAX {
            batch = BytesMut::new();
        }
        link.room.notify_all();
        match written {
            Some(Ok(())) => {}
            Some(Err(error)) => {
                tracing::debug!(link = %link.id, %error, "quorum connection write failed");
                break;
            }
            None => break,
        }
    }
    // Dropping both halves (in serve_link) closes the socket.
    link.close();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PeerType;
    use crate::zab::election::{ServerState, Vote};
    use glommio::channels::local_channel::{self, LocalReceiver};
    use glommio::{LocalExecutorBuilder, Placement};

    /// Specs for servers 1..=size on loopback, every port free when chosen.
    fn ensemble(size: u64) -> Vec<ServerSpec> {
        let ports = crate::runtime::testkit::free_ports(2 * size as usize);
        (1..=size)
            .map(|id| ServerSpec {
                id,
                host: "127.0.0.1".into(),
                quorum_port: ports[2 * (id as usize - 1)],
                election_port: ports[2 * (id as usize - 1) + 1],
                peer_type: PeerType::Participant,
                client: None,
            })
            .collect()
    }

    /// Runs `test` on a fresh executor thread; it fails if it takes over 20 s.
    fn run<F: Future<Output = ()> + 'static>(test: impl FnOnce() -> F + Send + 'static) {
        LocalExecutorBuilder::new(Placement::Unbound)
            .name("peer-net-test")
            .spawn(move || async move {
                glommio::timer::timeout(Duration::from_secs(20), async move {
                    test().await;
                    Ok(())
                })
                .await
                .expect("test timed out");
            })
            .expect("start executor")
            .join()
            .expect("test executor panicked");
    }

    fn start(id: ServerId, servers: &[ServerSpec], events_max: usize) -> (Rc<PeerNet>, LocalReceiver<NetEvent>) {
        let (sender, receiver) = local_channel::new_bounded(events_max);
        (PeerNet::start(id, servers, sender).expect("start PeerNet"), receiver)
    }

    /// The next event, or a panic after 5 s.
    async fn next_event(events: &LocalReceiver<NetEvent>) -> NetEvent {
        glommio::timer::timeout(Duration::from_secs(5), async { Ok(events.recv().await.expect("events channel open")) })
            .await
            .expect("no event within 5 s")
    }

    /// Panics if an event arrives within 50 ms.
    async fn assert_quiet(events: &LocalReceiver<NetEvent>) {
        let quiet = Duration::from_millis(50);
        if let Ok(event) = glommio::timer::timeout(quiet, async { Ok(events.recv().await) }).await {
            panic!("unexpected {event:?}");
        }
    }

    fn vote(sid: ServerId, round: u64) -> Notification {
        Notification {
            vote: Vote { leader: sid, zxid: 0x0000_0001_0000_0002, election_epoch: round, peer_epoch: 1 },
            state: ServerState::Looking,
            sid,
        }
    }

    /// Opens a quorum link from `learner` to `leader` (server `leader_id`);
    /// returns (the leader's link id, the learner's).
    async fn connect(
        leader: &PeerNet,
        leader_events: &LocalReceiver<NetEvent>,
        learner: &Rc<PeerNet>,
        learner_events: &LocalReceiver<NetEvent>,
    ) -> (LinkId, LinkId) {
        learner.connect_leader(leader.my_id(), 1000);
        let learner_link = match next_event(learner_events).await {
            NetEvent::QuorumConnected { link, leader: connected } if connected == leader.my_id() => link,
            other => panic!("expected QuorumConnected, got {other:?}"),
        };
        let leader_link = match next_event(leader_events).await {
            NetEvent::QuorumAccepted { link } => link,
            other => panic!("expected QuorumAccepted, got {other:?}"),
        };
        (leader_link, learner_link)
    }

    #[test]
    fn notifications_are_delivered_both_ways() {
        run(|| async {
            let servers = ensemble(3);
            let (one, one_events) = start(1, &servers, 64);
            let (two, two_events) = start(2, &servers, 64);
            one.send_notification(2, vote(1, 7));
            two.send_notification(1, vote(2, 8));
            // To a server that is not up: queued and retried, never blocking.
            one.send_notification(3, vote(1, 7));
            match next_event(&two_events).await {
                NetEvent::Notification { from: 1, notification } => assert_eq!(notification, vote(1, 7)),
                other => panic!("unexpected {other:?}"),
            }
            match next_event(&one_events).await {
                NetEvent::Notification { from: 2, notification } => assert_eq!(notification, vote(2, 8)),
                other => panic!("unexpected {other:?}"),
            }
            // Later notifications reuse the open connection, in order.
            for round in 9..20 {
                one.send_notification(2, vote(1, round));
            }
            for round in 9..20 {
                match next_event(&two_events).await {
                    NetEvent::Notification { from: 1, notification } => assert_eq!(notification.vote.election_epoch, round),
                    other => panic!("unexpected {other:?}"),
                }
            }
            one.shutdown().await;
            two.shutdown().await;
        });
    }

    #[test]
    fn a_quorum_link_carries_ten_thousand_messages_each_way_in_order() {
        run(|| async {
            let servers = ensemble(2);
            let (leader, leader_events) = start(1, &servers, 256);
            let (learner, learner_events) = start(2, &servers, 256);
            let (leader_link, learner_link) = connect(&leader, &leader_events, &learner, &learner_events).await;
            let count = 10_000;
            for zxid in 0..count {
                learner.send(learner_link, PeerMessage::Ack { zxid }).expect("queue has room");
                leader.send(leader_link, PeerMessage::Commit { zxid }).expect("queue has room");
            }
            assert_eq!(learner.queued(learner_link), count as usize);
            let mut acks = 0;
            let mut commits = 0;
            while acks < count || commits < count {
                let event = or(
                    async { (true, next_event(&leader_events).await) },
                    async { (false, next_event(&learner_events).await) },
                )
                .await;
                match event {
                    (true, NetEvent::QuorumMessage { link, msg: PeerMessage::Ack { zxid } }) if link == leader_link => {
                        assert_eq!(zxid, acks, "acks in order");
                        acks += 1;
                    }
                    (false, NetEvent::QuorumMessage { link, msg: PeerMessage::Commit { zxid } }) if link == learner_link => {
                        assert_eq!(zxid, commits, "commits in order");
                        commits += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            assert_eq!(learner.queued(learner_link), 0);
            assert_eq!(learner.queued_bytes(learner_link), 0);
            leader.shutdown().await;
            learner.shutdown().await;
        });
    }

    #[test]
    fn a_peer_that_does_not_read_fills_the_queue() {
        run(|| async {
            let servers = ensemble(2);
            // The leader's consumer stalls: only 4 events fit in its channel.
            // The learner's queue holds 16 MiB, so the byte bound is reached
            // without queueing a gigabyte.
            let (leader, leader_events) = start(1, &servers, 4);
            let (sender, learner_events) = local_channel::new_bounded(64);
            let (queue_bytes_max, queue_messages_max) = (16 * 1024 * 1024, 10_000);
            let learner = PeerNet::start_with_queue_bounds(2, &servers, sender, queue_bytes_max, queue_messages_max).expect("start");
            let (leader_link, learner_link) = connect(&leader, &leader_events, &learner, &learner_events).await;

            // Byte bound: 1 MiB chunks, letting the writer run between sends,
            // until the socket buffers and the channel are full.
            let chunk = Bytes::from(vec![7u8; limits::SNAP_CHUNK_BYTES]);
            let mut chunks_sent = 0usize;
            loop {
                match learner.send(learner_link, PeerMessage::SnapChunk { bytes: chunk.clone() }) {
                    Ok(()) => chunks_sent += 1,
                    Err(SendError::QueueFull) => break,
                    Err(other) => panic!("unexpected {other}"),
                }
                assert!(chunks_sent < 1000, "the queue never filled");
                glommio::timer::sleep(Duration::from_millis(1)).await;
            }
            assert!(learner.queued_bytes(learner_link) + limits::SNAP_CHUNK_BYTES > queue_bytes_max);
            assert!(chunks_sent > 16, "the stalled peer's socket and channel absorb some chunks");
            // Message bound: small messages fit until that many are queued.
            let mut pings_sent = 0i64;
            while learner.send(learner_link, PeerMessage::Ping { zxid: pings_sent }).is_ok() {
                pings_sent += 1;
            }
            assert_eq!(learner.queued(learner_link), queue_messages_max);
            assert_eq!(learner.send(learner_link, PeerMessage::Ping { zxid: -1 }), Err(SendError::QueueFull));

            // The consumer resumes: everything arrives, in order, and the queue empties.
            let mut chunks_received = 0;
            let mut pings_received = 0;
            while chunks_received < chunks_sent || pings_received < pings_sent {
                match next_event(&leader_events).await {
                    NetEvent::QuorumMessage { link, msg: PeerMessage::SnapChunk { bytes } } if link == leader_link => {
                        assert_eq!(pings_received, 0, "chunks before pings");
                        assert_eq!(bytes.len(), limits::SNAP_CHUNK_BYTES);
                        chunks_received += 1;
                    }
                    NetEvent::QuorumMessage { link, msg: PeerMessage::Ping { zxid } } if link == leader_link => {
                        assert_eq!(zxid, pings_received);
                        pings_received += 1;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            learner.wait_stream_room(learner_link, 0).await.expect("link open");
            assert_eq!(learner.queued(learner_link), 0);
            leader.shutdown().await;
            learner.shutdown().await;
        });
    }

    #[test]
    fn a_stream_larger_than_the_queue_bound_arrives_whole_with_held_messages_after_it() {
        run(|| async {
            let servers = ensemble(2);
            let (leader, leader_events) = start(1, &servers, 64);
            let (sender, learner_events) = local_channel::new_bounded(64);
            // A queue of 8 MiB, and a 40 MiB stream fed through it.
            let queue_bytes_max = 8 * 1024 * 1024;
            let streamer = PeerNet::start_with_queue_bounds(2, &servers, sender, queue_bytes_max, LEARNER_QUEUE_MAX).expect("start");
            let (leader_link, link) = connect(&leader, &leader_events, &streamer, &learner_events).await;
            const CHUNKS: usize = 40;
            streamer.send(link, PeerMessage::Snap { zxid: 7, bytes: (CHUNKS * limits::SNAP_CHUNK_BYTES) as u64 }).unwrap();
            streamer.begin_stream(link).unwrap();
            assert_eq!(streamer.begin_stream(link), Err(SendError::QueueFull), "one stream at a time");
            // Queued during the stream: held, whatever the stream's progress.
            streamer.send(link, PeerMessage::Ping { zxid: 0 }).unwrap();
            let feeder = {
                let streamer = streamer.clone();
                glommio::spawn_local(async move {
                    for index in 0..CHUNKS {
                        streamer.wait_stream_room(link, 2 * limits::SNAP_CHUNK_BYTES).await.expect("link open");
                        let bytes = Bytes::from(vec![index as u8; limits::SNAP_CHUNK_BYTES]);
                        streamer.send_streamed(link, &PeerMessage::SnapChunk { bytes }).expect("room");
                        if index == CHUNKS / 2 {
                            streamer.send(link, PeerMessage::Ping { zxid: 1 }).unwrap();
                        }
                    }
                    streamer.send_streamed(link, &PeerMessage::SnapEnd).expect("room");
                    streamer.end_stream(link);
                    streamer.send(link, PeerMessage::Ping { zxid: 2 }).unwrap();
                })
            };
            let mut received = Vec::new();
            while received.len() < CHUNKS + 5 {
                match next_event(&leader_events).await {
                    NetEvent::QuorumMessage { link: from, msg } if from == leader_link => {
                        assert!(streamer.queued_bytes(link) <= queue_bytes_max);
                        received.push(match msg {
                            PeerMessage::Snap { zxid, .. } => format!("snap {zxid}"),
                            PeerMessage::SnapChunk { bytes } => {
                                assert_eq!(bytes.len(), limits::SNAP_CHUNK_BYTES);
                                assert!(bytes.iter().all(|&byte| byte == bytes[0]));
                                format!("chunk {}", bytes[0])
                            }
                            PeerMessage::SnapEnd => "end".to_string(),
                            PeerMessage::Ping { zxid } => format!("ping {zxid}"),
                            other => panic!("unexpected {other:?}"),
                        });
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            feeder.await;
            let mut expected = vec!["snap 7".to_string()];
            expected.extend((0..CHUNKS).map(|index| format!("chunk {index}")));
            expected.extend(["end", "ping 0", "ping 1", "ping 2"].map(String::from));
            assert_eq!(received, expected);
            assert_eq!(streamer.queued(link), 0);
            leader.shutdown().await;
            streamer.shutdown().await;
        });
    }

    /// What commits while a learner's SNAP is encoded, sent and installed
    /// is held behind it: at tens of thousands of writes a second, two
    /// messages each, that is hundreds of thousands of messages. The
    /// default bounds take them; with a bound of 10,000 messages the leader
    /// dropped such a learner and sent it another SNAP (`LEARNER_QUEUE_MAX`).
    #[test]
    fn a_sync_backlog_of_two_hundred_thousand_messages_is_not_a_full_queue() {
        run(|| async {
            let servers = ensemble(2);
            let (leader, leader_events) = start(1, &servers, 64);
            let (learner, learner_events) = start(2, &servers, 64);
            let (leader_link, learner_link) = connect(&leader, &leader_events, &learner, &learner_events).await;
            const HELD: i64 = 100_000;
            leader.begin_stream(leader_link).unwrap();
            for zxid in 0..HELD {
                let body = crate::txn::TxnBody::SetData { path: "/k".into(), data: Some(Bytes::from_static(b"v")), version: -1 };
                let txn = std::sync::Arc::new(crate::txn::Txn { session_id: 1, cxid: 1, zxid, time_ms: 0, body });
                leader.send(leader_link, PeerMessage::Proposal { zxid, txn, origin: None }).expect("room");
                leader.send(leader_link, PeerMessage::Commit { zxid }).expect("room");
            }
            leader.send_streamed(leader_link, &PeerMessage::SnapEnd).unwrap();
            leader.end_stream(leader_link);
            assert!(matches!(next_event(&learner_events).await, NetEvent::QuorumMessage { msg: PeerMessage::SnapEnd, .. }));
            for zxid in 0..HELD {
                match next_event(&learner_events).await {
                    NetEvent::QuorumMessage { link, msg: PeerMessage::Proposal { zxid: got, .. } } if link == learner_link => {
                        assert_eq!(got, zxid)
                    }
                    other => panic!("proposal {zxid}: unexpected {other:?}"),
                }
                match next_event(&learner_events).await {
                    NetEvent::QuorumMessage { link, msg: PeerMessage::Commit { zxid: got } } if link == learner_link => {
                        assert_eq!(got, zxid)
                    }
                    other => panic!("commit {zxid}: unexpected {other:?}"),
                }
            }
            leader.shutdown().await;
            learner.shutdown().await;
        });
    }

    #[test]
    fn close_reports_closed_once_on_both_sides() {
        run(|| async {
            let servers = ensemble(2);
            let (leader, leader_events) = start(1, &servers, 64);
            let (learner, learner_events) = start(2, &servers, 64);
            let (leader_link, learner_link) = connect(&leader, &leader_events, &learner, &learner_events).await;
            learner.close(learner_link);
            assert_eq!(learner.send(learner_link, PeerMessage::UpToDate), Err(SendError::Closed));
            assert!(matches!(next_event(&learner_events).await, NetEvent::QuorumClosed { link } if link == learner_link));
            assert!(matches!(next_event(&leader_events).await, NetEvent::QuorumClosed { link } if link == leader_link));
            assert_eq!(leader.send(leader_link, PeerMessage::UpToDate), Err(SendError::Closed));
            assert_eq!(leader.wait_stream_room(leader_link, 0).await, Err(SendError::Closed));

            // And from the accepting side, with messages still queued.
            let (leader_link, learner_link) = connect(&leader, &leader_events, &learner, &learner_events).await;
            leader.send(leader_link, PeerMessage::Ping { zxid: 1 }).unwrap();
            leader.close(leader_link);
            assert!(matches!(next_event(&leader_events).await, NetEvent::QuorumClosed { link } if link == leader_link));
            loop {
                match next_event(&learner_events).await {
                    NetEvent::QuorumClosed { link } if link == learner_link => break,
                    NetEvent::QuorumMessage { link, msg: PeerMessage::Ping { .. } } if link == learner_link => {}
                    other => panic!("unexpected {other:?}"),
                }
            }
            // Nothing more: each link reported closed exactly once.
            assert_quiet(&leader_events).await;
            assert_quiet(&learner_events).await;
            leader.shutdown().await;
            learner.shutdown().await;
        });
    }

    /// Writes raw bytes to `address` and returns true if the server closes
    /// the connection within 5 s.
    async fn closed_after_writing(address: SocketAddr, bytes: &[u8]) -> bool {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        stream.write_all(bytes).await.expect("write");
        let mut buffer = [0u8; 16];
        let read = glommio::timer::timeout(Duration::from_secs(5), async { Ok(stream.read(&mut buffer).await) }).await;
        matches!(read, Ok(Ok(0)) | Ok(Err(_)))
    }

    fn frame(message: &PeerMessage) -> BytesMut {
        let mut out = BytesMut::new();
        wire::encode(message, &mut out).expect("encodes");
        out
    }

    #[test]
    fn bad_input_closes_that_connection_only() {
        run(|| async {
            let servers = ensemble(2);
            let (one, one_events) = start(1, &servers, 64);
            let (two, two_events) = start(2, &servers, 64);
            let election: SocketAddr = format!("127.0.0.1:{}", servers[0].election_port).parse().unwrap();
            let quorum: SocketAddr = format!("127.0.0.1:{}", servers[0].quorum_port).parse().unwrap();

            // Election port: no Hello first, a Hello from a stranger or from
            // myself, a declared length above the limit, garbage after Hello.
            assert!(closed_after_writing(election, &frame(&PeerMessage::Notification(vote(2, 1)))).await);
            assert!(closed_after_writing(election, &frame(&PeerMessage::Hello { sid: 99 })).await);
            assert!(closed_after_writing(election, &frame(&PeerMessage::Hello { sid: 1 })).await);
            assert!(closed_after_writing(election, &[0x7f, 0xff, 0xff, 0xff]).await);
            let mut hello_then_garbage = frame(&PeerMessage::Hello { sid: 2 });
            hello_then_garbage.extend_from_slice(&[0, 0, 0, 1, 0xee]);
            assert!(closed_after_writing(election, &hello_then_garbage).await);

            // Quorum port: an undecodable frame ends the link, reported as usual.
            assert!(closed_after_writing(quorum, &[0, 0, 0, 2, 0xee, 0xee]).await);
            let link = match next_event(&one_events).await {
                NetEvent::QuorumAccepted { link } => link,
                other => panic!("unexpected {other:?}"),
            };
            assert!(matches!(next_event(&one_events).await, NetEvent::QuorumClosed { link: closed } if closed == link));

            // The server still works.
            two.send_notification(1, vote(2, 3));
            assert!(matches!(next_event(&one_events).await, NetEvent::Notification { from: 2, .. }));
            assert_quiet(&two_events).await;
            one.shutdown().await;
            two.shutdown().await;
        });
    }

    #[test]
    fn links_reconnect_after_the_peer_restarts() {
        run(|| async {
            let servers = ensemble(2);
            let (one, one_events) = start(1, &servers, 64);
            let (two, two_events) = start(2, &servers, 64);
            one.send_notification(2, vote(1, 1));
            assert!(matches!(next_event(&two_events).await, NetEvent::Notification { from: 1, .. }));
            let (_, link_to_two) = connect(&two, &two_events, &one, &one_events).await;

            two.shutdown().await;
            assert!(matches!(next_event(&one_events).await, NetEvent::QuorumClosed { link } if link == link_to_two));
            // While server 2 is down: a notification waits in the queue, and
            // a quorum connection fails at once.
            glommio::timer::sleep(Duration::from_millis(50)).await;
            one.send_notification(2, vote(1, 2));
            one.connect_leader(2, 1000);
            assert!(matches!(next_event(&one_events).await, NetEvent::QuorumConnectFailed { leader: 2 }));
            glommio::timer::sleep(Duration::from_millis(200)).await;

            // Server 2 restarts on the same ports; the queued notification
            // arrives without being sent again, and quorum connections work.
            let (two, two_events) = start(2, &servers, 64);
            match next_event(&two_events).await {
                NetEvent::Notification { from: 1, notification } => assert_eq!(notification, vote(1, 2)),
                other => panic!("unexpected {other:?}"),
            }
            let (two_link, one_link) = connect(&two, &two_events, &one, &one_events).await;
            one.send(one_link, PeerMessage::Ack { zxid: 5 }).unwrap();
            assert!(matches!(
                next_event(&two_events).await,
                NetEvent::QuorumMessage { link, msg: PeerMessage::Ack { zxid: 5 } } if link == two_link
            ));
            one.shutdown().await;
            two.shutdown().await;
        });
    }
}
