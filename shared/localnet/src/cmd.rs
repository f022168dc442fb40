//! Running `ip` (and other helpers) with errors that quote the command line and its stderr.

use std::ffi::OsStr;
use std::io;
use std::process::Output;

use tracing::debug;

use crate::error::{Error, Result};

/// The iproute2 binary, looked up in `PATH` like a shell would.
pub(crate) const IP: &str = "ip";

/// Runs `ip <args>` and returns its stdout; a non-zero exit becomes an error with stderr.
pub(crate) async fn ip<S: AsRef<str>>(args: &[S]) -> Result<String> {
    let line = command_line(IP, args.iter().map(AsRef::as_ref));
    debug!(command = %line, "running");
    let output = tokio::process::Command::new(IP)
        .args(args.iter().map(AsRef::as_ref))
        .kill_on_drop(true)
        .output()
        .await;
    checked(line, output)
}

/// Blocking twin of [`ip`], for `Drop` and for teardown on the blocking pool.
pub(crate) fn ip_blocking<S: AsRef<str>>(args: &[S]) -> Result<String> {
    let line = command_line(IP, args.iter().map(AsRef::as_ref));
    debug!(command = %line, "running");
    let output = std::process::Command::new(IP)
        .args(args.iter().map(AsRef::as_ref))
        .output();
    checked(line, output)
}

/// Turns a finished command into its stdout, or an error naming the command line.
fn checked(line: String, output: io::Result<Output>) -> Result<String> {
    let output = output.map_err(|source| Error::spawn(line.clone(), source))?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stderr = if stderr.is_empty() {
        "(no output on stderr)".to_owned()
    } else {
        stderr
    };
    Err(Error::command(line, output.status.to_string(), stderr))
}

/// Renders a command line for messages, quoting arguments a shell would split.
pub(crate) fn command_line<'a, I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = &'a S>,
    S: AsRef<OsStr> + ?Sized + 'a,
{
    let mut line = quote(OsStr::new(program));
    for arg in args {
        line.push(' ');
        line.push_str(&quote(arg.as_ref()));
    }
    line
}

fn quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_quotes_only_what_needs_it() {
        let line = command_line("ip", ["-n", "amb-1-node-a", "addr", "add", "10.0.0.1/24"]);
        assert_eq!(line, "ip -n amb-1-node-a addr add 10.0.0.1/24");
        let line = command_line("sh", ["-c", "echo 'hi' there", ""]);
        assert_eq!(line, r"sh -c 'echo '\''hi'\'' there' ''");
    }

    #[test]
    fn failing_command_reports_line_status_and_stderr() {
        let err = ip_blocking(&["link", "show", "dev", "amb-no-such-interface"]).unwrap_err();
        assert!(err.is_command_failed(), "{err}");
        let message = err.to_string();
        assert!(
            message.contains("`ip link show dev amb-no-such-interface` failed"),
            "{message}"
        );
        assert!(message.contains("does not exist"), "{message}");
    }

    #[tokio::test]
    async fn async_and_blocking_runners_agree() {
        let blocking = ip_blocking(&["-V"]).unwrap();
        let async_out = ip(&["-V"]).await.unwrap();
        assert_eq!(blocking, async_out);
        assert!(blocking.contains("iproute2"), "{blocking}");
    }
}
