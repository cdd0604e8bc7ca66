//! A `grpc` route's backend: an HTTP/JSON request transcoded
//! ([`Transcoder`]), sent as a gRPC call through the proxy's
//! [`send`](crate::backend::proxy::send) (the service's HTTP/2 pools,
//! balancing, health, breaker and gRPC-aware retries), and its answer
//! turned back into JSON.
//!
//! What goes upstream as metadata is chosen, never the client's headers
//! wholesale: `x-request-id`, the `X-Forwarded-*` and identity headers the
//! gateway wrote, and the route's `forward_headers`. The call's deadline
//! (`grpc-timeout`) is the route's `timeout_ms` (else the service's request
//! timeout), shortened by a client's own `grpc-timeout` header; the
//! gateway stops waiting for the answer's head at the same time (`504`).

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Response};
use http_body_util::{BodyExt, Full};

use portico_shared::model::{GrpcBackend, JsonNames, Service};
use prost_reflect::DescriptorPool;

use super::{JsonOptions, Limits, TranscodeError, Transcoder, grpc_request_headers};
use crate::backend::proxy::{self, ClientBody, Prepared, Target};
use crate::body::{ResponseBody, UpstreamBody};
use crate::error::ProxyError;
use crate::proxy::grpc::{CallMetric, respond};
use crate::proxy::headers::{IDENTITY, REQUEST_ID};

/// Headers the gateway writes that always travel as metadata.
const GATEWAY_METADATA: [&str; 5] = ["x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"];

/// A `grpc` route, compiled.
#[derive(Debug)]
pub struct Transcoding {
    pub transcoder: Transcoder,
    pub target: Target,
    /// The route's `forward_headers`.
    pub forward_headers: Vec<HeaderName>,
    /// The call's deadline.
    pub timeout: Duration,
    /// The route's name, for `portico_grpc_requests_total`.
    pub route: Arc<str>,
}

impl Transcoding {
    /// Compiles a route's `grpc` block for `pool` (its proto's descriptors),
    /// calling `target` (`service`'s upstream).
    pub fn compile(route: Arc<str>, grpc: &GrpcBackend, pool: &DescriptorPool, target: Target, service: &Service) -> Result<Self, String> {
        let options = JsonOptions {
            proto_names: grpc.names == JsonNames::Proto,
            emit_defaults: grpc.emit_defaults,
            enums_as_ints: grpc.enums_as_ints,
            ignore_unknown: grpc.ignore_unknown,
        };
        let limits = Limits {
            max_request_message: usize::try_from(grpc.max_request_message_bytes).unwrap_or(usize::MAX),
            max_response_message: usize::try_from(grpc.max_response_message_bytes).unwrap_or(usize::MAX),
        };
        let transcoder = Transcoder::new(pool, &grpc.services, options, limits)
            .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))?;
        let forward_headers = grpc
            .forward_headers
            .iter()
            .map(|name| HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("forward_headers: '{name}': {e}")))
            .collect::<Result<_, _>>()?;
        let timeout = Duration::from_millis(u64::from(grpc.timeout_ms.unwrap_or(service.timeouts.request_ms)));
        Ok(Self { transcoder, target, forward_headers, timeout, route })
    }

    /// Answers `prepared` (its path and query as the client sent them).
    pub async fn answer(
        &self,
        prepared: Prepared<'_>,
        body: ClientBody,
        max_body_bytes: u64,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        let bound = self.transcoder.bind(&prepared.method, prepared.path_and_query.path())?;
        let streams_in = bound.kind().client_streams();
        let query = prepared.path_and_query.query();
        let mistake: Arc<Mutex<Option<TranscodeError>>> = Arc::default();
        let (call, upstream_body) = if streams_in {
            let call = bound.call(query, &prepared.headers, &[])?;
            let source = match body {
                ClientBody::Stream(client) => UpstreamBody::streamed(client, usize::try_from(max_body_bytes).unwrap_or(usize::MAX)),
                // A body a transform rewrote is whole: its lines are translated all the same.
                whole => UpstreamBody::Kept(Full::new(whole.read_whole(max_body_bytes).await?)),
            };
            // HTTP/2 resets the stream on a body error without saying why: the mistake is noted here.
            let noted = mistake.clone();
            let waiting = source.client_wait();
            let frames = call.request_stream(source).map_err(move |error| {
                if let Some(copy) = error.downcast_ref::<TranscodeError>().and_then(TranscodeError::client_copy) {
                    *noted.lock().unwrap_or_else(PoisonError::into_inner) = Some(copy);
                }
                error
            });
            (call, ClientBody::Once(UpstreamBody::translated(waiting, frames)))
        } else {
            let json = body.read_whole(max_body_bytes).await?;
            let call = bound.call(query, &prepared.headers, &json)?;
            let message = call.message.clone().unwrap_or_default();
            (call, ClientBody::Whole(message))
        };
        let timeout = prepared.timeout.map_or(self.timeout, |asked| asked.min(self.timeout));
        let mut headers = self.metadata(&prepared.headers);
        grpc_request_headers(&mut headers);
        headers.insert("grpc-timeout", grpc_timeout(timeout));
        let path_and_query =
            PathAndQuery::try_from(call.grpc_path()).map_err(|_| ProxyError::BadRequest("the gRPC method cannot be called"))?;
        let upstream = Prepared {
            method: Method::POST,
            path_and_query,
            headers,
            host: None,
            hash_value: prepared.hash_value,
            upgrading: false,
            idempotent: call.idempotent,
            timeout: Some(timeout),
            deadline_is_clients: prepared.timeout.is_some_and(|asked| asked < self.timeout),
            aggregate: None,
            trail: prepared.trail,
            forwarding: None,
        };
        let sent = proxy::send(&self.target, upstream, upstream_body).await;
        let client_mistake = || mistake.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(mistake) = client_mistake() {
            return Err(mistake.into());
        }
        let (response, lease) = sent?;
        let idle = self.target.upstream.idle_timeout;
        let response = respond(
            response.map(|body| ResponseBody::upstream(body, idle, lease)),
            None,
            CallMetric::new(self.route.clone(), call.grpc_path()),
        );
        // A bad line after the answer's head resets the call: the client hears of its mistake, not of a broken answer.
        let answer = self.transcoder.response(&call, response).await.map_err(|error| client_mistake().unwrap_or(error))?;
        Ok(answer.map(|json| ResponseBody::Transcoded(Box::new(json))))
    }

    /// The request headers that go upstream as metadata.
    fn metadata(&self, headers: &HeaderMap) -> HeaderMap {
        let wanted = |name: &HeaderName| {
            *name == REQUEST_ID
                || GATEWAY_METADATA.contains(&name.as_str())
                || IDENTITY.contains(&name.as_str())
                || self.forward_headers.contains(name)
        };
        let mut metadata = HeaderMap::new();
        for (name, value) in headers.iter().filter(|(name, _)| wanted(name)) {
            metadata.append(name.clone(), value.clone());
        }
        metadata
    }
}

/// A deadline as `grpc-timeout`: milliseconds, at most 8 digits.
fn grpc_timeout(timeout: Duration) -> HeaderValue {
    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).clamp(1, 99_999_999);
    HeaderValue::try_from(format!("{millis}m")).expect("digits and a unit make a header value")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_are_milliseconds_of_at_most_eight_digits() {
        assert_eq!(grpc_timeout(Duration::from_millis(300)), "300m");
        assert_eq!(grpc_timeout(Duration::from_micros(10)), "1m", "never zero: a zero deadline has passed");
        assert_eq!(grpc_timeout(Duration::from_secs(10 * 24 * 3600)), "99999999m");
    }
}
