//! `credentials:` YAML → [`CredentialSet`]: shape checks, then every
//! semantic check, all errors reported at once with their key paths.
//!
//! # Errors (the file is rejected)
//! - unknown keys anywhere (an inline `password:` among them: secrets are
//!   never inline), values of the wrong type, an unknown `client_auth`;
//! - an entry without a name, or with a name used before;
//! - an empty `role`, `destination.database` or `destination.user`; a
//!   `destination.host` that is neither an address nor a host name; port 0;
//! - neither or both of `password_file` and `password_env`; a
//!   `password_file` that is not an absolute path, cannot be read, is not
//!   a regular file, or is readable or writable by group or others; a
//!   `password_env` that is not a variable name, or is unset; an empty
//!   secret;
//! - a `when:` the policy would reject (the same selectors and checks).
//!
//! # Warnings (the file is accepted)
//! - `allow_cleartext_without_tls: true` (the secret may cross the network
//!   in the clear);
//! - an entry without `when:` (every governed workload gets it);
//! - an entry that an earlier, unconditional entry for the same
//!   destination always matches first;
//! - a host name that does not resolve now.
//!
//! No message ever quotes `password_file`, `password_env` or a secret.

use std::{cell::RefCell, collections::HashMap, path::PathBuf};

use serde_yaml_ng::Value;

use hoop_config::{
    KeyPath,
    checked::{NestedCheck, deserialize_checked},
    diagnostic::{At, Diagnostics, Severity},
};
use hoop_policy::compile_when;

use super::{
    CredentialSet, Entry,
    destination::{Destination, Host, is_host_name},
    secret::SecretSource,
    spec::{CredentialsSpec, DestinationSpec, EntrySpec},
};

/// Compiles a `credentials:` value found at `path`, recording every
/// finding in `diags`. `None` when any error was found in this section.
pub fn compile_into(
    value: &Value,
    path: &KeyPath,
    diags: &mut Diagnostics<'_>,
) -> Option<CredentialSet> {
    let errors_before = diags.error_count();
    let items = RefCell::new(Vec::new());
    let check_entries = |v: &Value, p: &KeyPath, d: &mut Diagnostics<'_>| {
        *items.borrow_mut() = entries(v, p, d);
    };
    let spec =
        deserialize_checked::<CredentialsSpec>(value, path, diags, &[("entries", &check_entries)])
            .unwrap_or_default();
    let mut names: HashMap<String, KeyPath> = HashMap::new();
    let mut compiled: Vec<(KeyPath, bool, Entry)> = Vec::new();
    for (item_path, spec) in items.into_inner() {
        let before = diags.error_count();
        let name = spec.name.trim();
        if name.is_empty() || spec.name.chars().any(char::is_control) {
            diags.error(
                &item_path.key("name"),
                "an entry needs a name (no control characters)",
                Some("errors, logs, metrics and recordings name the entry".to_owned()),
            );
        } else if let Some(first) = names.get(name) {
            diags.error(
                &item_path.key("name"),
                format!("entry `{name}` is defined twice (first at {first})"),
                None,
            );
        } else {
            names.insert(name.to_owned(), item_path.clone());
        }
        let selector = compile_when(&spec.when, &item_path, diags);
        let unconditional = spec.when.is_null();
        if unconditional {
            diags.warning(
                &item_path.key("name"),
                format!(
                    "entry `{name}` has no `when:`: every governed workload that connects to its destination is logged in as `{}`",
                    spec.role
                ),
                Some("select the workloads with `when: {workload: [...]}`".to_owned()),
            );
        }
        check_name(&spec.role, &item_path.key("role"), "role", diags);
        let destination = destination(&spec.destination, &item_path.key("destination"), diags);
        let secret = secret(&spec, &item_path, diags);
        if spec.allow_cleartext_without_tls {
            diags.warning(
                &item_path.key("allow_cleartext_without_tls"),
                "the secret may be sent in cleartext over an upstream leg without TLS",
                Some(
                    "prefer tls.upstream: require (or verify-full), or a server that asks for \
                     scram-sha-256"
                        .to_owned(),
                ),
            );
        }
        if diags.error_count() > before {
            continue;
        }
        let (Some(selector), Some(destination), Some(secret)) = (selector, destination, secret)
        else {
            continue;
        };
        compiled.push((
            item_path,
            unconditional,
            Entry {
                name: name.to_owned(),
                selector,
                destination,
                role: spec.role,
                secret,
                allow_cleartext_without_tls: spec.allow_cleartext_without_tls,
            },
        ));
    }
    shadowing(&compiled, diags);
    if diags.error_count() > errors_before {
        return None;
    }
    Some(CredentialSet {
        client_auth: spec.client_auth,
        entries: compiled.into_iter().map(|(_, _, e)| e).collect(),
    })
}

