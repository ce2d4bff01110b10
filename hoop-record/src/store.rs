//! Recordings in object storage (`recording.store`), through the
//! `object_store` crate: S3 (`s3://`), Google Cloud Storage (`gs://`),
//! Azure Blob Storage (`az://`) and a local directory (`file://`).
//!
//! **Layout.** A recording `ID` is stored as its byte ranges, one object per
//! shipped segment: `<prefix>/<ID>/<offset>.seg`, the offset (20 decimal
//! digits, so names sort by it) being where the segment starts in the
//! recording. Concatenated in order, the segments are the recording file
//! byte for byte, so the hash chain and the HMAC trailer span segments and
//! `verify` proves the whole session, exactly as for a local file. A segment
//! shipped twice (after a crash) has the same name and the same bytes.
//!
//! **Reading** concatenates the segments; a missing, extra or altered
//! segment breaks the chain and `verify` reports the recording tampered.
//!
//! **Credentials** come from the standard environment and instance sources
//! (`AWS_*`, `GOOGLE_*`, `AZURE_*`, instance metadata), never from the URL:
//! a URL with a user, password or query string is refused.

use std::{
    collections::BTreeMap,
    path::Path as FsPath,
    sync::{Arc, OnceLock},
    time::{Duration, SystemTime},
};

use futures::TryStreamExt as _;
use object_store::{ObjectStore, PutPayload, RetryConfig, path::Path};
use prometheus::{IntCounter, IntGauge};

pub(crate) mod ship;

/// Why the store could not be opened, written or read.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `recording.store` is not a URL hoop can use.
    #[error("recording.store {url:?}: {reason}")]
    Url {
        /// The URL as configured (without anything secret: such URLs are refused).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL carries a user, password or query string.
    #[error(
        "recording.store: the URL must not carry credentials or options (user, password or query string); \
         set them in the standard environment (AWS_ACCESS_KEY_ID, GOOGLE_APPLICATION_CREDENTIALS, AZURE_STORAGE_ACCOUNT_KEY, …) or use instance credentials"
    )]
    InlineSecret,
    /// The client for the store could not be built (bad options in the environment).
    #[error("recording.store {url}: {source}")]
    Build {
        /// The store URL.
        url: String,
        /// The client's error.
        source: object_store::Error,
    },
    /// A request to the store failed.
    #[error("recording store {url}: {source}")]
    Request {
        /// The store URL.
        url: String,
        /// The client's error.
        source: object_store::Error,
    },
    /// No recording with that id (or unique session id) is in the store.
    #[error("no recording {id} in {url}")]
    NotFound {
        /// What was asked for.
        id: String,
        /// The store URL.
        url: String,
    },
    /// A recording read from the store could not be written to a local file.
    #[error("cannot write {path}: {source}")]
    Local {
        /// The local file.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// One recording as stored: its id and its segments' sizes and times.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObjects {
    /// The recording id (file stem).
    pub id: String,
    /// Segments by start offset: (object, bytes).
    pub segments: BTreeMap<u64, (Path, u64)>,
    /// When its latest segment was written.
    pub modified: SystemTime,
}

impl StoredObjects {
    /// Total bytes over all segments.
    pub fn bytes(&self) -> u64 {
        self.segments.values().map(|(_, b)| b).sum()
    }

    /// Where the next segment starts: the end of the contiguous run from 0.
    pub fn contiguous_end(&self) -> u64 {
        let mut end = 0;
        for (offset, (_, bytes)) in &self.segments {
            if *offset != end {
                break;
            }
            end += bytes;
        }
        end
    }
}

/// An object store holding recordings under a prefix.
#[derive(Clone)]
pub struct RecordingStore {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

impl std::fmt::Debug for RecordingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RecordingStore({})", self.url)
    }
}

/// Requests are retried briefly: a store that is down is the spool's
/// business (it keeps the data and the next pass tries again), and a long
/// retry would only delay noticing that the store is back.
fn retry() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    }
}

