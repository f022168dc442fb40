//! The check that runs before anything is created: root, the capabilities netns work needs, `ip`.

use std::env;
use std::path::Path;

use crate::cmd::IP;
use crate::error::{Error, Result};

/// `CAP_NET_ADMIN`: create links, addresses and routes.
const CAP_NET_ADMIN: u32 = 12;
/// `CAP_SYS_ADMIN`: `ip netns add` bind-mounts, and `setns` into a netns.
const CAP_SYS_ADMIN: u32 = 21;

/// What the current process has, gathered once so the verdict is a pure function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Privileges {
    pub(crate) euid: u32,
    /// Effective capability set; `None` if `/proc/self/status` could not be read.
    pub(crate) cap_eff: Option<u64>,
    pub(crate) ip_in_path: bool,
}

impl Privileges {
    /// Reads the current process's privileges.
    pub(crate) fn current() -> Self {
        let cap_eff = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|status| parse_cap_eff(&status));
        Self {
            euid: nix::unistd::geteuid().as_raw(),
            cap_eff,
            ip_in_path: program_in_path(IP),
        }
    }

    /// Ok if a cluster can be built; otherwise one error listing everything that is missing.
    pub(crate) fn verify(&self) -> Result<()> {
        let mut missing = Vec::new();
        if self.euid != 0 {
            missing.push(format!(
                "the effective uid is {}, not 0 (run as root, e.g. with sudo)",
                self.euid
            ));
        }
        for (cap, name, why) in [
            (
                CAP_NET_ADMIN,
                "CAP_NET_ADMIN",
                "to create links, addresses and routes",
            ),
            (
                CAP_SYS_ADMIN,
                "CAP_SYS_ADMIN",
                "to create and enter network namespaces",
            ),
        ] {
            match self.cap_eff {
                Some(caps) if caps & (1 << cap) != 0 => {}
                Some(_) => missing.push(format!("{name} is not in the effective set ({why})")),
                None => missing.push(format!(
                    "could not read /proc/self/status to confirm {name} ({why})"
                )),
            }
        }
        if !self.ip_in_path {
            missing.push("the `ip` command (iproute2) was not found in PATH".to_owned());
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(Error::privileges(missing.join("; ")))
        }
    }
}

/// Checks the current process; see [`Privileges::verify`].
pub(crate) fn check() -> Result<()> {
    Privileges::current().verify()
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn program_in_path(program: &str) -> bool {
    let Some(path) = env::var_os("PATH") else {
        return false;
    };
    env::split_paths(&path).any(|dir| is_executable(&dir.join(program)))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_CAPS: u64 = 0x1ff_ffff_ffff;

    #[test]
    fn root_with_capabilities_and_ip_passes() {
        let ok = Privileges {
            euid: 0,
            cap_eff: Some(ALL_CAPS),
            ip_in_path: true,
        };
        ok.verify().unwrap();
    }

    #[test]
    fn non_root_is_refused_with_the_reason() {
        let err = Privileges {
            euid: 1000,
            cap_eff: Some(0),
            ip_in_path: true,
        }
        .verify()
        .unwrap_err();
        assert!(err.is_privileges());
        let message = err.to_string();
        assert!(message.contains("needs root"), "{message}");
        assert!(message.contains("effective uid is 1000"), "{message}");
        assert!(message.contains("CAP_NET_ADMIN"), "{message}");
        assert!(message.contains("CAP_SYS_ADMIN"), "{message}");
    }

    #[test]
    fn root_without_net_admin_or_ip_is_refused() {
        let err = Privileges {
            euid: 0,
            cap_eff: Some(ALL_CAPS & !(1 << CAP_NET_ADMIN)),
            ip_in_path: false,
        }
        .verify()
        .unwrap_err();
        let message = err.to_string();
        assert!(message.contains("CAP_NET_ADMIN is not in"), "{message}");
        assert!(!message.contains("CAP_SYS_ADMIN"), "{message}");
        assert!(message.contains("`ip` command (iproute2)"), "{message}");
        assert!(!message.contains("uid"), "{message}");
    }

    #[test]
    fn cap_eff_is_parsed_from_proc_status() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t000001fffeffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1fffeffffff));
        assert_eq!(parse_cap_eff("Name:\tcat\n"), None);
    }

    #[test]
    fn this_machine_is_privileged() {
        // CI and developers run the suite as root; this fails loudly otherwise.
        check().unwrap();
    }
}
