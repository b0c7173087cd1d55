//! How the broker reaches Redis securely: the URL's scheme and credentials (shown only
//! redacted), the password file, and the rustls client configuration for `rediss://`.

use crate::config::RedisConfig;
use crate::error::RedisStartError;
use fred::types::config::{
    Config, HostMapping, ServerConfig, TlsConfig, TlsConnector, TlsHostMapping,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// What Herald needs to know of a Redis URL before handing it to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RedisUrl {
    /// `rediss://` or `rediss-cluster://`.
    pub(crate) tls: bool,
    /// `user@` or `user:password@`.
    pub(crate) has_username: bool,
    /// `:password@`.
    pub(crate) has_password: bool,
}

impl RedisUrl {
    /// Reads one of the four schemes Herald accepts; `None` for anything else.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let url = url::Url::parse(text).ok()?;
        let tls = match url.scheme() {
            "redis" | "redis-cluster" => false,
            "rediss" | "rediss-cluster" => true,
            _ => return None,
        };
        url.host_str().filter(|h| !h.is_empty())?;
        Some(Self {
            tls,
            has_username: !url.username().is_empty(),
            has_password: url.password().is_some_and(|p| !p.is_empty()),
        })
    }
}

/// The URL with its password replaced by `***`, for logs and errors. A URL that does
/// not parse is shown without anything between the scheme and the last `@`.
pub fn redact_url(text: &str) -> String {
    if let Ok(mut url) = url::Url::parse(text) {
        if url.password().is_some() && url.set_password(Some("***")).is_ok() {
            return url.to_string();
        }
        if url.password().is_none() {
            return text.to_owned();
        }
    }
    match (text.find("://"), text.rfind('@')) {
        (Some(start), Some(at)) if at > start => {
            format!("{}***{}", &text[..start + 3], &text[at..])
        }
        _ => text.to_owned(),
    }
}

