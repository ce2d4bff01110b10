//! Pod → cgroup resolution on temporary directory trees laid out as the
//! kubelet lays them out (directories only: resolution never reads cgroup
//! interface files).

use std::fs;

use super::*;

const UID: &str = "8a1f5b2c-3d4e-4f60-8a9b-0c1d2e3f4a5b";
const UID_: &str = "8a1f5b2c_3d4e_4f60_8a9b_0c1d2e3f4a5b";
const CID: &str = "4f2a9c1be0d3e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3";

fn tree() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn mkdirs(root: &Path, rel: &str) -> PathBuf {
    let p = root.join(rel);
    fs::create_dir_all(&p).expect("mkdir -p");
    p
}

#[test]
fn relative_paths_for_every_driver_qos_and_prefix() {
    use CgroupDriver::*;
    use QosClass::*;
    let rows: &[(CgroupDriver, &[&str], QosClass, String)] = &[
        (
            Systemd,
            &[],
            Burstable,
            format!("kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
        ),
        (
            Systemd,
            &[],
            BestEffort,
            format!("kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"),
        ),
        (
            Systemd,
            &[],
            Guaranteed,
            format!("kubepods.slice/kubepods-pod{UID_}.slice"),
        ),
        (
            Cgroupfs,
            &[],
            Burstable,
            format!("kubepods/burstable/pod{UID}"),
        ),
        (
            Cgroupfs,
            &[],
            BestEffort,
            format!("kubepods/besteffort/pod{UID}"),
        ),
        (Cgroupfs, &[], Guaranteed, format!("kubepods/pod{UID}")),
        (
            Systemd,
            &["kubelet"],
            BestEffort,
            format!(
                "kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/\
                 kubelet-kubepods-besteffort-pod{UID_}.slice"
            ),
        ),
        (
            Systemd,
            &["kubelet"],
            Guaranteed,
            format!("kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{UID_}.slice"),
        ),
        (
            Cgroupfs,
            &["kubelet"],
            Burstable,
            format!("kubelet/kubepods/burstable/pod{UID}"),
        ),
        // A prefix with a dash is escaped like any other level.
        (
            Systemd,
            &["my-root"],
            Guaranteed,
            format!("my_root.slice/my_root-kubepods.slice/my_root-kubepods-pod{UID_}.slice"),
        ),
    ];
    for (driver, prefix, qos, want) in rows {
        assert_eq!(
            pod_cgroup_relative(*driver, prefix, *qos, UID),
            Path::new(want),
            "{driver:?} {prefix:?} {qos:?}"
        );
    }
}

/// Every layout the candidates cover resolves, with the QoS class known or
/// not, and the container below the pod does not confuse it.
#[test]
fn resolves_every_built_layout() {
    for prefix in KNOWN_ROOT_PREFIXES {
        for driver in [CgroupDriver::Systemd, CgroupDriver::Cgroupfs] {
            for qos in QosClass::ALL {
                let t = tree();
                let rel = pod_cgroup_relative(driver, prefix, qos, UID);
                let pod = mkdirs(t.path(), rel.to_str().expect("utf-8"));
                let container = match driver {
                    CgroupDriver::Systemd => format!("cri-containerd-{CID}.scope"),
                    CgroupDriver::Cgroupfs => CID.to_owned(),
                };
                fs::create_dir(pod.join(container)).expect("container dir");
                for known in [Some(qos), None] {
                    let found = resolve_pod_cgroup(t.path(), UID, known, ScanLimits::default());
                    assert_eq!(
                        found,
                        Some(Found::Candidate(pod.clone())),
                        "{driver:?} {prefix:?} {qos:?} known={known:?}"
                    );
                }
                // The wrong QoS class falls back to the scan and still finds it.
                let wrong = QosClass::ALL
                    .into_iter()
                    .find(|q| *q != qos)
                    .expect("another class");
                assert_eq!(
                    resolve_pod_cgroup(t.path(), UID, Some(wrong), ScanLimits::default()),
                    Some(Found::Scanned(pod.clone()))
                );
            }
        }
    }
}

#[test]
fn another_pod_is_not_mistaken_for_this_one() {
    let t = tree();
    let other = "11111111-2222-3333-4444-555555555555";
    mkdirs(
        t.path(),
        &format!(
            "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice",
            other.replace('-', "_")
        ),
    );
    mkdirs(t.path(), &format!("kubepods/besteffort/pod{other}"));
    assert_eq!(
        resolve_pod_cgroup(t.path(), UID, None, ScanLimits::default()),
        None
    );
}

#[test]
fn scan_finds_unknown_cgroup_root_prefixes() {
    // kubelet --cgroup-root=/custom/nested with cgroupfs, and a kind node's
    // systemd tree below a runtime scope.
    let t = tree();
    let pod = mkdirs(
        t.path(),
        &format!("custom/nested/kubepods/burstable/pod{UID}"),
    );
    mkdirs(&pod, CID);
    assert_eq!(
        resolve_pod_cgroup(
            t.path(),
            UID,
            Some(QosClass::Burstable),
            ScanLimits::default()
        ),
        Some(Found::Scanned(pod))
    );

    let t = tree();
    let pod = mkdirs(
        t.path(),
        &format!(
            "system.slice/node.slice/kubelet.slice/kubelet-kubepods.slice/\
             kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice"
        ),
    );
    assert_eq!(
        resolve_pod_cgroup(t.path(), UID, None, ScanLimits::default()),
        Some(Found::Scanned(pod))
    );
}

#[test]
fn scan_respects_its_limits() {
    let t = tree();
    mkdirs(t.path(), &format!("a/b/c/d/e/f/pod{UID}"));
    let shallow = ScanLimits {
        max_depth: 3,
        max_dirs: 1000,
    };
    assert_eq!(resolve_pod_cgroup(t.path(), UID, None, shallow), None);
    assert!(resolve_pod_cgroup(t.path(), UID, None, ScanLimits::default()).is_some());
    let few = ScanLimits {
        max_depth: 10,
        max_dirs: 2,
    };
    assert_eq!(resolve_pod_cgroup(t.path(), UID, None, few), None);
}

#[test]
fn malformed_uids_never_become_paths() {
    let t = tree();
    mkdirs(t.path(), "kubepods/pod..");
    for uid in ["", "..", "../../etc", "a/b", "x y"] {
        assert_eq!(
            resolve_pod_cgroup(t.path(), uid, None, ScanLimits::default()),
            None,
            "{uid:?}"
        );
    }
}

#[test]
fn parses_proc_cgroup_paths_of_every_runtime() {
    let rows: &[(String, Option<&str>, String)] = &[
        // containerd, systemd driver (Istio/SPIRE's vector shape).
        (
            format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CID}.scope"
            ),
            Some(CID),
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice"),
        ),
        // CRI-O, Guaranteed.
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-{CID}.scope"),
            Some(CID),
            format!("/kubepods.slice/kubepods-pod{UID_}.slice"),
        ),
        // CRI-O's conmon is not a container.
        (
            format!("/kubepods.slice/kubepods-pod{UID_}.slice/crio-conmon-{CID}.scope"),
            None,
            format!("/kubepods.slice/kubepods-pod{UID_}.slice"),
        ),
        // cri-dockerd.
        (
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{CID}.scope"
            ),
            Some(CID),
            format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice"
            ),
        ),
        // cgroupfs: bare id.
        (
            format!("/kubepods/besteffort/pod{UID}/{CID}"),
            Some(CID),
            format!("/kubepods/besteffort/pod{UID}"),
        ),
        // kind nested cgroupfs; the pod level itself.
        (
            format!("/kubelet/kubepods/pod{UID}"),
            None,
            format!("/kubelet/kubepods/pod{UID}"),
        ),
    ];
    for (path, cid, pod_dir) in rows {
        let got = parse_pod_cgroup_path(Path::new(path)).unwrap_or_else(|| panic!("{path}"));
        assert_eq!(got.pod_uid, UID, "{path}");
        assert_eq!(got.container_id.as_deref(), *cid, "{path}");
        assert_eq!(got.pod_dir, Path::new(pod_dir), "{path}");
    }
    for path in [
        "/",
        "/system.slice/containerd.service",
        "/kubepods.slice/kubepods-burstable.slice",
        "/user.slice/user-1000.slice/session-2.scope",
        "/kubepods/burstable/podnot-a-uid/abc",
    ] {
        assert_eq!(parse_pod_cgroup_path(Path::new(path)), None, "{path}");
    }
}
