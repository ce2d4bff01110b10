use std::{os::unix::fs::PermissionsExt as _, path::Path};

use hoop_config::{Diagnostic, SourceMap};
use hoop_core::{ClientAuth, CredentialSource as _, SessionIdentity};

use crate::{CredentialHandle, CredentialSet, compile};

fn secret_file(dir: &Path, name: &str, content: &str, mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.display().to_string()
}

fn load(yaml: &str) -> Result<(CredentialSet, Vec<Diagnostic>), Vec<String>> {
    let source = SourceMap::new(Path::new("/etc/hoop/hoop.yaml"), yaml);
    let document: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).unwrap();
    compile(&document["credentials"], &source)
        .map_err(|found| found.iter().map(ToString::to_string).collect())
}

fn errors(yaml: &str) -> Vec<String> {
    match load(yaml) {
        Ok(_) => panic!("expected errors"),
        Err(found) => found
            .into_iter()
            .filter(|d| d.contains(": error: "))
            .collect(),
    }
}

fn session(workload: &str, database: &str, user: &str) -> SessionIdentity {
    SessionIdentity {
        workload: Some(workload.into()),
        original_destination: Some("127.0.0.1:5432".parse().unwrap()),
        database: Some(database.into()),
        user: Some(user.into()),
        ..SessionIdentity::default()
    }
}

