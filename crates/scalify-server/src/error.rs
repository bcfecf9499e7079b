use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use scalify_core::{ChatError, ErrorCode};

/// A [`ChatError`] on its way out over HTTP. The one place where error codes meet statuses.
#[derive(Debug)]
pub struct ApiError(pub ChatError);

impl From<ChatError> for ApiError {
    fn from(e: ChatError) -> Self {
        ApiError(e)
    }
}

pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict => StatusCode::CONFLICT,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// `{"error":{"code","message"}}` — the body of every failure, REST and socket acks alike.
pub fn error_body(e: &ChatError) -> serde_json::Value {
    serde_json::json!({ "error": { "code": e.code.as_str(), "message": e.message } })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("scalify_requests_rejected_total", "transport" => "rest", "code" => self.0.code.as_str())
            .increment(1);
        (status_of(self.0.code), Json(error_body(&self.0))).into_response()
    }
}
