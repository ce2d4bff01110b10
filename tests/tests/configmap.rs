//! Issue 26 (policy): the configuration mounted from a ConfigMap reloads
//! when the kubelet swaps the `..data` symlink — the next statement on a live
//! connection is judged by the new policy — a broken swap keeps the last good
//! one, and the agent reports the SHA-256 of the file it enforces in
//! `hoop_policy_info{sha256}` and `/healthz`.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use hoop_tests::{
    TestConfig, hoop_exec, metric, psql_direct, require_privileged, scrape_snippet, scraped, text,
};

const T: Duration = Duration::from_secs(90);

fn pg_client() -> String {
    env!("CARGO_BIN_EXE_pg-client").to_owned()
}

fn sha256_hex(text: &str) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

/// A ConfigMap volume laid out as the kubelet does it.
struct ConfigMapVolume {
    dir: PathBuf,
    generation: u32,
}

impl ConfigMapVolume {
    fn new(dir: &Path, text: &str) -> Self {
        std::fs::create_dir_all(dir).expect("volume dir");
        let mut volume = Self {
            dir: dir.to_path_buf(),
            generation: 0,
        };
        volume.update(text);
        std::os::unix::fs::symlink("..data/hoop.yaml", dir.join("hoop.yaml")).expect("symlink");
        volume
    }

    fn path(&self) -> PathBuf {
        self.dir.join("hoop.yaml")
    }

    /// The kubelet's atomic update: files into a new timestamped directory,
    /// a `..data_tmp` symlink to it renamed over `..data`, the old directory
    /// removed. Nothing is written in place.
    fn update(&mut self, text: &str) {
        self.generation += 1;
        let old = std::fs::read_link(self.dir.join("..data")).ok();
        let name = format!(
            "..2026_12_04_22_00_{:02}.{}",
            self.generation,
            4000 + self.generation
        );
        let new = self.dir.join(&name);
        std::fs::create_dir(&new).expect("timestamped dir");
        std::fs::write(new.join("hoop.yaml"), text).expect("file");
        let tmp = self.dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp).expect("..data_tmp");
        std::fs::rename(&tmp, self.dir.join("..data")).expect("swap ..data");
        if let Some(old) = old {
            std::fs::remove_dir_all(self.dir.join(old)).expect("remove the old dir");
        }
    }
}

#[test]
fn a_kubelet_symlink_swap_judges_the_next_statement_by_the_new_policy() {
    require_privileged();
    psql_direct(
        "DROP TABLE IF EXISTS cm_orders; CREATE TABLE cm_orders (id int PRIMARY KEY);
         INSERT INTO cm_orders VALUES (1), (2);",
    );
    // TestConfig picks the ports and paths; its text goes into the volume.
    let cfg = TestConfig::new(&[5432], "policy:\n  deny:\n    - statements: [drop]\n");
    let original = std::fs::read_to_string(&cfg.path).expect("config");
    let tightened = original.replace(
        "  deny:\n",
        "  deny:\n    - name: no-deletes-on-orders\n      statements: [delete]\n      tables: [cm_orders]\n      message: no deletes from a ConfigMap\n",
    );
    assert_ne!(original, tightened);
    let mut volume = ConfigMapVolume::new(&cfg.dir.path().join("configmap"), &original);
    let path = volume.path();
    let go = cfg.dir.path().join("go");
    let go2 = cfg.dir.path().join("go2");

    let (go_c, go2_c, tightened_c) = (go.clone(), go2.clone(), tightened.clone());
    let editor = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        volume.update(&tightened_c);
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(&go_c, "").expect("go");
        std::thread::sleep(Duration::from_millis(500));
        volume.update("policy: [this is: not valid");
        std::thread::sleep(Duration::from_millis(1500));
        std::fs::write(&go2_c, "").expect("go2");
    });
    let admin = cfg.admin_url();
    let script = format!(
        "{pc} again-after 'DELETE FROM cm_orders WHERE id = 999' {go} && \
         {pc} again-after 'DELETE FROM cm_orders WHERE id = 998' {go2} && \
         echo '--- healthz' && curl -sf {admin}/healthz && echo '--- end healthz' && {scrape}",
        pc = pg_client(),
        go = go.display(),
        go2 = go2.display(),
        scrape = scrape_snippet(&admin)
    );
    let out = hoop_exec(&path, &["sh", "-c", &script], T);
    editor.join().expect("editor");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let results: Vec<serde_json::Value> = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    // One connection: allowed, (the kubelet swaps the volume), denied.
    assert!(results[0].get("rows").is_some(), "{stdout}");
    assert_eq!(results[2]["error"]["code"], "42501", "{stdout}");
    assert!(
        results[2]["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no deletes from a ConfigMap")),
        "{stdout}"
    );
    // After a swap to a broken file: the last good policy still denies.
    assert_eq!(results[3]["error"]["code"], "42501", "{stdout}");
    assert_eq!(results[5]["error"]["code"], "42501", "{stdout}");

    // The agent reports the hash of the file it enforces: the tightened one.
    let want = sha256_hex(&tightened);
    let healthz = stdout
        .split("--- healthz")
        .nth(1)
        .and_then(|s| s.split("--- end healthz").next())
        .expect("healthz printed");
    assert!(
        healthz.contains("ok") && healthz.contains(&format!("policy_sha256 {want}")),
        "{healthz} (want {want})"
    );
    let m = scraped(&stdout);
    assert_eq!(
        metric(&m, &format!("hoop_policy_info{{sha256=\"{want}\"}}")),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        m.lines()
            .filter(|l| l.starts_with("hoop_policy_info{"))
            .count(),
        1,
        "one hash at a time: {m}"
    );
    assert_eq!(
        metric(&m, "hoop_policy_reload_errors_total"),
        Some(1.0),
        "{m}"
    );
    assert!(
        metric(&m, "hoop_policy_reloads_total").is_some_and(|n| n >= 1.0),
        "{m}"
    );
}
