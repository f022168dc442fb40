//! The HTTPRoute filters: header modifiers, URL rewrite and redirect. Pure functions over
//! request and response heads.

use ambit_model::route::{HeaderModifier, PathModifier, Redirect, RouteFilter};
use http::header::{HOST, LOCATION};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode, Uri};

use crate::errors::{ProxyError, ResponseBody, empty_body};

/// What the request filters decided.
#[derive(Debug)]
pub enum RequestOutcome {
    /// Forward the (modified) request.
    Forward,
    /// Answer with this redirect instead.
    Redirect(Response<ResponseBody>),
}

/// Applies the request-side filters of a rule in order: header changes, URL rewrite, or a
/// redirect (which ends processing). `prefix` is the `PathPrefix` that matched, if any.
pub fn apply_request(
    filters: &[RouteFilter],
    request: &mut Parts,
    prefix: Option<&str>,
) -> Result<RequestOutcome, ProxyError> {
    for filter in filters {
        match filter {
            RouteFilter::RequestHeaders(modifier) => modify_headers(&mut request.headers, modifier),
            RouteFilter::UrlRewrite { hostname, path } => {
                if let Some(path) = path {
                    let new_path = rewrite_path(request.uri.path(), path, prefix);
                    set_path(request, &new_path)?;
                }
                if let Some(hostname) = hostname {
                    set_host(request, hostname)?;
                }
            }
            RouteFilter::Redirect(redirect) => {
                return redirect_response(request, redirect, prefix).map(RequestOutcome::Redirect);
            }
            // Mirrors are sent by the stack (see `route::mirror`); nothing changes here.
            RouteFilter::ResponseHeaders(_) | RouteFilter::Mirror(_) => {}
        }
    }
    Ok(RequestOutcome::Forward)
}

/// Applies the response-side filters of a rule.
pub fn apply_response(filters: &[RouteFilter], headers: &mut HeaderMap) {
    for filter in filters {
        if let RouteFilter::ResponseHeaders(modifier) = filter {
            modify_headers(headers, modifier);
        }
    }
}

/// `set` replaces, `add` appends, `remove` deletes. Names and values were validated by the
/// model; anything that still fails to convert is skipped rather than sent malformed.
pub fn modify_headers(headers: &mut HeaderMap, modifier: &HeaderModifier) {
    for (name, value) in &modifier.set {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.insert(name, value);
        }
    }
    for (name, value) in &modifier.add {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    for name in &modifier.remove {
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            headers.remove(name);
        }
    }
}

/// The path after a `ReplaceFullPath`, a `ReplacePrefixMatch` or a VirtualService
/// `rewrite.uri`.
pub fn rewrite_path(path: &str, modifier: &PathModifier, prefix: Option<&str>) -> String {
    match modifier {
        PathModifier::Full(full) => full.clone(),
        // Envoy's `prefix_rewrite`: the matched string prefix is replaced as is, no segment
        // logic; without a prefix match the whole path is replaced.
        PathModifier::MatchedPrefixOrFull(replacement) => match prefix {
            Some(prefix) => match path.strip_prefix(prefix) {
                Some(rest) => format!("{replacement}{rest}"),
                None => replacement.clone(),
            },
            None => replacement.clone(),
        },
        PathModifier::Prefix(replacement) => {
            let rest = match prefix {
                Some("/") => path,
                Some(prefix) => path.strip_prefix(prefix).unwrap_or(path),
                // The model only allows ReplacePrefixMatch with PathPrefix matches.
                None => path,
            };
            let rest = rest.trim_start_matches('/');
            let base = replacement.trim_end_matches('/');
            if rest.is_empty() {
                if base.is_empty() { "/" } else { base }.to_owned()
            } else {
                format!("{base}/{rest}")
            }
        }
    }
}

fn set_path(request: &mut Parts, path: &str) -> Result<(), ProxyError> {
    let path_and_query = match request.uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_owned(),
    };
    let path_and_query = PathAndQuery::try_from(path_and_query)
        .map_err(|err| ProxyError::malformed(format!("rewritten path: {err}")))?;
    let mut parts = request.uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    request.uri = Uri::from_parts(parts)
        .map_err(|err| ProxyError::malformed(format!("rewritten URI: {err}")))?;
    Ok(())
}

pub(crate) fn set_host(request: &mut Parts, hostname: &str) -> Result<(), ProxyError> {
    let value = HeaderValue::from_str(hostname)
        .map_err(|err| ProxyError::malformed(format!("rewritten host: {err}")))?;
    request.headers.insert(HOST, value);
    if request.uri.authority().is_some() {
        let authority = Authority::try_from(hostname)
            .map_err(|err| ProxyError::malformed(format!("rewritten host: {err}")))?;
        let mut parts = request.uri.clone().into_parts();
        parts.authority = Some(authority);
        request.uri = Uri::from_parts(parts)
            .map_err(|err| ProxyError::malformed(format!("rewritten URI: {err}")))?;
    }
    Ok(())
}

/// The host a request names: `:authority` for HTTP/2, else `Host`.
pub fn request_host(request: &Parts) -> Option<&str> {
    request
        .uri
        .authority()
        .map(Authority::as_str)
        .or_else(|| request.headers.get(HOST).and_then(|h| h.to_str().ok()))
}

