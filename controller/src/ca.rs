//! The controller's CA material: user-supplied (`--ca-dir`, Istio's `cacerts` layout) or
//! generated on first start and persisted in the state folder (`--state-dir`), so certificates
//! issued before a restart still verify against the bundle after it.
//!
//! Both folders use the same four files: `root-cert.pem` (one or more roots: several during a
//! rotation; all are trusted, the one the signing chain leads to signs), `ca-cert.pem` (the
//! signing certificate), `ca-key.pem` (its key) and `cert-chain.pem` (signing certificate up to
//! the root; optional in `--ca-dir`). The generated root lives in `<state-dir>/ca/`, written
//! with mode 0600 for the key, each file via a temporary file and a rename.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use ambit_identity::cert::{certificates_from_pem, certificates_to_pem};
use ambit_identity::{CaMaterial, CaOptions, CertificateAuthority, TrustBundle};

/// The folder below `--state-dir` holding the generated CA.
pub const STATE_CA_DIR: &str = "ca";
const ROOT_CERT: &str = "root-cert.pem";
const SIGNING_CERT: &str = "ca-cert.pem";
const SIGNING_KEY: &str = "ca-key.pem";
const CERT_CHAIN: &str = "cert-chain.pem";

/// Where the CA came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaOrigin {
    /// Loaded from `--ca-dir`.
    Supplied,
    /// Generated now and written to the state folder.
    Generated,
    /// Generated on an earlier start and loaded from the state folder.
    Persisted,
}

/// The CA and the bundle it hands out.
#[derive(Debug)]
pub struct LoadedCa {
    /// Signs workload certificates.
    pub ca: CertificateAuthority,
    /// Every trusted root (more than the signing root during a rotation).
    pub bundle: TrustBundle,
    /// Where it came from.
    pub origin: CaOrigin,
}