impl RecordingStore {
    /// Opens `url`: `s3://bucket/prefix`, `gs://bucket/prefix`,
    /// `az://container/prefix` or `file:///dir`. Credentials and endpoints
    /// come from the environment (`AmazonS3Builder::from_env` and its GCS
    /// and Azure counterparts). Nothing is contacted yet.
    pub fn open(url: &str) -> Result<RecordingStore, StoreError> {
        let bad = |reason: &str| StoreError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let parsed = url::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        if !parsed.username().is_empty()
            || parsed.password().is_some()
            || parsed.query().is_some()
            || parsed.fragment().is_some()
        {
            return Err(StoreError::InlineSecret);
        }
        let build = |source| StoreError::Build {
            url: url.to_owned(),
            source,
        };
        let prefix_of = |parsed: &url::Url| {
            Path::from_url_path(parsed.path()).map_err(|e| bad(&format!("bad prefix: {e}")))
        };
        let (store, prefix): (Arc<dyn ObjectStore>, Path) = match parsed.scheme() {
            "s3" | "s3a" => (
                Arc::new(
                    object_store::aws::AmazonS3Builder::from_env()
                        .with_url(url)
                        .with_retry(retry())
                        .build()
                        .map_err(build)?,
                ),
                prefix_of(&parsed)?,
            ),
            "gs" => (
                Arc::new(
                    object_store::gcp::GoogleCloudStorageBuilder::from_env()
                        .with_url(url)
                        .with_retry(retry())
                        .build()
                        .map_err(build)?,
                ),
                prefix_of(&parsed)?,
            ),
            "az" | "abfs" | "abfss" | "azure" => (
                Arc::new(
                    object_store::azure::MicrosoftAzureBuilder::from_env()
                        .with_url(url)
                        .with_retry(retry())
                        .build()
                        .map_err(build)?,
                ),
                prefix_of(&parsed)?,
            ),
            "file" => {
                if parsed.host_str().is_some_and(|h| !h.is_empty()) {
                    return Err(bad("a file:// URL names a local path: file:///dir"));
                }
                let dir = parsed
                    .to_file_path()
                    .map_err(|()| bad("not an absolute path"))?;
                std::fs::create_dir_all(&dir).map_err(|e| bad(&e.to_string()))?;
                (
                    Arc::new(
                        object_store::local::LocalFileSystem::new_with_prefix(&dir)
                            .map_err(build)?,
                    ),
                    Path::default(),
                )
            }
            other => {
                return Err(bad(&format!(
                    "unsupported scheme {other}:// (supported: s3://, gs://, az://, file://)"
                )));
            }
        };
        Ok(RecordingStore {
            store,
            prefix,
            url: url.to_owned(),
        })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn request(&self, source: object_store::Error) -> StoreError {
        StoreError::Request {
            url: self.url.clone(),
            source,
        }
    }

    fn recording_prefix(&self, id: &str) -> Path {
        self.prefix.child(id)
    }

    /// Stores the segment of recording `id` that starts at `offset`.
    pub async fn put_segment(
        &self,
        id: &str,
        offset: u64,
        bytes: Vec<u8>,
    ) -> Result<(), StoreError> {
        let location = self.recording_prefix(id).child(format!("{offset:020}.seg"));
        self.store
            .put(&location, PutPayload::from(bytes))
            .await
            .map_err(|e| self.request(e))?;
        Ok(())
    }

    /// Every recording in the store, by id.
    pub async fn list(&self) -> Result<BTreeMap<String, StoredObjects>, StoreError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let objects: Vec<_> = self
            .store
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| self.request(e))?;
        let mut recordings = BTreeMap::new();
        for meta in objects {
            let Some((id, offset)) = self.parse_location(&meta.location) else {
                continue;
            };
            let entry = recordings
                .entry(id.clone())
                .or_insert_with(|| StoredObjects {
                    id,
                    segments: BTreeMap::new(),
                    modified: SystemTime::UNIX_EPOCH,
                });
            let modified = SystemTime::from(meta.last_modified);
            entry.modified = entry.modified.max(modified);
            entry
                .segments
                .insert(offset, (meta.location.clone(), meta.size));
        }
        Ok(recordings)
    }

    /// The segments of one recording (empty when there are none).
    pub async fn segments(&self, id: &str) -> Result<StoredObjects, StoreError> {
        let prefix = self.recording_prefix(id);
        let objects: Vec<_> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.request(e))?;
        let mut stored = StoredObjects {
            id: id.to_owned(),
            segments: BTreeMap::new(),
            modified: SystemTime::UNIX_EPOCH,
        };
        for meta in objects {
            if let Some((found, offset)) = self.parse_location(&meta.location)
                && found == id
            {
                stored.modified = stored.modified.max(SystemTime::from(meta.last_modified));
                stored
                    .segments
                    .insert(offset, (meta.location.clone(), meta.size));
            }
        }
        Ok(stored)
    }

    /// `<prefix>/<id>/<offset>.seg` → (id, offset).
    fn parse_location(&self, location: &Path) -> Option<(String, u64)> {
        let parts: Vec<_> = location.prefix_match(&self.prefix)?.collect();
        let [id, segment] = parts.as_slice() else {
            return None;
        };
        let offset = segment.as_ref().strip_suffix(".seg")?.parse().ok()?;
        Some((id.as_ref().to_owned(), offset))
    }

    /// The recording's bytes: its segments concatenated by offset. A gap or
    /// an overlap is kept as it is (and breaks the chain when verified).
    pub async fn read(&self, stored: &StoredObjects) -> Result<Vec<u8>, StoreError> {
        let mut bytes = Vec::with_capacity(stored.bytes() as usize);
        for (location, _) in stored.segments.values() {
            let data = self
                .store
                .get(location)
                .await
                .map_err(|e| self.request(e))?
                .bytes()
                .await
                .map_err(|e| self.request(e))?;
            bytes.extend_from_slice(&data);
        }
        Ok(bytes)
    }

    /// Deletes every segment of a recording.
    pub async fn delete(&self, stored: &StoredObjects) -> Result<(), StoreError> {
        for (location, _) in stored.segments.values() {
            match self.store.delete(location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.request(e)),
            }
        }
        Ok(())
    }

    /// Writes the recordings whose id is in `ids` (all when `ids` is empty;
    /// an id may also be a unique session id, as locally) into `dir` as
    /// `<id>.jsonl` files, for the local tools to read.
    pub async fn download(&self, dir: &FsPath, ids: &[String]) -> Result<(), StoreError> {
        let all = self.list().await?;
        let mut chosen: Vec<&StoredObjects> = Vec::new();
        if ids.is_empty() {
            chosen.extend(all.values());
        } else {
            for id in ids {
                if let Some(found) = all.get(id) {
                    chosen.push(found);
                    continue;
                }
                // A session id: recording ids end with `-<session id>`.
                let suffix = format!("-{id}");
                let matches: Vec<_> = all.values().filter(|s| s.id.ends_with(&suffix)).collect();
                match matches.as_slice() {
                    [one] => chosen.push(one),
                    _ => {
                        return Err(StoreError::NotFound {
                            id: id.clone(),
                            url: self.url.clone(),
                        });
                    }
                }
            }
        }
        for stored in chosen {
            let bytes = self.read(stored).await?;
            let path = dir.join(format!("{}.{}", stored.id, crate::FILE_EXTENSION));
            std::fs::write(&path, bytes).map_err(|source| StoreError::Local {
                path: path.clone(),
                source,
            })?;
            let file = std::fs::File::options()
                .write(true)
                .open(&path)
                .map_err(|source| StoreError::Local {
                    path: path.clone(),
                    source,
                })?;
            let _ = file.set_modified(stored.modified);
        }
        Ok(())
    }

    /// [`download`](Self::download) from synchronous code (the CLI): runs it
    /// on a runtime of its own.
    pub fn download_blocking(&self, dir: &FsPath, ids: &[String]) -> Result<(), StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| StoreError::Local {
                path: dir.to_path_buf(),
                source,
            })?;
        runtime.block_on(self.download(dir, ids))
    }
}