/// The entries that parsed, each with its path; every bad one is reported.
fn entries(
    value: &Value,
    path: &KeyPath,
    diags: &mut Diagnostics<'_>,
) -> Vec<(KeyPath, EntrySpec)> {
    fn destination(v: &Value, p: &KeyPath, d: &mut Diagnostics<'_>) {
        let _ = deserialize_checked::<DestinationSpec>(v, p, d, &[]);
    }
    /// Checked by [`secret`], which never quotes the value.
    fn unquoted(_: &Value, _: &KeyPath, _: &mut Diagnostics<'_>) {}
    let destination: NestedCheck<'_> = &destination;
    let unquoted: NestedCheck<'_> = &unquoted;
    match value {
        Value::Null => Vec::new(),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| {
                let item_path = path.index(i);
                deserialize_checked::<EntrySpec>(
                    item,
                    &item_path,
                    diags,
                    &[
                        ("destination", destination),
                        ("password_file", unquoted),
                        ("password_env", unquoted),
                    ],
                )
                .map(|spec| (item_path, spec))
            })
            .collect(),
        _ => {
            diags.error(
                path,
                "expected a list",
                Some("write one credential per `- ` item".to_owned()),
            );
            Vec::new()
        }
    }
}

/// A role, database or user name: not empty, and no NUL (which no
/// start-up message can carry).
fn check_name(value: &str, path: &KeyPath, what: &str, diags: &mut Diagnostics<'_>) -> bool {
    if value.trim().is_empty() || value.contains('\0') {
        diags.error(
            path,
            format!("the {what} name is empty or holds a NUL"),
            None,
        );
        return false;
    }
    true
}

fn destination(
    spec: &DestinationSpec,
    path: &KeyPath,
    diags: &mut Diagnostics<'_>,
) -> Option<Destination> {
    let mut ok = check_name(&spec.database, &path.key("database"), "database", diags);
    if let Some(user) = &spec.user {
        ok &= check_name(user, &path.key("user"), "user", diags);
    }
    if spec.port == 0 {
        diags.error(&path.key("port"), "port 0 is no server's port", None);
        ok = false;
    }
    let host_path = path.key("host");
    let host = if spec.host.parse::<std::net::IpAddr>().is_ok() || is_host_name(&spec.host) {
        match Host::new(&spec.host) {
            Ok(host) => Some(host),
            Err((host, e)) => {
                diags.warning(
                    &host_path,
                    format!("`{}` does not resolve now ({e})", spec.host),
                    Some(
                        "hoop looks it up again every 30 s; until it resolves, connections pass \
                         through and authenticate themselves"
                            .to_owned(),
                    ),
                );
                Some(host)
            }
        }
    } else {
        diags.error(
            &host_path,
            format!("`{}` is neither an IP address nor a host name", spec.host),
            Some("write the server's address as clients dial it, without a port".to_owned()),
        );
        None
    };
    let host = host?;
    ok.then(|| Destination {
        host,
        port: spec.port,
        database: spec.database.clone(),
        user: spec.user.clone(),
    })
}

/// Exactly one source, checked and read now. Never quotes the value: a
/// secret pasted into either key must not be printed back.
fn secret(spec: &EntrySpec, item: &KeyPath, diags: &mut Diagnostics<'_>) -> Option<SecretSource> {
    let file_path = item.key("password_file");
    let env_path = item.key("password_env");
    match (spec.password_file.is_null(), spec.password_env.is_null()) {
        (true, true) => {
            diags.push(
                Severity::Error,
                item,
                At::Key,
                "the entry has no secret",
                Some(
                    "set password_file (a file only hoop can read) or password_env; the secret \
                     itself never goes in this file"
                        .to_owned(),
                ),
            );
            None
        }
        (false, false) => {
            diags.error(
                &env_path,
                "set password_file or password_env, not both",
                None,
            );
            None
        }
        (false, true) => {
            let file = match &spec.password_file {
                Value::String(file) if file.starts_with('/') => PathBuf::from(file),
                _ => {
                    diags.error(
                        &file_path,
                        "password_file must be an absolute path",
                        Some("e.g. /etc/hoop/secrets/reporting (mode 0600)".to_owned()),
                    );
                    return None;
                }
            };
            SecretSource::file(file)
                .map_err(|e| diags.error(&file_path, format!("the entry's secret: {e}"), None))
                .ok()
        }
        (true, false) => {
            let var = match &spec.password_env {
                Value::String(var) if is_variable_name(var) => var,
                _ => {
                    diags.error(
                        &env_path,
                        "password_env must be an environment variable's name (letters, digits, `_`)",
                        None,
                    );
                    return None;
                }
            };
            SecretSource::env(var)
                .map_err(|e| diags.error(&env_path, format!("the entry's secret: {e}"), None))
                .ok()
        }
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Warns about entries an earlier unconditional entry for the same
/// destination (any user, or theirs) always matches first.
fn shadowing(entries: &[(KeyPath, bool, Entry)], diags: &mut Diagnostics<'_>) {
    for (i, (path, _, later)) in entries.iter().enumerate() {
        let earlier = entries[..i].iter().find(|(_, unconditional, e)| {
            *unconditional
                && e.destination.same_place(&later.destination)
                && e.destination.database == later.destination.database
                && (e.destination.user.is_none() || e.destination.user == later.destination.user)
        });
        if let Some((_, _, first)) = earlier {
            diags.warning(
                &path.key("name"),
                format!(
                    "entry `{}` never matches: `{}` comes first and matches every session it would",
                    later.name, first.name
                ),
                Some("move it above, or give the earlier entry a `when:`".to_owned()),
            );
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
