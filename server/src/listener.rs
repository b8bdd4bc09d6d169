//! Admission of connections on Sigil's two listeners. Each listener has its
//! own cap on connections held at once (a permit that lives exactly as long
//! as the connection), so a flood on the gRPC port never takes the room
//! `/healthz` needs; excess connections are accepted and closed at once and
//! the refusals logged (rate-limited). Every admitted connection has a
//! deadline to send its opening bytes (handshake) and then an idle deadline
//! that any bytes from the peer renew, and a lifetime after which it is
//! closed whatever it does. Accept errors — at the fd limit
//! above all — back off instead of spinning, and are logged, rate-limited.
//! The caps are fitted under the process's file-descriptor limit.

use std::{
    future::Future as _,
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures::Stream;
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};

/// Bytes a client sends before it is past its opening: the length of the
/// HTTP/2 connection preface (an HTTP/1 request line is about as long).
/// Until then the handshake deadline holds, however slowly they trickle in.
const OPENING_BYTES: usize = 24;

/// File descriptors kept free of connections: the store's files, the
/// runtime, logs, the PostgreSQL pool and its listener.
const RESERVED_FDS: u64 = 64;

/// How often a repeated condition (refusals, accept errors) is logged.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Longest pause after a failed accept.
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// The limits of one listener.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionLimits {
    /// Connections held at once.
    pub max_connections: usize,
    /// Time to send the opening bytes.
    pub handshake_timeout: Duration,
    /// Silence after which a connection is closed.
    pub idle_timeout: Duration,
    /// Age at which a connection is closed, however busy.
    pub max_lifetime: Duration,
}

/// Fits the two listeners' caps under the soft file-descriptor limit
/// `fd_limit`, keeping [`RESERVED_FDS`] free; shares the room in proportion
/// when they do not fit. Returns the caps to use.
pub(crate) fn fit_under_fd_limit(grpc: usize, http: usize, fd_limit: u64) -> (usize, usize) {
    let room = fd_limit.saturating_sub(RESERVED_FDS).max(2);
    let wanted = (grpc + http) as u64;
    if wanted <= room {
        return (grpc, http);
    }
    let grpc_share = ((room as u128 * grpc as u128) / wanted as u128) as usize;
    let grpc_share = grpc_share.clamp(1, room as usize - 1);
    (grpc_share, (room as usize - grpc_share).max(1))
}

/// Admits connections to one listener (cloned into its accept loop).
#[derive(Clone)]
pub(crate) struct Admission {
    listener: &'static str,
    permits: Arc<Semaphore>,
    limits: ConnectionLimits,
    /// Becomes true when the server shuts down.
    stopping: tokio::sync::watch::Receiver<bool>,
    refusals: Arc<RateLimitedLog>,
    accept_errors: Arc<RateLimitedLog>,
}