/// A private local directory holding recordings read from a store, for the
/// `hoop recordings` tools; removed when dropped.
#[derive(Debug)]
pub struct LocalCopy {
    dir: std::path::PathBuf,
}

impl LocalCopy {
    /// Downloads the recordings `ids` (all when empty) of `store` into a new
    /// directory under the system's temporary directory.
    pub fn download(store: &RecordingStore, ids: &[String]) -> Result<LocalCopy, StoreError> {
        use std::os::unix::fs::DirBuilderExt as _;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let dir =
            std::env::temp_dir().join(format!("hoop-recordings-{}-{nanos}", std::process::id()));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StoreError::Local {
                path: dir.clone(),
                source,
            })?;
        let copy = LocalCopy { dir };
        store.download_blocking(&copy.dir, ids)?;
        Ok(copy)
    }

    /// The directory.
    pub fn path(&self) -> &FsPath {
        &self.dir
    }
}

impl Drop for LocalCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `hoop_recording_ship*` and `hoop_recording_spool*` metrics.
pub struct ShipMetrics {
    /// `hoop_recording_shipped_bytes_total`: recording bytes written to the store.
    pub shipped_bytes_total: IntCounter,
    /// `hoop_recording_ship_failures_total`: store requests that failed.
    pub failures_total: IntCounter,
    /// `hoop_recording_ship_lag_seconds`: how long ago the spool was last fully shipped.
    pub lag_seconds: IntGauge,
    /// `hoop_recording_spool_bytes`: spooled bytes not yet in the store.
    pub spool_bytes: IntGauge,
}

