//! Reply error codes, WebSocket close (disconnect) codes and unsubscribe push codes.

use serde::{Deserialize, Serialize};

/// A reply error code (`{"error":{"code":..}}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u32", try_from = "u32")]
#[repr(u32)]
pub enum ErrorCode {
    /// 100: internal server error; temporary, the SDK retries.
    Internal = 100,
    /// 101: the connection is not authenticated.
    Unauthorized = 101,
    /// 102: the channel's namespace does not exist.
    UnknownChannel = 102,
    /// 103: permission denied.
    PermissionDenied = 103,
    /// 104: the method is unknown.
    MethodNotFound = 104,
    /// 105: the client is already subscribed to the channel.
    AlreadySubscribed = 105,
    /// 106: a limit was exceeded.
    LimitExceeded = 106,
    /// 107: the request is malformed.
    BadRequest = 107,
    /// 108: the feature is not available (e.g. history off in the namespace).
    NotAvailable = 108,
    /// 109: the token has expired; the SDK fetches a new one.
    TokenExpired = 109,
    /// 110: expired.
    Expired = 110,
    /// 111: too many requests; temporary.
    TooManyRequests = 111,
    /// 112: the client asked to be rejected when its position cannot be recovered.
    UnrecoverablePosition = 112,
}

impl ErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ErrorCode; 13] = [
        Self::Internal,
        Self::Unauthorized,
        Self::UnknownChannel,
        Self::PermissionDenied,
        Self::MethodNotFound,
        Self::AlreadySubscribed,
        Self::LimitExceeded,
        Self::BadRequest,
        Self::NotAvailable,
        Self::TokenExpired,
        Self::Expired,
        Self::TooManyRequests,
        Self::UnrecoverablePosition,
    ];

    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The message sent with the code.
    pub fn message(self) -> &'static str {
        match self {
            Self::Internal => "internal server error",
            Self::Unauthorized => "unauthorized",
            Self::UnknownChannel => "unknown channel",
            Self::PermissionDenied => "permission denied",
            Self::MethodNotFound => "method not found",
            Self::AlreadySubscribed => "already subscribed",
            Self::LimitExceeded => "limit exceeded",
            Self::BadRequest => "bad request",
            Self::NotAvailable => "not available",
            Self::TokenExpired => "token expired",
            Self::Expired => "expired",
            Self::TooManyRequests => "too many requests",
            Self::UnrecoverablePosition => "unrecoverable position",
        }
    }

    /// Whether a client should retry the same request later.
    pub fn temporary(self) -> bool {
        matches!(self, Self::Internal | Self::TooManyRequests)
    }

    /// The wire error object for this code with its standard message.
    pub fn to_error(self) -> crate::Error {
        crate::Error {
            code: self.code(),
            message: self.message().to_owned(),
            temporary: self.temporary(),
        }
    }
}

impl From<ErrorCode> for u32 {
    fn from(c: ErrorCode) -> u32 {
        c.code()
    }
}

/// A number that is not a known [`ErrorCode`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown error code {0}")]
pub struct UnknownCode(pub u32);

impl TryFrom<u32> for ErrorCode {
    type Error = UnknownCode;
    fn try_from(n: u32) -> Result<Self, UnknownCode> {
        Self::ALL
            .into_iter()
            .find(|c| c.code() == n)
            .ok_or(UnknownCode(n))
    }
}

/// Why the server closes a connection: a WebSocket close code and a short reason.
///
/// Codes 3000–3499 (and 4000–4499) tell the client to reconnect; 3500–3999 (and
/// 4500–4999) are terminal. The RFC 6455 codes (1002, 1007, 1009) are for violations
/// of WebSocket framing itself, below the Centrifuge protocol; of those, the SDKs
/// reconnect with their backoff after 1002 and 1007 and stop after 1009.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum DisconnectCode {
    /// 1002 (RFC 6455): a WebSocket protocol violation: reserved bits, a reserved
    /// opcode, an unmasked or badly fragmented frame, a malformed close frame.
    WsProtocolError = 1002,
    /// 1007 (RFC 6455): a text frame (or close reason) that is not valid UTF-8.
    WsInvalidPayload = 1007,
    /// 1009 (RFC 6455): a frame or message over the size limit. Terminal for the
    /// SDKs (the npm `centrifuge` SDK reports `messageSizeLimit` and does not
    /// reconnect), so a client that keeps sending the same oversize message stops
    /// instead of reconnecting into the same close again and again.
    WsMessageTooBig = 1009,
    /// 3000: connection closed.
    ConnectionClosed = 3000,
    /// 3001: the server is shutting down; reconnect elsewhere.
    Shutdown = 3001,
    /// 3004: internal server error.
    Internal = 3004,
    /// 3005: the connection's token expired and was not refreshed.
    Expired = 3005,
    /// 3006: a subscription's token expired and was not refreshed.
    SubExpired = 3006,
    /// 3008: the client reads too slowly; its queue overflowed.
    Slow = 3008,
    /// 3009: writing to the socket failed.
    WriteError = 3009,
    /// 3010: the server lost the state needed to continue; reconnect and recover.
    InsufficientState = 3010,
    /// 3011: the server asks the client to reconnect.
    ForceReconnect = 3011,
    /// 3012: the client did not answer pings.
    NoPong = 3012,
    /// 3013: too many requests.
    TooManyRequests = 3013,
    /// 3500: the connection token is invalid.
    InvalidToken = 3500,
    /// 3501: the client sent something that is not the protocol.
    BadRequest = 3501,
    /// 3502: no connect command arrived in time.
    Stale = 3502,
    /// 3503: disconnected by the server for good.
    ForceDisconnect = 3503,
    /// 3504: too many connections.
    ConnectionLimit = 3504,
    /// 3505: too many channels.
    ChannelLimit = 3505,
    /// 3506: the client speaks an unsupported protocol.
    InappropriateProtocol = 3506,
    /// 3507: permission denied.
    PermissionDenied = 3507,
    /// 3508: not available.
    NotAvailable = 3508,
    /// 3509: too many errors.
    TooManyErrors = 3509,
}

