//! Which ledger tool a payment is charged to.
//!
//! **Rule: the tool is where the money goes, never what the agent says.**
//! A session's tool caps only mean something if the agent cannot choose the
//! label. So the tool comes from the upstream URL:
//!
//! 1. the configured tool map (`--tool-map host[:port][/path-prefix]=tool`):
//!    of the rules whose host pattern matches the URL (exact host, or
//!    `*.domain`; with a port, only that port) and whose path prefix covers
//!    the URL's path (whole segments: `/v1` covers `/v1` and `/v1/x`, not
//!    `/v10`), the most specific wins: the longest path prefix, then an
//!    exact host over a wildcard, then a longer host, then one with a port;
//! 2. otherwise the upstream's `host[:port]` (the port only when the URL
//!    gives a non-default one), e.g. `api.example.com` or `127.0.0.1:8080`.
//!
//! `FetchRequest.tool` is optional and only checked: when given it must
//! equal the derived tool, else the fetch is refused (`400 tool_mismatch`)
//! before anything is sent or held. Refusing rather than silently ignoring
//! it tells an honest agent its labels are wrong, and makes a
//! prompt-injected one's attempt visible.

use crate::limits::ConfigError;
use crate::policy::HostPattern;

/// Longest ledger tool name.
pub const TOOL_BYTES_MAX: usize = 200;

/// One `host[:port][/path-prefix]=tool` rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolRule {
    host: HostPattern,
    /// `/` or `/seg[/seg...]` without a trailing slash.
    path_prefix: String,
    pub tool: String,
}

fn valid_tool(tool: &str) -> bool {
    !tool.is_empty() && tool.len() <= TOOL_BYTES_MAX && tool.bytes().all(|b| b.is_ascii_graphic())
}

impl ToolRule {
    pub fn parse(text: &str) -> Result<ToolRule, ConfigError> {
        let bad = |why: &str| ConfigError::new(format!("tool rule {text:?}: {why}"));
        let (target, tool) = text
            .trim()
            .rsplit_once('=')
            .ok_or_else(|| bad("expected HOST[/PREFIX]=TOOL"))?;
        let tool = tool.trim();
        if !valid_tool(tool) {
            return Err(bad(&format!(
                "the tool must be 1 to {TOOL_BYTES_MAX} visible ASCII characters"
            )));
        }
        let target = target.trim();
        let (host, path) = match target.find('/') {
            Some(i) => (&target[..i], &target[i..]),
            None => (target, "/"),
        };
        if path.contains(['?', '#', '*']) {
            return Err(bad("the path prefix is a plain path"));
        }
        let trimmed = path.trim_end_matches('/');
        let path_prefix = if trimmed.is_empty() {
            "/".to_string()
        } else {
            trimmed.to_string()
        };
        Ok(ToolRule {
            host: HostPattern::parse(host)?,
            path_prefix,
            tool: tool.to_string(),
        })
    }

    /// Parses a comma-separated list (empty items are skipped).
    pub fn parse_list(text: &str) -> Result<Vec<ToolRule>, ConfigError> {
        text.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(ToolRule::parse)
            .collect()
    }

    fn covers(&self, url: &reqwest::Url) -> bool {
        if !self.host.matches(url) {
            return false;
        }
        let path = url.path();
        self.path_prefix == "/"
            || path == self.path_prefix
            || path
                .strip_prefix(self.path_prefix.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
    }
}

impl std::fmt::Display for ToolRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path_prefix == "/" {
            ""
        } else {
            self.path_prefix.as_str()
        };
        write!(f, "{}{path}={}", self.host, self.tool)
    }
}

/// The upstream's `host[:port]` (the port only when not the scheme's
/// default).
pub fn host_tool(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("unknown-host");
    let host = host.strip_suffix('.').unwrap_or(host);
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_string(),
    }
}

/// The tool a payment to `url` is charged to.
pub fn derive_tool(url: &reqwest::Url, rules: &[ToolRule]) -> String {
    rules
        .iter()
        .filter(|r| r.covers(url))
        .max_by_key(|r| (r.path_prefix.len(), r.host.specificity()))
        .map(|r| r.tool.clone())
        .unwrap_or_else(|| {
            let mut tool = host_tool(url);
            tool.truncate(TOOL_BYTES_MAX);
            tool
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(u: &str) -> reqwest::Url {
        reqwest::Url::parse(u).unwrap()
    }

    #[test]
    fn the_tool_follows_the_upstream() {
        let rules = ToolRule::parse_list(
            "api.example.com=example, api.example.com/v1/images=images, *.search.io=search, 127.0.0.1:8080/paid=local",
        )
        .unwrap();
        let tool = |u: &str| derive_tool(&url(u), &rules);
        assert_eq!(tool("https://api.example.com/v1/text"), "example");
        assert_eq!(tool("https://api.example.com/v1/images"), "images");
        assert_eq!(tool("https://api.example.com/v1/images/big?x=1"), "images");
        assert_eq!(tool("https://api.example.com/v1/imagesx"), "example");
        assert_eq!(tool("https://eu.search.io/q"), "search");
        assert_eq!(tool("http://127.0.0.1:8080/paid/x"), "local");
        assert_eq!(tool("http://127.0.0.1:8080/other"), "127.0.0.1:8080");
        assert_eq!(tool("http://127.0.0.1:8081/paid"), "127.0.0.1:8081");
        assert_eq!(tool("https://other.org:443/x"), "other.org");
        assert_eq!(tool("https://Other.org.:8443/x"), "other.org:8443");
        assert_eq!(tool("http://[::1]:9/x"), "[::1]:9");

        for bad in [
            "api.example.com",
            "=tool",
            "a.com/x?y=tool",
            "a.com=",
            "a.com=has space",
        ] {
            assert!(ToolRule::parse(bad).is_err(), "{bad}");
        }
    }
}
