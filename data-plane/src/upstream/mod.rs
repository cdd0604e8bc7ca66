//! Upstreams: one per service, holding its targets, its balancer (weighted
//! round robin, least requests or consistent hashing) and a pooled HTTP
//! client (hyper-util's, with the service's connect timeout).
//! An upstream whose service is unchanged by a new config version is
//! carried into the new runtime as is, so its connection pool and
//! balancer position survive the swap.

mod balance;

use std::time::Duration;

use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portico_shared::model::{HashOn, LoadBalancing, Service};

pub use balance::{HashRing, InFlight, LeastRequests, WeightedRoundRobin};

use crate::body::UpstreamBody;

/// One address of an upstream.
#[derive(Debug, Clone)]
pub struct Target {
    pub scheme: Scheme,
    pub authority: Authority,
    /// `Host` for requests to this target.
    pub host: http::HeaderValue,
}

/// How an upstream picks targets.
#[derive(Debug)]
enum Balancer {
    RoundRobin(WeightedRoundRobin),
    LeastRequests(LeastRequests),
    ConsistentHash(HashRing, HashOn),
}

/// A target chosen for one request; with `least_requests` it counts as in
/// flight until this is dropped (when the response headers are in).
#[derive(Debug)]
pub struct Picked<'a> {
    pub target: &'a Target,
    _in_flight: Option<InFlight<'a>>,
}

/// A service, ready to take requests.
#[derive(Debug)]
pub struct Upstream {
    /// The service this was built from (for carry-over decisions).
    service: Service,
    targets: Vec<Target>,
    balancer: Balancer,
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
        let balancer = match service.load_balancing {
            LoadBalancing::RoundRobin => Balancer::RoundRobin(WeightedRoundRobin::new(&weights)),
            LoadBalancing::LeastRequests => Balancer::LeastRequests(LeastRequests::new(&weights)),
            LoadBalancing::ConsistentHash => {
                let hash_on = service.hash_on.as_deref().and_then(HashOn::parse).unwrap_or(HashOn::Ip);
                let names: Vec<&str> = targets.iter().map(|t| t.authority.as_str()).collect();
                Balancer::ConsistentHash(HashRing::new(&names, &weights), hash_on)
            }
        };
        Ok(Self {
            service: service.clone(),
            targets,
            balancer,
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
            && a.hash_on == b.hash_on
            && a.timeouts == b.timeouts
    }

    /// What a `consistent_hash` upstream hashes requests on.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.balancer {
            Balancer::ConsistentHash(_, hash_on) => Some(hash_on),
            Balancer::RoundRobin(_) | Balancer::LeastRequests(_) => None,
        }
    }

    /// The target for the next request (`hash_value`: what a
    /// `consistent_hash` upstream hashes).
    pub fn pick(&self, hash_value: Option<&[u8]>) -> Picked<'_> {
        let (index, in_flight) = match &self.balancer {
            Balancer::RoundRobin(rr) => (rr.pick(), None),
            Balancer::LeastRequests(lr) => {
                let (index, guard) = lr.pick();
                (index, Some(guard))
            }
            Balancer::ConsistentHash(ring, _) => (ring.pick(hash_value.unwrap_or_default()), None),
        };
        Picked { target: &self.targets[index], _in_flight: in_flight }
    }
}

/// The value a `consistent_hash` upstream hashes for a request; a request
/// without the header, cookie or consumer hashes on its client address.
pub fn hash_value(on: &HashOn, headers: &http::HeaderMap, client_ip: std::net::IpAddr, consumer_id: Option<&str>) -> String {
    let found = match on {
        HashOn::Ip => None,
        HashOn::Consumer => consumer_id.map(|id| format!("consumer:{id}")),
        HashOn::Header(name) => headers.get(name.as_str()).map(|v| format!("header:{}", String::from_utf8_lossy(v.as_bytes()))),
        HashOn::Cookie(name) => headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(n, _)| n == name)
            .map(|(_, value)| format!("cookie:{value}")),
    };
    found.unwrap_or_else(|| format!("ip:{client_ip}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_values_come_from_the_named_part_else_the_client_address() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "u7".parse().unwrap());
        headers.insert(http::header::COOKIE, "a=1; session=s9".parse().unwrap());
        let ip: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(hash_value(&HashOn::Header("x-user".into()), &headers, ip, None), "header:u7");
        assert_eq!(hash_value(&HashOn::Cookie("session".into()), &headers, ip, None), "cookie:s9");
        assert_eq!(hash_value(&HashOn::Cookie("missing".into()), &headers, ip, None), "ip:192.0.2.1");
        assert_eq!(hash_value(&HashOn::Consumer, &headers, ip, Some("c1")), "consumer:c1");
        assert_eq!(hash_value(&HashOn::Consumer, &headers, ip, None), "ip:192.0.2.1");
    }
}