/// The client configuration for `config`: the URL's servers and credentials with
/// `username` and `password_file` applied, and Herald's own TLS settings.
pub(crate) fn client_config(config: &RedisConfig) -> Result<Config, RedisStartError> {
    let shown = redact_url(&config.url);
    let url = RedisUrl::parse(&config.url)
        .ok_or_else(|| RedisStartError::Scheme { url: shown.clone() })?;
    // The client would build its own TLS settings from a rediss:// scheme (failing on
    // an unreadable system store even with a CA file set): it gets the plain scheme
    // and Herald's settings instead.
    let plain = match config.url.strip_prefix("rediss") {
        Some(rest) => format!("redis{rest}"),
        None => config.url.clone(),
    };
    let mut fred_config = Config::from_url(&plain).map_err(|source| RedisStartError::Url {
        url: shown.clone(),
        source,
    })?;
    if !config.username.is_empty() {
        fred_config.username = Some(config.username.clone());
    }
    if !config.password_file.is_empty() {
        fred_config.password = Some(read_password(&config.password_file)?);
    }
    if url.tls {
        fred_config.tls = Some(tls_config(config)?);
        if !config.tls_server_name.is_empty() {
            let name = fred::bytes_utils::Str::from(config.tls_server_name.as_str());
            match &mut fred_config.server {
                ServerConfig::Centralized { server } => {
                    server.tls_server_name = Some(name);
                }
                ServerConfig::Clustered { hosts, .. } => {
                    for host in hosts {
                        host.tls_server_name = Some(name.clone());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(fred_config)
}

/// Reads the password file; one trailing newline (as editors and `echo` write) is not
/// part of the password.
fn read_password(path: &str) -> Result<String, RedisStartError> {
    let text = std::fs::read_to_string(path).map_err(|source| RedisStartError::File {
        key: "password_file",
        path: PathBuf::from(path),
        source,
    })?;
    let text = text
        .strip_suffix('\n')
        .map_or(text.as_str(), |t| t.strip_suffix('\r').unwrap_or(t));
    Ok(text.to_owned())
}

/// The rustls configuration: the CA file's roots (or the system's), an optional client
/// certificate, and the ring provider.
fn tls_config(config: &RedisConfig) -> Result<TlsConfig, RedisStartError> {
    let roots = if config.tls_ca_file.is_empty() {
        system_roots()?
    } else {
        file_roots(&config.tls_ca_file)?
    };
    // ring, not aws-lc-rs (which needs cmake and builds for minutes); rustls 0.23.48
    // deprecated it only for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = rustls::crypto::ring::default_provider();
    let builder = ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .map_err(RedisStartError::Tls)?
        .with_root_certificates(roots);
    let client = if config.tls_cert_file.is_empty() {
        builder.with_no_client_auth()
    } else {
        let pem = |key: &'static str, path: &str| {
            let path = PathBuf::from(path);
            move |source| RedisStartError::Pem { key, path, source }
        };
        let chain = CertificateDer::pem_file_iter(&config.tls_cert_file)
            .map_err(pem("tls_cert_file", &config.tls_cert_file))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(pem("tls_cert_file", &config.tls_cert_file))?;
        let key = PrivateKeyDer::from_pem_file(&config.tls_key_file)
            .map_err(pem("tls_key_file", &config.tls_key_file))?;
        builder
            .with_client_auth_cert(chain, key)
            .map_err(RedisStartError::Tls)?
    };
    let hostnames = if config.tls_server_name.is_empty() {
        TlsHostMapping::None
    } else {
        TlsHostMapping::Custom(Arc::new(FixedName(config.tls_server_name.clone())))
    };
    Ok(TlsConfig {
        connector: TlsConnector::from(client),
        hostnames,
    })
}

/// Every certificate in the CA file.
fn file_roots(path: &str) -> Result<RootCertStore, RedisStartError> {
    let pem = |source| RedisStartError::Pem {
        key: "tls_ca_file",
        path: PathBuf::from(path),
        source,
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(pem)? {
        roots
            .add(cert.map_err(pem)?)
            .map_err(RedisStartError::Tls)?;
    }
    if roots.is_empty() {
        return Err(pem(rustls::pki_types::pem::Error::NoItemsFound));
    }
    Ok(roots)
}

/// The system's roots. Unreadable entries are skipped as long as some remain: one bad
/// file in a system store should not stop a node.
fn system_roots() -> Result<RootCertStore, RedisStartError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(RedisStartError::NoSystemRoots { why });
    }
    for e in &found.errors {
        tracing::warn!(error = %e, "skipping part of the system certificate store");
    }
    Ok(roots)
}

/// `tls_server_name` for every Cluster node the client discovers by IP.
#[derive(Debug)]
struct FixedName(String);

impl HostMapping for FixedName {
    fn map(&self, _ip: &IpAddr, _default_host: &str) -> Option<String> {
        Some(self.0.clone())
    }
}

/// Checks that `name` can be verified against a certificate.
pub(crate) fn valid_server_name(name: &str) -> bool {
    ServerName::try_from(name).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_credentials_are_recognised() {
        let url = RedisUrl::parse("rediss://herald:secret@redis:6380").expect("valid");
        assert!(url.tls && url.has_username && url.has_password);
        let url = RedisUrl::parse("redis-cluster://a:7000?node=b:7001").expect("valid");
        assert!(!url.tls && !url.has_username && !url.has_password);
        let url = RedisUrl::parse("redis://:secret@redis").expect("valid");
        assert!(!url.has_username && url.has_password);
        for bad in [
            "http://redis",
            "redis:",
            "rediss://",
            "redis-sentinel://a:1",
            "x",
        ] {
            assert_eq!(RedisUrl::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn redaction_hides_only_the_password() {
        for (url, shown) in [
            (
                "rediss://herald:secret@redis:6380/0",
                "rediss://herald:***@redis:6380/0",
            ),
            ("redis://:secret@redis:6379", "redis://:***@redis:6379"),
            ("redis://redis:6379", "redis://redis:6379"),
            (
                "rediss-cluster://u:secret@a:7000?node=b:7001",
                "rediss-cluster://u:***@a:7000?node=b:7001",
            ),
            ("redis://u:sec ret@@bad url", "redis://***@bad url"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_password_file_loses_one_trailing_newline() {
        let dir = std::env::temp_dir();
        for (text, password) in [
            ("p@ss\n", "p@ss"),
            ("p@ss\r\n", "p@ss"),
            ("p@ss\n\n", "p@ss\n"),
            ("p@ss", "p@ss"),
        ] {
            let path = dir.join(format!("herald-pw-{}", std::process::id()));
            std::fs::write(&path, text).expect("write");
            let read = read_password(&path.display().to_string()).expect("read");
            assert_eq!(read, password, "{text:?}");
            let _ = std::fs::remove_file(path);
        }
        let err = read_password("/nonexistent/herald-pw").expect_err("missing");
        assert!(err.to_string().contains("/nonexistent/herald-pw"), "{err}");
    }

    #[test]
    fn settings_replace_the_urls_credentials_and_tls() {
        let path = std::env::temp_dir().join(format!("herald-pw2-{}", std::process::id()));
        std::fs::write(&path, "from-file\n").expect("write");
        let config = RedisConfig {
            url: "redis://127.0.0.1:6379".into(),
            username: "herald".into(),
            password_file: path.display().to_string(),
            ..RedisConfig::default()
        };
        let built = client_config(&config).expect("config");
        assert_eq!(built.username.as_deref(), Some("herald"));
        assert_eq!(built.password.as_deref(), Some("from-file"));
        assert!(built.tls.is_none());
        let _ = std::fs::remove_file(path);

        let missing_ca = RedisConfig {
            url: "rediss://u:secret@127.0.0.1:6380".into(),
            tls_ca_file: "/nonexistent/ca.pem".into(),
            ..RedisConfig::default()
        };
        let err = client_config(&missing_ca).expect_err("no CA file");
        let text = err.to_string();
        assert!(
            text.contains("tls_ca_file") && text.contains("/nonexistent/ca.pem"),
            "{text}"
        );
        assert!(!format!("{err:?}").contains("secret"));
    }
}
