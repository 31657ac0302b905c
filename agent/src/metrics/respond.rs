//! What `/metrics` and `/healthz` answer, from a request alone (no socket here): routing,
//! Prometheus content negotiation on `Accept`, gzip on `Accept-Encoding`, and a cache of the
//! encoded exposition keyed by the store's write generation, so that a thousand scrapes between
//! two sampling ticks cost one encoding. The sockets, limits and timeouts are in
//! [`super::server`].

use std::{
    io::Write as _,
    sync::{Mutex, PoisonError},
};

use bytes::Bytes;
use flate2::{Compression, write::GzEncoder};
use hyper::{
    HeaderMap, Method, Request, Response, StatusCode,
    header::{self, HeaderName, HeaderValue},
};

use super::{collector::Format, store::MetricsRegistry};

/// `Content-Type` of the plain-text answers (`/healthz`, errors).
const TEXT: &str = "text/plain; charset=utf-8";

/// Picks the exposition format for an `Accept` header the way Prometheus' client libraries do:
/// the acceptable media range with the highest `q` wins, a specific type beating a wildcard of
/// the same `q`; `OpenMetrics` only when asked for, the classic text format otherwise (no header,
/// `*/*`, `text/plain`, or only types this server does not speak).
pub(super) fn negotiate(accept: Option<&str>) -> Format {
    let mut best: Option<((f32, bool), Format)> = None;
    for range in accept.unwrap_or_default().split(',') {
        let mut parts = range.split(';');
        let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let (format, specific) = match media.as_str() {
            "application/openmetrics-text" => (Format::OpenMetrics, true),
            "text/plain" => (Format::Classic, true),
            "text/*" | "*/*" => (Format::Classic, false),
            _ => continue,
        };
        let rank = (quality(parts), specific);
        if rank.0 > 0.0 && best.is_none_or(|(b, _)| rank > b) {
            best = Some((rank, format));
        }
    }
    best.map_or(Format::Classic, |(_, f)| f)
}

/// Whether an `Accept-Encoding` header accepts gzip: `gzip` (or `x-gzip`) with `q` > 0, or a
/// `*` with `q` > 0 when gzip is not named.
pub(super) fn accepts_gzip(accept_encoding: Option<&str>) -> bool {
    let mut wildcard = false;
    for coding in accept_encoding.unwrap_or_default().split(',') {
        let mut parts = coding.split(';');
        let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
        let q = quality(parts);
        match name.as_str() {
            "gzip" | "x-gzip" => return q > 0.0,
            "*" => wildcard = q > 0.0,
            _ => {}
        }
    }
    wildcard
}

/// The `q` parameter among a media range's or coding's parameters: 1 when absent, 0 when
/// malformed (a range the client did not mean cleanly is not chosen).
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> f32 {
    for p in params {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("q")
        {
            return v.trim().parse::<f32>().unwrap_or(0.0).clamp(0.0, 1.0);
        }
    }
    1.0
}