#[test]
fn the_issues_example_compiles_and_matches_first_entry_first() {
    let dir = tempfile::tempdir().unwrap();
    let reporting = secret_file(dir.path(), "reporting", "s3cret-reporting\n", 0o600);
    let etl = secret_file(dir.path(), "etl", "s3cret-etl", 0o400);
    let yaml = format!(
        "credentials:
  client_auth: any
  entries:
    - name: reporting
      when: {{workload: [\"/hoop-exec-*\"]}}
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: reporting_ro
      password_file: {reporting}
    - name: etl-as-loader
      when: {{workload: [\"/batch/*\"]}}
      destination: {{host: localhost, port: 5432, database: reports, user: loader}}
      role: etl
      password_file: {etl}
"
    );
    let (set, warnings) = load(&yaml).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(set.client_auth, ClientAuth::Any);
    let handle = CredentialHandle::new(set);

    let got = handle
        .credential_for(&session("/hoop-exec-123", "reports", "root"))
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.entry.as_str(), got.role.as_str(), got.database.as_str()),
        ("reporting", "reporting_ro", "reports")
    );
    assert_eq!(got.secret.expose(), b"s3cret-reporting");
    assert_eq!(got.client_auth, ClientAuth::Any);

    // The second entry needs its workload and the user it names.
    assert!(
        handle
            .credential_for(&session("/batch/nightly", "reports", "root"))
            .unwrap()
            .is_none()
    );
    let got = handle
        .credential_for(&session("/batch/nightly", "reports", "loader"))
        .unwrap()
        .unwrap();
    assert_eq!(got.role, "etl");
    // Another workload, database or destination: nothing, so pass-through.
    assert!(
        handle
            .credential_for(&session("/other", "reports", "loader"))
            .unwrap()
            .is_none()
    );
    assert!(
        handle
            .credential_for(&session("/hoop-exec-1", "test", "root"))
            .unwrap()
            .is_none()
    );
    let mut elsewhere = session("/hoop-exec-1", "reports", "root");
    elsewhere.original_destination = Some("127.0.0.1:6432".parse().unwrap());
    assert!(handle.credential_for(&elsewhere).unwrap().is_none());
    elsewhere.original_destination = None;
    assert!(handle.credential_for(&elsewhere).unwrap().is_none());
    assert_eq!(
        handle.credential_named("etl-as-loader").unwrap().role,
        "etl"
    );
    assert!(handle.credential_named("gone").is_none());
}

#[test]
fn a_secret_that_became_unusable_refuses_the_session_and_names_the_entry() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "s", "rotating-secret", 0o600);
    let yaml = format!(
        "credentials:
  entries:
    - name: reporting
      when: {{workload: [\"/w\"]}}
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: r
      password_file: {file}
"
    );
    let handle = CredentialHandle::new(load(&yaml).unwrap().0);
    let s = session("/w", "reports", "x");
    assert_eq!(
        handle.credential_for(&s).unwrap().unwrap().client_auth,
        ClientAuth::None
    );
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = handle.credential_for(&s).unwrap_err();
    let text = err.to_string();
    assert!(text.starts_with("credential entry `reporting`:"), "{text}");
    assert!(text.contains("mode 644"), "{text}");
    assert!(
        !text.contains("rotating-secret") && !text.contains(&file),
        "{text}"
    );
}

#[test]
fn every_mistake_is_reported_with_its_location_and_no_secret() {
    let dir = tempfile::tempdir().unwrap();
    let open = secret_file(dir.path(), "open", "hunter2-open", 0o644);
    let fine = secret_file(dir.path(), "fine", "hunter2-fine", 0o600);
    let yaml = format!(
        "credentials:
  client_auth: some
  entries:
    - name: a
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: r
      password: hunter2-inline
    - name: b
      destination: {{host: 'db prod', port: 0, database: '', schema: x}}
      role: ''
      password_file: {open}
    - name: c
      when: {{workload: [], cluster: [x]}}
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: r
      password_file: hunter2-relative
    - name: d
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: r
      password_env: 'hunter2 as env'
    - name: e
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: r
      password_file: {fine}
      password_env: HOOP_X
    - name: f
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: r
      password_env: HOOP_CREDENTIALS_TEST_SURELY_UNSET
    - name: g
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: r
      password_file: 12345
"
    );
    let found = errors(&yaml);
    let expect = [
        "/etc/hoop/hoop.yaml:2:16: error: credentials.client_auth: unknown variant `some`, expected `any` or `none`",
        "/etc/hoop/hoop.yaml:7:7: error: credentials.entries[0].password: unknown key `password`",
        "/etc/hoop/hoop.yaml:9:61: error: credentials.entries[1].destination.schema: unknown key `schema`",
        "/etc/hoop/hoop.yaml:13:28: error: credentials.entries[2].when.cluster: unknown key `cluster`",
        "/etc/hoop/hoop.yaml:16:22: error: credentials.entries[2].password_file: password_file must be an absolute path",
        "/etc/hoop/hoop.yaml:20:21: error: credentials.entries[3].password_env: password_env must be an environment variable's name",
        "/etc/hoop/hoop.yaml:25:21: error: credentials.entries[4].password_env: set password_file or password_env, not both",
        "/etc/hoop/hoop.yaml:29:21: error: credentials.entries[5].password_env: the entry's secret: the environment variable named by its password_env is not set or empty",
        "/etc/hoop/hoop.yaml:33:22: error: credentials.entries[6].password_file: password_file must be an absolute path",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing {e}\nin:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));
    let all = found.join("\n");
    for secret in ["hunter2", "12345", &open] {
        assert!(!all.contains(secret), "{secret} printed:\n{all}");
    }

    // Once the entry's keys parse: what only its values can say.
    let yaml = format!(
        "credentials:
  entries:
    - name: ' '
      when: {{workload: []}}
      destination: {{host: 'db prod', port: 0, database: '', user: ''}}
      role: ''
      password_file: {open}
"
    );
    let found = errors(&yaml);
    let expect = [
        "/etc/hoop/hoop.yaml:3:13: error: credentials.entries[0].name: an entry needs a name",
        "/etc/hoop/hoop.yaml:4:24: error: credentials.entries[0].when.workload: an empty list matches no session",
        "/etc/hoop/hoop.yaml:5:27: error: credentials.entries[0].destination.host: `db prod` is neither an IP address nor a host name",
        "/etc/hoop/hoop.yaml:5:44: error: credentials.entries[0].destination.port: port 0 is no server's port",
        "/etc/hoop/hoop.yaml:5:57: error: credentials.entries[0].destination.database: the database name is empty",
        "/etc/hoop/hoop.yaml:5:67: error: credentials.entries[0].destination.user: the user name is empty",
        "/etc/hoop/hoop.yaml:6:13: error: credentials.entries[0].role: the role name is empty",
        "/etc/hoop/hoop.yaml:7:22: error: credentials.entries[0].password_file: the entry's secret: its password_file has mode 644, which lets group or others read or change it; make it readable by hoop only (chmod 600)",
    ];
    for e in expect {
        assert!(
            found.iter().any(|f| f.starts_with(e)),
            "missing {e}\nin:\n{}",
            found.join("\n")
        );
    }
    assert_eq!(found.len(), expect.len(), "{}", found.join("\n"));
    assert!(!found.join("\n").contains("hunter2"));
}

#[test]
fn warnings_for_fail_open_choices_and_entries_that_never_match() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "s", "x", 0o600);
    let yaml = format!(
        "credentials:
  entries:
    - name: everyone
      destination: {{host: 127.0.0.1, port: 5432, database: reports}}
      role: r
      password_file: {file}
    - name: shadowed
      when: {{workload: [\"/w\"]}}
      destination: {{host: 127.0.0.1, port: 5432, database: reports, user: u}}
      role: r2
      password_file: {file}
      allow_cleartext_without_tls: true
    - name: elsewhere
      when: {{workload: [\"/w\"]}}
      destination: {{host: no-such-host.invalid, port: 5432, database: reports}}
      role: r3
      password_file: {file}
"
    );
    let (set, warnings) = load(&yaml).unwrap();
    assert_eq!(set.entries.len(), 3);
    let warnings: Vec<String> = warnings.iter().map(ToString::to_string).collect();
    let expect = [
        "/etc/hoop/hoop.yaml:3:13: warning: credentials.entries[0].name: entry `everyone` has no `when:`",
        "/etc/hoop/hoop.yaml:7:13: warning: credentials.entries[1].name: entry `shadowed` never matches: `everyone` comes first",
        "/etc/hoop/hoop.yaml:12:36: warning: credentials.entries[1].allow_cleartext_without_tls: the secret may be sent in cleartext",
        "/etc/hoop/hoop.yaml:15:27: warning: credentials.entries[2].destination.host: `no-such-host.invalid` does not resolve now",
    ];
    for e in expect {
        assert!(
            warnings.iter().any(|f| f.starts_with(e)),
            "missing {e}\nin:\n{}",
            warnings.join("\n")
        );
    }
    assert_eq!(warnings.len(), expect.len(), "{}", warnings.join("\n"));
}

#[test]
fn names_are_unique() {
    let dir = tempfile::tempdir().unwrap();
    let file = secret_file(dir.path(), "s", "x", 0o600);
    let entry = |name: &str, db: &str| {
        format!(
            "    - name: {name}\n      when: {{workload: [/w]}}\n      destination: {{host: 127.0.0.1, port: 5432, database: {db}}}\n      role: r\n      password_file: {file}\n"
        )
    };
    let yaml = format!(
        "credentials:\n  entries:\n{}{}",
        entry("reporting", "a"),
        entry("reporting", "b")
    );
    let found = errors(&yaml);
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("/etc/hoop/hoop.yaml:8:13: error: credentials.entries[1].name: entry `reporting` is defined twice (first at credentials.entries[0])"),
        "{found:?}"
    );
}

#[test]
fn no_section_means_no_credentials() {
    let (set, warnings) = load("credentials:\n").unwrap();
    assert!(set.is_empty() && warnings.is_empty());
    assert_eq!(set.client_auth, ClientAuth::None);
    let (set, _) = load("credentials: {entries: []}\n").unwrap();
    assert!(set.is_empty());
    assert!(errors("credentials: {entries: {a: 1}}\n")[0].contains("expected a list"));
}
