//! Talking to the paid API: building the upstream request from the agent's
//! fetch, sending it (with or without a payment), reading a bounded body, and
//! telling "never sent" apart from "may have been received".

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use base64::Engine as _;
use bytes::Bytes;

use crate::error::{Code, GatewayError, GatewayResult};
use crate::limits::Limits;
use crate::wire::FetchRequest;

/// Headers that belong to one hop, never relayed either way.
const HOP_BY_HOP: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
];

/// Payment headers only the gateway sets.
const PAYMENT_HEADERS: [&str; 2] = ["x-payment", "payment-signature"];

/// The validated upstream request, replayable (it is sent again with the
/// payment).
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    pub method: Method,
    pub url: reqwest::Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

fn invalid(message: impl Into<String>) -> GatewayError {
    GatewayError::new(Code::InvalidRequest, message)
}

/// Checks the agent's fetch and builds the upstream request.
pub fn build(req: &FetchRequest, limits: &Limits) -> GatewayResult<UpstreamRequest> {
    if req.url.len() > limits.url_bytes_max {
        return Err(invalid(format!("url is longer than {} bytes", limits.url_bytes_max)));
    }
    let url = reqwest::Url::parse(&req.url).map_err(|e| invalid(format!("url: {e}")))?;
    match url.scheme() {
        "http" | "https" => {}
        other => return Err(invalid(format!("url: scheme {other:?} is not http or https"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("url: no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("url: credentials in the URL are not allowed; send a header"));
    }
    let method = match req.method.as_deref().unwrap_or("GET").to_ascii_uppercase().as_str() {
        "GET" => Method::GET,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "PATCH" => Method::PATCH,
        "DELETE" => Method::DELETE,
        "HEAD" => Method::HEAD,
        other => return Err(invalid(format!("method {other:?} is not supported"))),
    };
    if req.headers.len() > limits.upstream_headers_max {
        return Err(invalid(format!("at most {} headers", limits.upstream_headers_max)));
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &req.headers {
        let lower = name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&lower.as_str()) {
            return Err(invalid(format!("header {name:?} is set by the gateway")));
        }
        if PAYMENT_HEADERS.contains(&lower.as_str()) {
            return Err(invalid(format!("header {name:?}: payments are the gateway's job")));
        }
        let name = HeaderName::from_bytes(lower.as_bytes()).map_err(|_| invalid(format!("header name {name:?}")))?;
        let value =
            HeaderValue::from_str(value).map_err(|_| invalid(format!("header {name}: value is not visible ASCII")))?;
        headers.append(name, value);
    }
    let body = match (&req.body, &req.body_base64) {
        (Some(_), Some(_)) => return Err(invalid("give body or body_base64, not both")),
        (Some(text), None) => Bytes::from(text.clone().into_bytes()),
        (None, Some(b64)) => Bytes::from(
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| invalid(format!("body_base64: {e}")))?,
        ),
        (None, None) => Bytes::new(),
    };
    Ok(UpstreamRequest {
        method,
        url,
        headers,
        body,
    })
}

/// The HTTP client for one fetch's upstream: no redirects (a payment header
/// must never follow one to another host, and a redirect must not escape the
/// upstream checks: a 3xx is relayed to the agent as is), no proxies from
/// the environment, a connect timeout; whole-exchange deadlines are applied
/// per call. `pinned` is the host name and the addresses the guard checked
/// ([`crate::policy::Guard::check`]): the client connects to those only and
/// never resolves the name again.
pub fn http_client(
    limits: &Limits,
    pinned: Option<(&str, &[std::net::SocketAddr])>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(limits.upstream_connect_timeout)
        .tcp_nodelay(true);
    if let Some((host, addrs)) = pinned {
        builder = builder.resolve_to_addrs(host, addrs);
    }
    builder.build()
}

/// Why an upstream exchange failed before a status arrived.
#[derive(Debug)]
pub enum SendError {
    /// The request never left (connection refused, no route, DNS): safe to
    /// treat as not received.
    NotSent(String),
    /// It may have been received (timeout, connection dropped mid-way).
    MaybeReceived(String),
}

#[derive(Debug)]
pub enum BodyError {
    TooLarge,
    Failed(String),
}

#[derive(Debug)]
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Result<Bytes, BodyError>,
}

/// Sends `req` (plus `payment`, a header) and reads the answer, all within
/// `limits.upstream_timeout`. A status, once received, is kept even when
/// the body then fails.
pub async fn send(
    http: &reqwest::Client,
    req: &UpstreamRequest,
    payment: Option<(&'static str, String)>,
    limits: &Limits,
) -> Result<UpstreamResponse, SendError> {
    let started = Instant::now();
    let mut builder = http
        .request(req.method.clone(), req.url.clone())
        .headers(req.headers.clone())
        .body(req.body.clone());
    if let Some((name, value)) = payment {
        builder = builder.header(name, value);
    }
    let response = match tokio::time::timeout(limits.upstream_timeout, builder.send()).await {
        Err(_) => {
            return Err(SendError::MaybeReceived(format!(
                "no answer within {} ms",
                limits.upstream_timeout.as_millis()
            )))
        }
        Ok(Err(e)) if e.is_connect() || e.is_builder() => return Err(SendError::NotSent(e.to_string())),
        Ok(Err(e)) => return Err(SendError::MaybeReceived(e.to_string())),
        Ok(Ok(r)) => r,
    };
    let status = response.status();
    let headers = response.headers().clone();
    let left = limits
        .upstream_timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(1));
    let body = match tokio::time::timeout(left, read_body(response, limits.response_body_bytes_max)).await {
        Err(_) => Err(BodyError::Failed("the body did not arrive in time".into())),
        Ok(body) => body,
    };
    Ok(UpstreamResponse { status, headers, body })
}

async fn read_body(mut response: reqwest::Response, max: usize) -> Result<Bytes, BodyError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| BodyError::Failed(e.to_string()))? {
        if out.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(out))
}

