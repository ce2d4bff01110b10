//! `KUBECONFIG` points hoop at an API server: the way tests (and operators
//! outside a cluster) select one. Its own test binary, because it sets a
//! process-wide environment variable.
#![expect(clippy::unwrap_used, reason = "tests fail loudly on unexpected errors")]

use hoop_k8s::testing::apiserver::{FakeApiServer, objects};
use k8s_openapi::api::core::v1::Pod;

#[test]
fn kubeconfig_selects_the_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let server = FakeApiServer::start().await.unwrap();
        server.apply_pod(objects::pod(
            "shop",
            "a",
            "0a0a0a0a-0000-4000-8000-000000000000",
            "n1",
            &[],
            &[],
        ));
        let path = server.write_kubeconfig(dir.path()).unwrap();
        // SAFETY: this binary's only test; nothing else reads the
        // environment concurrently (single-threaded runtime, no other test).
        unsafe {
            std::env::set_var("KUBECONFIG", &path);
            std::env::remove_var("KUBERNETES_SERVICE_HOST");
        }
        let client = hoop_k8s::discovery::client().await.unwrap();
        let pods: kube::Api<Pod> = kube::Api::all(client);
        let list = pods.list(&kube::api::ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].metadata.name.as_deref(), Some("a"));
        assert!(
            server
                .requests()
                .iter()
                .any(|r| r.starts_with("GET /api/v1/pods")),
            "{:?}",
            server.requests()
        );
    });
}
