//! Running segql's plans on an Apache DataFusion Ballista cluster.
//!
//! `segql cluster scheduler` and `segql cluster executor` start the two
//! kinds of node with segql's functions registered and its codecs
//! ([`codec`]) installed; `--cluster df://HOST:PORT` (or `[cluster] url`)
//! makes a command's session send its queries to that scheduler.
//!
//! What a node must be able to reach: the source tables and the segment
//! store at the locations the client names them (a folder every node
//! mounts at the same path, or an object-store URL). Plans carry file
//! locations and the committed state they read, never a handle that
//! exists only in the client. Writes to the store stay with the client:
//! a refresh's commit is one atomic change made by one process.

pub mod codec;

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use ballista::prelude::{SessionConfigExt, SessionContextExt};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::utils::default_session_builder;
use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::SchedulerConfig;
use ballista_scheduler::scheduler_process::start_server;
use datafusion::execution::FunctionRegistry;
use datafusion::execution::SessionState;
use datafusion::execution::SessionStateBuilder;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::ScalarUDF;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::error::Error;
use crate::segment::average::AverageOfSums;
use crate::storage::NodeStores;
use codec::{SegqlLogicalCodec, SegqlPhysicalCodec};

/// Marks a session whose queries run on a cluster (set by [`connect`]).
#[derive(Debug)]
pub struct OnCluster {
    pub url: ClusterUrl,
}

/// Whether `ctx` sends its queries to a cluster.
pub fn on_cluster(ctx: &SessionContext) -> bool {
    ctx.state_ref()
        .read()
        .config()
        .get_extension::<OnCluster>()
        .is_some()
}

/// The scheduler's port when a URL names none (Ballista's default).
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// A scheduler's address: `df://HOST[:PORT]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterUrl {
    pub host: String,
    pub port: u16,
}

impl ClusterUrl {
    /// Reads `df://HOST[:PORT]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let how = "give the scheduler as df://HOST:PORT, e.g. df://127.0.0.1:50050";
        let Some(rest) = text.strip_prefix("df://") else {
            return Err(format!(
                "cluster URL `{text}` does not start with df://; {how}"
            ));
        };
        let rest = rest.trim_end_matches('/');
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => {
                let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    format!("cluster URL `{text}`: `{port}` is not a port; {how}")
                })?;
                (host, port)
            }
            None => (rest, DEFAULT_SCHEDULER_PORT),
        };
        if host.is_empty() || host.contains('/') {
            return Err(format!("cluster URL `{text}` names no host; {how}"));
        }
        Ok(Self {
            host: host.to_string(),
            port,
        })
    }
}

impl std::fmt::Display for ClusterUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "df://{}:{}", self.host, self.port)
    }
}

/// segql's functions that plans may name and that are not in
/// `segql-udfs`: the order state's average of sums (its type comes with
/// the plan; this entry only makes the name known) and the passes' UTC
/// day.
fn planner_functions() -> Vec<Arc<ScalarUDF>> {
    vec![
        Arc::new(ScalarUDF::new_from_impl(AverageOfSums::with_output(
            datafusion::arrow::datatypes::DataType::Float64,
        ))),
        Arc::new(ScalarUDF::new_from_impl(
            crate::segment::utc_day::UtcDay::default(),
        )),
    ]
}

/// A node's runtime: its object stores (one [`NodeStores`] per process, so
/// each store is set up once and its connections are reused by every
/// query), spill files in `temp` when given.
fn node_runtime(
    stores: &Arc<NodeStores>,
    temp: Option<&str>,
) -> datafusion::common::Result<Arc<RuntimeEnv>> {
    let builder = RuntimeEnvBuilder::new().with_object_store_registry(Arc::clone(stores) as _);
    let builder = match temp {
        Some(dir) => builder.with_temp_file_path(dir),
        None => builder,
    };
    builder.build_arc()
}

