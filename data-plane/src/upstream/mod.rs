//! Upstreams: one per service, holding its targets, the balancer and a
//! pooled HTTP client (hyper-util's, with the service's connect timeout).
//! An upstream whose service is unchanged by a new config version is
//! carried into the new runtime as is, so its connection pool and
//! balancer position survive the swap.

mod balance;

use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portico_shared::model::Service;

pub use balance::WeightedRoundRobin;

use crate::body::UpstreamBody;

/// One address of an upstream.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `Host` for requests to this target.
    pub host: http::HeaderValue,
}

/// A service, ready to take requests.
#[derive(Debug)]
pub struct Upstream {
    /// The service this was built from (for carry-over decisions).
    service: Service,
    targets: Vec<Target>,
    balancer: WeightedRoundRobin,
    pub client: Client<HttpConnector, UpstreamBody>,
    pub request_timeout: Duration,
}

impl Upstream {
    /// Builds an upstream; fails on a target URL it cannot use (validation
    /// in the control plane excludes these).
    pub fn new(service: &Service) -> Result<Self, String> {
        let targets = service
            .targets
            .iter()
            .map(|t| {
                let uri: http::Uri = t.url.parse().map_err(|e| format!("service '{}': target '{}': {e}", service.name, t.url))?;
                match (uri.scheme(), uri.authority()) {
                    (Some(scheme), Some(authority)) => Ok(Target {
                        scheme: scheme.clone(),
                        authority: authority.clone(),
                        host: http::HeaderValue::from_str(authority.as_str())
                            .map_err(|e| format!("service '{}': target '{}': {e}", service.name, t.url))?,
                    }),
                    _ => Err(format!("service '{}': target '{}' is not absolute", service.name, t.url)),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let weights: Vec<u32> = service.targets.iter().map(|t| t.weight).collect();
        if weights.iter().all(|w| *w == 0) {
            return Err(format!("service '{}' has no target with a weight above 0", service.name));
        }
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(Duration::from_millis(u64::from(service.timeouts.connect_ms))));
        connector.set_nodelay(true);
        let client =
            Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(90)).pool_max_idle_per_host(256).build(connector);
        Ok(Self {
            service: service.clone(),
            targets,
            balancer: WeightedRoundRobin::new(&weights),
            client,
            request_timeout: Duration::from_millis(u64::from(service.timeouts.request_ms)),
        })
    }

    pub fn name(&self) -> &str {
        &self.service.name
    }

    /// Whether this upstream can serve `service` as it is: same entity, and
    /// nothing that shapes traffic changed (tags or policies may have).
    pub fn serves(&self, service: &Service) -> bool {
        let (a, b) = (&self.service, service);
        a.id == b.id
            && a.name == b.name
            && a.protocol == b.protocol
            && a.targets == b.targets
            && a.load_balancing == b.load_balancing
            && a.timeouts == b.timeouts
    }

    /// The next target, by weighted round robin.
    pub fn pick(&self) -> &Target {
        &self.targets[self.balancer.pick()]
    }
}