impl Admission {
    /// Admission for the listener named `listener` (for logs); its
    /// connections still in their opening are closed once `stopping` is true.
    pub(crate) fn new(
        listener: &'static str,
        limits: ConnectionLimits,
        stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            listener,
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            stopping,
            refusals: Arc::new(RateLimitedLog::default()),
            accept_errors: Arc::new(RateLimitedLog::default()),
        }
    }

    /// The accepted `stream` as a guarded connection, or an error (and the
    /// stream closed) when the listener holds its maximum already.
    pub(crate) fn admit(&self, stream: TcpStream) -> io::Result<GuardedStream> {
        let Ok(permit) = self.permits.clone().try_acquire_owned() else {
            if let Some(suppressed) = self.refusals.due() {
                tracing::warn!(
                    listener = self.listener,
                    max_connections = self.limits.max_connections,
                    refused_since_last_report = suppressed,
                    "connection limit reached: refusing new connections"
                );
            }
            return Err(io::Error::other("connection limit reached"));
        };
        // Small request/response frames: do not wait to fill a segment.
        let _ = stream.set_nodelay(true);
        Ok(GuardedStream::new(stream, permit, &self.limits, self.stopping.clone()))
    }

    /// The connections of `listener` as a stream for tonic: accept errors
    /// are logged and backed off here, refused connections closed, so every
    /// item is an admitted connection.
    pub(crate) fn incoming(
        self,
        listener: TcpListener,
    ) -> impl Stream<Item = io::Result<GuardedStream>> + Send + 'static {
        let state = (listener, self, AcceptErrors::default());
        futures::stream::unfold(state, |(listener, admission, mut errors)| async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        errors.succeeded();
                        if let Ok(guarded) = admission.admit(stream) {
                            return Some((Ok(guarded), (listener, admission, errors)));
                        }
                    }
                    Err(error) => errors.failed(admission.listener, &error).await,
                }
            }
        })
    }

    /// Logs (rate-limited) an accept or TLS-handshake error of an accept
    /// loop run by someone else (axum-server, which backs off by itself).
    pub(crate) fn accept_failed(&self, error: &io::Error) {
        if let Some(suppressed) = self.accept_errors.due() {
            tracing::warn!(listener = self.listener, %error, similar_since_last_report = suppressed, "cannot accept a connection");
        }
    }
}

/// Backoff and rate-limited logging of failed accepts.
#[derive(Default)]
struct AcceptErrors {
    backoff: Option<Duration>,
    log: RateLimitedLog,
}

impl AcceptErrors {
    fn succeeded(&mut self) {
        self.backoff = None;
    }

    /// Out of file descriptors (or memory), accepting again at once fails
    /// again at once: that was the spin. Wait, longer each time, and say so.
    async fn failed(&mut self, listener: &'static str, error: &io::Error) {
        let exhausted = is_resource_exhaustion(error);
        if let Some(suppressed) = self.log.due() {
            if exhausted {
                tracing::error!(listener, %error, similar_since_last_report = suppressed, "cannot accept connections: out of file descriptors or memory; backing off");
            } else {
                tracing::warn!(listener, %error, similar_since_last_report = suppressed, "cannot accept a connection");
            }
        }
        let pause = match (exhausted, self.backoff) {
            (true, Some(last)) => (last * 2).min(MAX_BACKOFF),
            (true, None) => Duration::from_millis(10),
            // A peer that gave up mid-handshake (ECONNABORTED) and the like:
            // a short pause still keeps a persistent error from spinning.
            (false, _) => Duration::from_millis(1),
        };
        self.backoff = exhausted.then_some(pause);
        tokio::time::sleep(pause).await;
    }
}

fn is_resource_exhaustion(error: &io::Error) -> bool {
    #[cfg(unix)]
    {
        use rustix::io::Errno;
        let Some(code) = error.raw_os_error() else { return false };
        let errno = Errno::from_raw_os_error(code);
        [Errno::MFILE, Errno::NFILE, Errno::NOBUFS, Errno::NOMEM].contains(&errno)
    }
    #[cfg(not(unix))]
    {
        let _ = error;
        false
    }
}

/// "Log at most every [`LOG_EVERY`]", counting what was not logged.
#[derive(Default)]
struct RateLimitedLog {
    last: Mutex<Option<std::time::Instant>>,
    suppressed: AtomicU64,
}