/// A session state for a scheduler: Ballista's, with segql's functions and
/// the node's object stores (it lists the files of the tables it plans).
fn scheduler_session(
    stores: &Arc<NodeStores>,
    config: SessionConfig,
) -> datafusion::common::Result<SessionState> {
    let state = default_session_builder(config)?;
    let mut state = SessionStateBuilder::new_from_existing(state)
        .with_runtime_env(node_runtime(stores, None)?)
        .build();
    segql_udfs::register_all(&mut state)?;
    for f in planner_functions() {
        state.register_udf(f)?;
    }
    Ok(state)
}

/// The functions an executor finds by name: DataFusion's, Ballista's and
/// segql's.
fn executor_registry() -> datafusion::common::Result<BallistaFunctionRegistry> {
    let mut registry = BallistaFunctionRegistry::default();
    let state = scheduler_session(&Arc::new(NodeStores::default()), SessionConfig::new())?;
    for (name, f) in state.scalar_functions() {
        registry
            .scalar_functions
            .insert(name.clone(), Arc::clone(f));
    }
    for (name, f) in state.aggregate_functions() {
        registry
            .aggregate_functions
            .insert(name.clone(), Arc::clone(f));
    }
    for (name, f) in state.window_functions() {
        registry
            .window_functions
            .insert(name.clone(), Arc::clone(f));
    }
    Ok(registry)
}

/// Resolves `HOST:PORT` to one socket address, or says what is wrong.
fn socket_address(text: &str, what: &str) -> Result<SocketAddr, Error> {
    text.to_socket_addrs()
        .ok()
        .and_then(|mut addresses| addresses.next())
        .ok_or_else(|| {
            Error::Cluster(format!(
                "{what}: `{text}` is not an address; give HOST:PORT, e.g. 127.0.0.1:50050"
            ))
        })
}

/// Sends a node's log (Ballista's and DataFusion's) to standard error at
/// the level `SEGQL_LOG` names (`error`, `warn`, `info`, `debug`,
/// `trace`); warnings and errors when it is unset.
fn start_node_log() -> Result<(), Error> {
    let level = match std::env::var("SEGQL_LOG") {
        Ok(text) => text
            .parse::<tracing_subscriber::filter::LevelFilter>()
            .map_err(|_| {
                Error::Cluster(format!(
                    "SEGQL_LOG={text} is not a log level; use error, warn, info, debug or trace"
                ))
            })?,
        Err(_) => tracing_subscriber::filter::LevelFilter::WARN,
    };
    // A second call in one process (tests) keeps the first logger.
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
    Ok(())
}

/// Runs a scheduler on `bind` until the process is stopped.
pub async fn run_scheduler(bind: &str) -> Result<(), Error> {
    start_node_log()?;
    let address = socket_address(bind, "--bind")?;
    let config = SchedulerConfig {
        bind_host: address.ip().to_string(),
        bind_port: address.port(),
        external_host: address.ip().to_string(),
        override_session_builder: Some({
            let stores = Arc::new(NodeStores::default());
            Arc::new(move |config| scheduler_session(&stores, config))
        }),
        override_logical_codec: Some(Arc::new(SegqlLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(SegqlPhysicalCodec::default())),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| Error::Cluster(format!("segql cluster scheduler: {e}")))?;
    eprintln!("segql scheduler listening on {address} (stop it with Ctrl-C)");
    start_server(cluster, address, Arc::new(config))
        .await
        .map_err(|e| Error::Cluster(format!("segql cluster scheduler on {address}: {e}")))
}

/// What `segql cluster executor` is told.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler, `HOST:PORT`.
    pub scheduler: String,
    /// Where this executor serves its results (`HOST:PORT`); the port
    /// after it serves the scheduler's calls.
    pub bind: String,
    /// How many tasks it runs at once.
    pub concurrent_tasks: Option<usize>,
    /// Where it keeps shuffle files.
    pub work_dir: Option<String>,
}

