//! `GET /`: a small page that says what this node is, for whoever opens its address in
//! a browser: version, broker, health, its counts, and where clients and publishers go.

use crate::node::Node;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use std::fmt::Write;
use std::sync::Arc;

/// Escapes text for HTML.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// The page.
pub(crate) async fn page(State(node): State<Arc<Node>>) -> Response {
    let (ready, why) = node.ready();
    let (clients, users) = node.hub.counts();
    let channels = node.hub.channels().len();
    let health = if ready {
        "ready".to_owned()
    } else {
        format!("not ready: {}", escape(&why))
    };
    let api = if node.config.api.key.is_empty() && !node.config.api.insecure {
        "off (no api.key)"
    } else {
        "on, with the X-API-Key header"
    };
    let mut rows = String::new();
    for (what, value) in [
        ("version", escape(crate::node::VERSION)),
        ("node", escape(&node.name)),
        ("broker", node.broker.kind().to_owned()),
        ("health", health),
        ("uptime", format!("{} s", node.started.elapsed().as_secs())),
        ("connections", format!("{clients} ({users} users)")),
        ("channels with subscribers here", channels.to_string()),
        ("namespaces", node.config.namespaces.len().to_string()),
        ("server API", api.to_owned()),
    ] {
        let _ = write!(rows, "<tr><th>{what}</th><td>{value}</td></tr>");
    }
    let body = format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Herald node {name}</title>
<style>
body{{font:15px/1.5 system-ui,sans-serif;max-width:44rem;margin:2rem auto;padding:0 1rem;color:#1d2330}}
h1{{font-size:1.4rem}} table{{border-collapse:collapse}} th{{text-align:left;padding:.2rem 1rem .2rem 0;font-weight:600}}
code{{background:#eef1f6;padding:.1rem .3rem;border-radius:3px}} li{{margin:.2rem 0}}
</style></head><body>
<h1>Herald {version}</h1>
<p>A WebSocket fan-out node. Clients use any Centrifuge protocol v2 SDK; publishers use the HTTP API.</p>
<table>{rows}</table>
<h2>Endpoints</h2>
<ul>
<li>WebSocket: <code>/connection/websocket</code> (JSON, or Protobuf with the <code>centrifuge-protobuf</code> subprotocol)</li>
<li>Without WebSocket: <code>/connection/http_stream</code>, <code>/connection/sse</code> (commands to <code>/emulation</code>); one-way: <code>/connection/uni_websocket</code>, <code>/connection/uni_sse</code>, <code>/connection/uni_http_stream</code></li>
<li>Server API: <code>POST /api/publish</code>, <code>/api/broadcast</code>, <code>/api/history</code>, <code>/api/presence</code>, <code>/api/info</code> and more</li>
<li>Admin page: {admin}</li>
<li>Health: <a href="/livez">/livez</a>, <a href="/readyz">/readyz</a> &middot; Metrics: <a href="/metrics">/metrics</a></li>
</ul>
</body></html>
"#,
        name = escape(&node.name),
        version = escape(crate::node::VERSION),
        admin = if node.config.admin.enabled {
            r#"<a href="/admin">/admin</a> (sign in with <code>admin.password</code>)"#
        } else {
            "off (turn it on with <code>admin.enabled</code>, <code>admin.password</code> and <code>admin.secret</code>)"
        },
    );
    let mut response = body.into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_markup() {
        assert_eq!(
            super::escape(r#"<a href="x">&'"#),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }
}
