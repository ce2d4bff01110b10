//! The reconciler's state machine, fed watcher events directly, acting on a
//! governor that records what it is asked (the real one, with eBPF and
//! network namespaces, is exercised by the privileged tests in `tests/`).
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use std::{collections::BTreeMap, fs, path::Path, sync::Mutex};

use kube::runtime::watcher::Event;
use prometheus::Registry;

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Call {
    Govern { uid: String, ports: Vec<u16> },
    Release(String),
    Retain(Vec<String>),
}

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
    fail: Mutex<HashMap<String, FailureReason>>,
}

impl Recorder {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }
}

impl PodGovernor for Recorder {
    async fn govern(&self, request: &GovernRequest) -> Result<(), GovernError> {
        self.calls.lock().unwrap().push(Call::Govern {
            uid: request.workload.uid.clone(),
            ports: request.ports.clone(),
        });
        match self.fail.lock().unwrap().get(&request.workload.uid) {
            Some(reason) => Err(GovernError::new(*reason, "injected")),
            None => Ok(()),
        }
    }

    async fn release(&self, uid: &str) -> Result<(), GovernError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Release(uid.to_owned()));
        Ok(())
    }

    async fn retain(&self, keep: &HashSet<String>) {
        let mut keep: Vec<String> = keep.iter().cloned().collect();
        keep.sort();
        self.calls.lock().unwrap().push(Call::Retain(keep));
    }
}

struct Fixture {
    root: tempfile::TempDir,
    governor: Arc<Recorder>,
    metrics: K8sMetrics,
    r: Reconciler<Recorder>,
}

fn uid(n: u8) -> String {
    format!("{n:08x}-0000-4000-8000-000000000000")
}

fn fixture() -> Fixture {
    let root = tempfile::tempdir().unwrap();
    let governor = Arc::new(Recorder::default());
    let metrics = K8sMetrics::register(&Registry::new()).unwrap();
    let rules = OptInRules {
        exclude_namespaces: vec!["kube-system".into()],
        agent_namespace: Some("hoop-system".into()),
        agent_pod_uid: None,
        default_ports: vec![5432],
    };
    let mut settings = ReconcilerSettings::new(root.path().to_owned(), rules);
    settings.retry = RetryPolicy {
        initial: Duration::from_millis(10),
        max_pending: Duration::from_millis(40),
        max_failed: Duration::from_millis(80),
    };
    let r = Reconciler::new(
        settings,
        governor.clone(),
        StatusBoard::new(),
        metrics.clone(),
    );
    Fixture {
        root,
        governor,
        metrics,
        r,
    }
}

fn make_cgroup(root: &Path, n: u8) {
    fs::create_dir_all(
        root.join("kubepods/burstable")
            .join(format!("pod{}", uid(n))),
    )
    .unwrap();
}

fn pod(n: u8, ns: &str, annotations: &[(&str, &str)]) -> Pod {
    let annotations: BTreeMap<String, String> = annotations
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("pod-{n}"), "namespace": ns, "uid": uid(n),
                     "annotations": annotations},
        "spec": {"containers": [], "nodeName": "n1"},
        "status": {"phase": "Running", "qosClass": "Burstable"}
    }))
    .unwrap()
}

fn namespace(name: &str, labels: &[(&str, &str)]) -> PartialObjectMeta<Namespace> {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "labels": labels.iter().copied().collect::<BTreeMap<_, _>>()}
    }))
    .unwrap()
}

const ON: (&str, &str) = ("hoop.dev/govern", "true");
const OFF: (&str, &str) = ("hoop.dev/govern", "false");

fn govern(n: u8) -> Call {
    Call::Govern {
        uid: uid(n),
        ports: vec![5432],
    }
}

impl Fixture {
    async fn list_pods(&mut self, pods: Vec<Pod>) {
        self.r.pod_event(Event::Init).await;
        for p in pods {
            self.r.pod_event(Event::InitApply(p)).await;
        }
        self.r.pod_event(Event::InitDone).await;
    }

