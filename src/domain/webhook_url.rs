//! A webhook's endpoint URL, checked when it is subscribed: absolute, `https` (plain `http` only where
//! the SSRF policy allows private targets), no IP literal the guard refuses. Names are resolved and
//! checked again at every delivery, since DNS can change.

use std::net::IpAddr;

use url::{Host, Url};

use crate::net_guard::TargetPolicy;

/// Longest URL accepted.
const MAX_LEN: usize = 2048;

/// A validated endpoint URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookUrl(Url);

/// Why a URL was refused: `Syntax` is a malformed request (400), `Policy` a well-formed URL Herald will
/// not deliver to (422).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlPolicy {
    Syntax(String),
    Policy(String),
}

impl WebhookUrl {
    pub fn parse(text: &str, policy: &TargetPolicy) -> Result<Self, UrlPolicy> {
        if text.len() > MAX_LEN {
            return Err(UrlPolicy::Syntax(format!("url is longer than {MAX_LEN} characters")));
        }
        let url = Url::parse(text)
            .map_err(|error| UrlPolicy::Syntax(format!("url is not an absolute URL: {error}")))?;
        let literal = match url.host() {
            Some(Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(Host::Domain(_)) => None,
            None => return Err(UrlPolicy::Syntax("url has no host".into())),
        };
        match url.scheme() {
            "https" => {}
            "http" if policy.allows_plain_http(literal) => {}
            "http" => {
                return Err(UrlPolicy::Policy(
                    "url must use https (plain http is allowed only with delivery.allow_private_targets or an allowed CIDR)".into(),
                ));
            }
            other => {
                return Err(UrlPolicy::Policy(format!("url scheme '{other}' is not supported; use https")));
            }
        }
        if let Some(ip) = literal {
            policy.check(ip).map_err(|blocked| UrlPolicy::Policy(format!("url: {blocked}")))?;
        }
        Ok(Self(url))
    }

    /// A stored URL, trusted as it was checked when it was saved.
    pub fn from_stored(text: &str) -> Option<Self> {
        Url::parse(text).ok().map(Self)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &Url {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strict() -> TargetPolicy {
        TargetPolicy::default()
    }

    #[test]
    fn https_public_urls_pass() {
        assert!(WebhookUrl::parse("https://hooks.example.com/in?x=1", &strict()).is_ok());
        assert!(WebhookUrl::parse("https://8.8.8.8/hook", &strict()).is_ok());
    }

    #[test]
    fn refusals_are_classified() {
        assert!(matches!(WebhookUrl::parse("not a url", &strict()), Err(UrlPolicy::Syntax(_))));
        assert!(matches!(WebhookUrl::parse("/relative", &strict()), Err(UrlPolicy::Syntax(_))));
        for url in [
            "http://hooks.example.com/",
            "ftp://example.com/",
            "https://127.0.0.1/",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
        ] {
            assert!(matches!(WebhookUrl::parse(url, &strict()), Err(UrlPolicy::Policy(_))), "{url}");
        }
    }

    #[test]
    fn private_targets_can_be_opened() {
        let open = TargetPolicy::new(true, vec![]);
        assert!(WebhookUrl::parse("http://127.0.0.1:9000/hook", &open).is_ok());
    }
}