/// Runs an executor until the process is stopped.
pub async fn run_executor(options: &ExecutorOptions) -> Result<(), Error> {
    start_node_log()?;
    let address = socket_address(&options.bind, "--bind")?;
    let scheduler = socket_address(&options.scheduler, "--scheduler")?;
    let grpc_port = address.port().checked_add(1).ok_or_else(|| {
        Error::Cluster(format!(
            "--bind {}: the executor also needs the port after it; choose a lower port",
            options.bind
        ))
    })?;
    if let Some(dir) = &options.work_dir {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Cluster(format!("--work-dir {dir}: cannot create the folder: {e}"))
        })?;
    }
    let registry = executor_registry()?;
    let work_dir = options.work_dir.clone();
    let stores = Arc::new(NodeStores::default());
    let mut config = ExecutorProcessConfig {
        bind_host: address.ip().to_string(),
        external_host: Some(address.ip().to_string()),
        port: address.port(),
        grpc_port,
        scheduler_host: scheduler.ip().to_string(),
        scheduler_port: scheduler.port(),
        scheduler_connect_timeout_seconds: 10,
        work_dir: options.work_dir.clone(),
        override_function_registry: Some(Arc::new(registry)),
        override_logical_codec: Some(Arc::new(SegqlLogicalCodec::default())),
        override_physical_codec: Some(Arc::new(SegqlPhysicalCodec::default())),
        override_runtime_producer: Some(Arc::new(move |_: &SessionConfig| {
            node_runtime(&stores, work_dir.as_deref())
        })),
        print_thread_info: false,
        ..Default::default()
    };
    if let Some(n) = options.concurrent_tasks {
        if n == 0 {
            return Err(Error::Cluster(
                "--concurrent-tasks must be at least 1".to_string(),
            ));
        }
        config.vcores = n;
    }
    eprintln!(
        "segql executor on {address} (and port {grpc_port}), scheduler {scheduler} \
         (stop it with Ctrl-C)"
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| Error::Cluster(format!("segql cluster executor on {address}: {e}")))
}

/// `ctx` turned into a client of the scheduler at `url`: its settings and
/// tables stay, its queries run on the cluster. The scheduler must be
/// reachable now; a clear error says so otherwise.
pub async fn connect(url: &ClusterUrl, ctx: SessionContext) -> Result<SessionContext, Error> {
    let target = format!("{}:{}", url.host, url.port);
    let address = socket_address(&target, "--cluster")?;
    let reachable = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(address),
    )
    .await;
    match reachable {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return Err(Error::Cluster(format!(
                "cannot reach the cluster scheduler at {url}: {e}; start one with \
                 `segql cluster scheduler --bind {target}`, or run without --cluster"
            )));
        }
        Err(_) => {
            return Err(Error::Cluster(format!(
                "cannot reach the cluster scheduler at {url}: no answer in 5 s"
            )));
        }
    }
    let state = ctx.state();
    let config = state
        .config()
        .clone()
        .with_ballista_logical_extension_codec(Arc::new(SegqlLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(SegqlPhysicalCodec::default()))
        .with_extension(Arc::new(OnCluster { url: url.clone() }));
    let state = datafusion::execution::SessionStateBuilder::new_from_existing(state)
        .with_config(config)
        .build();
    let url = format!("df://{}:{}", url.host, url.port);
    SessionContext::remote_with_state(&url, state)
        .await
        .map_err(|e| Error::Cluster(format!("cannot use the cluster at {url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls() {
        assert_eq!(
            ClusterUrl::parse("df://127.0.0.1:50060").unwrap(),
            ClusterUrl {
                host: "127.0.0.1".into(),
                port: 50060
            }
        );
        assert_eq!(
            ClusterUrl::parse("df://scheduler/").unwrap().to_string(),
            "df://scheduler:50050"
        );
        assert_eq!(
            ClusterUrl::parse("http://x:1").unwrap_err(),
            "cluster URL `http://x:1` does not start with df://; give the scheduler as \
             df://HOST:PORT, e.g. df://127.0.0.1:50050"
        );
        assert!(
            ClusterUrl::parse("df://x:http")
                .unwrap_err()
                .starts_with("cluster URL `df://x:http`: `http` is not a port")
        );
        assert!(
            ClusterUrl::parse("df://:50050")
                .unwrap_err()
                .starts_with("cluster URL `df://:50050` names no host")
        );
    }
}
