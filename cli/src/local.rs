//! `ambit local …`: the mesh on this machine. `up` starts a daemon (this same binary, `ambit
//! local serve`, in its own process group) that holds an [`ambit_localmesh::LocalMesh`]; the
//! other verbs talk to it through the unix socket in the state folder.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ambit_localmesh::daemon::{self, Request, Response};
use ambit_localmesh::{LocalMesh, MeshOptions};
use anyhow::{Context, Result, bail};

use crate::args::{GetKind, LocalCommand};
use crate::table::Table;

/// Where local mode keeps its state unless `AMBIT_LOCAL_DIR` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/run/ambit-local";
/// How long `up` waits for the daemon to have the mesh running.
const UP_TIMEOUT: Duration = Duration::from_secs(90);
/// How long one request may take (an apply starts processes and waits for enrollment).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// The state folder: `$AMBIT_LOCAL_DIR`, else [`DEFAULT_STATE_DIR`].
pub fn state_dir() -> PathBuf {
    std::env::var_os("AMBIT_LOCAL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
}

/// The directory of this binary, where the workspace's other binaries are built or installed.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the ambit binary")?;
    exe.parent()
        .map(Path::to_owned)
        .context("the ambit binary has no directory")
}

/// Runs one `ambit local` verb; `Ok(code)` is the process exit code.
pub fn run(command: LocalCommand) -> Result<u8> {
    require_root()?;
    let state = state_dir();
    match command {
        LocalCommand::Up { nodes } => up(&state, nodes),
        LocalCommand::Serve { nodes } => serve(&state, nodes),
        LocalCommand::Apply { files } => apply(&state, &files, false),
        LocalCommand::Delete { files } => apply(&state, &files, true),
        LocalCommand::Get { kind, namespace } => get(&state, kind, namespace.as_deref()),
        LocalCommand::Exec { pod, command } => exec(&state, &pod, &command),
        LocalCommand::Logs { pod, follow } => logs(&state, &pod, follow),
        LocalCommand::Label { name, labels, .. } => label(&state, &name, &labels),
        LocalCommand::Down => down(&state),
    }
}

fn require_root() -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        bail!(
            "ambit local needs root (it creates network namespaces and nftables rules); try sudo"
        );
    }
    Ok(())
}

fn up(state: &Path, nodes: u8) -> Result<u8> {
    if daemon::call(state, &Request::GetPods, Duration::from_secs(5)).is_ok() {
        bail!(
            "a local mesh is already running (state in {}); `ambit local down` first",
            state.display()
        );
    }
    std::fs::create_dir_all(state.join("logs"))
        .with_context(|| format!("creating {}", state.display()))?;
    let log_path = state.join("logs").join("daemon.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the ambit binary")?;
    let mut command = StdCommand::new(exe);
    command
        .args(["local", "serve", "--nodes", &nodes.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone()?))
        .stderr(Stdio::from(log));
    // Its own process group: the mesh outlives this command and the terminal's Ctrl-C.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let mut child = command.spawn().context("starting the local mesh daemon")?;
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait()? {
            let tail = tail(&log_path, 30);
            bail!("the local mesh daemon exited ({status}) while starting:\n{tail}");
        }
        if daemon::call(state, &Request::GetPods, Duration::from_secs(5)).is_ok() {
            break;
        }
        if started.elapsed() > UP_TIMEOUT {
            let _ = child.kill();
            bail!(
                "the local mesh did not come up within {UP_TIMEOUT:?}; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "local mesh up: {nodes} node(s), controller and ztunnels running; state and logs in {}",
        state.display()
    );
    println!("next: ambit local apply -f e2e/samples/");
    Ok(0)
}

/// The daemon (`ambit local serve`, hidden): brings the mesh up and serves the socket until
/// `down` or SIGTERM/SIGINT.
fn serve(state: &Path, nodes: u8) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut options = MeshOptions::new(state, bin_dir()?);
        options.nodes = usize::from(nodes);
        let mesh = LocalMesh::up(options).await?;
        let stop = Arc::new(tokio::sync::Notify::new());
        let notify = stop.clone();
        tokio::spawn(async move {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => return,
                };
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            notify.notify_one();
        });
        daemon::serve(mesh, stop).await?;
        anyhow::Ok(0)
    })
}

/// The YAML files of `paths`: files as given, directories' `*.yaml`/`*.yml` in name order.
fn yaml_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("reading {}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .filter(|p| {
                    p.is_file()
                        && p.extension()
                            .is_some_and(|ext| ext == "yaml" || ext == "yml")
                })
                .collect();
            found.sort();
            if found.is_empty() {
                bail!("{}: no .yaml or .yml files", path.display());
            }
            files.extend(found);
        } else if path.is_file() {
            files.push(path.clone());
        } else {
            bail!("{}: no such file or directory", path.display());
        }
    }
    Ok(files)
}

