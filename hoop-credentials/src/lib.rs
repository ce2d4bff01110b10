//! The credential store: database secrets hoop holds so that workloads
//! hold none.
//!
//! # Life cycle
//! parse (`serde_yaml_ng`, [`spec`]) → check every key and entry, reporting
//! all errors with file:line:column and key path, reading every secret once
//! ([`compile`]) → an immutable [`CredentialSet`] → shared through a
//! [`CredentialHandle`] (an `ArcSwap`), which the configuration reload swaps
//! together with the policy (a reload that fails keeps both).
//!
//! # Matching
//! A driver asks once per session, after the protocol's start-up message
//! ([`hoop_core::CredentialSource::credential_for`]). Entries are tried in
//! file order and the **first** whose destination matches (the original
//! destination's host and port, the database asked for, and the user asked
//! for when the entry names one) and whose `when:` selects the session
//! (the policy's selectors: workload, database, user, application name,
//! and Kubernetes identity where the policy has it) is injected. None
//! matching, the session authenticates itself, byte for byte as without
//! hoop.
//!
//! # Secrets
//! See [`secret`]: files are re-read when they change (so a rotated secret
//! is used from the next session) and refused when group or others may
//! read them; nothing here prints a secret, its file or its variable.

#![forbid(unsafe_code)]

mod compile;
pub mod destination;
pub mod secret;
pub mod spec;

use std::sync::Arc;

use arc_swap::ArcSwap;
use tracing::warn;

pub use compile::compile_into;
use hoop_config::{Diagnostic, Diagnostics, KeyPath, SourceMap};
use hoop_core::{
    ClientAuth, CredentialFailure, CredentialSource, CredentialUnavailable, InjectedCredential,
    SessionIdentity,
};
use hoop_policy::Selector;

use destination::Destination;
use secret::SecretSource;

/// One compiled `credentials.entries[N]`.
#[derive(Debug)]
pub struct Entry {
    /// Its name.
    pub name: String,
    /// Which workloads it is for.
    pub selector: Selector,
    /// Which connections it is for.
    pub destination: Destination,
    /// The role hoop logs in as.
    pub role: String,
    /// Where its secret comes from.
    pub secret: SecretSource,
    /// Whether the secret may go in cleartext over an upstream leg without TLS.
    pub allow_cleartext_without_tls: bool,
}

impl Entry {
    /// Whether this entry is for `session`.
    pub fn matches(&self, session: &SessionIdentity) -> bool {
        session.original_destination.is_some_and(|original| {
            self.destination.matches(
                original,
                session.database.as_deref(),
                session.user.as_deref(),
            )
        }) && self.selector.matches(session)
    }

    /// The credential, with the secret as it is now.
    fn credential(
        &self,
        client_auth: ClientAuth,
    ) -> Result<InjectedCredential, CredentialUnavailable> {
        let secret = self.secret.current().map_err(|e| CredentialUnavailable {
            entry: self.name.clone(),
            problem: format!("the secret cannot be used: {e}"),
        })?;
        Ok(InjectedCredential {
            entry: self.name.clone(),
            role: self.role.clone(),
            database: self.destination.database.clone(),
            secret,
            client_auth,
            allow_cleartext_without_tls: self.allow_cleartext_without_tls,
        })
    }
}

/// The compiled `credentials:` section. Immutable; its secret files are
/// re-read as they change.
#[derive(Debug, Default)]
pub struct CredentialSet {
    /// `credentials.client_auth`.
    pub client_auth: ClientAuth,
    /// The entries, in file order.
    pub entries: Vec<Entry>,
}

impl CredentialSet {
    /// The first entry for `session`, if any.
    pub fn entry_for(&self, session: &SessionIdentity) -> Option<&Entry> {
        self.entries.iter().find(|e| e.matches(session))
    }

    /// The entry named `name`.
    pub fn entry_named(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// Whether there is nothing to inject.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Compiles a `credentials:` value on its own (the root of `source`'s
/// document is the whole config file, so paths start at `credentials`).
pub fn compile(
    value: &serde_yaml_ng::Value,
    source: &SourceMap,
) -> Result<(CredentialSet, Vec<Diagnostic>), Vec<Diagnostic>> {
    let mut diags = Diagnostics::new(source);
    let set = compile_into(value, &KeyPath::root().key("credentials"), &mut diags);
    let found = diags.into_vec();
    match set {
        Some(set) => Ok((set, found)),
        None => Err(found),
    }
}

/// The live credentials. Clones share them; a reload swaps them atomically.
#[derive(Clone, Default)]
pub struct CredentialHandle {
    current: Arc<ArcSwap<CredentialSet>>,
}

impl CredentialHandle {
    /// A handle serving `set`.
    pub fn new(set: CredentialSet) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(set)),
        }
    }

    /// The current set; it stays valid however long it is held.
    pub fn snapshot(&self) -> Arc<CredentialSet> {
        self.current.load_full()
    }

    /// Replaces the set (sessions already logged in are not affected).
    pub fn store(&self, set: CredentialSet) {
        self.current.store(Arc::new(set));
    }
}

impl std::fmt::Debug for CredentialHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialHandle")
            .field("entries", &self.current.load().entries.len())
            .finish_non_exhaustive()
    }
}

impl CredentialSource for CredentialHandle {
    fn credential_for(
        &self,
        session: &SessionIdentity,
    ) -> Result<Option<InjectedCredential>, CredentialUnavailable> {
        let set = self.current.load();
        let Some(entry) = set.entry_for(session) else {
            return Ok(None);
        };
        match entry.credential(set.client_auth) {
            Ok(credential) => Ok(Some(credential)),
            Err(e) => {
                CredentialFailure::SecretUnavailable.count();
                warn!(session = %session, credential = %entry.name, error = %e, "credential entry matched, but its secret cannot be used; the session is refused");
                Err(e)
            }
        }
    }

    fn credential_named(&self, entry: &str) -> Option<InjectedCredential> {
        let set = self.current.load();
        set.entry_named(entry)?.credential(set.client_auth).ok()
    }
}