/// The process's shipping metrics, registered on first use.
pub fn ship_metrics() -> &'static ShipMetrics {
    static METRICS: OnceLock<ShipMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        let shipped_bytes_total = IntCounter::new(
            "hoop_recording_shipped_bytes_total",
            "Recording bytes shipped to recording.store.",
        )
        .expect("valid metric");
        let failures_total = IntCounter::new(
            "hoop_recording_ship_failures_total",
            "Requests to recording.store that failed (the data stays spooled and is retried).",
        )
        .expect("valid metric");
        let lag_seconds = IntGauge::new(
            "hoop_recording_ship_lag_seconds",
            "Seconds since everything spooled was last in recording.store.",
        )
        .expect("valid metric");
        let spool_bytes = IntGauge::new(
            "hoop_recording_spool_bytes",
            "Recording bytes spooled locally and not yet shipped.",
        )
        .expect("valid metric");
        let registry = &hoop_core::metrics::metrics().registry;
        for c in [
            Box::new(shipped_bytes_total.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(failures_total.clone()),
            Box::new(lag_seconds.clone()),
            Box::new(spool_bytes.clone()),
        ] {
            registry.register(c).expect("metric registered once");
        }
        ShipMetrics {
            shipped_bytes_total,
            failures_total,
            lag_seconds,
            spool_bytes,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_secrets_or_unknown_schemes_are_refused() {
        for url in [
            "s3://AKIA:secret@bucket/prefix",
            "s3://bucket/prefix?access_key_id=AKIA",
            "s3://user@bucket/x",
        ] {
            assert!(
                matches!(RecordingStore::open(url), Err(StoreError::InlineSecret)),
                "{url}"
            );
        }
        let err = RecordingStore::open("ftp://host/x").expect_err("unsupported");
        assert!(
            err.to_string().contains("unsupported scheme ftp://"),
            "{err}"
        );
        assert!(RecordingStore::open("not a url").is_err());
    }

    #[tokio::test]
    async fn segments_concatenate_in_offset_order_and_list_by_recording() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("file://{}", dir.path().join("store").display());
        let store = RecordingStore::open(&url).expect("opens");
        // Shipped out of order; 10 sorts after 9 numerically, not by text.
        store
            .put_segment("r1", 10, b"third\n".to_vec())
            .await
            .expect("put");
        store
            .put_segment("r1", 0, b"first\n".to_vec())
            .await
            .expect("put");
        store
            .put_segment("r1", 6, b"sec\n".to_vec())
            .await
            .expect("put");
        store
            .put_segment("r2", 0, b"other\n".to_vec())
            .await
            .expect("put");
        let all = store.list().await.expect("list");
        assert_eq!(all.keys().collect::<Vec<_>>(), ["r1", "r2"]);
        let r1 = &all["r1"];
        assert_eq!(r1.contiguous_end(), 16);
        assert_eq!(store.read(r1).await.expect("read"), b"first\nsec\nthird\n");
        assert_eq!(store.segments("r1").await.expect("segments"), *r1);
        assert_eq!(store.segments("nope").await.expect("none").bytes(), 0);
        store.delete(r1).await.expect("delete");
        assert_eq!(store.list().await.expect("list").len(), 1);
    }
}
