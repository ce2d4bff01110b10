//! A local HTTP server that records every JSON body POSTed to it: the
//! stand-in for Slack's incoming webhook and its `response_url` (tests reach
//! nothing beyond loopback).

use std::{
    net::TcpListener,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Json, Router, extract::State, http::Uri, routing::post};
use serde_json::Value;

type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A running sink on 127.0.0.1; stops with the test process.
pub struct JsonSink {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    received: Received,
}

impl JsonSink {
    /// Starts a sink answering 200 to any POST of JSON.
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the sink");
        listener.set_nonblocking(true).expect("nonblocking");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let received: Received = Arc::default();
        let app = Router::new()
            .fallback(post(record))
            .with_state(Arc::clone(&received));
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for the sink");
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("a tokio listener");
                axum::serve(listener, app).await.expect("the sink serves");
            });
        });
        Self { base, received }
    }

    /// Every `(path, body)` received so far.
    pub fn received(&self) -> Vec<(String, Value)> {
        self.received
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Waits up to `timeout` until `count` bodies have arrived at `path`; returns them.
    pub fn wait_for(&self, path: &str, count: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let at_path: Vec<Value> = self
                .received()
                .into_iter()
                .filter(|(p, _)| p == path)
                .map(|(_, body)| body)
                .collect();
            if at_path.len() >= count {
                return at_path;
            }
            assert!(
                Instant::now() < deadline,
                "{count} POSTs to {path} expected within {timeout:?}; got {:?}",
                self.received()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

async fn record(State(received): State<Received>, uri: Uri, Json(body): Json<Value>) {
    received
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push((uri.path().to_owned(), body));
}
