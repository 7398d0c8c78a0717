//! What a socket did since someone last looked: bytes read, bytes written, a write that could not
//! proceed. The listener's rules and the proxy's tunnels read these flags on a timer to close
//! connections that went quiet or whose peer stopped reading; the socket pays one relaxed store
//! per read or write and no clock read.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Flags set by a [`Watched`] socket, taken (reset) by whoever watches it.
#[derive(Debug, Default)]
pub struct Activity {
    read: AtomicBool,
    wrote: AtomicBool,
    blocked: AtomicBool,
}

impl Activity {
    /// Whether bytes were read since the last call (and resets it).
    pub fn take_read(&self) -> bool {
        self.read.swap(false, Ordering::Relaxed)
    }

    /// Whether bytes were written since the last call (and resets it).
    pub fn take_wrote(&self) -> bool {
        self.wrote.swap(false, Ordering::Relaxed)
    }

    /// Whether the last write found the peer's window full (it is not reading).
    pub fn blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }
}

/// A socket that records its [`Activity`].
#[derive(Debug)]
pub struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Watched<S> {
    /// `inner`, recording into `activity`.
    pub fn new(inner: S, activity: Arc<Activity>) -> Watched<S> {
        Watched { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.read.store(true, Ordering::Relaxed);
        }
        polled
    }
}

impl<S> Watched<S> {
    fn note(&self, polled: &Poll<io::Result<usize>>) {
        match polled {
            Poll::Ready(Ok(n)) if *n > 0 => {
                self.activity.wrote.store(true, Ordering::Relaxed);
                self.activity.blocked.store(false, Ordering::Relaxed);
            }
            Poll::Pending => self.activity.blocked.store(true, Ordering::Relaxed),
            _ => {}
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.note(&polled);
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.note(&polled);
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
