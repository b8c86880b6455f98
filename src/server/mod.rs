//! `segql serve`: the project over the PostgreSQL wire protocol, for psql,
//! BI tools and notebooks.
//!
//! Each connection gets its own project (session, memory pool of
//! `[server] query_memory_limit`, store view), opened at its first
//! statement, so one client's views, settings and memory do not touch
//! another's. SQL is answered by `datafusion-postgres` (with its
//! `pg_catalog`, so `\d` and BI tools can list tables and columns); segment
//! statements by segql ([`handler`]). Passwords are checked with
//! SCRAM-SHA-256 against the hashes of `[server.users]` ([`auth`]).

pub mod auth;
mod handler;

use std::fs::File;
use std::io::BufReader;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use datafusion_postgres::pgwire::api::ConnectionManager;
use datafusion_postgres::pgwire::api::auth::DefaultServerParameterProvider;
use datafusion_postgres::pgwire::api::auth::sasl::SASLAuthStartupHandler;
use datafusion_postgres::pgwire::api::auth::sasl::scram::ScramAuth;
use datafusion_postgres::pgwire::tokio::process_socket;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, ServerConfig as TlsConfig};

use crate::config::Config;
use crate::error::Error;
use crate::segment::AsOf;
use auth::{UserSource, Users};
use handler::{CancelAll, Check, Connection, Gate, Handlers, Shared, Trust, log};

/// The address `segql serve` listens on without `--listen` or `[server]
/// listen`.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:5432";

/// How to run the server, beyond the project file.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// `--listen`, which wins over `[server] listen`.
    pub listen: Option<String>,
    /// `--as-of`: every connection evaluates conditions on this day;
    /// `None`: on the day it connects.
    pub as_of: Option<AsOf>,
    /// `--wait`: segment changes wait for another writer.
    pub wait: bool,
}

/// Serves `config` until interrupted (Ctrl-C or SIGTERM). Prints the
/// address it listens on to standard error once it does.
pub async fn serve(config: Config, options: ServeOptions) -> Result<(), Error> {
    let listen = options
        .listen
        .clone()
        .or_else(|| config.server.listen.clone())
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let address: SocketAddr = listen.parse().map_err(|_| {
        Error::Server(format!(
            "`{listen}` is not an address to listen on; write it as IP:PORT, such as \
             127.0.0.1:5432 or 0.0.0.0:5432"
        ))
    })?;
    let users = Arc::new(Users::from_config(&config.server)?);
    if !users.any() && !address.ip().is_loopback() {
        return Err(Error::Server(format!(
            "listening on {address} without users would let anyone who can reach it in without \
             a password; add a user under [server.users.<name>] with a password hash from \
             `segql hash-password`, or listen on 127.0.0.1"
        )));
    }
    let tls = match (&config.server.tls_cert, &config.server.tls_key) {
        (Some(cert), Some(key)) => Some(tls_acceptor(cert, key)?),
        _ => None,
    };
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| Error::Server(format!("cannot listen on {address}: {e}")))?;
    let bound = listener.local_addr().unwrap_or(address);
    let max_connections = config.server.max_connections.unwrap_or_default();
    let limit = config
        .server
        .max_connections
        .map(|n| Arc::new(Semaphore::new(n)));
    let manager = Arc::new(ConnectionManager::new());
    let check_of = || match users.any() {
        true => {
            let mut scram = ScramAuth::new(Arc::new(UserSource(Arc::clone(&users))));
            scram.set_iterations(
                datafusion_postgres::pgwire::api::auth::sasl::scram::SCRAM_ITERATIONS,
            );
            Check::Password(
                SASLAuthStartupHandler::new(Arc::new(DefaultServerParameterProvider::default()))
                    .with_scram(scram)
                    .with_connection_manager(Arc::clone(&manager)),
            )
        }
        false => Check::Trust(Trust(Arc::clone(&manager))),
    };
    let require_tls = config.server.require_tls;
    let shared = Arc::new(Shared {
        config,
        as_of: options.as_of,
        wait: options.wait,
        users: Arc::clone(&users),
        cancels: Default::default(),
    });
    let cancel = Arc::new(CancelAll {
        shared: Arc::clone(&shared),
        manager: Arc::clone(&manager),
    });
    log(&format!(
        "listening on {bound} ({}, {})",
        if tls.is_some() { "TLS" } else { "no TLS" },
        if users.any() {
            "passwords required"
        } else {
            "no passwords: this machine only"
        }
    ));

    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let (socket, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    log(&format!("could not accept a connection: {e}"));
                    continue;
                }
            },
            () = &mut shutdown => {
                log("stopping");
                return Ok(());
            }
        };
        // Past max_connections the client is still spoken to, so that it
        // gets PostgreSQL's "too many clients" instead of a closed socket.
        let (permit, full) = match &limit {
            Some(semaphore) => match Arc::clone(semaphore).try_acquire_owned() {
                Ok(permit) => (Some(permit), None),
                Err(_) => {
                    log(&format!(
                        "turned away {peer}: {max_connections} connections are open \
                         ([server] max_connections)"
                    ));
                    (None, Some(max_connections))
                }
            },
            None => (None, None),
        };
        // A second handle on the socket lets a running statement notice that
        // its client left (the protocol code owns the first).
        let (socket, peer_handle) = match watched(socket) {
            Ok(pair) => pair,
            Err(e) => {
                log(&format!("could not set up the connection from {peer}: {e}"));
                continue;
            }
        };
        let handlers = Handlers {
            connection: Connection::new(Arc::clone(&shared), Some(peer_handle)),
            // The password exchange keeps its state: one per connection.
            startup: Arc::new(Gate {
                require_tls,
                full,
                check: check_of(),
            }),
            cancel: Arc::clone(&cancel),
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = process_socket(socket, tls, handlers).await {
                log(&format!("connection from {peer} ended: {e}"));
            }
        });
    }
}

/// `socket`, and a duplicate handle of it that only peeks.
fn watched(
    socket: tokio::net::TcpStream,
) -> std::io::Result<(tokio::net::TcpStream, std::net::TcpStream)> {
    let socket = socket.into_std()?;
    let peek = socket.try_clone()?;
    Ok((tokio::net::TcpStream::from_std(socket)?, peek))
}

/// Ctrl-C, or SIGTERM where there is one.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The TLS set-up from PEM files: the certificate chain and its key.
fn tls_acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor, Error> {
    let read = |path: &Path| {
        File::open(path).map(BufReader::new).map_err(|e| {
            Error::Server(format!(
                "cannot read the TLS file {}: {e}; check [server] tls_cert and tls_key",
                path.display()
            ))
        })
    };
    let certs = CertificateDer::pem_reader_iter(read(cert)?)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::Server(format!(
                "{} is not a PEM certificate chain: {e}",
                cert.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Error::Server(format!(
            "{} holds no certificate (PEM, -----BEGIN CERTIFICATE-----)",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_reader(read(key)?)
        .map_err(|e| Error::Server(format!("{} is not a PEM private key: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = TlsConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            Error::Server(format!(
                "the TLS certificate and key do not make a TLS set-up: {e}"
            ))
        })?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
