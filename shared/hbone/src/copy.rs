//! Copying bytes both ways between two streams, with half-close and live byte counters.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-direction buffer: large enough that a 1 MiB-frame HBONE stream is not starved, small
/// enough for tens of thousands of concurrent tunnels.
const BUFFER_SIZE: usize = 64 * 1024;

/// Bytes copied so far in each direction, readable (e.g. by metrics) while the copy runs.
#[derive(Debug, Default)]
pub struct ByteCounters {
    a_to_b: AtomicU64,
    b_to_a: AtomicU64,
}

/// Bytes copied in each direction by a finished [`copy_bidirectional`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Transferred {
    /// Bytes read from `a` and written to `b`.
    pub a_to_b: u64,
    /// Bytes read from `b` and written to `a`.
    pub b_to_a: u64,
}

/// One direction of the copy.
struct Pipe {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    copied: u64,
    read_done: bool,
    need_flush: bool,
    shut_down: bool,
}

impl ByteCounters {
    /// Bytes copied from `a` to `b` so far.
    pub fn a_to_b(&self) -> u64 {
        self.a_to_b.load(Ordering::Relaxed)
    }

    /// Bytes copied from `b` to `a` so far.
    pub fn b_to_a(&self) -> u64 {
        self.b_to_a.load(Ordering::Relaxed)
    }
}

impl Pipe {
    fn new() -> Self {
        Self {
            buf: vec![0; BUFFER_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            copied: 0,
            read_done: false,
            need_flush: false,
            shut_down: false,
        }
    }

    /// Copies until `from` reaches EOF and `to` has been shut down for writing.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut from: Pin<&mut R>,
        mut to: Pin<&mut W>,
        counter: &AtomicU64,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.start == self.end && !self.read_done {
                let mut read_buf = ReadBuf::new(&mut self.buf);
                if from.as_mut().poll_read(cx, &mut read_buf)?.is_pending() {
                    // Nothing more to send for now: push out what the writer buffered (TLS
                    // holds records back until flushed).
                    if self.need_flush {
                        ready!(to.as_mut().poll_flush(cx))?;
                        self.need_flush = false;
                    }
                    return Poll::Pending;
                }
                let n = read_buf.filled().len();
                if n == 0 {
                    self.read_done = true;
                } else {
                    self.start = 0;
                    self.end = n;
                }
            }
            while self.start < self.end {
                let n = ready!(to.as_mut().poll_write(cx, &self.buf[self.start..self.end]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.start += n;
                self.copied += n as u64;
                self.need_flush = true;
                counter.fetch_add(n as u64, Ordering::Relaxed);
            }
            if self.read_done {
                if !self.shut_down {
                    // Half-close: the other side sees EOF but may keep sending to us.
                    ready!(to.as_mut().poll_shutdown(cx))?;
                    self.shut_down = true;
                }
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies `a → b` and `b → a` until both directions reach EOF.
///
/// When one side reaches EOF the other side's write half is shut down and the other
/// direction keeps going. The first I/O error ends both directions; what was copied until
/// then stays visible in `counters`.
pub async fn copy_bidirectional<A, B>(
    a: &mut A,
    b: &mut B,
    counters: &ByteCounters,
) -> io::Result<Transferred>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut a_to_b = Pipe::new();
    let mut b_to_a = Pipe::new();
    let mut a_to_b_done = false;
    let mut b_to_a_done = false;
    poll_fn(|cx| {
        if !a_to_b_done
            && let Poll::Ready(result) =
                a_to_b.poll_copy(cx, Pin::new(&mut *a), Pin::new(&mut *b), &counters.a_to_b)
        {
            result?;
            a_to_b_done = true;
        }
        if !b_to_a_done
            && let Poll::Ready(result) =
                b_to_a.poll_copy(cx, Pin::new(&mut *b), Pin::new(&mut *a), &counters.b_to_a)
        {
            result?;
            b_to_a_done = true;
        }
        if a_to_b_done && b_to_a_done {
            Poll::Ready(Ok::<(), io::Error>(()))
        } else {
            Poll::Pending
        }
    })
    .await?;
    Ok(Transferred {
        a_to_b: a_to_b.copied,
        b_to_a: b_to_a.copied,
    })
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