fn apply(state: &Path, paths: &[PathBuf], delete: bool) -> Result<u8> {
    let mut failed = false;
    for file in yaml_files(paths)? {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        let origin = file.display().to_string();
        let request = if delete {
            Request::Delete { origin, text }
        } else {
            Request::Apply { origin, text }
        };
        match daemon::call(state, &request, CALL_TIMEOUT)? {
            Response::Report { done, errors } => {
                for line in done {
                    println!("{line}");
                }
                for line in &errors {
                    eprintln!("error: {line}");
                }
                failed |= !errors.is_empty();
            }
            other => bail!("unexpected answer: {other:?}"),
        }
    }
    Ok(u8::from(failed))
}

fn get(state: &Path, kind: GetKind, namespace: Option<&str>) -> Result<u8> {
    let request = match kind {
        GetKind::Pods => Request::GetPods,
        GetKind::Services => Request::GetServices,
        GetKind::Waypoints => Request::GetWaypoints,
    };
    match daemon::call(state, &request, CALL_TIMEOUT)? {
        Response::Table { header, rows } => {
            let header: Vec<&str> = header.iter().map(String::as_str).collect();
            let mut table = Table::new(&header);
            for row in rows {
                if namespace.is_none_or(|ns| row.first().is_some_and(|cell| cell == ns)) {
                    table.row(row);
                }
            }
            print!("{}", table.render());
            Ok(0)
        }
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

/// `NAMESPACE/POD` → its netns name and log file.
fn pod(state: &Path, pod: &str) -> Result<(String, PathBuf)> {
    let Some((namespace, name)) = pod.split_once('/') else {
        bail!("give the pod as NAMESPACE/POD, got {pod:?}");
    };
    let request = Request::Pod {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    };
    match daemon::call(state, &request, CALL_TIMEOUT)? {
        Response::Pod { netns, log } => Ok((netns, log)),
        Response::Error { message } => bail!("{message}"),
        other => bail!("unexpected answer: {other:?}"),
    }
}

fn exec(state: &Path, target: &str, command: &[String]) -> Result<u8> {
    let (netns, _) = pod(state, target)?;
    let Some((program, args)) = command.split_first() else {
        bail!("give the command after --");
    };
    let mut path = vec![bin_dir()?];
    if let Some(current) = std::env::var_os("PATH") {
        path.extend(std::env::split_paths(&current));
    }
    let status = StdCommand::new("ip")
        .args(["netns", "exec", &netns])
        .arg(program)
        .args(args)
        .env("PATH", std::env::join_paths(path)?)
        .status()
        .with_context(|| format!("running {program} in {target}"))?;
    // A signal-killed command has no code; report it as a failure.
    Ok(status
        .code()
        .map_or(1, |code| u8::try_from(code).unwrap_or(1)))
}

fn logs(state: &Path, target: &str, follow: bool) -> Result<u8> {
    let (_, log) = pod(state, target)?;
    let mut file = match std::fs::File::open(&log) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            bail!("{target} has no process, so no logs")
        }
        Err(err) => return Err(err).with_context(|| format!("reading {}", log.display())),
    };
    let mut stdout = std::io::stdout();
    std::io::copy(&mut file, &mut stdout)?;
    if !follow {
        return Ok(0);
    }
    let mut position = file.stream_position()?;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        file.seek(SeekFrom::Start(position))?;
        let mut more = Vec::new();
        file.read_to_end(&mut more)?;
        position += more.len() as u64;
        stdout.write_all(&more)?;
        stdout.flush()?;
    }
}

fn label(state: &Path, namespace: &str, labels: &[String]) -> Result<u8> {
    for label in labels {
        let (key, value) = if let Some(key) = label.strip_suffix('-') {
            (key, None)
        } else if let Some((key, value)) = label.split_once('=') {
            (key, Some(value.to_owned()))
        } else {
            bail!("give labels as KEY=VALUE or KEY-, got {label:?}");
        };
        let request = Request::Label {
            namespace: namespace.to_owned(),
            key: key.to_owned(),
            value,
        };
        match daemon::call(state, &request, CALL_TIMEOUT)? {
            Response::Ok => println!("namespace/{namespace} labeled ({label})"),
            Response::Error { message } => bail!("{message}"),
            other => bail!("unexpected answer: {other:?}"),
        }
    }
    Ok(0)
}

fn down(state: &Path) -> Result<u8> {
    match daemon::call(state, &Request::Down, CALL_TIMEOUT) {
        Ok(Response::Ok) => {
            println!("local mesh down");
            Ok(0)
        }
        Ok(Response::Error { message }) => bail!("{message}"),
        Ok(other) => bail!("unexpected answer: {other:?}"),
        Err(daemon::ClientError::NotRunning { .. }) => {
            // After a crash: no daemon, but namespaces may be left. Remove what its state
            // file records.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let removed = runtime.block_on(ambit_localnet::cleanup_stale_in(state.join("net")))?;
            println!(
                "no local mesh was running; removed {} stale cluster(s)",
                removed.len()
            );
            Ok(0)
        }
        Err(err) => Err(err.into()),
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
