//! Where a proxy's bearer token comes from, shared by the CA and config clients.

use std::path::PathBuf;

use tonic::metadata::{Ascii, MetadataValue};

/// The token cannot be sent as an HTTP header value.
#[derive(Debug, thiserror::Error)]
#[error("the token contains characters not allowed in a header")]
pub struct InvalidToken;

/// The token file could not give a usable token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct TokenFileError(String);

/// A bearer token: fixed, or read from a file each time it is needed. Never printed.
#[derive(Clone)]
pub(crate) enum TokenSource {
    Fixed(MetadataValue<Ascii>),
    /// Read on every use: Kubernetes rotates projected service-account tokens in place.
    File(PathBuf),
}

impl TokenSource {
    /// A fixed `token`.
    pub(crate) fn fixed(token: &str) -> Result<Self, InvalidToken> {
        Ok(Self::Fixed(bearer(token)?))
    }

    /// The `authorization` header value: `Bearer <token>`. A missing, empty or unusable file
    /// is an error.
    pub(crate) async fn authorization(&self) -> Result<MetadataValue<Ascii>, TokenFileError> {
        match self {
            TokenSource::Fixed(value) => Ok(value.clone()),
            TokenSource::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|err| {
                    TokenFileError(format!("reading token file {}: {err}", path.display()))
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(TokenFileError(format!(
                        "token file {} is empty",
                        path.display()
                    )));
                }
                bearer(token)
                    .map_err(|err| TokenFileError(format!("token file {}: {err}", path.display())))
            }
        }
    }
}

impl std::fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenSource::Fixed(_) => f.write_str("Fixed(..)"),
            TokenSource::File(path) => f.debug_tuple("File").field(path).finish(),
        }
    }
}

fn bearer(token: &str) -> Result<MetadataValue<Ascii>, InvalidToken> {
    format!("Bearer {token}").parse().map_err(|_| InvalidToken)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn file_tokens_are_reread_and_trimmed() {
        let dir = std::env::temp_dir().join(format!("ambit-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        let source = TokenSource::File(path.clone());
        assert!(source.authorization().await.is_err(), "missing file");
        std::fs::write(&path, " \n").unwrap();
        assert!(source.authorization().await.is_err(), "empty file");
        std::fs::write(&path, "first-token\n").unwrap();
        assert_eq!(source.authorization().await.unwrap(), "Bearer first-token");
        std::fs::write(&path, "rotated-token").unwrap();
        assert_eq!(
            source.authorization().await.unwrap(),
            "Bearer rotated-token"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(TokenSource::fixed("bad\ntoken").is_err());
        assert!(!format!("{:?}", TokenSource::fixed("secret").unwrap()).contains("secret"));
    }
}