impl RateLimitedLog {
    /// `Some(events not logged since the last time)` when it is time to log.
    fn due(&self) -> Option<u64> {
        let now = std::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < LOG_EVERY) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// An admitted TCP connection: holds its listener's permit, and fails its
/// reads (which makes the HTTP server close it) when the peer misses the
/// handshake deadline or then stays silent past the idle timeout.
pub(crate) struct GuardedStream {
    inner: TcpStream,
    deadline: Pin<Box<Sleep>>,
    end_of_life: Pin<Box<Sleep>>,
    /// Resolves when the server shuts down. A connection that has not sent
    /// its opening by then carries no call: the HTTP server would wait for
    /// it all the same (a stranger's silent connection would hold every
    /// shutdown for the whole grace period), so it is closed at once.
    stopping: Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
    opening_left: usize,
    idle_timeout: Duration,
    _permit: OwnedSemaphorePermit,
}

impl GuardedStream {
    fn new(
        inner: TcpStream,
        permit: OwnedSemaphorePermit,
        limits: &ConnectionLimits,
        mut stopping: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Self {
            inner,
            deadline: Box::pin(tokio::time::sleep(limits.handshake_timeout)),
            end_of_life: Box::pin(tokio::time::sleep(limits.max_lifetime)),
            stopping: Box::pin(async move {
                // An error means the sender is gone, which also means stop.
                let _ = stopping.wait_for(|stopping| *stopping).await;
            }),
            opening_left: OPENING_BYTES,
            idle_timeout: limits.idle_timeout,
            _permit: permit,
        }
    }

    fn received(&mut self, bytes: usize) {
        self.opening_left = self.opening_left.saturating_sub(bytes);
        if self.opening_left == 0 {
            self.deadline.as_mut().reset(Instant::now() + self.idle_timeout);
        }
    }
}

impl AsyncRead for GuardedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len() - before;
                if read > 0 {
                    this.received(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            // An HTTP server always has a read pending on a connection, so
            // the deadlines are polled (and their wakers set) here.
            Poll::Pending => {
                if this.deadline.as_mut().poll(cx).is_ready() {
                    let why = if this.opening_left > 0 { "handshake timeout" } else { "idle timeout" };
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, why)));
                }
                if this.end_of_life.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "maximum connection age")));
                }
                if this.opening_left > 0 && this.stopping.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::ConnectionAborted, "shutting down")));
                }
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for GuardedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl tonic::transport::server::Connected for GuardedStream {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.inner.local_addr().ok(),
            remote_addr: self.inner.peer_addr().ok(),
        }
    }
}

/// axum-server acceptor that admits connections to the HTTP listener
/// (before TLS, when TLS is on).
#[derive(Clone)]
pub(crate) struct AdmittingAcceptor(pub Admission);

impl<S> axum_server::accept::Accept<TcpStream, S> for AdmittingAcceptor {
    type Stream = GuardedStream;
    type Service = S;
    type Future = std::future::Ready<io::Result<(GuardedStream, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        std::future::ready(self.0.admit(stream).map(|guarded| (guarded, service)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_fit_under_the_fd_limit_with_room_kept_free() {
        assert_eq!(fit_under_fd_limit(1000, 200, 1_048_576), (1000, 200));
        let (grpc, http) = fit_under_fd_limit(1000, 200, 1024);
        assert!(grpc + http <= 1024 - RESERVED_FDS as usize && http >= 1 && grpc > http, "{grpc} {http}");
        let (grpc, http) = fit_under_fd_limit(1000, 200, 10);
        assert!(grpc >= 1 && http >= 1);
    }

    #[test]
    fn repeated_conditions_are_logged_once_per_period() {
        let log = RateLimitedLog::default();
        assert_eq!(log.due(), Some(0));
        assert_eq!(log.due(), None);
        assert_eq!(log.due(), None);
        *log.last.lock().expect("lock") = Some(std::time::Instant::now() - LOG_EVERY);
        assert_eq!(log.due(), Some(2));
    }

    #[tokio::test]
    async fn accept_errors_at_the_fd_limit_back_off() {
        let mut errors = AcceptErrors::default();
        let emfile = io::Error::from_raw_os_error(24);
        let start = std::time::Instant::now();
        for _ in 0..5 {
            errors.failed("test", &emfile).await;
        }
        // 10 + 20 + 40 + 80 + 160 ms: five failures cost at least 300 ms
        // of waiting instead of five busy turns.
        assert!(start.elapsed() >= Duration::from_millis(300), "{:?}", start.elapsed());
        assert_eq!(errors.backoff, Some(Duration::from_millis(160)));
        errors.succeeded();
        assert_eq!(errors.backoff, None);
    }
}