/// Splits `host[:port]` (IPv6 in brackets).
pub fn split_host_port(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[')
        && let Some((host, tail)) = rest.split_once(']')
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host, port);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => (host, port.parse().ok()),
        _ => (authority, None),
    }
}

fn redirect_response(
    request: &Parts,
    redirect: &Redirect,
    prefix: Option<&str>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let request_scheme = request.uri.scheme_str().unwrap_or("http");
    let scheme = redirect.scheme.as_deref().unwrap_or(request_scheme);
    let (request_host, request_port) = request_host(request)
        .map(split_host_port)
        .unwrap_or(("", None));
    let host = redirect.hostname.as_deref().unwrap_or(request_host);
    if host.is_empty() {
        return Err(ProxyError::malformed(
            "redirect of a request without a host",
        ));
    }
    // Gateway API: an explicit port wins; a scheme change alone drops the port so the
    // scheme's well-known one applies; otherwise the request's port is kept.
    let port = match (redirect.port, redirect.scheme.is_some()) {
        (Some(port), _) => Some(port),
        (None, true) => None,
        (None, false) => request_port,
    };
    let port = port.filter(|p| !matches!((scheme, *p), ("http", 80) | ("https", 443)));
    let path = match &redirect.path {
        Some(modifier) => rewrite_path(request.uri.path(), modifier, prefix),
        None => request.uri.path().to_owned(),
    };
    let query = request
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let location = match port {
        Some(port) => format!("{scheme}://{host}:{port}{path}{query}"),
        None => format!("{scheme}://{host}{path}{query}"),
    };
    let location = HeaderValue::try_from(location)
        .map_err(|err| ProxyError::malformed(format!("redirect location: {err}")))?;
    let mut response = Response::new(empty_body());
    *response.status_mut() =
        StatusCode::from_u16(redirect.status_code).unwrap_or(StatusCode::FOUND);
    response.headers_mut().insert(LOCATION, location);
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, host: &str) -> Parts {
        let (parts, ()) = http::Request::builder()
            .uri(uri)
            .header(HOST, host)
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn prefix_rewrites() {
        let cases = [
            ("/api/v1/items", "/api", "/v2", "/v2/v1/items"),
            ("/api", "/api", "/v2", "/v2"),
            ("/api/", "/api", "/", "/"),
            ("/api/x", "/api", "/", "/x"),
            ("/x/y", "/", "/base", "/base/x/y"),
        ];
        for (path, prefix, replacement, expected) in cases {
            let modifier = PathModifier::Prefix(replacement.to_owned());
            assert_eq!(
                rewrite_path(path, &modifier, Some(prefix)),
                expected,
                "{path} {prefix} {replacement}"
            );
        }
        let full = PathModifier::Full("/new".to_owned());
        assert_eq!(rewrite_path("/old/x", &full, None), "/new");
    }

    #[test]
    fn rewrite_keeps_query_and_sets_host() {
        let mut request = parts("/api/items?x=1", "cart:80");
        let filters = vec![RouteFilter::UrlRewrite {
            hostname: Some("cart-v2.shop".to_owned()),
            path: Some(PathModifier::Prefix("/v2".to_owned())),
        }];
        let outcome = apply_request(&filters, &mut request, Some("/api")).unwrap();
        assert!(matches!(outcome, RequestOutcome::Forward));
        assert_eq!(request.uri, "/v2/items?x=1");
        assert_eq!(request.headers[HOST], "cart-v2.shop");
    }

    #[test]
    fn header_modifier_set_add_remove() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("old"));
        headers.insert("x-gone", HeaderValue::from_static("1"));
        modify_headers(
            &mut headers,
            &HeaderModifier {
                set: vec![("x-a".into(), "new".into())],
                add: vec![("x-a".into(), "more".into()), ("x-b".into(), "b".into())],
                remove: vec!["x-gone".into()],
            },
        );
        let a: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["new", "more"]);
        assert_eq!(headers["x-b"], "b");
        assert!(headers.get("x-gone").is_none());
    }

    #[test]
    fn redirects() {
        let request = parts("/old/page?q=1", "shop.example:8080");
        let redirect = Redirect {
            scheme: Some("https".into()),
            hostname: None,
            path: Some(PathModifier::Prefix("/new".into())),
            port: None,
            status_code: 301,
        };
        let response = redirect_response(&request, &redirect, Some("/old")).unwrap();
        assert_eq!(response.status(), 301);
        assert_eq!(
            response.headers()[LOCATION],
            "https://shop.example/new/page?q=1"
        );
        let redirect = Redirect {
            scheme: None,
            hostname: Some("other".into()),
            path: None,
            port: None,
            status_code: 302,
        };
        let response = redirect_response(&request, &redirect, None).unwrap();
        assert_eq!(
            response.headers()[LOCATION],
            "http://other:8080/old/page?q=1"
        );
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("a.b:80"), ("a.b", Some(80)));
        assert_eq!(split_host_port("a.b"), ("a.b", None));
        assert_eq!(split_host_port("[fd00::1]:80"), ("fd00::1", Some(80)));
        assert_eq!(split_host_port("fd00::1"), ("fd00::1", None));
    }
}
