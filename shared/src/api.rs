//! Bodies of the HTTP API (SPEC §9).

use serde::{Deserialize, Serialize};

/// `GET /api/v1/version`: what is running.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VersionInfo {
    /// Always `"fleetwave"`.
    pub name: String,
    /// The crate version of the control plane, e.g. `0.1.0`.
    pub version: String,
    /// Version of the wire API, e.g. `v1`.
    pub api: String,
}

/// Every error the API returns: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiErrorBody {
    pub error: ApiError,
}

/// A stable kebab-case `code` for programs and a sentence a person can act on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiError {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_has_the_documented_shape() {
        let body = ApiErrorBody {
            error: ApiError {
                code: "not-found".into(),
                message: "No such route.".into(),
            },
        };
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"error": {"code": "not-found", "message": "No such route."}})
        );
    }

    #[test]
    fn version_info_is_camel_case_and_strict() {
        let v: VersionInfo =
            serde_json::from_str(r#"{"name":"fleetwave","version":"0.1.0","api":"v1"}"#).unwrap();
        assert_eq!(v.api, "v1");
        let unknown = serde_json::from_str::<VersionInfo>(
            r#"{"name":"fleetwave","version":"0.1.0","api":"v1","extra":1}"#,
        );
        assert!(unknown.is_err(), "unknown fields must be rejected");
    }
}
