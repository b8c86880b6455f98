//! Object stores for tables given as URLs: `s3://` (and S3-compatible
//! servers), `gs://`, `az://` / `abfs://`, and `http(s)://`. Each store
//! takes the usual environment variables of its cloud (`AWS_*`,
//! `GOOGLE_*`, `AZURE_*`) and then the options of the project file's
//! `[storage]` section (object_store's keys: `endpoint`, `region`,
//! `access_key_id`, `allow_http`, ...), which win.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::execution::object_store::{DefaultObjectStoreRegistry, ObjectStoreRegistry};
use datafusion::object_store::ObjectStore;
use datafusion::prelude::SessionContext;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::{ClientConfigKey, ObjectStoreScheme};
use url::Url;

/// A store that could not be set up, in words for the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StorageProblem(pub String);

impl std::fmt::Display for StorageProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether segql sets up a store for `scheme` itself.
pub fn is_supported(scheme: &str) -> bool {
    matches!(
        scheme,
        "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" | "http" | "https"
    )
}

/// Applies `options` to a builder through its key type.
fn configure<B, K>(
    mut builder: B,
    options: &BTreeMap<String, String>,
    kind: &str,
    with: impl Fn(B, K, String) -> B,
) -> Result<B, StorageProblem>
where
    K: std::str::FromStr,
{
    for (key, value) in options {
        let parsed = key.to_ascii_lowercase().parse::<K>().map_err(|_| {
            StorageProblem(format!(
                "[storage] {key} is not an option of the {kind} object store; see object_store's \
                 configuration keys (for S3: endpoint, region, access_key_id, \
                 secret_access_key, session_token, allow_http, ...)"
            ))
        })?;
        builder = with(builder, parsed, value.clone());
    }
    Ok(builder)
}

/// The object store for `url`, from the environment and `options`.
pub fn store_for(
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<Arc<dyn ObjectStore>, StorageProblem> {
    let built = |e: object_store::Error| StorageProblem(format!("cannot set up its store: {e}"));
    let (scheme, _) = ObjectStoreScheme::parse(url)
        .map_err(|e| StorageProblem(format!("cannot tell its object store: {e}")))?;
    Ok(match scheme {
        ObjectStoreScheme::AmazonS3 => {
            let builder = AmazonS3Builder::from_env().with_url(url.as_str());
            let builder = configure(builder, options, "S3", |b, k: AmazonS3ConfigKey, v| {
                b.with_config(k, v)
            })?;
            Arc::new(builder.build().map_err(built)?)
        }
        ObjectStoreScheme::GoogleCloudStorage => {
            let builder = GoogleCloudStorageBuilder::from_env().with_url(url.as_str());
            let builder = configure(
                builder,
                options,
                "Google Cloud Storage",
                |b, k: GoogleConfigKey, v| b.with_config(k, v),
            )?;
            Arc::new(builder.build().map_err(built)?)
        }
        ObjectStoreScheme::MicrosoftAzure => {
            let builder = MicrosoftAzureBuilder::from_env().with_url(url.as_str());
            let builder = configure(builder, options, "Azure", |b, k: AzureConfigKey, v| {
                b.with_config(k, v)
            })?;
            Arc::new(builder.build().map_err(built)?)
        }
        ObjectStoreScheme::Http => {
            let base = &url[..url::Position::BeforePath];
            let builder = HttpBuilder::new().with_url(base);
            let builder = configure(builder, options, "HTTP", |b, k: ClientConfigKey, v| {
                b.with_config(k, v)
            })?;
            Arc::new(builder.build().map_err(built)?)
        }
        other => {
            return Err(StorageProblem(format!(
                "segql sets up no object store for {other:?} URLs"
            )));
        }
    })
}

/// Registers on `ctx` the store that serves `url` (its scheme and host).
pub fn register_store(
    ctx: &SessionContext,
    url: &Url,
    options: &BTreeMap<String, String>,
) -> Result<(), StorageProblem> {
    let store = store_for(url, options)?;
    ctx.register_object_store(&store_base(url)?, store);
    Ok(())
}

/// The part of `url` one store serves: its scheme and host.
pub(crate) fn store_base(url: &Url) -> Result<Url, StorageProblem> {
    Url::parse(&url[..url::Position::BeforePath])
        .map_err(|e| StorageProblem(format!("cannot read its host: {e}")))
}

/// The object stores of a cluster node (scheduler or executor), which has
/// no project file: a table URL's store is set up on first use from the
/// node's environment (`AWS_*`, `GOOGLE_*`, `AZURE_*`), then kept. Local
/// files and stores registered explicitly are served as DataFusion's
/// default registry serves them.
#[derive(Debug, Default)]
pub struct NodeStores {
    known: DefaultObjectStoreRegistry,
}

impl ObjectStoreRegistry for NodeStores {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.known.register_store(url, store)
    }

    fn deregister_store(&self, url: &Url) -> datafusion::common::Result<Arc<dyn ObjectStore>> {
        self.known.deregister_store(url)
    }

    fn get_store(&self, url: &Url) -> datafusion::common::Result<Arc<dyn ObjectStore>> {
        match self.known.get_store(url) {
            Ok(store) => return Ok(store),
            Err(e) if !is_supported(url.scheme()) => return Err(e),
            Err(_) => {}
        }
        let (store, base) = store_for(url, &BTreeMap::new())
            .and_then(|store| Ok((store, store_base(url)?)))
            .map_err(|e| {
                datafusion::common::DataFusionError::Execution(format!(
                    "this node cannot read {url}: {e}; give it the store's settings in its \
                     environment (for S3: AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, \
                     AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP)"
                ))
            })?;
        self.known.register_store(&base, Arc::clone(&store));
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn s3_takes_storage_options() {
        let url = Url::parse("s3://shop/raw/orders/").unwrap();
        let store = store_for(
            &url,
            &options(&[
                ("endpoint", "http://127.0.0.1:9000"),
                ("region", "us-east-1"),
                ("allow_http", "true"),
                ("access_key_id", "a"),
                ("secret_access_key", "b"),
            ]),
        );
        assert!(store.is_ok(), "{:?}", store.err());
        let err = store_for(&url, &options(&[("endpoit", "x")])).unwrap_err();
        assert!(
            err.0
                .starts_with("[storage] endpoit is not an option of the S3 object store"),
            "{err}"
        );
    }

    #[test]
    fn schemes() {
        for scheme in ["s3", "gs", "az", "abfss", "https"] {
            assert!(is_supported(scheme));
        }
        assert!(!is_supported("ftp"));
        let http = Url::parse("https://example.com/data/orders.parquet").unwrap();
        assert!(store_for(&http, &BTreeMap::new()).is_ok());
    }

    #[test]
    fn a_node_sets_up_stores_on_first_use() {
        let stores = NodeStores::default();
        let local = Url::parse("file:///tmp/orders.parquet").unwrap();
        assert!(stores.get_store(&local).is_ok());
        let http = Url::parse("https://example.com/data/orders.parquet").unwrap();
        let first = stores.get_store(&http).unwrap();
        let again = stores
            .get_store(&Url::parse("https://example.com/other.parquet").unwrap())
            .unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the store is kept");
        let err = stores
            .get_store(&Url::parse("ftp://example.com/x").unwrap())
            .unwrap_err();
        assert!(
            err.to_string().contains("No suitable object store"),
            "{err}"
        );
    }
}