    async fn list_namespaces(&mut self, nss: Vec<PartialObjectMeta<Namespace>>) {
        self.r.namespace_event(Event::Init).await;
        for n in nss {
            self.r.namespace_event(Event::InitApply(n)).await;
        }
        self.r.namespace_event(Event::InitDone).await;
    }

    fn state(&self, n: u8) -> Option<PodState> {
        self.r.board().pod(&uid(n)).map(|p| p.state)
    }
}

#[tokio::test]
async fn nothing_happens_before_both_lists_then_governs_and_sweeps() {
    let mut f = fixture();
    for n in 1..=3 {
        make_cgroup(f.root.path(), n);
    }
    f.r.pod_event(Event::Apply(pod(9, "shop", &[ON]))).await;
    f.list_pods(vec![
        pod(1, "shop", &[ON]),
        pod(2, "shop", &[]),
        pod(3, "opted", &[]),
    ])
    .await;
    assert!(
        f.governor.take().is_empty(),
        "no action before namespaces are listed"
    );
    assert!(!f.r.board().ready(None));

    f.list_namespaces(vec![namespace("shop", &[]), namespace("opted", &[ON])])
        .await;
    let mut calls = f.governor.take();
    let retain = calls.pop().unwrap();
    calls.sort_by_key(|c| format!("{c:?}"));
    assert_eq!(calls, [govern(1), govern(3)]);
    assert_eq!(retain, Call::Retain(vec![uid(1), uid(3)]));
    assert!(f.r.board().ready(None));
    assert_eq!(f.state(1), Some(PodState::Governed));
    assert_eq!(f.state(2), None);
    assert_eq!(f.metrics.pods.with_label_values(&["governed", ""]).get(), 2);
    assert_eq!(f.metrics.govern_seconds.get_sample_count(), 2);
}

#[tokio::test]
async fn pod_events_after_sync() {
    let mut f = fixture();
    for n in 1..=2 {
        make_cgroup(f.root.path(), n);
    }
    f.list_namespaces(vec![namespace("shop", &[])]).await;
    f.list_pods(vec![]).await;
    assert_eq!(f.governor.take(), [Call::Retain(vec![])]);

    // Added with the annotation: governed. The same event again: nothing.
    f.r.pod_event(Event::Apply(pod(1, "shop", &[ON]))).await;
    f.r.pod_event(Event::Apply(pod(1, "shop", &[ON]))).await;
    assert_eq!(f.governor.take(), [govern(1)]);

    // An annotation added to a running pod; ports changed on another.
    f.r.pod_event(Event::Apply(pod(2, "shop", &[]))).await;
    assert!(f.governor.take().is_empty());
    f.r.pod_event(Event::Apply(pod(2, "shop", &[ON]))).await;
    f.r.pod_event(Event::Apply(pod(
        1,
        "shop",
        &[ON, ("hoop.dev/ports", "6432")],
    )))
    .await;
    assert_eq!(
        f.governor.take(),
        [
            govern(2),
            Call::Govern {
                uid: uid(1),
                ports: vec![6432]
            }
        ]
    );

    // Opted out, then deleted.
    f.r.pod_event(Event::Apply(pod(2, "shop", &[OFF]))).await;
    f.r.pod_event(Event::Delete(pod(1, "shop", &[ON]))).await;
    assert_eq!(
        f.governor.take(),
        [Call::Release(uid(2)), Call::Release(uid(1))]
    );
    assert!(f.r.board().pods().is_empty());
    // Deleting an ungoverned pod asks nothing of the governor.
    f.r.pod_event(Event::Delete(pod(2, "shop", &[]))).await;
    assert!(f.governor.take().is_empty());
}

