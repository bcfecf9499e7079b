use std::fmt;

/// The error codes of the wire contract (`docs/protocol.md`). Every transport maps failures onto
/// exactly these; REST additionally maps each to an HTTP status in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    Conflict,
    RateLimited,
    TooLarge,
    Internal,
}

impl ErrorCode {
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure a client is allowed to see: a code from the contract and a human message.
/// Internal details (SQL errors, I/O errors) never go into `message`; they are logged instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ChatError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds after which the same request may succeed (a throttled attempt): REST sends it
    /// as `Retry-After`, and both transports as `retry_after` in the error.
    pub retry_after_secs: Option<u64>,
}

impl ChatError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }
    /// The same error, saying when to try again: `wait_ms` rounded up to whole seconds.
    pub fn retry_after_ms(mut self, wait_ms: u64) -> Self {
        self.retry_after_secs = Some(wait_ms.div_ceil(1000).max(1));
        self
    }
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
    /// The node is shutting down: the request was not carried out; a client retries it after
    /// reconnecting (a send with the same `client_id`, so it is never stored twice).
    pub fn shutting_down() -> Self {
        Self::new(
            ErrorCode::Internal,
            "server is shutting down; retry after reconnecting (a send with the same client_id)",
        )
    }
    pub fn unauthorized() -> Self {
        Self::new(ErrorCode::Unauthorized, "unauthorized")
    }
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Forbidden, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Conflict, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::TooLarge, message)
    }
    pub fn rate_limited() -> Self {
        Self::new(ErrorCode::RateLimited, "too many messages; slow down")
    }
    /// The message is deliberately generic: the cause is logged by whoever builds this.
    pub fn internal() -> Self {
        Self::new(ErrorCode::Internal, "internal error")
    }
}
