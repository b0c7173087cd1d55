//! The HTTP transports' request handling, through the node's real router with the memory
//! broker: bodies posted to `/emulation`, connect commands opening HTTP-streaming and SSE
//! sessions, and connect requests of the unidirectional endpoints. Whatever the input,
//! the answer is one of the documented statuses, and a session that opens writes its
//! first frame in the transport's format.
//!
//! Input: one selector byte, then the body. Selector modulo 8: 0–2 `POST /emulation`
//! (JSON), 3 `POST /emulation` (Protobuf content type), 4 `POST
//! /connection/http_stream`, 5 `GET /connection/sse?cf_connect=<body>`, 6 `POST
//! /connection/uni_http_stream`, 7 `GET /connection/uni_sse?cf_connect=<body>`.

#![no_main]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use herald_broker::memory::MemoryBroker;
use herald_gateway::config::{DEFAULT_NAMESPACE, NamespaceConfig};
use herald_gateway::{Config, build, router};
use http_body_util::BodyExt;
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
    config.client.allow_anonymous = true;
    config.namespaces.insert(
        DEFAULT_NAMESPACE.into(),
        NamespaceConfig {
            history_size: 4,
            history_ttl: Duration::from_secs(5),
            ..NamespaceConfig::permissive()
        },
    );
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

fn query_encode(bytes: &[u8]) -> String {
    url::form_urlencoded::byte_serialize(bytes).collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let post = |path: &str, content_type: &str| {
        Request::post(path)
            .header("content-type", content_type)
            .body(Body::from(body.to_vec()))
    };
    let get = |path: &str| {
        Request::get(format!("{path}?cf_connect={}", query_encode(body))).body(Body::empty())
    };
    let (request, stream) = match selector % 8 {
        0..=2 => (post("/emulation", "application/json"), None),
        3 => (post("/emulation", "application/octet-stream"), None),
        4 => (
            post("/connection/http_stream", "application/json"),
            Some(false),
        ),
        5 => (get("/connection/sse"), Some(true)),
        6 => (
            post("/connection/uni_http_stream", "application/json"),
            Some(false),
        ),
        _ => (get("/connection/uni_sse"), Some(true)),
    };
    let request = request.expect("a request with an encoded query builds");
    let path = request.uri().to_string();
    let server = &*SERVER;
    let (status, first) = server.runtime.block_on(async {
        let response = server
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("the router is infallible");
        let status = response.status();
        let mut body = response.into_body();
        // A session's stream never ends by itself: its first chunk is enough.
        let first = tokio::time::timeout(Duration::from_millis(200), body.frame())
            .await
            .ok()
            .flatten()
            .and_then(|frame| frame.ok())
            .and_then(|frame| frame.into_data().ok())
            .unwrap_or_default();
        (status, first)
    });
    if *DEBUG {
        eprintln!(
            "{path} {:?} -> {status} {:?}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&first)
        );
    }
    match stream {
        None => assert!(
            matches!(
                status,
                StatusCode::NO_CONTENT
                    | StatusCode::BAD_REQUEST
                    | StatusCode::NOT_FOUND
                    | StatusCode::PAYLOAD_TOO_LARGE
                    | StatusCode::UNSUPPORTED_MEDIA_TYPE
            ),
            "status {status} for {path}"
        ),
        Some(events) => {
            assert!(
                matches!(
                    status,
                    StatusCode::OK | StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE
                ),
                "status {status} for {path}"
            );
            if status == StatusCode::OK && !first.is_empty() {
                let text = std::str::from_utf8(&first).expect("streams are UTF-8");
                if events {
                    assert!(
                        text == "\r\n" || text.starts_with("data: "),
                        "{path}: not an event: {text:?}"
                    );
                } else {
                    assert!(text.ends_with('\n'), "{path}: not a line: {text:?}");
                }
            }
        }
    }
});
