//! A named network namespace: run processes in it, or run a closure on a thread inside it.

use std::ffi::OsStr;
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Output;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tracing::{debug, warn};

use crate::cmd::{self, IP, command_line};
use crate::error::{Error, Result};

/// Where `ip netns` keeps the bind mounts that name namespaces.
pub const NETNS_DIR: &str = "/var/run/netns";

/// A network namespace known by name to `ip netns` (a bind mount under [`NETNS_DIR`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Refers to the namespace `name`; it need not exist yet.
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The name used with `ip netns` / `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mount path, `/var/run/netns/<name>`; open it to `setns` into the namespace.
    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// True if the namespace is currently mounted under its name.
    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Opens the namespace file, e.g. to hand to `setns` elsewhere.
    pub fn open(&self) -> Result<File> {
        File::open(self.path()).map_err(|source| {
            Error::io(
                format!("opening network namespace {}", self.path().display()),
                source,
            )
        })
    }

    /// A command that runs `program` inside the namespace (`ip netns exec <name> program`).
    ///
    /// The child is killed if the returned handle is dropped, so a timed-out test leaves nothing.
    pub fn command(&self, program: impl AsRef<OsStr>) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(IP);
        command
            .args(["netns", "exec", &self.name])
            .arg(program)
            .kill_on_drop(true);
        command
    }

    /// Runs `program args…` inside the namespace and captures its status, stdout and stderr.
    ///
    /// Fails only if the process cannot be started; a non-zero exit is in the returned status.
    pub async fn run<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        let mut command = self.command(program.as_ref());
        command.args(&args).stdin(std::process::Stdio::null());
        let mut shown: Vec<&OsStr> = vec![
            OsStr::new("netns"),
            OsStr::new("exec"),
            OsStr::new(&self.name),
            program.as_ref(),
        ];
        shown.extend(args.iter().map(AsRef::as_ref));
        command
            .output()
            .await
            .map_err(|source| Error::spawn(command_line(IP, shown), source))
    }

    /// Runs `f` on a fresh thread that has entered this namespace, and returns its result.
    ///
    /// Sockets created by `f` stay in this namespace after the thread ends, which is how
    /// listeners and outgoing sockets are placed inside a pod. The calling thread blocks until
    /// `f` returns; a panic in `f` is resumed on the caller.
    pub fn run_in<F, T>(&self, f: F) -> Result<T>
    where
        F: FnOnce() -> T + Send,
        T: Send,
    {
        let file = self.open()?;
        std::thread::scope(|scope| {
            let thread = std::thread::Builder::new()
                .name(format!("netns-{}", self.name))
                .spawn_scoped(scope, move || {
                    setns(&file, CloneFlags::CLONE_NEWNET)
                        .map_err(|source| Error::setns(&self.name, source))?;
                    Ok(f())
                })
                .map_err(|source| Error::io("spawning a thread for setns", source))?;
            match thread.join() {
                Ok(result) => result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        })
    }

    /// Binds a TCP listener at `addr` inside this namespace, ready for tokio.
    ///
    /// Must be called from within a tokio runtime.
    pub fn bind_tcp(&self, addr: SocketAddr) -> Result<tokio::net::TcpListener> {
        let context = || format!("binding TCP {addr} in network namespace {}", self.name);
        let listener = self
            .run_in(|| std::net::TcpListener::bind(addr))?
            .map_err(|source| Error::io(context(), source))?;
        listener
            .set_nonblocking(true)
            .and_then(|()| tokio::net::TcpListener::from_std(listener))
            .map_err(|source| Error::io(context(), source))
    }

    /// Creates an unconnected TCP socket inside this namespace, of `addr`'s family.
    ///
    /// Connect it (or bind it) from anywhere; the socket stays in this namespace.
    pub fn tcp_socket(&self, addr: SocketAddr) -> Result<tokio::net::TcpSocket> {
        let socket = self.run_in(|| match addr {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        })?;
        socket.map_err(|source| {
            Error::io(
                format!("creating a TCP socket in network namespace {}", self.name),
                source,
            )
        })
    }

    /// Connects to `addr` from inside this namespace.
    pub async fn connect_tcp(&self, addr: SocketAddr) -> Result<tokio::net::TcpStream> {
        self.tcp_socket(addr)?
            .connect(addr)
            .await
            .map_err(|source| {
                Error::io(
                    format!("connecting to {addr} from network namespace {}", self.name),
                    source,
                )
            })
    }

    /// Creates the namespace (`ip netns add`).
    pub(crate) async fn create(&self) -> Result<()> {
        cmd::ip(&["netns", "add", &self.name]).await.map(drop)
    }

    /// Kills every process inside the namespace, then deletes it; a missing namespace is fine.
    pub(crate) fn destroy_blocking(&self) -> Result<()> {
        if !self.exists() {
            return Ok(());
        }
        self.kill_processes_blocking()?;
        match cmd::ip_blocking(&["netns", "del", &self.name]) {
            // Someone else (a concurrent cleanup) may have removed it in between.
            Err(_) if !self.exists() => Ok(()),
            other => other.map(drop),
        }
    }

    /// Sends SIGKILL to every process whose network namespace is this one.
    fn kill_processes_blocking(&self) -> Result<()> {
        let pids = match cmd::ip_blocking(&["netns", "pids", &self.name]) {
            Ok(pids) => pids,
            Err(_) if !self.exists() => return Ok(()),
            Err(err) => return Err(err),
        };
        let me = std::process::id();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if pid == me {
                // Our own main thread must never be in a cluster netns; do not kill ourselves.
                warn!(netns = %self.name, "this process is inside the namespace being deleted");
                continue;
            }
            let Ok(raw) = i32::try_from(pid) else {
                continue;
            };
            debug!(netns = %self.name, pid, "killing process left in namespace");
            match kill(Pid::from_raw(raw), Signal::SIGKILL) {
                Ok(()) | Err(nix::Error::ESRCH) => {}
                Err(err) => warn!(netns = %self.name, pid, %err, "could not kill process"),
            }
        }
        Ok(())
    }
}