/// Every value of a header, joined as one list (a client may send `Accept` twice).
fn header_list(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// Encoded bodies of one store generation, per (format, gzip).
#[derive(Debug, Default)]
struct Cache {
    generation: Option<u64>,
    bodies: Vec<((Format, bool), Bytes)>,
}

/// Answers requests from a [`MetricsRegistry`]; shared by every connection.
#[derive(Debug)]
pub(super) struct Responder {
    registry: MetricsRegistry,
    cache: Mutex<Cache>,
}

impl Responder {
    pub(super) fn new(registry: MetricsRegistry) -> Self {
        Self {
            registry,
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The response to `req`. HEAD gets the GET response; hyper leaves out its body and keeps
    /// its `Content-Length`. `/healthz` takes no lock: it answers even while a large scrape
    /// is being encoded.
    pub(super) fn respond<B>(&self, req: &Request<B>) -> Response<Bytes> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        match req.uri().path() {
            "/metrics" => self.metrics(req.headers()),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    fn metrics(&self, headers: &HeaderMap) -> Response<Bytes> {
        let format = negotiate(header_list(headers, &header::ACCEPT).as_deref());
        let gzip = accepts_gzip(header_list(headers, &header::ACCEPT_ENCODING).as_deref());
        let body = match self.body(format, gzip) {
            Ok(body) => body,
            Err(e) => {
                log::warn!("metrics: encoding failed: {e:#}");
                return text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n");
            }
        };
        let mut resp = Response::new(body);
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(format.content_type()),
        );
        // Caches between scraper and agent must key on both negotiated headers.
        h.insert(
            header::VARY,
            HeaderValue::from_static("Accept, Accept-Encoding"),
        );
        if gzip {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        }
        resp
    }

    /// The body for (format, gzip), encoded at most once per store generation.
    fn body(&self, format: Format, gzip: bool) -> anyhow::Result<Bytes> {
        // Read before encoding: if the store changes meanwhile, the body is newer than its tag
        // and the next scrape encodes again; never older.
        let generation = self.registry.generation();
        // Held while encoding, so that scrapes arriving together wait for one encoding instead
        // of each doing it; `/healthz` never takes it.
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.generation != Some(generation) {
            cache.generation = Some(generation);
            cache.bodies.clear();
        }
        if let Some((_, body)) = cache.bodies.iter().find(|(k, _)| *k == (format, gzip)) {
            return Ok(body.clone());
        }
        let text = self.registry.encode_as(format)?;
        let body = if gzip {
            let mut enc = GzEncoder::new(Vec::with_capacity(text.len() / 4), Compression::fast());
            enc.write_all(text.as_bytes())?;
            Bytes::from(enc.finish()?)
        } else {
            Bytes::from(text)
        };
        cache.bodies.push(((format, gzip), body.clone()));
        Ok(body)
    }
}

/// A plain-text response.
fn text(status: StatusCode, body: &'static str) -> Response<Bytes> {
    let mut resp = Response::new(Bytes::from_static(body.as_bytes()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(TEXT));
    resp
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::metrics::{
        WorkloadKey,
        collector::{CLASSIC_CONTENT_TYPE, CONTENT_TYPE, tests::nasty_registry},
        store::tests::tcp,
    };

    #[test]
    fn classic_text_unless_openmetrics_is_asked_for() {
        use Format::{Classic, OpenMetrics};
        for (accept, want) in [
            (None, Classic),
            (Some(""), Classic),
            (Some("*/*"), Classic),
            (Some("text/plain"), Classic),
            (Some("text/plain;version=0.0.4"), Classic),
            (Some("application/json"), Classic),
            (Some("application/openmetrics-text"), OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                OpenMetrics,
            ),
            // What Prometheus sends by default.
            (
                Some(
                    "application/openmetrics-text;version=1.0.0;q=0.5,application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2",
                ),
                OpenMetrics,
            ),
            (
                Some("application/openmetrics-text;q=0.3,text/plain;q=0.5"),
                Classic,
            ),
            (Some("application/openmetrics-text;q=0"), Classic),
            (Some("*/*, application/openmetrics-text"), OpenMetrics),
            (Some("text/plain, application/openmetrics-text"), Classic),
            (Some("application/openmetrics-text;q=bogus"), Classic),
        ] {
            assert_eq!(negotiate(accept), want, "{accept:?}");
        }
    }

    #[test]
    fn gzip_only_when_accepted() {
        for (ae, want) in [
            (None, false),
            (Some("identity"), false),
            (Some("gzip"), true),
            (Some("deflate, gzip;q=1.0, *;q=0.5"), true),
            (Some("x-gzip"), true),
            (Some("GZIP"), true),
            (Some("gzip;q=0"), false),
            (Some("*"), true),
            (Some("*;q=0"), false),
            (Some("gzip;q=0, *"), false),
            (Some("br, zstd"), false),
        ] {
            assert_eq!(accepts_gzip(ae), want, "{ae:?}");
        }
    }

    fn get(path: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(path);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("request")
    }

    fn content_type(resp: &Response<Bytes>) -> &str {
        resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii")
    }

    #[test]
    fn routes_and_formats() {
        let r = Responder::new(nasty_registry());
        let classic = r.respond(&get("/metrics", &[]));
        assert_eq!(classic.status(), StatusCode::OK);
        assert_eq!(content_type(&classic), CLASSIC_CONTENT_TYPE);
        assert_eq!(classic.headers()[header::VARY], "Accept, Accept-Encoding");
        assert!(!classic.body().ends_with(b"# EOF\n"));
        let om = r.respond(&get(
            "/metrics?x=1",
            &[("accept", "application/openmetrics-text")],
        ));
        assert_eq!(content_type(&om), CONTENT_TYPE);
        assert!(om.body().ends_with(b"# EOF\n"));
        let health = r.respond(&get("/healthz", &[]));
        assert_eq!(
            (health.status(), health.body().as_ref()),
            (StatusCode::OK, &b"ok\n"[..])
        );
        let head = Request::head("/metrics").body(()).expect("request");
        assert_eq!(r.respond(&head).body(), classic.body());
        assert_eq!(
            r.respond(&get("/nope", &[])).status(),
            StatusCode::NOT_FOUND
        );
        let post = Request::post("/metrics").body(()).expect("request");
        let resp = r.respond(&post);
        assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(resp.headers()[header::ALLOW], "GET, HEAD");
    }

    #[test]
    fn gzip_body_decodes_to_the_plain_one() {
        let r = Responder::new(nasty_registry());
        let plain = r.respond(&get("/metrics", &[]));
        let zipped = r.respond(&get("/metrics", &[("accept-encoding", "gzip")]));
        assert_eq!(zipped.headers()[header::CONTENT_ENCODING], "gzip");
        assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
        let mut unzipped = Vec::new();
        flate2::read::GzDecoder::new(zipped.body().as_ref())
            .read_to_end(&mut unzipped)
            .expect("gunzip");
        assert_eq!(unzipped, plain.body().as_ref());
    }

    #[test]
    fn encodes_once_per_store_generation() {
        let reg = nasty_registry();
        let r = Responder::new(reg.clone());
        let a = r.respond(&get("/metrics", &[])).into_body();
        let b = r.respond(&get("/metrics", &[])).into_body();
        // The same buffer: served from the cache.
        assert_eq!(a.as_ptr(), b.as_ptr());
        reg.update_workload(&WorkloadKey::cgroup("new.service"), &tcp(1, 1));
        let c = r.respond(&get("/metrics", &[])).into_body();
        assert_ne!(a.as_ptr(), c.as_ptr());
        assert!(
            std::str::from_utf8(&c)
                .expect("utf8")
                .contains("new.service")
        );
    }
}