impl DisconnectCode {
    /// Every code, in numeric order.
    pub const ALL: [DisconnectCode; 24] = [
        Self::WsProtocolError,
        Self::WsInvalidPayload,
        Self::WsMessageTooBig,
        Self::ConnectionClosed,
        Self::Shutdown,
        Self::Internal,
        Self::Expired,
        Self::SubExpired,
        Self::Slow,
        Self::WriteError,
        Self::InsufficientState,
        Self::ForceReconnect,
        Self::NoPong,
        Self::TooManyRequests,
        Self::InvalidToken,
        Self::BadRequest,
        Self::Stale,
        Self::ForceDisconnect,
        Self::ConnectionLimit,
        Self::ChannelLimit,
        Self::InappropriateProtocol,
        Self::PermissionDenied,
        Self::NotAvailable,
        Self::TooManyErrors,
    ];

    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The close reason sent with the code (short: close reasons are capped at 123 bytes).
    pub fn reason(self) -> &'static str {
        match self {
            Self::WsProtocolError => "protocol error",
            Self::WsInvalidPayload => "invalid utf-8",
            Self::WsMessageTooBig => "message too big",
            Self::ConnectionClosed => "connection closed",
            Self::Shutdown => "shutdown",
            Self::Internal => "internal server error",
            Self::Expired => "connection expired",
            Self::SubExpired => "subscription expired",
            Self::Slow => "slow",
            Self::WriteError => "write error",
            Self::InsufficientState => "insufficient state",
            Self::ForceReconnect => "force reconnect",
            Self::NoPong => "no pong",
            Self::TooManyRequests => "too many requests",
            Self::InvalidToken => "invalid token",
            Self::BadRequest => "bad request",
            Self::Stale => "stale",
            Self::ForceDisconnect => "force disconnect",
            Self::ConnectionLimit => "connection limit",
            Self::ChannelLimit => "channel limit",
            Self::InappropriateProtocol => "inappropriate protocol",
            Self::PermissionDenied => "permission denied",
            Self::NotAvailable => "not available",
            Self::TooManyErrors => "too many errors",
        }
    }

    /// Whether a client that receives this code should reconnect.
    pub fn reconnect(self) -> bool {
        should_reconnect(self.code())
    }

    /// The code for a number, if it is one Herald sends.
    pub fn from_code(n: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == n)
    }
}

/// Whether a close code (from any server) asks the client to reconnect.
///
/// 1009 (message too big) is terminal as in the npm `centrifuge` SDK: reconnecting
/// would only send the same oversize message into the same close.
pub fn should_reconnect(code: u16) -> bool {
    !(code == 1009 || (3500..4000).contains(&code) || (4500..5000).contains(&code))
}

/// Why the server ends one subscription (the `unsubscribe` push).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum UnsubscribeCode {
    /// 2000: unsubscribed by the server for good.
    Server = 2000,
    /// 2500: the server lost the state needed to continue; resubscribe with recovery.
    InsufficientState = 2500,
    /// 2501: the subscription token expired.
    Expired = 2501,
}

impl UnsubscribeCode {
    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// The reason sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Server => "server unsubscribe",
            Self::InsufficientState => "insufficient state",
            Self::Expired => "subscription expired",
        }
    }

    /// Whether the client should subscribe again (codes ≥ 2500).
    pub fn resubscribe(self) -> bool {
        self.code() >= 2500
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_round_trip_and_serialize_as_numbers() {
        for c in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(c.code()), Ok(c));
            assert_eq!(
                serde_json::to_string(&c).expect("ser"),
                c.code().to_string()
            );
        }
        assert_eq!(ErrorCode::try_from(99), Err(UnknownCode(99)));
        assert!(ErrorCode::Internal.temporary());
        assert!(!ErrorCode::PermissionDenied.temporary());
    }

    #[test]
    fn disconnect_codes_split_into_reconnect_and_terminal() {
        for c in DisconnectCode::ALL {
            assert_eq!(DisconnectCode::from_code(c.code()), Some(c));
            assert_eq!(
                c.reconnect(),
                c.code() < 3500 && c != DisconnectCode::WsMessageTooBig,
                "{c:?}"
            );
            assert!(c.reason().len() <= 123);
        }
        assert!(DisconnectCode::ALL.is_sorted_by_key(|c| c.code()));
        assert!(should_reconnect(4000));
        assert!(should_reconnect(1002));
        assert!(!should_reconnect(1009));
        assert!(!should_reconnect(4500));
    }

    #[test]
    fn unsubscribe_codes() {
        assert!(!UnsubscribeCode::Server.resubscribe());
        assert!(UnsubscribeCode::InsufficientState.resubscribe());
        assert!(UnsubscribeCode::Expired.resubscribe());
    }
}
