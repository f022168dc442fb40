//! `ambit-cni`: Ambit's chained CNI plugin. All logic lives in [`ambit_cni::plugin`]; this
//! binary only wires the process's environment, stdin, stdout and exit status to it.

use std::io::{Read, Write};

use ambit_cni::plugin::{self, CniEnv, SocketAgent};

/// Larger network configurations are refused rather than read into memory.
const MAX_STDIN_BYTES: u64 = 16 * 1024 * 1024;

fn main() {
    let env = CniEnv::from_os_vars(std::env::vars_os());
    let output = match read_stdin() {
        Ok(stdin) => plugin::run(&env, &stdin, &mut SocketAgent),
        Err(message) => plugin::io_failure(&message),
    };
    let mut stderr = std::io::stderr().lock();
    for line in &output.diagnostics {
        let _ = writeln!(stderr, "{line}");
    }
    let mut stdout = std::io::stdout().lock();
    let written = stdout
        .write_all(&output.stdout)
        .and_then(|()| stdout.flush());
    let exit_code = match written {
        Ok(()) => output.exit_code,
        Err(e) => {
            let _ = writeln!(stderr, "ambit-cni: cannot write the result: {e}");
            1
        }
    };
    std::process::exit(exit_code);
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut stdin = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_STDIN_BYTES + 1)
        .read_to_end(&mut stdin)
        .map_err(|e| e.to_string())?;
    if stdin.len() as u64 > MAX_STDIN_BYTES {
        return Err(format!("more than {MAX_STDIN_BYTES} bytes on stdin"));
    }
    Ok(stdin)
}
