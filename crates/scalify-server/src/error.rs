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
/// A throttled request's error also says when to try again (`retry_after`, in seconds).
pub fn error_body(e: &ChatError) -> serde_json::Value {
    let mut body =
        serde_json::json!({ "error": { "code": e.code.as_str(), "message": e.message } });
    if let Some(secs) = e.retry_after_secs {
        body["error"]["retry_after"] = secs.into();
    }
    body
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("scalify_requests_rejected_total", "transport" => "rest", "code" => self.0.code.as_str())
            .increment(1);
        let mut res = (status_of(self.0.code), Json(error_body(&self.0))).into_response();
        if let Some(secs) = self.0.retry_after_secs {
            res.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, secs.into());
        }
        res
    }
}
