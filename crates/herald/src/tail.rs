//! `herald tail`: print a channel's publications as JSON lines on stdout, resuming from
//! the last offset across reconnects; connection changes go to stderr.

use crate::cli::TailArgs;
use anyhow::{Context, bail};
use herald_client::{
    Client, ConnectionEvent, StreamPosition, SubscribeOptions, SubscriptionEvent, connecting_code,
};
use serde_json::json;
use std::io::Write;
use std::process::ExitCode;

/// Parses `OFFSET:EPOCH`.
pub(crate) fn parse_since(text: &str) -> anyhow::Result<StreamPosition> {
    let (offset, epoch) = text
        .split_once(':')
        .context("--since takes OFFSET:EPOCH, e.g. 17:Xy12abCd")?;
    Ok(StreamPosition {
        offset: offset
            .parse()
            .with_context(|| format!("{offset:?} is not an offset"))?,
        epoch: epoch.to_owned(),
    })
}

/// An error with its causes: `a: b: c`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some errors repeat their cause in their own text.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    if text.contains("Connection refused") {
        text.push_str(" (is a node running there?)");
    } else if text.contains("404") {
        text.push_str(" (a node's WebSocket endpoint is /connection/websocket)");
    }
    text
}

/// What to do about a close that ends the connection for good.
fn advice(code: u16) -> &'static str {
    match code {
        3500 | 101 | 109 => {
            " (give --token, or --token-hmac-secret with the node's secret; herald serve --dev prints both)"
        }
        3501 | 3506 => " (is --url a Herald or Centrifugo node's /connection/websocket?)",
        3504 | 3505 => " (the node's limits refused this connection)",
        _ => "",
    }
}

/// Runs `herald tail`.
pub(crate) async fn run(args: TailArgs) -> anyhow::Result<ExitCode> {
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let token = match (&args.token, &args.token_hmac_secret) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(secret)) => {
            let mut claims =
                json!({ "sub": args.user, "exp": herald_gateway::auth::unix_now() + 86_400 });
            args.claims.apply(&mut claims);
            Some(crate::token::sign(secret, &claims)?)
        }
        (None, None) => None,
    };
    // A channel that needs a subscription token: given, or signed like the connection's.
    let sub_token = match (&args.sub_token, &args.token_hmac_secret) {
        (Some(t), _) => Some(t.clone()),
        (None, Some(secret)) if args.channel.starts_with('$') => {
            let mut claims = json!({
                "sub": args.user,
                "channel": args.channel,
                "exp": herald_gateway::auth::unix_now() + 86_400,
            });
            args.claims.apply(&mut claims);
            Some(crate::token::sign(secret, &claims)?)
        }
        _ => None,
    };
    let mut builder = Client::builder(&args.url).name("herald-tail");
    if let Some(t) = token {
        builder = builder.token(t);
    }
    let client = builder.build().context("invalid client settings")?;
    let mut events = client.events();
    // A close the client will not retry ends the tail: waiting would be forever.
    let (ended_tx, mut ended) = tokio::sync::oneshot::channel::<String>();
    let url = args.url.clone();
    tokio::spawn(async move {
        let mut ended_tx = Some(ended_tx);
        while let Ok(event) = events.recv().await {
            match event {
                ConnectionEvent::Connected { client_id } => {
                    eprintln!("herald tail: connected to {url} ({client_id})")
                }
                ConnectionEvent::Connecting { code, reason } => match code {
                    connecting_code::CONNECT_CALLED => {
                        eprintln!("herald tail: connecting to {url}")
                    }
                    // The error that caused it is printed on its own.
                    connecting_code::TRANSPORT_CLOSED => {}
                    _ => eprintln!("herald tail: connection lost ({code} {reason})"),
                },
                ConnectionEvent::Retrying { delay } => {
                    eprintln!("herald tail: next attempt in {:.1} s", delay.as_secs_f64())
                }
                ConnectionEvent::Disconnected { code, reason } => {
                    if let Some(tx) = ended_tx.take() {
                        let _ = tx.send(format!(
                            "the node at {url} ended the connection for good: {code} {reason}{}",
                            advice(code)
                        ));
                    }
                }
                ConnectionEvent::Error(e) => {
                    eprintln!("herald tail: cannot use {url}: {}", chain(e.as_ref()))
                }
                _ => {}
            }
        }
    });
    let mut sub = client
        .subscribe(
            &args.channel,
            SubscribeOptions {
                since,
                token: sub_token,
                ..SubscribeOptions::default()
            },
        )
        .await
        .context("cannot subscribe")?;
    // Connecting keeps retrying in the background; the subscription waits for it.
    let _ = client.connect().await;
    let mut printed = 0u64;
    let mut stdout = std::io::stdout().lock();
    loop {
        let event = tokio::select! {
            event = sub.next() => match event {
                Some(event) => event,
                None => break,
            },
            why = &mut ended => {
                bail!("{}", why.unwrap_or_else(|_| "the client stopped".into()));
            }
        };
        match event {
            SubscriptionEvent::Subscribed {
                recovered,
                was_recovering,
                position,
                ..
            } => {
                let at = format!("{}:{}", position.offset, position.epoch);
                match (was_recovering, recovered) {
                    (true, false) => eprintln!(
                        "herald tail: subscribed to {}; missed publications could not be recovered, continuing from {at}",
                        args.channel
                    ),
                    (true, true) => eprintln!(
                        "herald tail: subscribed to {}; recovered from {at}",
                        args.channel
                    ),
                    _ => eprintln!("herald tail: subscribed to {} at {at}", args.channel),
                }
            }
            SubscriptionEvent::Publication(p) => {
                let line = json!({ "channel": args.channel, "offset": p.offset, "data": p.data, "info": p.info, "tags": p.tags });
                writeln!(stdout, "{line}").context("stdout closed")?;
                stdout.flush().context("stdout closed")?;
                printed += 1;
                if args.count.is_some_and(|n| printed >= n) {
                    break;
                }
            }
            SubscriptionEvent::Unsubscribed { code, reason } => {
                bail!("unsubscribed by the server: {code} {reason}");
            }
            SubscriptionEvent::Error { code, message } => {
                let hint = match code {
                    103 if args.channel.starts_with('$') => {
                        " (a $ channel needs a subscription token: --sub-token, or --token-hmac-secret)"
                    }
                    102 => " (the channel's namespace is not configured on the node)",
                    _ => "",
                };
                bail!(
                    "cannot subscribe to {}: {code} {message}{hint}",
                    args.channel
                )
            }
            _ => {}
        }
    }
    client.disconnect().await;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_since;

    #[test]
    fn since_parses_offset_and_epoch() {
        let p = parse_since("17:Xy12").expect("valid");
        assert_eq!((p.offset, p.epoch.as_str()), (17, "Xy12"));
        assert!(parse_since("17").is_err());
        assert!(parse_since("x:Xy").is_err());
    }
}