#[tokio::test]
async fn namespace_opt_in_with_pod_opt_out_and_namespace_flips() {
    let mut f = fixture();
    for n in 1..=2 {
        make_cgroup(f.root.path(), n);
    }
    f.list_pods(vec![pod(1, "team", &[]), pod(2, "team", &[OFF])])
        .await;
    f.list_namespaces(vec![namespace("team", &[ON])]).await;
    let calls = f.governor.take();
    assert_eq!(calls, [govern(1), Call::Retain(vec![uid(1)])]);

    // The namespace opts out: its pods are released; back in: governed again.
    f.r.namespace_event(Event::Apply(namespace("team", &[])))
        .await;
    assert_eq!(f.governor.take(), [Call::Release(uid(1))]);
    f.r.namespace_event(Event::Apply(namespace("team", &[ON])))
        .await;
    assert_eq!(f.governor.take(), [govern(1)]);
    // Namespace deleted (its pods will follow): only the pod's own keys count.
    f.r.namespace_event(Event::Delete(namespace("team", &[ON])))
        .await;
    assert_eq!(f.governor.take(), [Call::Release(uid(1))]);
}

#[tokio::test]
async fn a_relist_releases_pods_deleted_while_nobody_watched() {
    let mut f = fixture();
    for n in 1..=3 {
        make_cgroup(f.root.path(), n);
    }
    f.list_namespaces(vec![namespace("shop", &[])]).await;
    f.list_pods(vec![pod(1, "shop", &[ON]), pod(2, "shop", &[ON])])
        .await;
    f.governor.take();
    // 410 Gone / restart: the new list lacks pod 1 and has a new pod 3.
    f.list_pods(vec![pod(2, "shop", &[ON]), pod(3, "shop", &[ON])])
        .await;
    let calls = f.governor.take();
    assert!(calls.contains(&govern(3)), "{calls:?}");
    assert!(calls.contains(&Call::Release(uid(1))), "{calls:?}");
    assert!(
        !calls.contains(&govern(2)),
        "unchanged pods are left alone: {calls:?}"
    );
    assert!(
        !calls.iter().any(|c| matches!(c, Call::Retain(_))),
        "the sweep runs once"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cgroup_that_appears_later_is_retried_with_backoff() {
    let mut f = fixture();
    f.list_namespaces(vec![namespace("shop", &[])]).await;
    f.list_pods(vec![pod(1, "shop", &[ON])]).await;
    assert_eq!(f.governor.take(), [Call::Retain(vec![])]);
    assert_eq!(
        f.state(1),
        Some(PodState::Pending {
            reason: "cgroup_not_found"
        })
    );
    assert_eq!(
        f.metrics
            .pods
            .with_label_values(&["pending", "cgroup_not_found"])
            .get(),
        1
    );
    // Backoff doubles up to its cap.
    let mut delays = Vec::new();
    for _ in 0..4 {
        let due = f.r.next_retry().unwrap();
        delays.push(due - Instant::now());
        tokio::time::advance(due - Instant::now()).await;
        f.r.retry_due().await;
    }
    assert_eq!(
        delays,
        [10, 20, 40, 40].map(Duration::from_millis),
        "capped at max_pending"
    );
    assert!(
        f.governor.take().is_empty(),
        "no governor call without a cgroup"
    );

    make_cgroup(f.root.path(), 1);
    let due = f.r.next_retry().unwrap();
    tokio::time::advance(due - Instant::now()).await;
    f.r.retry_due().await;
    assert_eq!(f.governor.take(), [govern(1)]);
    assert_eq!(f.state(1), Some(PodState::Governed));
    assert_eq!(f.r.next_retry(), None);
}

#[tokio::test(start_paused = true)]
async fn one_failing_pod_never_stops_the_others() {
    let mut f = fixture();
    for n in 1..=3 {
        make_cgroup(f.root.path(), n);
    }
    f.governor
        .fail
        .lock()
        .unwrap()
        .insert(uid(2), FailureReason::Attach);
    f.list_namespaces(vec![namespace("shop", &[ON])]).await;
    f.list_pods(vec![
        pod(1, "shop", &[]),
        pod(2, "shop", &[]),
        pod(3, "shop", &[]),
    ])
    .await;
    assert_eq!(f.state(1), Some(PodState::Governed));
    assert_eq!(f.state(3), Some(PodState::Governed));
    let Some(PodState::Failed { reason, message }) = f.state(2) else {
        panic!("pod 2 failed")
    };
    assert_eq!(reason, "attach");
    assert!(message.contains("injected"), "{message}");
    assert_eq!(
        f.metrics
            .pods
            .with_label_values(&["failed", "attach"])
            .get(),
        1
    );
    // The failed pod is kept for release even though it never succeeded.
    let calls = f.governor.take();
    assert_eq!(
        calls.last(),
        Some(&Call::Retain(vec![uid(1), uid(2), uid(3)]))
    );

    f.governor.fail.lock().unwrap().clear();
    let due = f.r.next_retry().unwrap();
    tokio::time::advance(due - Instant::now()).await;
    f.r.retry_due().await;
    assert_eq!(f.governor.take(), [govern(2)]);
    assert_eq!(f.state(2), Some(PodState::Governed));
    assert_eq!(f.metrics.pods.with_label_values(&["governed", ""]).get(), 3);
}

#[tokio::test]
async fn resync_calls_the_governor_again_for_governed_pods() {
    let mut f = fixture();
    make_cgroup(f.root.path(), 1);
    f.list_namespaces(vec![namespace("shop", &[])]).await;
    f.list_pods(vec![pod(1, "shop", &[ON]), pod(2, "shop", &[])])
        .await;
    f.governor.take();
    assert_eq!(f.metrics.govern_seconds.get_sample_count(), 1);
    f.r.resync().await;
    f.r.pod_event(Event::Apply(pod(1, "shop", &[ON]))).await;
    f.r.resync().await;
    assert_eq!(f.governor.take(), [govern(1), govern(1)]);
    assert_eq!(
        f.metrics.govern_seconds.get_sample_count(),
        1,
        "resyncs and repeated events of a governed pod are not waits"
    );
}

#[tokio::test]
async fn invalid_values_are_counted_once_and_govern() {
    let mut f = fixture();
    make_cgroup(f.root.path(), 1);
    f.list_namespaces(vec![namespace("shop", &[])]).await;
    let bad = pod(1, "shop", &[("hoop.dev/govern", "yes")]);
    f.list_pods(vec![bad.clone()]).await;
    f.r.pod_event(Event::Apply(bad.clone())).await;
    f.r.resync().await;
    assert_eq!(f.state(1), Some(PodState::Governed), "fail closed");
    assert_eq!(
        f.metrics
            .invalid_opt_in_total
            .with_label_values(&["hoop.dev/govern", "pod"])
            .get(),
        1
    );
    // A different invalid value is a new report.
    f.r.pod_event(Event::Apply(pod(1, "shop", &[("hoop.dev/govern", "no")])))
        .await;
    assert_eq!(
        f.metrics
            .invalid_opt_in_total
            .with_label_values(&["hoop.dev/govern", "pod"])
            .get(),
        2
    );
}

#[tokio::test]
async fn malformed_objects_are_counted_and_skipped() {
    let mut f = fixture();
    make_cgroup(f.root.path(), 1);
    f.list_namespaces(vec![namespace("shop", &[])]).await;
    let no_uid: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "x", "namespace": "shop", "annotations": {"hoop.dev/govern": "true"}}
    }))
    .unwrap();
    f.list_pods(vec![no_uid.clone(), pod(1, "shop", &[ON])])
        .await;
    f.r.pod_event(Event::Apply(no_uid.clone())).await;
    f.r.pod_event(Event::Delete(no_uid)).await;
    assert_eq!(
        f.metrics
            .api_errors_total
            .with_label_values(&["pods", "malformed"])
            .get(),
        3
    );
    assert_eq!(f.state(1), Some(PodState::Governed));
}

#[test]
fn retry_delays_double_and_cap() {
    let p = RetryPolicy::default();
    assert_eq!(p.delay(0, true), Duration::from_millis(50));
    assert_eq!(p.delay(3, true), Duration::from_millis(400));
    assert_eq!(p.delay(30, true), Duration::from_secs(5));
    assert_eq!(p.delay(30, false), Duration::from_secs(30));
}
