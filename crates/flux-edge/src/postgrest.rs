//! The shapes PostgREST 12.0.2 expects from a `db-pre-request` function.

use serde_json::{json, Map, Value};

/// Value for `set_config('response.headers', …)`: an array of single-key objects with string
/// values (any other shape is a 500, PGRST111).
pub fn response_headers(headers: &[(&str, String)]) -> String {
    Value::Array(
        headers
            .iter()
            .map(|(name, value)| json!({ *name: value }))
            .collect(),
    )
    .to_string()
}

/// PostgREST's error body, `{code, message, details, hint}`: what the database and the router
/// answer alike.
pub fn error_body(code: &str, message: &str, details: Option<&str>, hint: Option<&str>) -> String {
    json!({ "code": code, "message": message, "details": details, "hint": hint }).to_string()
}

/// `MESSAGE` and `DETAIL` of `RAISE SQLSTATE 'PGRST'`, which PostgREST turns into an HTTP error
/// with this status, headers and body `{code, message, details, hint}`. All four parts are
/// required in 12.0.2 (a missing one is a 500, PGRST121).
pub fn error(
    status: u16,
    code: &str,
    message: &str,
    details: Option<&str>,
    hint: Option<&str>,
    headers: &[(&str, String)],
) -> (String, String) {
    let headers: Map<String, Value> = headers
        .iter()
        .map(|(name, value)| ((*name).to_owned(), Value::String(value.clone())))
        .collect();
    (
        error_body(code, message, details, hint),
        json!({ "status": status, "headers": headers }).to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        assert_eq!(
            response_headers(&[
                ("X-RateLimit-Limit", "60".into()),
                ("X-RateLimit-Remaining", "59".into())
            ]),
            r#"[{"X-RateLimit-Limit":"60"},{"X-RateLimit-Remaining":"59"}]"#
        );
        let (message, detail) = error(
            429,
            "PGRST429",
            "Too many",
            None,
            Some("slow down"),
            &[("Retry-After", "3".into())],
        );
        let message: Value = serde_json::from_str(&message).unwrap();
        assert_eq!(
            message,
            json!({"code": "PGRST429", "message": "Too many", "details": null, "hint": "slow down"})
        );
        let detail: Value = serde_json::from_str(&detail).unwrap();
        assert_eq!(
            detail,
            json!({"status": 429, "headers": {"Retry-After": "3"}})
        );
    }
}