/// The upstream's headers as the agent sees them.
pub fn relay_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in headers {
        let name = name.as_str();
        if HOP_BY_HOP.contains(&name) {
            continue;
        }
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        out.entry(name.to_string())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    out
}

/// A body as text when it is UTF-8, else base64.
pub fn relay_body(body: &[u8]) -> (Option<String>, Option<String>) {
    if body.is_empty() {
        return (None, None);
    }
    match std::str::from_utf8(body) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetch(url: &str) -> FetchRequest {
        FetchRequest {
            session_id: "ses_1".into(),
            url: url.into(),
            ..FetchRequest::default()
        }
    }

    #[test]
    fn builds_and_refuses() {
        let limits = Limits::default();
        let ok = build(&fetch("http://127.0.0.1:9/x?y=1"), &limits).unwrap();
        assert_eq!(ok.method, Method::GET);
        assert!(build(&fetch("https://api.example/x"), &limits).is_ok());
        for bad in ["ftp://x/", "not a url", "http://u:p@x/"] {
            assert!(build(&fetch(bad), &limits).is_err(), "{bad}");
        }
        let long = format!("http://x/{}", "a".repeat(limits.url_bytes_max));
        assert!(build(&fetch(&long), &limits).is_err());
        for header in ["X-Payment", "PAYMENT-SIGNATURE", "Host", "Transfer-Encoding"] {
            let mut f = fetch("http://x/");
            f.headers.insert(header.into(), "v".into());
            assert!(build(&f, &limits).is_err(), "{header}");
        }
        let mut f = fetch("http://x/");
        f.method = Some("CONNECT".into());
        assert!(build(&f, &limits).is_err());
        f.method = Some("post".into());
        f.body = Some("a".into());
        f.body_base64 = Some("YQ==".into());
        assert!(build(&f, &limits).is_err());
        f.body = None;
        assert_eq!(&build(&f, &limits).unwrap().body[..], b"a");
    }

    #[test]
    fn relays_text_or_base64() {
        assert_eq!(relay_body(b"hi"), (Some("hi".into()), None));
        assert_eq!(relay_body(&[0xff, 0x00]), (None, Some("/wA=".into())));
        assert_eq!(relay_body(b""), (None, None));
    }
}
