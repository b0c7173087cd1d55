//! The server API's request handling, through the node's real router with the memory
//! broker: `POST /api/{method}` with a body (every method, and arbitrary names), and the
//! `POST /api` pipeline of newline-separated commands. Whatever the body, the answer is
//! a 200, 400 or 404 whose body is JSON (one value per line for the pipeline).
//!
//! Input: one selector byte, then the body. Selector modulo 16: 0–11 a method of the API
//! (in the order of `herald_gateway::API_METHODS`), 12–13 the pipeline, 14–15 the body's first line is
//! the method name and the rest the body.

#![no_main]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald_broker::memory::MemoryBroker;
use herald_gateway::config::{DEFAULT_NAMESPACE, NamespaceConfig};
use herald_gateway::{API_METHODS, Config, build, router};
use herald_protocol::ENTITY_NAMESPACE;
use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Server {
    runtime: Runtime,
    router: Router,
}

static SERVER: LazyLock<Server> = LazyLock::new(|| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut config = Config::default();
    config.api.insecure = true;
    // Small histories: the fuzzer publishes to a great many channels.
    let small = NamespaceConfig {
        history_size: 4,
        history_ttl: Duration::from_secs(5),
        ..NamespaceConfig::permissive()
    };
    config
        .namespaces
        .insert(DEFAULT_NAMESPACE.into(), small.clone());
    config.namespaces.insert("chat".into(), small.clone());
    config.namespaces.insert(ENTITY_NAMESPACE.into(), small);
    // A namespace without history or presence, for the "not available" paths.
    config
        .namespaces
        .insert("bare".into(), NamespaceConfig::default());
    let node = runtime
        .block_on(build(
            config,
            Arc::new(MemoryBroker::new()),
            CancellationToken::new(),
        ))
        .expect("the node builds");
    Server {
        runtime,
        router: router(node),
    }
});

/// `HERALD_FUZZ_DEBUG=1` prints each request and answer (to check what seeds reach).
static DEBUG: LazyLock<bool> = LazyLock::new(|| std::env::var_os("HERALD_FUZZ_DEBUG").is_some());

fn percent_encode(name: &[u8]) -> String {
    name.iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let (path, body, pipeline) = match selector % 16 {
        n @ 0..12 if usize::from(n) < API_METHODS.len() => {
            (format!("/api/{}", API_METHODS[usize::from(n)]), rest, false)
        }
        12 | 13 => ("/api".to_owned(), rest, true),
        _ => {
            let (name, body) = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &[][..]),
            };
            // Names that route to `/api/{method}` at all: axum answers the others itself.
            if name.is_empty() || std::str::from_utf8(name).is_err() {
                return;
            }
            (format!("/api/{}", percent_encode(name)), body, false)
        }
    };
    let request = Request::post(&path)
        .header("content-type", "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a request with an encoded path builds");
    let server = &*SERVER;
    let (status, bytes) = server.runtime.block_on(async {
        let response = server
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("a response body reads");
        (status, bytes)
    });
    if *DEBUG {
        eprintln!(
            "{path} {:?} -> {status} {:?}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&bytes)
        );
    }
    assert!(
        matches!(
            status,
            StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND
        ),
        "status {status} for {path}"
    );
    let text = std::str::from_utf8(&bytes).expect("API responses are UTF-8");
    let lines: Vec<&str> = if pipeline {
        text.split('\n').filter(|l| !l.is_empty()).collect()
    } else {
        vec![text]
    };
    for line in lines {
        assert!(
            serde_json::from_str::<&serde_json::value::RawValue>(line).is_ok(),
            "{path} answered with a body that is not JSON: {line:?}"
        );
    }
});
