//! `herald tail`: print a channel's publications as JSON lines on stdout, resuming from
//! the last offset across reconnects; connection changes go to stderr.

use crate::cli::TailArgs;
use anyhow::{Context, bail};
use herald_client::{Client, ConnectionEvent, StreamPosition, SubscribeOptions, SubscriptionEvent};
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
    let mut builder = Client::builder(&args.url).name("herald-tail");
    if let Some(t) = token {
        builder = builder.token(t);
    }
    let client = builder.build().context("invalid client settings")?;
    let mut events = client.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                ConnectionEvent::Connected { client_id } => {
                    eprintln!("herald tail: connected ({client_id})")
                }
                ConnectionEvent::Connecting { code, reason } => {
                    eprintln!("herald tail: connecting ({code} {reason})")
                }
                ConnectionEvent::Disconnected { code, reason } => {
                    eprintln!("herald tail: disconnected ({code} {reason})")
                }
                ConnectionEvent::Error(e) => eprintln!("herald tail: {e}"),
                _ => {}
            }
        }
    });
    let mut sub = client
        .subscribe(
            &args.channel,
            SubscribeOptions {
                since,
                ..SubscribeOptions::default()
            },
        )
        .await
        .context("cannot subscribe")?;
    // Connecting may keep retrying in the background; the subscription waits for it.
    if let Err(e) = client.connect().await {
        eprintln!("herald tail: {e}; still trying");
    }
    let mut printed = 0u64;
    let mut stdout = std::io::stdout().lock();
    while let Some(event) = sub.next().await {
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
                bail!("subscription error {code}: {message}")
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
