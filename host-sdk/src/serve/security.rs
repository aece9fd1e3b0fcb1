//! ComfyUI's origin check: when the server is addressed by a loopback host, a request whose
//! `Origin` names another host:port (or that a browser marks `Sec-Fetch-Site: cross-site`)
//! is refused, so web pages elsewhere cannot drive a local server.

/// The host part of a `Host` header value (`[::1]:8188` → `::1`, `localhost:80` → `localhost`).
fn host_name(host: &str) -> &str {
    let h = host.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match h.rsplit_once(':') {
        Some((name, port)) if !name.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => {
            name
        }
        _ => h,
    }
}

/// Whether a host name is loopback (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_loopback_host(name: &str) -> bool {
    let n = name.trim().trim_end_matches('.').to_ascii_lowercase();
    if n == "localhost" || n.ends_with(".localhost") {
        return true;
    }
    n.parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Whether a request with these headers may proceed.
pub fn origin_allowed(
    host: Option<&str>,
    origin: Option<&str>,
    sec_fetch_site: Option<&str>,
) -> bool {
    let Some(host) = host else {
        return true;
    };
    if !is_loopback_host(host_name(host)) {
        return true;
    }
    if sec_fetch_site.is_some_and(|s| s.trim().eq_ignore_ascii_case("cross-site")) {
        return false;
    }
    let Some(origin) = origin else {
        return true;
    };
    let netloc = origin
        .trim()
        .split_once("://")
        .map(|(_, rest)| rest)
        .unwrap_or("")
        .trim_end_matches('/');
    !netloc.is_empty() && netloc.eq_ignore_ascii_case(host.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_need_a_matching_origin() {
        assert!(origin_allowed(Some("127.0.0.1:8188"), None, None));
        assert!(origin_allowed(
            Some("127.0.0.1:8188"),
            Some("http://127.0.0.1:8188"),
            None
        ));
        assert!(!origin_allowed(
            Some("127.0.0.1:8188"),
            Some("http://evil.example"),
            None
        ));
        assert!(!origin_allowed(
            Some("localhost:8188"),
            Some("http://localhost:9999"),
            None
        ));
        assert!(!origin_allowed(Some("[::1]:8188"), Some("null"), None));
        assert!(!origin_allowed(
            Some("127.0.0.1:8188"),
            None,
            Some("cross-site")
        ));
        // A non-loopback host is not checked (ComfyUI's behaviour).
        assert!(origin_allowed(
            Some("192.0.2.1:8188"),
            Some("http://other"),
            None
        ));
        assert!(is_loopback_host("127.1.2.3"));
        assert!(!is_loopback_host("example.com"));
        assert_eq!(host_name("[::1]:80"), "::1");
        assert_eq!(host_name("localhost:80"), "localhost");
    }
}