/// The CA could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CaSetupError {
    /// Neither folder was given.
    #[error("no CA: pass --state-dir (a root is generated there on first start) or --ca-dir")]
    NoCa,
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The material is unusable.
    #[error("CA material in {}: {message}", dir.display())]
    Material {
        /// The folder.
        dir: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Loads the CA from `ca_dir` if given, else from `<state_dir>/ca/`, generating and persisting
/// a root there on first start.
pub fn load_or_generate(
    trust_domain: &str,
    state_dir: Option<&Path>,
    ca_dir: Option<&Path>,
    options: CaOptions,
) -> Result<LoadedCa, CaSetupError> {
    if let Some(dir) = ca_dir {
        return load(trust_domain, dir, options).map(|(ca, bundle)| LoadedCa {
            ca,
            bundle,
            origin: CaOrigin::Supplied,
        });
    }
    let state_dir = state_dir.ok_or(CaSetupError::NoCa)?;
    let dir = state_dir.join(STATE_CA_DIR);
    if dir.join(SIGNING_KEY).exists() {
        return load(trust_domain, &dir, options).map(|(ca, bundle)| LoadedCa {
            ca,
            bundle,
            origin: CaOrigin::Persisted,
        });
    }
    let material_error = |message: String| CaSetupError::Material {
        dir: dir.clone(),
        message,
    };
    let ca = CertificateAuthority::generate(trust_domain, options)
        .map_err(|e| material_error(e.to_string()))?;
    persist(&dir, &ca.to_material())?;
    let bundle = ca
        .trust_bundle()
        .map_err(|e| material_error(e.to_string()))?;
    Ok(LoadedCa {
        ca,
        bundle,
        origin: CaOrigin::Generated,
    })
}

fn load(
    trust_domain: &str,
    dir: &Path,
    options: CaOptions,
) -> Result<(CertificateAuthority, TrustBundle), CaSetupError> {
    let material_error = |message: String| CaSetupError::Material {
        dir: dir.to_owned(),
        message,
    };
    let roots_pem = read(&dir.join(ROOT_CERT))?;
    let signing_cert = read(&dir.join(SIGNING_CERT))?;
    let signing_key = read(&dir.join(SIGNING_KEY))?;
    let chain_path = dir.join(CERT_CHAIN);
    let cert_chain = if chain_path.exists() {
        Some(read(&chain_path)?)
    } else {
        None
    };
    let roots = certificates_from_pem(&roots_pem)
        .map_err(|e| material_error(format!("{ROOT_CERT}: {e}")))?;
    let bundle = TrustBundle::new(trust_domain, roots.clone())
        .map_err(|e| material_error(format!("{ROOT_CERT}: {e}")))?;
    // The signing root is the one the chain leads to; the others are trusted only.
    let mut last_error = None;
    for root in &roots {
        let material = CaMaterial {
            root_cert: certificates_to_pem(std::slice::from_ref(root)),
            signing_cert: signing_cert.clone(),
            signing_key: signing_key.clone(),
            cert_chain: cert_chain.clone(),
        };
        match CertificateAuthority::from_pem(trust_domain, &material, options.clone()) {
            Ok(ca) => return Ok((ca, bundle)),
            Err(err) => last_error = Some(err.to_string()),
        }
    }
    Err(material_error(last_error.unwrap_or_else(|| {
        format!("{ROOT_CERT} holds no certificate")
    })))
}

fn read(path: &Path) -> Result<String, CaSetupError> {
    std::fs::read_to_string(path).map_err(|source| CaSetupError::Io {
        path: path.to_owned(),
        source,
    })
}

fn persist(dir: &Path, material: &CaMaterial) -> Result<(), CaSetupError> {
    let io_error = |path: &Path| {
        let path = path.to_owned();
        move |source| CaSetupError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    let chain = material.cert_chain.clone().unwrap_or_default();
    // The key last: its presence is what marks the CA as persisted.
    let files = [
        (ROOT_CERT, material.root_cert.as_str(), 0o644),
        (SIGNING_CERT, material.signing_cert.as_str(), 0o644),
        (CERT_CHAIN, chain.as_str(), 0o644),
        (SIGNING_KEY, material.signing_key.as_str(), 0o600),
    ];
    for (name, contents, mode) in files {
        let path = dir.join(name);
        let temporary = dir.join(format!(".{name}.tmp"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)
            .map_err(io_error(&temporary))?;
        file.write_all(contents.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(io_error(&temporary))?;
        std::fs::rename(&temporary, &path).map_err(io_error(&path))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_root_is_persisted_and_reused() {
        let state = tempfile::tempdir().unwrap();
        let first = load_or_generate(
            "cluster.local",
            Some(state.path()),
            None,
            CaOptions::default(),
        )
        .unwrap();
        assert_eq!(first.origin, CaOrigin::Generated);
        let second = load_or_generate(
            "cluster.local",
            Some(state.path()),
            None,
            CaOptions::default(),
        )
        .unwrap();
        assert_eq!(second.origin, CaOrigin::Persisted);
        assert_eq!(first.ca.root(), second.ca.root());
        assert_eq!(second.bundle.roots(), [first.ca.root().clone()]);
        let key = state.path().join(STATE_CA_DIR).join(SIGNING_KEY);
        let mode = std::os::unix::fs::PermissionsExt::mode(&key.metadata().unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn supplied_folder_with_intermediate_and_two_roots() {
        let root = CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap();
        let old_root =
            CertificateAuthority::generate("cluster.local", CaOptions::default()).unwrap();
        let intermediate = root
            .new_intermediate(std::time::Duration::from_secs(3600))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let material = intermediate.to_material();
        persist(dir.path(), &material).unwrap();
        // Rotation: the old root is still trusted, listed first.
        let roots = format!("{}{}", old_root.root_pem(), root.root_pem());
        std::fs::write(dir.path().join(ROOT_CERT), roots).unwrap();
        let loaded = load_or_generate(
            "cluster.local",
            None,
            Some(dir.path()),
            CaOptions::default(),
        )
        .unwrap();
        assert_eq!(loaded.origin, CaOrigin::Supplied);
        assert_eq!(loaded.ca.root(), root.root());
        assert_eq!(loaded.bundle.roots().len(), 2);

        std::fs::write(dir.path().join(ROOT_CERT), old_root.root_pem()).unwrap();
        let err = load_or_generate(
            "cluster.local",
            None,
            Some(dir.path()),
            CaOptions::default(),
        )
        .unwrap_err();
        assert!(matches!(err, CaSetupError::Material { .. }), "{err}");
        assert!(matches!(
            load_or_generate("cluster.local", None, None, CaOptions::default()),
            Err(CaSetupError::NoCa)
        ));
    }
}
